"""CBNet's parts: easy/hard labels, per-class targets (brute force), conversion pairs, the AE
learning its targets, the guarded fallback, MAC counts, device costs and the perturbation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dnninfer.adaptive.autoencoder import build_autoencoder
from dnninfer.adaptive.branchynet import b_lenet
from dnninfer.adaptive.cbnet import (
    CBNet,
    GuardedCBNet,
    choose_threshold,
    conversion_pairs,
    easiest_targets,
    kmeans_targets,
    label_easy,
)
from dnninfer.adaptive.measure import device_costs, macs, perturb
from dnninfer.adaptive.train import train_autoencoder
from dnninfer.bench.harness import pinned_threads


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread, as the bench uses: tiny ops oversubscribe a loaded 2-core box."""
    with pinned_threads(1):
        yield


def _toy(n: int = 60, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 6, 6, generator=g)
    y = torch.arange(n) % classes
    entropy = torch.rand(n, generator=g)
    return x, y, entropy


def test_easy_means_entropy_strictly_below_threshold():
    ent = torch.tensor([0.0, 0.1, 0.2, 0.3])
    assert label_easy(ent, 0.2).tolist() == [True, True, False, False]
    assert choose_threshold(torch.arange(101.0), 0.8) == pytest.approx(80.0)


def test_targets_are_the_lowest_entropy_easy_image_of_each_class():
    x, y, entropy = _toy()
    easy = label_easy(entropy, 0.6)
    # make the lowest-entropy image of class 0 hard, so "easy" must be respected, not just entropy
    lowest0 = int(torch.nonzero(y == 0).flatten()[entropy[y == 0].argmin()])
    easy[lowest0] = False
    t = easiest_targets(x, y, entropy, easy)
    for c in range(3):
        candidates = [i for i in range(len(y)) if y[i] == c and easy[i]]
        best = min(candidates, key=lambda i: (float(entropy[i]), i))
        assert int(t.index[c]) == best
        assert torch.equal(t.images[c], x[best])
    assert int(t.index[0]) != lowest0
    assert torch.equal(t.of_sample, y) and t.fallback == ()


def test_class_without_easy_images_falls_back_to_its_lowest_entropy_image():
    x, y, entropy = _toy()
    easy = torch.ones(len(y), dtype=torch.bool)
    easy[y == 2] = False
    t = easiest_targets(x, y, entropy, easy)
    members = torch.nonzero(y == 2).flatten()
    assert t.fallback == (2,) and int(t.index[2]) == int(members[entropy[members].argmin()])


def test_kmeans_targets_are_easy_images_of_the_same_class():
    x, y, entropy = _toy(90)
    easy = label_easy(entropy, 0.7)
    t = kmeans_targets(x, y, entropy, easy, k=3, seed=0)
    assert len(t.index) == 9
    assert bool(easy[t.index].all())
    assert torch.equal(y[t.index], t.label)
    assert torch.equal(t.label[t.of_sample], y)  # every image is mapped to a target of its own class
    one = kmeans_targets(x, y, entropy, easy, k=1, seed=0)
    assert torch.equal(one.index, easiest_targets(x, y, entropy, easy).index)


def test_paper_pairs_keep_every_hard_image_and_match_the_easy_count():
    x, y, entropy = _toy(90)
    easy = label_easy(entropy, 0.7)
    t = easiest_targets(x, y, entropy, easy)
    inputs, goals = conversion_pairs(x, y, easy, t, "paper")
    per_class = [max(int(((y == c) & easy).sum()), int(((y == c) & ~easy).sum())) for c in range(3)]
    assert len(inputs) == sum(per_class)
    label_of = {tuple(r.flatten().tolist()): int(c) for r, c in zip(x, y, strict=True)}
    kept = [tuple(r.flatten().tolist()) for r in inputs]
    assert {tuple(r.flatten().tolist()) for r in x[~easy]} <= set(kept)
    for row, goal in zip(kept, goals, strict=True):
        assert torch.equal(goal, t.images[label_of[row]])
    all_in, all_goal = conversion_pairs(x, y, easy, t, "all")
    assert len(all_in) == len(y) and torch.equal(all_goal, t.images[y])


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_autoencoder_learns_to_map_images_to_their_class_target(kind):
    g = torch.Generator().manual_seed(0)
    targets = (torch.rand(3, 1, 12, 12, generator=g) > 0.5).float()
    y = torch.arange(120) % 3
    inputs = (targets[y] + 0.3 * torch.randn(120, 1, 12, 12, generator=g)).clamp(0, 1)
    ae, l1 = build_autoencoder(kind, (1, 12, 12), seed=0)
    with torch.no_grad():
        before = float(((ae(inputs) - targets[y]) ** 2).mean())
    history = train_autoencoder(ae, inputs, targets[y], epochs=40, lr=3e-3, batch=32, activity_l1=l1)
    with torch.no_grad():
        after = float(((ae(inputs) - targets[y]) ** 2).mean())
    assert history[-1] < 0.5 * history[0]
    assert after < 0.2 * before


