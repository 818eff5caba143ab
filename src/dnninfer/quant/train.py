"""Quantisation-aware training on digits (or an MNIST-family IDX set): accuracy and non-zeros.

The recipe follows the research report §5 (a scaled-down PLUM §2.2): Adam, lr 2e-3, linear decay
to ~0, batch 64, one thread, no distillation. ``seed`` fixes the data split (``load_digits(seed)``)
and the initialisation and batch order, so a (method, width, seed) run is reproducible bit for bit
and different methods see the same split and initial weights at the same seed (paired seeds).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dnninfer.bench.harness import pinned_threads
from dnninfer.data import Split, fit, load_dataset
from dnninfer.errors import expected
from dnninfer.quant.models import ARCHS, build_model
from dnninfer.quant.quantizers import METHODS, SIGNED_DELTA, quantize, weight_stats

__all__ = ["DEFAULT_POLICY", "INPUTS", "TrainConfig", "TrainResult", "evaluate", "train"]

#: (first, last) layer policy per architecture: the MLP quantises its input layer (the report's
#: discriminating setting), the CNN keeps its 1-channel stem FP like PLUM's ResNet stem.
DEFAULT_POLICY = {"mlp": ("quantize", "fp32"), "cnn": ("fp32", "fp32"), "resnet": ("fp32", "fp32")}
#: QAT from scratch keeps the official code's constant signed-binary scale (``quantizer_sb``'s
#: ``v1 = 1``): BatchNorm after every quantised layer learns the magnitude, and the bench reproduces
#: PLUM. ``quantize``'s own default (``"mean"``) is for quantising an existing model.
PLUM_SIGNED_SCALE = 1.0
#: input preprocessing: as loaded, or centred per feature on the training set (an ablation:
#: a {0, +1} filter sums its inputs, so a non-negative input pushes every signed pre-activation one way)
INPUTS = ("raw", "centered")


def _centered(split: Split) -> Split:
    mean = split.train_x.mean(0, keepdim=True)
    return Split(split.name, split.train_x - mean, split.train_y, split.test_x - mean, split.test_y)


@dataclass(frozen=True)
class TrainConfig:
    method: str = "signed"
    arch: str = "mlp"
    width: float = 1.0
    epochs: int = 30
    seed: int = 0
    batch_size: int = 64
    lr: float = 2e-3
    first: str | None = None  # None: DEFAULT_POLICY[arch]
    last: str | None = None
    dataset: str = "digits"
    data_dir: str | None = None
    signed_scale: float | str = PLUM_SIGNED_SCALE  # ablation: "mean" derives it from the weights
    signed_delta: float = SIGNED_DELTA  # ablation: PLUM's 0.05 x max|W_f|
    inputs: str = "raw"  # "raw" or "centered": subtract the training set's per-feature mean

    def validate(self) -> None:
        if self.method not in METHODS:
            raise expected("quantisation method", f"one of {', '.join(METHODS)}", self.method)
        if self.arch not in ARCHS:
            raise expected("architecture", f"one of {', '.join(ARCHS)}", self.arch)
        if not self.width > 0:
            raise expected("width", "a positive multiplier", self.width)
        if self.epochs < 1:
            raise expected("epochs", "an integer >= 1", self.epochs)
        if self.inputs not in INPUTS:
            raise expected("input preprocessing", f"one of {', '.join(INPUTS)}", self.inputs)
        if self.batch_size < 1:
            raise expected("batch size", "an integer >= 1", self.batch_size)


@dataclass
class TrainResult:
    config: TrainConfig
    accuracy: float
    train_accuracy: float
    nnz: int  # non-zero weights in the quantised layers
    weights: int  # weights in the quantised layers
    density: float
    nnz_all: int  # plus the full-precision first/last layers
    weights_all: int
    train_s: float
    layers: list[dict[str, Any]] = field(default_factory=list)
    model: nn.Module | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("model", "config", "layers")}
        return {**asdict(self.config), **d, "layers": self.layers}


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 4096) -> float:
    """Top-1 accuracy in eval mode."""
    model.eval()
    correct = 0
    for i in range(0, len(y), batch):
        correct += int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    return correct / max(1, len(y))


def _policy(cfg: TrainConfig) -> tuple[str, str]:
    first, last = DEFAULT_POLICY[cfg.arch]
    return cfg.first or first, cfg.last or last


def train(cfg: TrainConfig, split: Split | None = None, *, progress: bool = True) -> TrainResult:
    """Train ``cfg.arch`` at ``cfg.width`` with ``cfg.method`` weights; return test accuracy and non-zeros.

    ``split`` defaults to ``load_dataset(cfg.dataset, cfg.data_dir, seed=cfg.seed)``; pass one to
    reuse it across runs. The progress bar is hidden when stderr is not a terminal.
    """
    cfg.validate()
    if split is None:
        split = load_dataset(cfg.dataset, Path(cfg.data_dir) if cfg.data_dir else None, seed=cfg.seed)
    if cfg.inputs == "centered":
        split = _centered(split)
    first, last = _policy(cfg)
    cfg = replace(cfg, first=first, last=last)
    with pinned_threads(1):
        torch.manual_seed(cfg.seed)
        base = build_model(cfg.arch, cfg.width, split.image_shape, split.num_classes)
        # PLUM's recipe: constant signed scale 1, magnitude learned by the BatchNorm that follows
        model = quantize(base, cfg.method, first=first, last=last, signed_scale=cfg.signed_scale,
                         signed_delta=cfg.signed_delta)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        n = len(split.train_y)
        steps_per_epoch = (n + cfg.batch_size - 1) // cfg.batch_size
        total = cfg.epochs * steps_per_epoch
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(1e-4, 1.0 - step / total))
        criterion = nn.CrossEntropyLoss()

        def loss_fn(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            return criterion(m(xb), yb)

        fitted = fit(model, split.train_x, split.train_y, loss_fn=loss_fn, optimizer=opt, epochs=cfg.epochs,
                     batch=cfg.batch_size, seed=cfg.seed, step_scheduler=sched,
                     min_batch=2,  # BatchNorm needs two samples
                     progress=progress, label=f"train {cfg.method} {cfg.arch} x{cfg.width:g}")
        train_s = fitted.wall_s
        acc = evaluate(model, split.test_x, split.test_y)
        train_acc = evaluate(model, split.train_x, split.train_y)
        stats = weight_stats(model)
    return TrainResult(cfg, acc, train_acc, stats["nnz"], stats["weights"], stats["density"], stats["nnz_all"],
                       stats["weights_all"], train_s, stats["layers"], model)
