"""Train/test splits as float tensors in NCHW, [0, 1], with integer labels.

`load_digits`: scikit-learn's 8x8 digits (1797 images, ships with the package, no download).
`load_mnist_family`: MNIST / Fashion-MNIST / KMNIST from the four standard IDX files in a directory
the user names (`train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`, `t10k-...`).
`load_mnist1d`: MNIST-1D, *generated* by the `mnist1d` package from templates it ships.
Nothing is ever downloaded.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dnninfer.data.idx import read_idx
from dnninfer.errors import UserError

IDX_NAMES = {
    "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
}
MNIST_FAMILY = ("mnist", "fashion_mnist", "kmnist")
DATASETS = ("digits", "mnist1d", *MNIST_FAMILY)


@dataclass(frozen=True)
class Split:
    """Images (N, 1, H, W) float32 in [0, 1] (MNIST-1D: its signals' own scale) and labels (N,) int64,
    for train and test."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def num_classes(self) -> int:
        return int(max(self.train_y.max(), self.test_y.max())) + 1

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    def subset(self, train: int | None = None, test: int | None = None) -> Split:
        """The first `train`/`test` examples (quick runs)."""
        return Split(self.name, self.train_x[:train], self.train_y[:train], self.test_x[:test], self.test_y[:test])


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> Split:
    """scikit-learn's digits, shuffled with `seed`, pixel values 0..16 scaled to [0, 1]."""
    from sklearn.datasets import load_digits as sk_digits

    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"test_fraction: expected a number in (0, 1), got {test_fraction}")
    d = sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    n_test = round(len(y) * test_fraction)
    return Split("digits", x[n_test:], y[n_test:], x[:n_test], y[:n_test])


@functools.cache
def _mnist1d() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from mnist1d.data import get_dataset_args, make_dataset

    d = make_dataset(get_dataset_args())  # generated from the package's templates, seed 42: no download

    def images(a: np.ndarray) -> torch.Tensor:
        return torch.tensor(a, dtype=torch.float32).view(-1, 1, 1, a.shape[-1])

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.tensor(a, dtype=torch.int64)

    return images(d["x"]), labels(d["y"]), images(d["x_test"]), labels(d["y_test"])


def load_mnist1d() -> Split:
    """The standard MNIST-1D split (4,000 train / 1,000 test signals of length 40, as (N, 1, 1, 40)),
    generated once per process (cached: generation takes seconds) with the dataset's published
    seed 42. Signals are not scaled to [0, 1]: they are the package's own values."""
    return Split("mnist1d", *_mnist1d())


def _find(directory: Path, stem: str) -> Path:
    for suffix in ("", ".gz"):
        p = directory / f"{stem}{suffix}"
        if p.exists():
            return p
    raise UserError(f"dataset directory {directory}: missing {stem}[.gz] (expected the four MNIST-format IDX files)")


def load_mnist_family(directory: str | Path, name: str = "mnist") -> Split:
    """MNIST-format IDX files from `directory`, as a `Split` (images scaled by 1/255)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"dataset directory {directory}: not a directory")
    arrays = {k: read_idx(_find(directory, stem)) for k, stem in IDX_NAMES.items()}
    for part in ("train", "test"):
        x, y = arrays[f"{part}_x"], arrays[f"{part}_y"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise UserError(f"dataset {directory}: {part} images {x.shape} and labels {y.shape} do not match "
                            "(expected (N, H, W) and (N,))")
    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    return Split(name, images(arrays["train_x"]), labels(arrays["train_y"]),
                 images(arrays["test_x"]), labels(arrays["test_y"]))


def load_dataset(name: str, directory: str | Path | None = None, seed: int = 0) -> Split:
    """`digits` (split by `seed`), `mnist1d` (its fixed published split), or an MNIST-family name
    with the directory holding its IDX files."""
    if name == "digits":
        return load_digits(seed=seed)
    if name == "mnist1d":
        return load_mnist1d()
    if name in MNIST_FAMILY:
        if directory is None:
            raise UserError(f"dataset {name!r}: give the directory with its IDX files (nothing is downloaded)")
        return load_mnist_family(directory, name)
    raise UserError(f"dataset {name!r}: expected one of {', '.join(DATASETS)}")
