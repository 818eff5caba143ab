"""Measure full DNN, BranchyNet and CBNet the same way: same framework (PyTorch eager, fp32),
same harness (`bench.harness.compare`: interleaved rounds, one thread), same batch sizes.

What is MEASURED here: accuracy on the test split, wall-clock latency on THIS host (median and
p90 over single calls; per image = call time / batch size), and throughput (batch / median).
What is PREDICTED: latency and energy on the device profiles (configs/devices): device time =
host time / the PU's rate relative to one host core (one lane: we time one thread), and energy
from `cost.energy` (PU active power x busy time + board idle x wall time). Under that linear
model a method's energy saving on a device equals its latency saving there, so the device energy
figures carry no information beyond the measured host latency and the profile's power figures.

The caveat of the CBNet notebooks (research/cbnet_and_rns.md §1.6): they timed the AE with one
batched Keras ``predict`` over the whole test set but the classifiers inside Chainer at batch
10, so part of the reported speedup came from how timing was done. Here every method is timed
call by call with the same batch, in the same process and thread, in shuffled interleaved order.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dnninfer.adaptive.branchynet import (
    MultiExitNet,
    early_exit,
    early_exit_unchecked,
    exit_outputs,
    softmax_entropy,
)
from dnninfer.adaptive.pipeline import Trained
from dnninfer.bench.harness import Timing, compare, pinned_threads

__all__ = [
    "MAC_KINDS",
    "Method",
    "device_costs",
    "exit_macs",
    "macs",
    "methods",
    "perturb",
    "time_methods",
]

#: Node kinds whose FLOPs are multiply-accumulates (graph/flops.py: FLOPs = 2 x MACs for these).
MAC_KINDS = frozenset({"conv", "linear", "matmul"})


def macs(module: nn.Module, image_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass on one input of ``image_shape`` (conv, linear,
    matmul nodes of the captured graph; element-wise ops, pooling and activations not counted)."""
    from dnninfer.graph import capture

    was_training = module.training
    g = capture(module, (torch.zeros(1, *image_shape),))
    module.train(was_training)
    return sum(n.flops for n in g.compute_nodes() if n.kind in MAC_KINDS) // 2


def exit_macs(net: MultiExitNet, image_shape: Sequence[int]) -> list[int]:
    """MACs an input costs when it leaves at exit k: stages 0..k plus every head 0..k it tried."""
    x = torch.zeros(1, *image_shape)
    spent, out = 0, []
    with torch.no_grad():
        for stage, head in zip(net.stages, net.heads, strict=True):
            spent += macs(stage, x.shape[1:])
            x = stage(x)
            spent += macs(head, x.shape[1:])
            out.append(spent)
    return out


