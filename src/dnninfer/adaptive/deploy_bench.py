"""The bench's deploy section: every method on every runtime, per backbone, plus the speedup model.

Per backbone (B-LeNet, the paper's; B-AlexNet, whose main path is ~12x its exit 1) every method
is timed on eager, frozen TorchScript and ONNX Runtime in ONE interleaved `compare` per batch
size, and speedups are taken pairwise within a runtime (``median(full) / median(cbnet)``).

The speedup model (what the plot draws), all costs relative to the main path's (the full net's)::

    S_vs_branchynet(a, h) = (e1 + h * (never - e1)) / (a + light)      S_vs_full(a) = 1 / (a + light)

``a`` = autoencoder cost / main-path cost, ``h`` = share of hard inputs (those BranchyNet does not
let out at exit 1), ``e1`` / ``never`` = BranchyNet's cost when every input leaves at exit 1 /
none does (``never`` includes the wasted exit-1 head), ``light`` = the net cut after exit 1. With
MACs as the cost this is the overhead-free ideal; with measured batch-1 times of the deploy
runtime it is the model the measured points must sit on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from dnninfer.adaptive.branchynet import early_exit
from dnninfer.adaptive.deploy import RUNTIMES, deploy_methods
from dnninfer.adaptive.measure import Method, macs, perturb, time_methods
from dnninfer.adaptive.pipeline import Trained
from dnninfer.bench.harness import Timing, ratios

__all__ = ["DEPLOY_RUNTIME", "deploy_section", "model_speedup", "speedup_model_inputs"]

#: the runtime whose figures fill the ``*_by_backbone`` keys
DEPLOY_RUNTIME = "onnxruntime"
#: shares of perturbed test images (rotation, shift, noise) for the measured points at larger h
PERTURBED = (0.5, 1.0)
_TIMED = ("full", "branchynet", "light", "cbnet", "bnet_exit1_always", "bnet_exit1_never")


def model_speedup(a: Any, h: Any, costs: dict[str, float]) -> Any:
    """CBNet's modelled speedup over BranchyNet at AE cost share ``a`` and hard share ``h``
    (numpy arrays or floats); costs relative to the main path (``light``, ``e1``, ``never``)."""
    return (costs["e1"] + h * (costs["never"] - costs["e1"])) / (a + costs["light"])


def speedup_model_inputs(ms: dict[str, Method], t1: dict[str, Timing] | None = None) -> dict[str, Any]:
    """The model's coordinates and costs for one backbone: by MACs and, given ``t1``, by time."""
    full = ms["full"].macs_per_image
    out: dict[str, Any] = {
        "a_macs": ms["cbnet"].facts["ae_macs"] / full,
        "h": 1.0 - ms["branchynet"].facts["exit1_fraction"],
        "costs_macs": {"light": ms["light"].macs_per_image / full, "e1": ms["bnet_exit1_always"].macs_per_image / full,
                       "never": ms["bnet_exit1_never"].macs_per_image / full},
    }
    if t1 is not None:
        f = t1["full"].median
        out["a_time"] = max(t1["cbnet"].median - t1["light"].median, 0.0) / f
        out["costs_time"] = {"light": t1["light"].median / f, "e1": t1["bnet_exit1_always"].median / f,
                             "never": t1["bnet_exit1_never"].median / f}
    return out


def _runtime_fns(trained: Trained, ms: dict[str, Method], runtimes: tuple[str, ...]
                 ) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    fns: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    for rt in runtimes:
        names = [k for k in ms if k in _TIMED or (k.startswith("cbnet_") and k != "cbnet_guarded")]
        dep = deploy_methods(trained, rt, only=names)
        fns.update({f"{rt}/{k}": f for k, f in dep.items()})
    return fns


def _speedups(t: dict[str, Timing], rt: str) -> dict[str, Any]:
    sub = {k.split("/", 1)[1]: v for k, v in t.items() if k.startswith(f"{rt}/")}
    vs_full, vs_bn = ratios(sub, "full", n_boot=500), ratios(sub, "branchynet", n_boot=500)
    return {
        "cbnet_vs_full": vs_full["cbnet"].ratio, "cbnet_vs_full_ci95": [vs_full["cbnet"].lo, vs_full["cbnet"].hi],
        "cbnet_vs_branchynet": vs_bn["cbnet"].ratio,
        "cbnet_vs_branchynet_ci95": [vs_bn["cbnet"].lo, vs_bn["cbnet"].hi],
        "branchynet_vs_full": vs_full["branchynet"].ratio, "light_vs_full": vs_full["light"].ratio,
        "vs_full": {k: r.ratio for k, r in vs_full.items() if not k.startswith("bnet_")},
        "vs_branchynet": {k: r.ratio for k, r in vs_bn.items() if not k.startswith("bnet_")},
        "latency_us": {k: v.median * 1e6 for k, v in sub.items()},
    }


