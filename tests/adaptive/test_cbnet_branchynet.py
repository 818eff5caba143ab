"""BranchyNet: B-LeNet's shapes and MACs match the paper's code, entropy exits respect the threshold
(batched and batch-1 paths alike), sweeps agree with real early exit, joint-loss weights matter."""

from __future__ import annotations

import math

import pytest
import torch

from dnninfer.adaptive.branchynet import (
    b_cnn,
    b_lenet,
    default_sweep_grid,
    early_exit,
    exit_outputs,
    softmax_entropy,
    threshold_sweep,
)
from dnninfer.adaptive.measure import exit_macs, macs
from dnninfer.adaptive.train import train_exits
from dnninfer.bench.harness import pinned_threads


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread, as the bench uses: tiny ops oversubscribe a loaded 2-core box."""
    with pinned_threads(1):
        yield


def _net_and_inputs(seed: int = 0):
    torch.manual_seed(seed)
    net = b_lenet((1, 28, 28)).eval()
    x = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    return net, x


def test_entropy_is_zero_for_certain_and_log_c_for_uniform():
    logits = torch.tensor([[100.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    ent = softmax_entropy(logits)
    assert ent[0] < 1e-6
    assert ent[1] == pytest.approx(math.log(4))


def test_blenet_matches_the_papers_layer_sizes_and_macs():
    net = b_lenet((1, 28, 28))
    assert net.heads[0][-1].in_features == 640  # kunglab lenet_mnist.py: Linear(640, 10)
    assert net.stages[1][-1].in_features == 720  # Linear(720, 84)
    # conv1 0.11 M + conv2 0.36 M + conv3 0.61 M + FC 0.06 M (research note §1.4), exit-1 path 0.22 M
    assert macs(net.main_path(), (1, 28, 28)) == 112_500 + 361_250 + 605_000 + 60_480 + 840
    assert macs(net.light(), (1, 28, 28)) == 112_500 + 101_250 + 6_400
    per_exit = exit_macs(net, (1, 28, 28))
    assert per_exit == [220_150, 220_150 + 361_250 + 605_000 + 60_480 + 840]


def test_exit_one_taken_exactly_when_entropy_is_below_threshold():
    net, x = _net_and_inputs()
    with torch.no_grad():
        first, last = net(x)
    ent = softmax_entropy(first)
    t = float(ent.median())
    res = early_exit(net, x, t)
    below = ent < t
    assert 0 < int(below.sum()) < len(x)  # the check below must see both outcomes
    assert torch.equal(res.exit == 0, below)
    torch.testing.assert_close(res.logits[below], first[below])
    torch.testing.assert_close(res.logits[~below], last[~below])


def test_batch_one_path_makes_the_same_decisions():
    net, x = _net_and_inputs(1)
    with torch.no_grad():
        t = float(softmax_entropy(net(x)[0]).median())
    batched = early_exit(net, x, t)
    for i in range(len(x)):
        single = early_exit(net, x[i: i + 1], t)
        assert int(single.exit) == int(batched.exit[i])
        torch.testing.assert_close(single.logits[0], batched.logits[i])


def test_threshold_extremes_are_negative_controls():
    net, x = _net_and_inputs(2)
    assert bool((early_exit(net, x, 0.0).exit == 1).all())  # entropy >= 0: nobody leaves at exit 1
    assert bool((early_exit(net, x, math.inf).exit == 0).all())


def test_sweep_decisions_match_early_exit_and_exit_share_grows_with_t():
    net, x = _net_and_inputs(3)
    y = torch.randint(0, 10, (len(x),), generator=torch.Generator().manual_seed(3))
    outs = exit_outputs(net, x)
    grid = default_sweep_grid(outs.entropies[0], 8)
    points = threshold_sweep(outs, y, grid)
    shares = [p.exit1_fraction for p in points]
    assert shares == sorted(shares) and shares[0] == 0.0 and shares[-1] == 1.0
    for t in grid[1:-1]:
        real = early_exit(net, x, t)
        assert torch.equal(outs.decide([t]).exit, real.exit)
        torch.testing.assert_close(outs.decide([t]).logits, real.logits)


def test_zero_weight_exit_is_not_trained_and_joint_training_learns():
    torch.manual_seed(0)
    net = b_cnn((1, 8, 8))
    x = torch.rand(64, 1, 8, 8)
    y = torch.randint(0, 10, (64,))
    branch_before = [p.clone() for p in net.heads[0].parameters()]
    losses = train_exits(net, x, y, weights=[0.0, 1.0], epochs=3, batch=16)
    assert all(torch.equal(a, b) for a, b in zip(branch_before, net.heads[0].parameters(), strict=True))
    joint = train_exits(net, x, y, weights=[1.0, 1.0], epochs=15, batch=16)
    assert joint[-1] < joint[0] and losses[-1] < losses[0]
    assert not all(torch.equal(a, b) for a, b in zip(branch_before, net.heads[0].parameters(), strict=True))
