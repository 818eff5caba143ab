"""The whole CBNet recipe in one call: data, full DNN, BranchyNet, easy/hard labels, targets,
converting autoencoders, lightweight classifier, guarded variant.

Order follows the paper's code: train the plain network first; initialise B-LeNet from it and
train all exits jointly (BranchyNet §III-B: initialising from the trained baseline "improved
accuracy by several percent"); label the training set with B-LeNet's exit 1; train each AE on
(image → its class target) pairs. The full DNN is kept as trained alone, like the paper's LeNet.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dnninfer.adaptive.autoencoder import AE_KINDS, build_autoencoder
from dnninfer.adaptive.branchynet import NATIVE_28, MultiExitNet, build_backbone, exit_outputs, softmax_entropy
from dnninfer.adaptive.cbnet import (
    CBNet,
    GuardedCBNet,
    Targets,
    choose_threshold,
    conversion_pairs,
    easiest_targets,
    kmeans_targets,
    label_easy,
)
from dnninfer.adaptive.train import accuracy, train_autoencoder, train_exits
from dnninfer.data import Split, load_dataset
from dnninfer.errors import UserError

__all__ = ["CBNetConfig", "Trained", "fit", "prepare_split"]


@dataclass(frozen=True)
class CBNetConfig:
    """Everything a CBNet run depends on (defaults: the paper's B-LeNet at 28x28).

    ``threshold`` is the exit-1 entropy threshold T (nats) used for BranchyNet's exit, the
    easy/hard labels and the guard; when None it is the ``easy_fraction`` quantile of the
    training images' exit-1 entropies. ``image_size`` None means 28 for B-LeNet and B-AlexNet
    (digits are upsampled bilinearly so the network is exactly the paper's) and the native size
    otherwise.
    ``ae_lr`` (default: ``lr``) is the AEs' Adam step; on digits 3e-3 converged both AEs within
    20-60 epochs where 1e-3 left the conv AE short.
    """

    dataset: str = "digits"
    data_dir: str | None = None
    backbone: str = "blenet"
    image_size: int | None = None
    epochs: int = 30
    joint_epochs: int | None = None
    ae_epochs: int | None = None
    exit_weights: tuple[float, ...] = (1.0, 1.0)
    threshold: float | None = None
    easy_fraction: float = 0.8
    targets: str = "easiest"
    clusters: int = 3
    pairs: str = "paper"
    autoencoders: tuple[str, ...] = ("dense", "conv")
    finetune_epochs: int = 0
    train_limit: int | None = None
    test_limit: int | None = None
    batch: int = 64
    lr: float = 1e-3
    ae_lr: float | None = None
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise UserError(f"epochs: expected an integer >= 1, got {self.epochs}")
        for kind in self.autoencoders:
            if kind not in AE_KINDS:
                raise UserError(f"autoencoder {kind!r}: expected one of {', '.join(AE_KINDS)}")
        if not self.autoencoders:
            raise UserError("autoencoders: expected at least one of " + ", ".join(AE_KINDS))
        if self.targets not in ("easiest", "kmeans"):
            raise UserError(f"targets {self.targets!r}: expected easiest or kmeans")
        if self.pairs not in ("paper", "all"):
            raise UserError(f"pairs {self.pairs!r}: expected paper or all")
        if not 0.0 < self.easy_fraction < 1.0:
            raise UserError(f"easy_fraction: expected a number in (0, 1), got {self.easy_fraction}")
        if self.threshold is not None and self.threshold <= 0:
            raise UserError(f"threshold: expected an entropy > 0 (nats), got {self.threshold}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Trained:
    """The trained models and the facts the bench reports about them."""

    config: CBNetConfig
    split: Split
    full: nn.Module
    bnet: MultiExitNet
    threshold: float
    train_entropy: torch.Tensor
    easy: torch.Tensor
    targets: Targets
    autoencoders: dict[str, nn.Module]
    cbnets: dict[str, CBNet]
    guarded: GuardedCBNet
    history: dict[str, list[float]] = field(default_factory=dict)
    train_s: dict[str, float] = field(default_factory=dict)

    @property
    def light(self) -> nn.Module:
        return self.bnet.light()

    @property
    def primary_ae(self) -> str:
        return self.config.autoencoders[0]

    def method_name(self, kind: str) -> str:
        """``cbnet`` for the first (primary) AE kind, ``cbnet_<kind>`` for the others."""
        return "cbnet" if kind == self.primary_ae else f"cbnet_{kind}"


def prepare_split(split: Split, image_size: int | None) -> Split:
    """Resize images to ``image_size`` (bilinear, clamped to [0, 1]); unchanged when None or equal."""
    if image_size is None or split.train_x.shape[-1] == image_size == split.train_x.shape[-2]:
        return split

    def resize(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False).clamp_(0, 1)

    return Split(split.name, resize(split.train_x), split.train_y, resize(split.test_x), split.test_y)


def load_split(cfg: CBNetConfig) -> Split:
    split = load_dataset(cfg.dataset, cfg.data_dir and Path(cfg.data_dir), seed=cfg.seed)
    if split.train_x.shape[1] != 1:
        raise UserError(f"dataset {cfg.dataset!r}: expected single-channel images, got {split.train_x.shape[1]}")
    split = split.subset(cfg.train_limit, cfg.test_limit)
    size = cfg.image_size if cfg.image_size is not None else (28 if cfg.backbone in NATIVE_28 else None)
    return prepare_split(split, size)


def fit(cfg: CBNetConfig, split: Split | None = None, log: Callable[[str], None] | None = None) -> Trained:
    """Train everything CBNet needs on ``split`` (loaded from ``cfg`` when None), with
    ``cfg.threads`` intra-op threads (fixed, so a seed reproduces the same weights)."""
    from dnninfer.bench.harness import pinned_threads

    with pinned_threads(cfg.threads):
        return _fit(cfg, split, log)


def _fit(cfg: CBNetConfig, split: Split | None, log: Callable[[str], None] | None) -> Trained:
    import time

    say = log or (lambda _msg: None)
    split = load_split(cfg) if split is None else split
    x, y = split.train_x, split.train_y
    shape = tuple(split.image_shape)
    classes = split.num_classes
    history: dict[str, list[float]] = {}
    train_s: dict[str, float] = {}

    t0 = time.perf_counter()
    base = build_backbone(cfg.backbone, shape, classes, seed=cfg.seed)
    last_only = [0.0] * (base.num_exits - 1) + [1.0]
    history["full"] = train_exits(base, x, y, weights=last_only, epochs=cfg.epochs, lr=cfg.lr,
                                  batch=cfg.batch, seed=cfg.seed)
    full = copy.deepcopy(base).main_path().eval()
    train_s["full"] = time.perf_counter() - t0
    say(f"full DNN: {cfg.epochs} epochs, train loss {history['full'][-1]:.4f}")

    t0 = time.perf_counter()
    bnet = base  # BranchyNet starts from the trained baseline
    weights = cfg.exit_weights if len(cfg.exit_weights) == bnet.num_exits else (1.0,) * bnet.num_exits
    history["branchynet"] = train_exits(bnet, x, y, weights=weights, epochs=cfg.joint_epochs or cfg.epochs,
                                        lr=cfg.lr, batch=cfg.batch, seed=cfg.seed + 1)
    train_s["branchynet"] = time.perf_counter() - t0
    say(f"BranchyNet: joint loss {history['branchynet'][-1]:.4f}")

    entropy = exit_outputs(bnet, x).entropies[0]
    threshold = cfg.threshold if cfg.threshold is not None else choose_threshold(entropy, cfg.easy_fraction)
    easy = label_easy(entropy, threshold)
    if cfg.targets == "kmeans":
        targets = kmeans_targets(x, y, entropy, easy, cfg.clusters, seed=cfg.seed, num_classes=classes)
    else:
        targets = easiest_targets(x, y, entropy, easy, num_classes=classes)
    inputs, goals = conversion_pairs(x, y, easy, targets, cfg.pairs)
    say(f"T = {threshold:.4g} nats: {int(easy.sum())}/{len(y)} training images easy; "
        f"{len(targets.index)} target(s); {len(inputs)} AE training pairs")

    autoencoders: dict[str, nn.Module] = {}
    cbnets: dict[str, CBNet] = {}
    for i, kind in enumerate(cfg.autoencoders):
        t0 = time.perf_counter()
        ae, l1 = build_autoencoder(kind, shape, seed=cfg.seed + 10 + i)
        history[f"ae_{kind}"] = train_autoencoder(ae, inputs, goals, epochs=cfg.ae_epochs or cfg.epochs,
                                                  lr=cfg.ae_lr or cfg.lr,
                                                  batch=cfg.batch, seed=cfg.seed + 20 + i, activity_l1=l1)
        light = bnet.light()
        if cfg.finetune_epochs:
            light = _finetune_light(copy.deepcopy(light), ae, x, y, cfg)
        autoencoders[kind] = ae
        cbnets[kind] = CBNet(ae, light).eval()
        train_s[f"ae_{kind}"] = time.perf_counter() - t0
        say(f"AE {kind}: BCE {history[f'ae_{kind}'][0]:.4f} -> {history[f'ae_{kind}'][-1]:.4f}")
    primary = cfg.autoencoders[0]
    guarded = GuardedCBNet(autoencoders[primary], cbnets[primary].light, full, threshold).eval()
    return Trained(cfg, split, full, bnet.eval(), threshold, entropy, easy, targets, autoencoders, cbnets, guarded,
                   history, train_s)


def _finetune_light(light: nn.Module, ae: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: CBNetConfig) -> nn.Module:
    """Optional (paper's Lenet_MNIST_data_BranchyNet.ipynb): retrain the cut network on AE outputs."""
    with torch.inference_mode():
        converted = ae(x).clone()
    opt = torch.optim.Adam(light.parameters(), lr=cfg.lr, betas=(0.99, 0.999))
    gen = torch.Generator().manual_seed(cfg.seed + 30)
    for _ in range(cfg.finetune_epochs):
        light.train()
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), cfg.batch):
            idx = order[i: i + cfg.batch]
            loss = F.cross_entropy(light(converted[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return light.eval()


def summary(trained: Trained) -> dict[str, Any]:
    """Accuracies and exit/conversion statistics on the test split (no timing)."""
    from dnninfer.adaptive.branchynet import early_exit

    s = trained.split
    tx, ty = s.test_x, s.test_y
    bn = early_exit(trained.bnet, tx, trained.threshold)
    out: dict[str, Any] = {
        "dataset": s.name, "image_shape": list(s.image_shape), "train": len(s.train_y), "test": len(ty),
        "threshold": trained.threshold, "train_easy_fraction": float(trained.easy.float().mean()),
        "accuracy": {
            "full": accuracy(trained.full, tx, ty),
            "branchynet": float((bn.logits.argmax(1) == ty).float().mean()),
            "light": accuracy(trained.light, tx, ty),
            **{trained.method_name(k): accuracy(m, tx, ty) for k, m in trained.cbnets.items()},
            "cbnet_guarded": accuracy(trained.guarded, tx, ty),
        },
        "branchynet_exit1_fraction": float((bn.exit == 0).float().mean()),
    }
    with torch.inference_mode():
        light = trained.light
        out["exit1_fraction_original"] = float((softmax_entropy(light(tx)) < trained.threshold).float().mean())
        for kind, ae in trained.autoencoders.items():
            ent = softmax_entropy(light(ae(tx)))
            out[f"exit1_fraction_{trained.method_name(kind)}"] = float((ent < trained.threshold).float().mean())
        out["guarded_fallback_fraction"] = float(trained.guarded.decide(tx).fell_back.float().mean())
    out["ae_bce"] = {k: [v[0], v[-1]] for k, v in trained.history.items() if k.startswith("ae_")}
    out["train_s"] = trained.train_s
    return out
