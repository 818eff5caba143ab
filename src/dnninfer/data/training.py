"""One seeded mini-batch training loop, shared by quant, rns and adaptive.

Every area trains the same way: a ``torch.Generator(seed)`` draws one permutation per epoch, each
batch is forward, backward, step (then a per-step LR scheduler), and the epoch ends with an optional
per-epoch scheduler and a callback. Keeping the loop in one place keeps the order of RNG draws and
parameter updates the same everywhere, so a (model, data, seed) run is reproducible bit for bit
(CONVENTIONS.md, determinism) and a fix lands in every area at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from dnninfer.bench.output import make_progress

__all__ = ["FitResult", "LossFn", "fit"]

#: ``loss_fn(model, xb, yb)``: the loss to backpropagate, or ``(loss to backprop, loss to report)``
#: when the reported figure differs (e.g. a reconstruction loss without its regulariser).
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor | tuple[torch.Tensor, torch.Tensor]]


@dataclass
class FitResult:
    """Per-epoch mean of the reported loss (NaN for an epoch with no finished batch), whether a
    non-finite loss stopped training, the optimiser steps taken and the loop's wall-clock seconds."""

    losses: list[float] = field(default_factory=list)
    diverged: bool = False
    steps: int = 0
    wall_s: float = 0.0


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    batch: int,
    seed: int = 0,
    step_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    epoch_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    min_batch: int = 1,
    stop_on_nonfinite: bool = False,
    on_epoch: Callable[[int, float], None] | None = None,
    progress: bool = False,
    label: str = "train",
) -> FitResult:
    """Train ``model`` on ``(x, y)`` for ``epochs`` passes of shuffled batches of ``batch``.

    ``min_batch`` skips smaller batches (BatchNorm needs two samples). With ``stop_on_nonfinite`` a
    NaN/inf loss ends the epoch before its backward pass (the weights stay finite), the epoch
    scheduler and ``on_epoch`` still run for that epoch, then training stops with ``diverged`` set.
    ``on_epoch(epoch, mean_loss)`` gets the 0-based epoch. The model is in train mode during each
    epoch (``on_epoch`` may switch it) and left in eval mode.
    """
    if epochs < 0 or batch < 1:
        raise ValueError(f"need epochs >= 0 and batch >= 1, got {epochs} and {batch}")
    gen = torch.Generator().manual_seed(seed)
    n = len(y)
    result = FitResult()
    start = time.perf_counter()
    with make_progress(progress) as bar:
        task = bar.add_task(label, total=epochs)
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(n, generator=gen)
            total, seen = 0.0, 0
            for i in range(0, n, batch):
                idx = order[i:i + batch]
                if len(idx) < min_batch:
                    continue
                out = loss_fn(model, x[idx], y[idx])
                loss, report = out if isinstance(out, tuple) else (out, out)
                if stop_on_nonfinite and not torch.isfinite(loss):
                    result.diverged = True
                    break
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if step_scheduler is not None:
                    step_scheduler.step()
                result.steps += 1
                total += float(report.detach()) * len(idx)
                seen += len(idx)
            if epoch_scheduler is not None:
                epoch_scheduler.step()
            result.losses.append(total / seen if seen else math.nan)
            if on_epoch is not None:
                on_epoch(epoch, result.losses[-1])
            bar.advance(task)
            if result.diverged:
                break
    result.wall_s = time.perf_counter() - start
    model.eval()
    return result
