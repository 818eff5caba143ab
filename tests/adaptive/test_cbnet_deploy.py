"""The deploy path (one compiled graph per segment: TorchScript, ONNX Runtime) answers what eager
PyTorch answers for every method, batch 1 and batched; B-AlexNet trains on digits; the speedup
model and the bench's deploy keys."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from dnninfer.adaptive.branchynet import ChannelLRN, b_alexnet, build_backbone, exit_outputs
from dnninfer.adaptive.deploy import compile_segment, deploy_methods
from dnninfer.adaptive.deploy_bench import model_speedup
from dnninfer.adaptive.measure import exit_macs, macs, methods
from dnninfer.adaptive.pipeline import CBNetConfig, fit, load_split
from dnninfer.adaptive.train import accuracy, train_exits
from dnninfer.bench.harness import pinned_threads

RUNTIMES = ("torchscript", "onnxruntime")


@pytest.fixture(autouse=True)
def _one_thread():
    with pinned_threads(1):
        yield


@pytest.fixture(scope="module")
def tiny():
    """A barely trained B-AlexNet CBNet: enough for both exits to be taken on the test images."""
    with pinned_threads(1):
        trained = fit(CBNetConfig(backbone="balexnet", autoencoders=("conv", "dense_small"), epochs=1, ae_epochs=1,
                                  lr=3e-3, train_limit=200, test_limit=64))
        return trained, methods(trained)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_deployed_method_equals_eager_at_batch_1_and_64(tiny, runtime):
    trained, ms = tiny
    x = trained.split.test_x
    exits = exit_outputs(trained.bnet, x).decide([trained.threshold]).exit
    assert 0 < int((exits == 0).sum()) < len(x)  # both BranchyNet exits are exercised
    deployed = deploy_methods(trained, runtime)
    assert set(deployed) == set(ms)
    with torch.inference_mode():
        for name, fn in deployed.items():
            ref64, got64 = ms[name].fn(x), fn(x)
            ref1 = torch.cat([ms[name].fn(x[i: i + 1]) for i in range(16)])
            got1 = torch.cat([fn(x[i: i + 1]) for i in range(16)])
            torch.testing.assert_close(got64, ref64, atol=1e-4, rtol=1e-4, msg=name)
            torch.testing.assert_close(got1, ref1, atol=1e-4, rtol=1e-4, msg=name)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_negative_control_a_perturbed_weight_is_caught(tiny, runtime):
    trained, _ = tiny
    x = trained.split.test_x
    other = copy.deepcopy(trained.full)
    with torch.no_grad():
        next(p for p in other.parameters() if p.dim() == 4).add_(0.05)
    seg = compile_segment(other, x[:1], runtime)
    with torch.inference_mode():
        assert not torch.allclose(seg(x)[0], trained.full(x), atol=1e-4, rtol=1e-4)


def test_channel_lrn_equals_torch_local_response_norm():
    x = torch.randn(3, 16, 6, 6) * 20
    for beta in (0.75, 0.6):
        ref = nn.LocalResponseNorm(3, alpha=5e-5, beta=beta)(x)
        torch.testing.assert_close(ChannelLRN(16, 3, alpha=5e-5, beta=beta)(x), ref, atol=1e-5, rtol=1e-5)


def test_b_alexnet_main_path_is_much_heavier_than_exit_1():
    net = b_alexnet()
    e1, end = exit_macs(net, (1, 28, 28))
    assert macs(net.main_path(), (1, 28, 28)) >= 10 * e1 and end > e1


def test_b_alexnet_trains_to_an_accuracy_floor_on_digits_in_a_few_epochs():
    """5 epochs, about 3 s on one thread: 97.6% with seed 0 (3 epochs gave 90.6%, too close)."""
    split = load_split(CBNetConfig(backbone="balexnet", seed=0))
    assert tuple(split.image_shape) == (1, 28, 28)
    net = build_backbone("balexnet", split.image_shape, split.num_classes, seed=0)
    train_exits(net, split.train_x, split.train_y, weights=[0.0, 1.0], epochs=5, lr=3e-3, batch=32, seed=0)
    assert accuracy(net.main_path().eval(), split.test_x, split.test_y) >= 0.90


def test_speedup_model_endpoints():
    costs = {"light": 0.1, "e1": 0.1, "never": 1.05}
    assert model_speedup(0.0, 1.0, costs) == pytest.approx(10.5)  # AE free, all hard: never / light
    assert model_speedup(0.1, 0.0, costs) == pytest.approx(0.5)  # all easy: BranchyNet pays only exit 1



def test_batch1_blocks_time_the_mean_over_inputs_not_the_easy_mode(monkeypatch):
    """An input-dependent method (4x the cost on every fifth input, like an early-exit net whose
    hard inputs run the whole net) is timed by its mean cost per input when samples are blocks;
    one call per sample (the negative control) reports its easy-input cost instead. The clock is
    a fake one the methods advance, so the test times nothing."""
    import types

    from dnninfer.adaptive.measure import time_methods
    from dnninfer.bench import harness

    now = [0]
    monkeypatch.setattr(harness, "time", types.SimpleNamespace(perf_counter_ns=lambda: now[0]))
    x = torch.zeros(40, 1)
    x[::5] = 1.0  # every fifth input is hard

    def early_exit_like(xb: torch.Tensor) -> None:
        now[0] += 4000 if float(xb[0, 0]) else 1000

    def constant(xb: torch.Tensor) -> None:
        now[0] += 1600  # the other's mean: 0.8 * 1000 + 0.2 * 4000

    fns = {"ee": early_exit_like, "c": constant}
    blocks = time_methods(fns, x, batch=1, repeats=8, warmup=0, block=10)
    assert blocks["ee"].median == pytest.approx(blocks["c"].median) == pytest.approx(1.6e-6)
    single = time_methods(fns, x, batch=1, repeats=40, warmup=0)
    assert single["ee"].median == pytest.approx(1e-6)  # the easy mode, not the mean
    with pytest.raises(ValueError, match="block"):
        time_methods(fns, x, batch=1, repeats=1, warmup=0, block=0)