@dataclass
class Method:
    """One way to classify: the callable timed (logits out) and its test-set facts."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    description: str
    accuracy: float = math.nan
    macs_per_image: float = math.nan
    facts: dict[str, float] = field(default_factory=dict)


def methods(trained: Trained) -> dict[str, Method]:
    """Full DNN, BranchyNet, truncated net, CBNet per AE, guarded CBNet, plus the two BranchyNet
    endpoints (everyone leaves at exit 1 / nobody does) that anchor the threshold sweep.

    Accuracy comes from the batched path (the one timed at batch 64) over the whole test split.
    """
    s = trained.split
    shape = s.image_shape
    tx, ty = s.test_x, s.test_y
    bnet, t = trained.bnet, trained.threshold
    last = bnet.num_exits - 1
    per_exit = exit_macs(bnet, shape)
    full_macs = macs(trained.full, shape)
    light_macs = macs(trained.light, shape)

    def bnet_fn(ts: list[float]) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: early_exit_unchecked(bnet, x, ts).logits

    out: dict[str, Method] = {
        "full": Method("full", trained.full, f"{trained.config.backbone} main path, trained alone (the paper's LeNet)"),
        "branchynet": Method("branchynet", bnet_fn([t] * last), f"early exit at entropy < T = {t:.3g} nats"),
        "light": Method("light", trained.light, "network cut after exit 1, no AE (the paper's truncated B-LeNet)"),
    }
    for kind, cb in trained.cbnets.items():
        name = trained.method_name(kind)
        out[name] = Method(name, cb, f"{kind} converting AE + light classifier")
    out["cbnet_guarded"] = Method("cbnet_guarded", trained.guarded,
                                  f"{trained.primary_ae} CBNet, full DNN on the original when converted entropy >= T")
    out["bnet_exit1_always"] = Method("bnet_exit1_always", bnet_fn([math.inf] * last),
                                      "BranchyNet with T = inf: every input leaves at exit 1 (sweep anchor)")
    out["bnet_exit1_never"] = Method("bnet_exit1_never", bnet_fn([0.0] * last),
                                     "BranchyNet with T = 0: exit 1 computed, never taken (sweep anchor)")

    with torch.inference_mode():
        outs = exit_outputs(bnet, tx)
        for m in out.values():
            m.accuracy = float((_batched(m.fn, tx).argmax(1) == ty).float().mean())
        res = early_exit(bnet, tx, t)
        f1 = float((res.exit == 0).float().mean())
        out["full"].macs_per_image = full_macs
        out["light"].macs_per_image = light_macs
        out["branchynet"].macs_per_image = float(sum(per_exit[k] * float((res.exit == k).float().mean())
                                                     for k in range(bnet.num_exits)))
        out["branchynet"].facts["exit1_fraction"] = f1
        out["bnet_exit1_always"].macs_per_image = per_exit[0]
        out["bnet_exit1_never"].macs_per_image = per_exit[-1]
        for kind, cb in trained.cbnets.items():
            name = trained.method_name(kind)
            ae_macs = macs(cb.ae, shape)
            out[name].macs_per_image = ae_macs + macs(cb.light, shape)
            out[name].facts["ae_macs"] = ae_macs
            ent = softmax_entropy(_batched(cb, tx))
            out[name].facts["exit1_fraction_converted"] = float((ent < t).float().mean())
        fb = float(trained.guarded.decide(tx).fell_back.float().mean())
        g = out["cbnet_guarded"]
        g.macs_per_image = out["cbnet"].macs_per_image + fb * full_macs
        g.facts["fallback_fraction"] = fb
        out["light"].facts["exit1_fraction"] = float((outs.entropies[0] < t).float().mean())
    return out


def _batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    return torch.cat([fn(x[i: i + batch]) for i in range(0, len(x), batch)])


def time_methods(
    fns: dict[str, Callable[[torch.Tensor], Any]],
    x: torch.Tensor,
    *,
    batch: int,
    repeats: int,
    warmup: int,
    seed: int = 0,
    threads: int = 1,
    block: int = 1,
    description: str = "timing",
    progress: bool = True,
) -> dict[str, Timing]:
    """Time every method on consecutive ``batch``-sized slices of ``x`` (cycling), interleaved.

    Each round calls every method once, in a shuffled order, and every method's k-th call gets
    the k-th slice, so all methods see the same inputs (the same easy/hard mix) and the same drift.

    ``block`` > 1 makes one sample the mean over ``block`` consecutive slices. For batch 1 this is
    what a data-dependent method must be timed by: with one call per sample, the median of an
    early-exit net whose inputs leave at exit 1 80% of the time IS its exit-1 latency, and the 20%
    that run the whole net never count. A block covers the easy/hard mix; the median over blocks
    still rejects the box's scheduling noise.
    """
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    n = len(x) // batch
    if n < 1:
        raise ValueError(f"need at least {batch} test images to time batch {batch}, got {len(x)}")
    slices = [x[i * batch: (i + 1) * batch].contiguous() for i in range(n)]

    def case(fn: Callable[[torch.Tensor], Any]) -> Callable[[], Any]:
        it = itertools.cycle(slices)

        def run_block() -> None:
            for _ in range(block):
                fn(next(it))

        return run_block

    with pinned_threads(threads), torch.inference_mode():
        for m in fns.values():
            if isinstance(m, nn.Module):
                m.eval()
        out = compare({k: case(f) for k, f in fns.items()}, warmup=warmup, repeats=repeats, seed=seed,
                      description=description, progress=progress)
    return {k: Timing.from_samples([v / block for v in t.samples]) for k, t in out.items()}


def device_costs(host_s: float, devices: Sequence[Any]) -> dict[str, dict[str, float]]:
    """PREDICTED seconds and joules of ``host_s`` of single-thread host work on each device's
    default PU (the one a stock framework uses): ``t = host_s / pu.rate("conv", lanes=1)``,
    ``E = energy_breakdown(device, {pu: t}, t, utilisation=1/cores for a CPU PU)``.

    op_speed factors only change data-movement ops, which carry no FLOPs, so the conv rate is
    the PU's speed. One busy core of a multi-core CPU is charged a 1/cores share of the
    cluster's active power (cost/energy.py's linear approximation)."""
    from dnninfer.cost.energy import energy_breakdown

    out = {}
    for dev in devices:
        pu = dev.default_pu
        t = host_s / pu.rate("conv", 1)
        util = {pu.name: 1.0 / pu.lanes} if pu.kind == "cpu" else None
        e = energy_breakdown(dev, {pu.name: t}, t, utilisation=util).total_j
        out[dev.name] = {"pu": pu.name, "seconds": t, "joules": e}
    return out


def perturb(x: torch.Tensor, fraction: float, seed: int = 0, *, max_rotation_deg: float = 20.0,
            max_shift: float = 0.25, noise: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Make a share of the images harder: random rotation, shift (in units of half the image
    width, so 0.25 = 1/8 of it) and Gaussian pixel noise, seeded (research/cbnet_and_rns.md §4.0,
    "controlled hard fraction"). Returns the images and the mask of perturbed ones."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    gen = torch.Generator().manual_seed(seed)
    n = len(x)
    k = round(fraction * n)
    idx = torch.randperm(n, generator=gen)[:k]
    mask = torch.zeros(n, dtype=torch.bool)
    mask[idx] = True
    out = x.clone()
    if k == 0:
        return out, mask
    angle = (torch.rand(k, generator=gen) * 2 - 1) * math.radians(max_rotation_deg)
    shift = (torch.rand(k, 2, generator=gen) * 2 - 1) * max_shift
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x[idx].shape), align_corners=False)
    moved = F.grid_sample(x[idx], grid, align_corners=False, padding_mode="zeros")
    moved = moved + noise * torch.randn(moved.shape, generator=gen)
    out[idx] = moved.clamp(0.0, 1.0)
    return out, mask
