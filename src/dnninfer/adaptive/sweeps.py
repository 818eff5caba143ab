"""BranchyNet's threshold sweep and the hard-input sweep, at MODELLED batch-1 latency.

Timing every threshold or every perturbed share would multiply the bench's timing rounds for
no new information: BranchyNet's cost at batch 1 is fully determined by how many inputs leave at
exit 1, so it is mixed from the two measured paths (always leave at exit 1, never leave) by the
exit-1 share. The hard-input sweep tests CBNet's premise (research/cbnet_and_rns.md §1): as inputs
get harder BranchyNet exits later and slows down, while CBNet's cost stays fixed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from dnninfer.adaptive.branchynet import (
    default_sweep_grid,
    early_exit,
    exit_outputs,
    softmax_entropy,
    threshold_sweep,
)
from dnninfer.adaptive.measure import Method, perturb
from dnninfer.adaptive.pipeline import Trained
from dnninfer.bench.harness import Timing

__all__ = ["HARD_FRACTIONS", "hard_fraction_sweep", "modelled_b1_ms", "threshold_rows"]

HARD_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)


def modelled_b1_ms(exit1_fraction: float, t1: Mapping[str, Timing]) -> float:
    """BranchyNet batch-1 latency (ms) mixed from its two measured paths by the exit-1 share."""
    f1 = exit1_fraction
    return (f1 * t1["bnet_exit1_always"].median + (1 - f1) * t1["bnet_exit1_never"].median) * 1e3


def threshold_rows(trained: Trained, ms: Mapping[str, Method], t1: Mapping[str, Timing]) -> list[dict[str, Any]]:
    """Accuracy, exit-1 share, MACs and modelled latency of BranchyNet over a grid of entropy
    thresholds that includes the operating one."""
    outs = exit_outputs(trained.bnet, trained.split.test_x)
    grid = sorted({*default_sweep_grid(outs.entropies[0], 20), trained.threshold})
    e1, en = ms["bnet_exit1_always"].macs_per_image, ms["bnet_exit1_never"].macs_per_image
    return [{"threshold": p.threshold if math.isfinite(p.threshold) else None, "accuracy": p.accuracy,
             "exit1_fraction": p.exit1_fraction, "macs_per_image": p.exit1_fraction * e1 + (1 - p.exit1_fraction) * en,
             "latency_ms_b1_modelled": modelled_b1_ms(p.exit1_fraction, t1),
             "operating_point": p.threshold == trained.threshold}
            for p in threshold_sweep(outs, trained.split.test_y, grid)]


def hard_fraction_sweep(trained: Trained, ms: Mapping[str, Method], t1: Mapping[str, Timing],
                        seed: int) -> list[dict[str, Any]]:
    """Per share of perturbed test images (rotation, shift, noise) and method: accuracy, MACs,
    modelled batch-1 latency, and the exit-1 (BranchyNet, CBNet) or fall-back (guarded) share."""
    rows = []
    tx, ty = trained.split.test_x, trained.split.test_y
    t = trained.threshold
    with torch.inference_mode():
        for frac in HARD_FRACTIONS:
            x, _ = perturb(tx, frac, seed=seed + 7)
            res = early_exit(trained.bnet, x, t)
            f1 = float((res.exit == 0).float().mean())
            g = trained.guarded.decide(x)
            fb = float(g.fell_back.float().mean())
            for k in ("full", "branchynet", "light", *[n for n in ms if n.startswith("cbnet")]):
                m = ms[k]
                if k == "branchynet":
                    logits, lat = res.logits, modelled_b1_ms(f1, t1)
                    mac = f1 * ms["bnet_exit1_always"].macs_per_image + (1 - f1) * ms["bnet_exit1_never"].macs_per_image
                elif k == "cbnet_guarded":
                    logits = g.logits
                    lat = (t1["cbnet"].median + fb * t1["full"].median) * 1e3
                    mac = ms["cbnet"].macs_per_image + fb * ms["full"].macs_per_image
                else:
                    logits, lat, mac = m.fn(x), t1[k].median * 1e3, m.macs_per_image
                row = {"hard_fraction": frac, "method": k, "accuracy": float((logits.argmax(1) == ty).float().mean()),
                       "latency_ms_b1_modelled": lat, "macs_per_image": mac}
                if k == "branchynet":
                    row["exit1_fraction"] = f1
                elif k == "cbnet_guarded":
                    row["fallback_fraction"] = fb
                elif k.startswith("cbnet"):
                    cb = trained.cbnets[_ae_of(trained, k)]
                    row["exit1_fraction"] = float((softmax_entropy(cb.light(cb.ae(x))) < t).float().mean())
                rows.append(row)
    return rows


def _ae_of(trained: Trained, method: str) -> str:
    return next(k for k in trained.cbnets if trained.method_name(k) == method)
