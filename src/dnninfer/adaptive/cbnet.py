"""CBNet: a converting autoencoder in front of a lightweight classifier.

Mahmud, Kang, Desai, Lama, Prasad, "A Converting Autoencoder Toward Low-latency and
Energy-efficient DNN Inference at the Edge", IPDPSW 2024 (arXiv 2403.07036; code
``max2022/Converting-Autoencoder``). The recipe, as the released notebooks run it:

1. an image is *easy* when B-LeNet's first exit is confident: exit-1 softmax entropy < T
   (`label_easy`);
2. each class gets ONE target, its easy training image with the lowest exit-1 entropy
   (`easiest_targets`; CAE-Net's refinement, several k-means representatives per class, is
   `kmeans_targets`);
3. the AE is trained on pairs (image of class c → target of c): all hard images of the class,
   topped up with easy ones up to the size of the easy set (`conversion_pairs`);
4. inference is ``light(ae(x))`` where ``light`` is the B-net cut after exit 1 (`CBNet`).

`GuardedCBNet` is not in the paper [R]: when exit 1 is still unsure about the converted image
(entropy ≥ T) it answers with the full network on the original image, bounding the accuracy loss
at the price of running the full network for those inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dnninfer.adaptive.branchynet import softmax_entropy

__all__ = [
    "CBNet",
    "GuardedCBNet",
    "Targets",
    "choose_threshold",
    "conversion_pairs",
    "easiest_targets",
    "kmeans_targets",
    "label_easy",
]


def label_easy(entropy: torch.Tensor, threshold: float) -> torch.Tensor:
    """Easy = would leave BranchyNet at exit 1: entropy strictly below the threshold."""
    return entropy < threshold


def choose_threshold(entropy: torch.Tensor, easy_fraction: float) -> float:
    """The entropy below which ``easy_fraction`` of the given images fall (a quantile; the
    CBNet notebooks instead fix T by hand per dataset, e.g. 0.05 MNIST, 0.5 FMNIST)."""
    if not 0.0 < easy_fraction < 1.0:
        raise ValueError(f"easy_fraction must be in (0, 1), got {easy_fraction}")
    return float(torch.quantile(entropy.double(), easy_fraction))


@dataclass(frozen=True)
class Targets:
    """Target images and, per training image, which target it is mapped to.

    ``index`` holds the training-set index of each target image; ``of_sample[i]`` the row of
    ``images`` image i must be converted to; ``fallback`` the classes without any easy image
    (their target is the class's lowest-entropy image, easy or not).
    """

    images: torch.Tensor
    index: torch.Tensor
    label: torch.Tensor
    of_sample: torch.Tensor
    fallback: tuple[int, ...] = ()


def easiest_targets(x: torch.Tensor, y: torch.Tensor, entropy: torch.Tensor, easy: torch.Tensor,
                    num_classes: int | None = None) -> Targets:
    """Per class c: the easy image of c with the minimum exit-1 entropy (Branchynet_Decompose.ipynb);
    ties go to the lowest index. Every image of class c is mapped to that one target."""
    num_classes = int(y.max()) + 1 if num_classes is None else num_classes
    index, fallback = [], []
    for c in range(num_classes):
        members = torch.nonzero((y == c) & easy).flatten()
        if members.numel() == 0:
            members = torch.nonzero(y == c).flatten()
            fallback.append(c)
        if members.numel() == 0:
            raise ValueError(f"class {c} has no training image")
        index.append(int(members[torch.argmin(entropy[members])]))
    idx = torch.tensor(index)
    return Targets(x[idx].clone(), idx, torch.arange(num_classes), y.clone(), tuple(fallback))


def kmeans_targets(x: torch.Tensor, y: torch.Tensor, entropy: torch.Tensor, easy: torch.Tensor, k: int,
                   seed: int = 0, num_classes: int | None = None) -> Targets:
    """CAE-Net's intra-class clustering: k-means (pixel space) over the easy images of each class;
    each cluster is represented by its lowest-entropy member, and every image of the class is
    mapped to the representative of its nearest cluster centre."""
    from sklearn.cluster import KMeans

    num_classes = int(y.max()) + 1 if num_classes is None else num_classes
    flat = x.flatten(1).numpy().astype(np.float64)
    index: list[int] = []
    labels: list[int] = []
    of_sample = torch.empty(len(y), dtype=torch.int64)
    fallback = []
    for c in range(num_classes):
        members = torch.nonzero((y == c) & easy).flatten()
        if members.numel() == 0:
            members = torch.nonzero(y == c).flatten()
            fallback.append(c)
        kk = max(1, min(k, members.numel()))
        km = KMeans(n_clusters=kk, n_init=4, random_state=seed).fit(flat[members.numpy()])
        rows = {}
        for j in range(kk):
            in_cluster = members[torch.from_numpy(km.labels_ == j)]
            if in_cluster.numel():
                rows[j] = len(index)
                index.append(int(in_cluster[torch.argmin(entropy[in_cluster])]))
                labels.append(c)
        of_class = torch.nonzero(y == c).flatten()
        nearest = km.predict(flat[of_class.numpy()])
        # a centre whose cluster came out empty cannot happen with sklearn's KMeans; guard anyway
        first = next(iter(rows.values()))
        of_sample[of_class] = torch.tensor([rows.get(int(j), first) for j in nearest], dtype=torch.int64)
    idx = torch.tensor(index)
    return Targets(x[idx].clone(), idx, torch.tensor(labels), of_sample, tuple(fallback))


def conversion_pairs(x: torch.Tensor, y: torch.Tensor, easy: torch.Tensor, targets: Targets,
                     mode: str = "paper") -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) the AE learns from.

    ``paper``: per class, all hard images plus the easy ones after the first ``n_hard``, so the
    input set is as large as the easy set (``concat(hard[0:n1], easy[n1:n2])`` in the notebooks);
    ``all``: every training image.
    """
    if mode == "all":
        keep = torch.arange(len(y))
    elif mode == "paper":
        parts = []
        for c in torch.unique(y).tolist():
            hard = torch.nonzero((y == c) & ~easy).flatten()
            easy_c = torch.nonzero((y == c) & easy).flatten()
            parts += [hard, easy_c[hard.numel():]]
        keep = torch.sort(torch.cat(parts)).values
    else:
        raise ValueError(f"mode must be 'paper' or 'all', got {mode!r}")
    return x[keep], targets.images[targets.of_sample[keep]]


class CBNet(nn.Module):
    """``light(ae(x))``: convert, then classify with the network cut after its first exit."""

    def __init__(self, ae: nn.Module, light: nn.Module) -> None:
        super().__init__()
        self.ae = ae
        self.light = light

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.light(self.ae(x))


@dataclass(frozen=True)
class GuardedOutput:
    logits: torch.Tensor
    fell_back: torch.Tensor


class GuardedCBNet(nn.Module):
    """CBNet that falls back to ``full(x)`` on the ORIGINAL image when the converted image's
    exit-1 entropy is still ≥ ``threshold`` [R, not in the paper]."""

    def __init__(self, ae: nn.Module, light: nn.Module, full: nn.Module, threshold: float) -> None:
        super().__init__()
        self.ae = ae
        self.light = light
        self.full = full
        self.threshold = float(threshold)

    def decide(self, x: torch.Tensor) -> GuardedOutput:
        logits = self.light(self.ae(x))
        if x.shape[0] == 1:  # batch-1 fast path, no indexing
            if float(softmax_entropy(logits)) < self.threshold:
                return GuardedOutput(logits, torch.zeros(1, dtype=torch.bool))
            return GuardedOutput(self.full(x), torch.ones(1, dtype=torch.bool))
        unsure = softmax_entropy(logits) >= self.threshold
        if bool(unsure.any()):
            logits = logits.clone()
            logits[unsure] = self.full(x[unsure])
        return GuardedOutput(logits, unsure)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decide(x).logits
