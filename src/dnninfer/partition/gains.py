"""HiDP's gain over its rivals, read the way the paper states it.

The HiDP abstract reports averages "vs relevant distributed-inference techniques": a fraction saved
(latency, energy) or gained (throughput) per case, averaged over cases. Which rivals and which
average matter, so both readings are given: against the best rival of each case (the strict one)
and the mean over rivals; plus HiDP against each strategy and each ablation.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["LABELS", "METRIC", "aggregate", "reduction"]

#: objective -> the ``Plan`` attribute it optimises
METRIC = {"latency": "latency_s", "energy": "energy_j", "throughput": "throughput_ips"}
#: objective -> the name of HiDP's figure for it in the bench JSON
LABELS = {"latency": "latency_reduction", "energy": "energy_reduction", "throughput": "throughput_gain"}
ABLATIONS = ("hidp-global-only", "hidp-local-only")


def reduction(ours: float, theirs: float, objective: str) -> float:
    """Fraction HiDP saves (latency, energy) or gains (throughput) over a rival."""
    if objective == "throughput":
        return ours / theirs - 1.0
    return 1.0 - ours / theirs


def _worse(ours: float, theirs: float, objective: str) -> bool:
    return ours < theirs * (1 - 1e-9) if objective == "throughput" else ours > theirs * (1 + 1e-9)


def aggregate(rows: Sequence[dict[str, Any]], baselines: Sequence[str]) -> dict[str, Any]:
    """Mean gains over cases (model x cluster x bandwidth) from rows with ``value`` per strategy and
    objective; ``hidp_never_worse``: no case where a baseline beats HiDP on latency."""
    cases: dict[tuple, dict[str, dict[str, float]]] = {}
    for r in rows:
        key = (r["model"], r["cluster"], r["bandwidth_mbps"])
        cases.setdefault(key, {}).setdefault(r["objective"], {})[r["strategy"]] = r["value"]
    out: dict[str, Any] = {}
    never_worse = {obj: True for obj in METRIC}
    for objective, label in LABELS.items():
        best_vals: list[float] = []
        per: dict[str, list[float]] = {b: [] for b in baselines}
        for vals in (c[objective] for c in cases.values()):
            hidp = vals["hidp"]
            rivals = {b: vals[b] for b in baselines}
            best = max(rivals.values()) if objective == "throughput" else min(rivals.values())
            best_vals.append(reduction(hidp, best, objective))
            for b, v in rivals.items():
                per[b].append(reduction(hidp, v, objective))
                never_worse[objective] &= not _worse(hidp, v, objective)
        out[f"{label}_vs_best_baseline"] = statistics.fmean(best_vals)
        # the paper's reading of "on average vs relevant techniques": mean over rivals and cases
        out[f"{label}_mean_over_baselines"] = statistics.fmean(statistics.fmean(v) for v in per.values())
        for b in baselines:
            out.setdefault(f"vs_{b.replace('-', '_')}", {})[label] = statistics.fmean(per[b])
        for ablation in ABLATIONS:
            vals = [reduction(c[objective]["hidp"], c[objective][ablation], objective) for c in cases.values()]
            out.setdefault(f"vs_{ablation.replace('-', '_')}", {})[label] = statistics.fmean(vals)
    out["hidp_never_worse"] = never_worse["latency"]
    out["hidp_never_worse_all_objectives"] = all(never_worse.values())
    return out
