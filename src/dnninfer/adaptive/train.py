"""The losses of the full DNN, BranchyNet and the converting autoencoders, trained through the
shared loop ``dnninfer.data.training.fit``.

Seeded and single-process, so a run with the same seed and thread count reproduces the same
weights bit for bit (CONVENTIONS.md, determinism).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dnninfer.adaptive.branchynet import MultiExitNet
from dnninfer.data.training import fit

__all__ = ["accuracy", "train_autoencoder", "train_exits"]


def train_exits(
    net: MultiExitNet,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    weights: Sequence[float],
    epochs: int,
    lr: float = 1e-3,
    batch: int = 64,
    seed: int = 0,
) -> list[float]:
    """Minimise ``Σ_n w_n · CE(exit_n)`` (BranchyNet Eq. 2) with Adam(α=1e-3, β=(0.99, 0.999)),
    the optimiser of the BranchyNet paper. ``weights=[0, ..., 0, 1]`` trains the plain network
    (its side heads get no gradient); equal weights is what BranchyNet used for B-LeNet.
    Returns the mean loss of each epoch."""
    if len(weights) != net.num_exits:
        raise ValueError(f"need {net.num_exits} exit weights, got {len(weights)}")
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.99, 0.999))

    def loss_fn(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return sum(w * F.cross_entropy(o, yb) for w, o in zip(weights, model(xb), strict=True) if w)

    return fit(net, x, y, loss_fn=loss_fn, optimizer=opt, epochs=epochs, batch=batch, seed=seed).losses


def train_autoencoder(
    ae: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    epochs: int,
    lr: float = 1e-3,
    batch: int = 64,
    seed: int = 0,
    activity_l1: float = 0.0,
    on_epoch: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Fit ``ae(inputs[i]) ≈ targets[i]`` with pixel-wise binary cross-entropy and Adam, as the
    CBNet notebooks do (Keras ``binary_crossentropy``, ``adam``). ``activity_l1`` adds Keras'
    L1 activity regulariser on the hidden layers of a model exposing ``forward_with_activity``.
    Returns the mean reconstruction BCE of each epoch (without the regulariser)."""
    if inputs.shape != targets.shape:
        raise ValueError(f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} must match")
    opt = torch.optim.Adam(ae.parameters(), lr=lr)
    with_activity = activity_l1 > 0 and hasattr(ae, "forward_with_activity")

    def loss_fn(model: nn.Module, xb: torch.Tensor, tb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not with_activity:
            bce = F.binary_cross_entropy(model(xb), tb)
            return bce, bce
        out, activity = model.forward_with_activity(xb)
        bce = F.binary_cross_entropy(out, tb)
        return bce + activity_l1 * activity / len(xb), bce  # backprop the regularised loss, report the BCE

    return fit(ae, inputs, targets, loss_fn=loss_fn, optimizer=opt, epochs=epochs, batch=batch, seed=seed,
               on_epoch=on_epoch).losses


@torch.inference_mode()
def accuracy(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             batch: int = 512) -> float:
    """Top-1 accuracy of ``model(x)`` logits, evaluated in batches."""
    if isinstance(model, nn.Module):
        model.eval()
    correct = 0
    for i in range(0, len(y), batch):
        correct += int((model(x[i: i + batch]).argmax(1) == y[i: i + batch]).sum())
    return correct / len(y)