def _harder_points(trained: Trained, ms: dict[str, Method], fns: dict[str, Callable[[torch.Tensor], torch.Tensor]],
                   cfg: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """Measured points at larger h: BranchyNet, CBNet and the full net timed at batch 1 on the
    deploy runtime on test sets where a share of the images is perturbed (harder inputs leave
    BranchyNet later; CBNet's cost does not change, its accuracy may)."""
    tx, ty = trained.split.test_x, trained.split.test_y
    out = []
    for frac in PERTURBED:
        xp, _ = perturb(tx, frac, seed=seed + 7)
        with torch.inference_mode():
            res = early_exit(trained.bnet, xp, trained.threshold)
            acc = {k: float((ms[k].fn(xp).argmax(1) == ty).float().mean()) for k in ("full", "cbnet")}
        acc["branchynet"] = float((res.logits.argmax(1) == ty).float().mean())
        sub = {k: fns[f"{DEPLOY_RUNTIME}/{k}"] for k in ("full", "branchynet", "cbnet")}
        tp = time_methods(sub, xp, batch=1, repeats=cfg["b1_repeats"], warmup=cfg["b1_warmup"], seed=seed,
                          block=cfg["b1_block"],
                          description=f"cbnet deploy: batch 1, {frac:.0%} perturbed")
        r_full, r_bn = ratios(tp, "full", n_boot=200), ratios(tp, "branchynet", n_boot=200)
        out.append({"perturbed_fraction": frac, "h": 1.0 - float((res.exit == 0).float().mean()),
                    "cbnet_vs_branchynet": r_bn["cbnet"].ratio, "cbnet_vs_full": r_full["cbnet"].ratio,
                    "accuracy": acc})
    return out


#: methods timed on a testbed PU (the deploy runtime only: a throttled worker is slow)
_ON_TESTBED = ("full", "branchynet", "light", "cbnet")


def testbed_pu(text: str) -> str:
    """argparse type of ``--testbed-pu``: a PU of the running testbed, checked before any training."""
    import argparse

    from dnninfer.errors import UserError
    from dnninfer.testbed.core import TestbedState

    try:
        state = TestbedState.load()
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if text not in state.quotas:
        raise argparse.ArgumentTypeError(f"{text!r} is not a PU of the testbed ({state.cluster}): "
                                         f"{', '.join(state.quotas)}")
    return text


#: seconds one testbed sample must span: many CFS periods (a few ms each), so the PU's quota is seen
#: as its average share. A block of 25 batch-1 calls (~1 ms) fits inside one period's quota and
#: ran unthrottled: BranchyNet measured faster on the emulated Pi than on the host.
SUSTAIN_S = 0.3
TESTBED_REPEATS = 9


def time_on_this_pu(trained: Trained, cfg: dict[str, Any], seed: int) -> dict[str, Any]:
    """Runs ON a testbed PU: compile the methods for the deploy runtime there and time them at
    batch 1 in blocks of inputs long enough to be sustained (``SUSTAIN_S``); raw (dilated) samples
    in seconds per input, and the block size."""
    fns = deploy_methods(trained, DEPLOY_RUNTIME, only=_ON_TESTBED)
    x = trained.split.test_x
    probe = time_methods(fns, x, batch=1, repeats=3, warmup=1, seed=seed, block=cfg["b1_block"], progress=False)
    block = max(cfg["b1_block"], math.ceil(SUSTAIN_S / min(t.median for t in probe.values())))
    t = time_methods(fns, x, batch=1, repeats=min(cfg["b1_repeats"], TESTBED_REPEATS), warmup=1, seed=seed,
                     block=block, progress=False)
    return {"block": block, "samples": {k: list(v.samples) for k, v in t.items()}}


def testbed_section(runs: dict[str, tuple[Trained, dict[str, Method]]], target: str, cfg: dict[str, Any],
                    seed: int) -> dict[str, Any]:
    """Issue 20 (d): the deploy-runtime comparison at batch 1 on a throttled edge-class worker, a
    PU of the running testbed (`dnninfer testbed up CLUSTER`; one thread in a cgroup whose quota is
    the PU's throughput / the dilation D). Times are divided by D; ratios are D-free."""
    from dnninfer.errors import UserError
    from dnninfer.testbed.core import TestbedState
    from dnninfer.testbed.runtime import TestbedRuntime

    state = TestbedState.load()
    if target not in state.quotas:
        raise UserError(f"--testbed-pu {target}: the testbed ({state.cluster}) has PUs {', '.join(state.quotas)}")
    rt = TestbedRuntime(state)
    out: dict[str, Any] = {"target": target, "cluster": state.cluster, "dilation": state.dilation,
                           "quota_host_cores": state.quotas[target]["quota_us"] / state.quotas[target]["period_us"],
                           "by_backbone": {}}
    try:
        for backbone, (trained, _ms) in runs.items():
            got = rt.call(target, time_on_this_pu, trained, cfg, seed)
            t = {f"{DEPLOY_RUNTIME}/{k}": Timing.from_samples([x / state.dilation for x in v])
                 for k, v in got["samples"].items()}
            out["by_backbone"][backbone] = {**_speedups(t, DEPLOY_RUNTIME), "block": got["block"]}
    finally:
        rt.shutdown()
    return out


def deploy_section(runs: dict[str, tuple[Trained, dict[str, Method]]], cfg: dict[str, Any], seed: int,
                   runtimes: tuple[str, ...] = RUNTIMES, testbed_pu: str | None = None) -> dict[str, Any]:
    """``runs``: backbone → (trained models, their eager `measure.methods`). Times every method on
    every runtime at batch 1 and 64 and returns speedups per backbone, runtime and batch, and the
    speedup model's inputs."""
    per: dict[str, Any] = {}
    for backbone, (trained, ms) in runs.items():
        fns = _runtime_fns(trained, ms, runtimes)
        tx = trained.split.test_x
        t1 = time_methods(fns, tx, batch=1, repeats=cfg["b1_repeats"], warmup=cfg["b1_warmup"], seed=seed,
                          block=cfg["b1_block"], description=f"cbnet deploy {backbone}: batch 1")
        t64 = time_methods(fns, tx, batch=64, repeats=cfg["b64_repeats"], warmup=cfg["b64_warmup"], seed=seed,
                           description=f"cbnet deploy {backbone}: batch 64") if len(tx) >= 64 else {}
        by_rt: dict[str, Any] = {}
        for rt in runtimes:
            by_rt[rt] = {"b1": _speedups(t1, rt)}
            if t64:
                by_rt[rt]["b64"] = _speedups(t64, rt)
        dep_t1 = {k.split("/", 1)[1]: v for k, v in t1.items() if k.startswith(f"{DEPLOY_RUNTIME}/")}
        per[backbone] = {
            "runtimes": by_rt,
            "accuracy": {k: ms[k].accuracy for k in ("full", "branchynet", "light", "cbnet")},
            "macs_per_image": {k: ms[k].macs_per_image for k in ("full", "branchynet", "light", "cbnet")},
            "ae": trained.primary_ae, "ae_macs": ms["cbnet"].facts["ae_macs"],
            "exit1_macs": ms["bnet_exit1_always"].macs_per_image,
            "main_path_macs": macs(trained.full, trained.split.image_shape),
            "model": speedup_model_inputs(ms, dep_t1),
            "harder": _harder_points(trained, ms, fns, cfg, seed),
        }
    b1 = {b: p["runtimes"][DEPLOY_RUNTIME]["b1"] for b, p in per.items()}
    ours = {
        "deploy_runtime": DEPLOY_RUNTIME,
        "speedup_vs_full_b1_by_backbone": {b: v["cbnet_vs_full"] for b, v in b1.items()},
        "speedup_vs_branchynet_b1_by_backbone": {b: v["cbnet_vs_branchynet"] for b, v in b1.items()},
        "deploy_speedups": {b: {rt: {bs: {k: v for k, v in r.items() if k != "latency_us"} for bs, r in x.items()}
                                for rt, x in p["runtimes"].items()} for b, p in per.items()},
    }
    if testbed_pu:
        tb = testbed_section(runs, testbed_pu, cfg, seed)
        ours["testbed"] = {k: v for k, v in tb.items() if k != "by_backbone"}
        ours["speedup_vs_full_b1_testbed_by_backbone"] = {b: v["cbnet_vs_full"] for b, v in tb["by_backbone"].items()}
        ours["speedup_vs_branchynet_b1_testbed_by_backbone"] = {b: v["cbnet_vs_branchynet"]
                                                                 for b, v in tb["by_backbone"].items()}
        for b, v in tb["by_backbone"].items():
            per[b]["testbed"] = v
    return {"ours": ours, "per_backbone": per}

