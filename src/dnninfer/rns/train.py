"""Training under emulated GEMM numerics on offline data: scikit-learn digits and MNIST-1D.

Both datasets are generated or shipped locally (nothing is downloaded): digits via
``dnninfer.data.load_digits``; MNIST-1D via ``dnninfer.data.load_mnist1d``, which has the ``mnist1d``
package *generate* the 4,000/1,000 train/test signals from its templates (research note §4.0).
The loop is the shared ``dnninfer.data.training.fit``; the test pass runs in its per-epoch callback.

Every run is seeded (weight init, batch order, analog noise), so a run is reproducible bit for bit on
one machine and thread count; the BFP-exact and noiseless RNS runs of one seed therefore end with
identical parameters, which ``TrainResult.digest`` makes checkable.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dnninfer.data import Split, fit, load_dataset
from dnninfer.errors import UserError
from dnninfer.rns.layers import rnsify
from dnninfer.rns.numerics import MODES, Numerics

__all__ = ["DATASETS", "RECIPES", "Data", "TrainResult", "build_model", "load_data", "train"]

DATASETS = ("digits", "mnist1d")


@dataclass(frozen=True)
class Recipe:
    """Model and optimiser settings of one dataset (the same for every numerics mode)."""

    arch: str
    epochs: int
    quick_epochs: int
    batch: int
    lr: float


RECIPES: dict[str, Recipe] = {
    "digits": Recipe(arch="mlp", epochs=30, quick_epochs=12, batch=64, lr=3e-3),
    "mnist1d": Recipe(arch="cnn", epochs=30, quick_epochs=8, batch=100, lr=3e-3),
}


#: rns' name for the shared split type (same fields: name, train_x, train_y, test_x, test_y).
Data = Split


def load_data(name: str, seed: int = 0) -> Data:
    """``digits`` (N, 1, 8, 8) in [0, 1], split by ``seed``; ``mnist1d`` (N, 1, 1, 40), the standard
    generated split (the dataset's own seed is fixed at 42, as published). Both from ``dnninfer.data``."""
    if name not in DATASETS:
        raise UserError(f"dataset: expected one of {', '.join(DATASETS)}, got {name!r}")
    return load_dataset(name, seed=seed)


def build_model(dataset: str, arch: str | None = None, seed: int = 0) -> nn.Module:
    """The dataset's zoo model (``rns.models``), weights drawn after ``torch.manual_seed(seed)``."""
    from dnninfer import zoo
    from dnninfer.rns.models import model_name

    name = model_name(dataset, arch or RECIPES[dataset].arch)
    torch.manual_seed(seed)  # the global stream, as training has always drawn its initial weights
    return zoo.get(name).build()


@dataclass
class TrainResult:
    dataset: str
    arch: str
    mode: str
    numerics: dict[str, Any]
    seed: int
    epochs: int
    test_acc: float
    curve: list[dict[str, float]] = field(default_factory=list)
    diverged: bool = False
    wall_s: float = 0.0
    stats: dict[str, float] = field(default_factory=dict)
    digest: str = ""

    def summary(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "arch": self.arch, "mode": self.mode, "seed": self.seed,
                "epochs": self.epochs, "test_acc": self.test_acc, "diverged": self.diverged,
                "wall_s": round(self.wall_s, 2), **{k: v for k, v in self.numerics.items() if k != "mode"}}


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> tuple[float, torch.Tensor]:
    model.eval()
    logits = []
    with torch.no_grad():
        for i in range(0, len(y), batch):
            logits.append(model(x[i:i + batch]))
    model.train()
    out = torch.cat(logits)
    return float((out.argmax(1) == y).float().mean()), out


def _digest(model: nn.Module, logits: torch.Tensor) -> str:
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().contiguous().numpy().tobytes())
    h.update(logits.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def train(dataset: str = "digits", mode: str = "rns", *, epochs: int | None = None, seed: int = 0,
          arch: str | None = None, sigma: float = 0.0, redundant: int | tuple[int, ...] = 0,
          quick: bool = False, progress: bool = True, lr: float | None = None, batch: int | None = None,
          limit: int | None = None, **numerics_opts: Any) -> TrainResult:
    """Train the dataset's model with every GEMM under ``mode``; test accuracy after each epoch (the
    test pass runs under the same numerics, noise included: the model runs on the same core).
    ``limit`` keeps only the first ``limit`` training examples (quick runs); the test split is whole."""
    if mode not in MODES:
        raise UserError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    if dataset not in RECIPES:
        raise UserError(f"dataset: expected one of {', '.join(DATASETS)}, got {dataset!r}")
    recipe = RECIPES[dataset]
    epochs = epochs if epochs is not None else (recipe.quick_epochs if quick else recipe.epochs)
    if epochs < 1:
        raise UserError(f"--epochs: expected an integer >= 1, got {epochs}")
    arch = arch or recipe.arch
    batch = batch or recipe.batch
    data = load_data(dataset, seed=seed)
    if limit is not None:
        if limit < 1:
            raise UserError(f"limit: expected a positive number of training examples, got {limit}")
        data = data.subset(train=limit)
    num = Numerics(mode=mode, sigma=sigma, redundant=redundant, seed=seed, **numerics_opts)
    model = rnsify(build_model(dataset, arch, seed=seed), num, inplace=True)
    opt = torch.optim.Adam(model.parameters(), lr=lr or recipe.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)  # a settled final epoch
    criterion = nn.CrossEntropyLoss()
    curve: list[dict[str, float]] = []
    logits = torch.empty(0)

    def loss_fn(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return criterion(m(xb), yb)

    def test_pass(epoch: int, loss: float) -> None:
        nonlocal logits
        acc, logits = _accuracy(model, data.test_x, data.test_y)
        curve.append({"epoch": epoch + 1, "loss": loss, "test_acc": acc})

    fitted = fit(model, data.train_x, data.train_y, loss_fn=loss_fn, optimizer=opt, epochs=epochs, batch=batch,
                 seed=seed, epoch_scheduler=sched, stop_on_nonfinite=True, on_epoch=test_pass, progress=progress,
                 label=f"{dataset}/{arch} {mode}")
    return TrainResult(dataset=dataset, arch=arch, mode=mode, numerics=num.describe(), seed=seed, epochs=epochs,
                       test_acc=curve[-1]["test_acc"], curve=curve, diverged=fitted.diverged, wall_s=fitted.wall_s,
                       stats=num.stats.to_dict(), digest=_digest(model, logits))
