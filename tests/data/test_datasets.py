"""Offline datasets: digits splits, IDX round trips (plain and gzip), MNIST-family loading, bad files,
the generated MNIST-1D split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dnninfer.data import load_dataset, load_digits, load_mnist1d, load_mnist_family, read_idx, write_idx
from dnninfer.errors import UserError


def test_digits_split_is_seeded_scaled_and_disjoint():
    a, b = load_digits(seed=1), load_digits(seed=1)
    assert torch.equal(a.train_x, b.train_x) and a.num_classes == 10
    assert a.image_shape == (1, 8, 8)
    assert len(a.train_y) + len(a.test_y) == 1797
    assert float(a.train_x.min()) >= 0.0 and float(a.train_x.max()) <= 1.0
    assert not torch.equal(load_digits(seed=2).test_x, a.test_x)


@pytest.mark.parametrize("name", ["x.idx", "x.idx.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_idx_round_trip(tmp_path, name, dtype):
    arr = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    if dtype == np.uint8:
        arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(write_idx(tmp_path / name, arr))
    assert out.dtype == arr.dtype and np.array_equal(out, arr)


def _fake_mnist(directory, n_train=20, n_test=10, gz=True):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    write_idx(directory / f"train-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8))
    write_idx(directory / f"train-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n_train, dtype=np.uint8))
    write_idx(directory / f"t10k-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8))
    write_idx(directory / f"t10k-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n_test, dtype=np.uint8))


def test_mnist_family_loads_idx_files_written_here(tmp_path):
    _fake_mnist(tmp_path)
    s = load_dataset("fashion_mnist", tmp_path)
    assert s.train_x.shape == (20, 1, 28, 28) and s.test_y.shape == (10,)
    assert s.train_x.dtype == torch.float32 and float(s.train_x.max()) <= 1.0


def test_bad_idx_files_are_one_line_errors(tmp_path):
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(UserError, match="not an IDX file"):
        read_idx(tmp_path / "junk")
    arr = np.zeros((4, 5), np.uint8)
    good = write_idx(tmp_path / "t.idx", arr).read_bytes()
    (tmp_path / "short.idx").write_bytes(good[:-3])
    with pytest.raises(UserError, match="expected 20 data bytes"):
        read_idx(tmp_path / "short.idx")
    with pytest.raises(UserError, match="missing train-images"):
        load_mnist_family(tmp_path)
    with pytest.raises(UserError, match="nothing is downloaded"):
        load_dataset("mnist")


def test_mnist1d_is_the_generated_standard_split():
    s = load_mnist1d()
    assert s.name == "mnist1d" and s.num_classes == 10
    assert s.train_x.shape == (4000, 1, 1, 40) and s.test_x.shape == (1000, 1, 1, 40)
    assert s.train_x.dtype == torch.float32 and s.train_y.dtype == torch.int64 and s.test_y.shape == (1000,)
    assert load_dataset("mnist1d").train_x is s.train_x  # generated once per process, then cached
    assert not torch.equal(s.train_x[:1000], s.test_x)  # negative control: two different splits