class _Scripted(nn.Module):
    """Logits chosen by the first pixel: > 0.5 -> confident class 3, else uniform (max entropy)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        confident = x.flatten(1)[:, 0] > 0.5
        logits = torch.zeros(x.shape[0], 10)
        logits[confident, 3] = 50.0
        return logits


class _Const(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], 10)
        out[:, 7] = 5.0
        return out


def test_guarded_cbnet_falls_back_to_the_full_network_when_unsure():
    x = torch.rand(30, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    confident = x.flatten(1)[:, 0] > 0.5
    guarded = GuardedCBNet(nn.Identity(), _Scripted(), _Const(), threshold=0.5)
    out = guarded.decide(x)
    assert torch.equal(out.fell_back, ~confident) and 0 < int(confident.sum()) < 30
    assert bool((out.logits.argmax(1)[confident] == 3).all())
    assert bool((out.logits.argmax(1)[~confident] == 7).all())
    for i in range(len(x)):  # batch-1 fast path agrees
        one = guarded.decide(x[i: i + 1])
        assert bool(one.fell_back[0]) == bool(~confident[i]) and torch.equal(one.logits[0], out.logits[i])
    never = GuardedCBNet(nn.Identity(), _Scripted(), _Const(), threshold=math.inf).decide(x)
    always = GuardedCBNet(nn.Identity(), _Scripted(), _Const(), threshold=0.0).decide(x)
    assert not bool(never.fell_back.any()) and bool(always.fell_back.all())


def test_cbnet_costs_fewer_macs_than_the_full_dnn():
    net = b_lenet((1, 28, 28))
    shape = (1, 28, 28)
    full = macs(net.main_path(), shape)
    dense = macs(CBNet(build_autoencoder("dense", shape)[0], net.light()), shape)
    conv = macs(CBNet(build_autoencoder("conv", shape)[0], net.light()), shape)
    paper_mnist_ae = macs(build_autoencoder("dense_mnist", shape)[0], shape)
    assert conv < dense < full
    assert dense - macs(net.light(), shape) == pytest.approx(0.76e6, rel=0.01)  # research note §1.4
    assert paper_mnist_ae == pytest.approx(1.06e6, rel=0.01)
    assert paper_mnist_ae + macs(net.light(), shape) > full  # the MNIST notebook's AE is not cheaper


def test_device_costs_scale_host_time_by_pu_rate():
    from dnninfer.cost import load_device

    host, rpi4 = load_device("host"), load_device("rpi4")
    a = device_costs(1e-3, [host, rpi4])
    b = device_costs(2e-3, [host, rpi4])
    assert a["host"]["seconds"] == pytest.approx(1e-3)
    assert a["rpi4"]["seconds"] == pytest.approx(1e-3 / 0.25)
    # linear model: half the time is half the energy
    assert b["rpi4"]["joules"] == pytest.approx(2 * a["rpi4"]["joules"])
    assert a["rpi4"]["joules"] == pytest.approx(4e-3 * (2.7 + 3.7 / 4))


def test_perturb_changes_exactly_the_requested_share_reproducibly():
    x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out, mask = perturb(x, 0.25, seed=3)
    again, mask2 = perturb(x, 0.25, seed=3)
    assert int(mask.sum()) == 10 and torch.equal(out, again) and torch.equal(mask, mask2)
    assert torch.equal(out[~mask], x[~mask]) and not torch.equal(out[mask], x[mask])
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.equal(perturb(x, 0.0)[0], x)
