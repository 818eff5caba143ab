"""The shared training loop: seeded, skips too-small batches, stops on divergence, reports what it is told."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dnninfer.bench.harness import pinned_threads
from dnninfer.data.training import fit


@pytest.fixture(autouse=True)
def _one_thread():
    with pinned_threads(1):
        yield


def _data(n: int = 130, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _mlp(batchnorm: bool = False) -> nn.Module:
    torch.manual_seed(0)
    norm = [nn.BatchNorm1d(8)] if batchnorm else []
    return nn.Sequential(nn.Linear(6, 8), *norm, nn.ReLU(), nn.Linear(8, 3))


def _ce(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(xb), yb)


def _run(seed: int = 0, model: nn.Module | None = None, n: int = 130, **kw):
    model = model or _mlp()
    x, y = _data(n)
    opts = {"loss_fn": _ce, "epochs": 3, "batch": 32, "seed": seed} | kw
    return model, fit(model, x, y, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2), **opts)


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_same_seed_same_weights_and_different_seed_different():
    a, ra = _run(seed=1)
    b, rb = _run(seed=1)
    c, rc = _run(seed=2)
    assert _same(_weights(a), _weights(b)) and ra.losses == rb.losses
    assert not _same(_weights(a), _weights(c)) and ra.losses != rc.losses  # negative control: the seed matters
    assert len(ra.losses) == 3 and ra.steps == 3 * 5 and not ra.diverged and not a.training


def test_min_batch_skips_a_last_batch_batchnorm_cannot_take():
    # 129 = 4 * 32 + 1: the last batch of each epoch holds one sample
    _, r = _run(model=_mlp(batchnorm=True), n=129, min_batch=2)
    assert r.steps == 3 * 4 and all(math.isfinite(v) for v in r.losses)
    with pytest.raises(ValueError, match="more than 1 value per channel"):  # negative control: no skipping
        _run(model=_mlp(batchnorm=True), n=129)


def test_a_non_finite_loss_stops_training_and_marks_it_diverged():
    calls, epochs_seen = [0], []

    def blows_up(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        loss = _ce(model, xb, yb)
        return loss * math.inf if calls[0] == 7 else loss  # 7th batch: epoch 1 (5 batches an epoch)

    model = _mlp()
    sched = torch.optim.lr_scheduler.StepLR(opt := torch.optim.Adam(model.parameters()), step_size=1)
    x, y = _data()
    r = fit(model, x, y, loss_fn=blows_up, optimizer=opt, epochs=4, batch=32, epoch_scheduler=sched,
            stop_on_nonfinite=True, on_epoch=lambda e, v: epochs_seen.append(e))
    assert r.diverged and len(r.losses) == 2 and r.steps == 5 + 1
    assert epochs_seen == [0, 1] and sched.last_epoch == 2  # the diverged epoch still reports and steps
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the inf loss was never backpropagated
    # negative controls: a finite loss runs every epoch; without the stop, training goes on
    _, finite = _run(epochs=4, stop_on_nonfinite=True)
    calls[0] = 0
    _, unstopped = _run(epochs=4, loss_fn=blows_up)
    assert not finite.diverged and len(finite.losses) == 4
    assert not unstopped.diverged and len(unstopped.losses) == 4


def test_the_reported_loss_is_the_second_of_the_pair_and_the_first_is_trained():
    plain_model, plain = _run()

    def pair(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss = _ce(model, xb, yb)
        return loss, torch.tensor(7.0)

    paired_model, paired = _run(loss_fn=pair)
    assert paired.losses == [7.0, 7.0, 7.0] and plain.losses != paired.losses  # plain reports its own loss
    assert _same(_weights(plain_model), _weights(paired_model))  # the backprop loss drove the same updates
