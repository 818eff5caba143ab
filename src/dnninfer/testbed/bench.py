"""`dnninfer bench testbed`: every strategy planned by the cost model and executed on the testbed.

HiDP's gains become measurements: latency (median of requests) and energy (measured busy time x
cited power) per strategy, with the simulator's prediction beside them. The testbed's driver runs
in fresh processes (the CLI), as Ray fixes its auth mode when it is imported. Needs root.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from dnninfer.bench.registry import BenchArgs, register_system
from dnninfer.errors import UserError
from dnninfer.testbed.report import CLAIMS, report_section

ALL = ("all-local", "all-offload", "neurosurgeon", "dads", "uniform", "coedge", "pipeedge", "hidp",
       "hidp-global-only", "hidp-local-only")
BASELINES = ("all-local", "all-offload", "neurosurgeon", "dads", "uniform", "coedge", "pipeedge")
#: plans come from each model's profile measured on the testbed's PUs (per-op-kind speeds such as a
#: GPU's cannot be emulated by a CPU quota); the full run also plans from the cited speeds, to compare
FULL = {"clusters": ("edge3", "edge5"), "models": ("mobilenet_v2", "resnet18", "googlenet", "vgg16", "resnet50"),
        "bandwidths": (5.0, 20.0, 50.0), "strategies": ALL, "requests": 5, "stream": 6,
        "plan_from": ("cited", "measured")}
QUICK = {"clusters": ("edge3",), "models": ("mobilenet_v2", "resnet18"), "bandwidths": (50.0,), "strategies": ALL,
         "requests": 5, "stream": 6, "plan_from": ("measured",)}
#: --smoke: one tiny model, HiDP and two rivals, no calibration (about 40 s: most of it is `up`)
SMOKE = {"clusters": ("local3",), "models": ("digits_cnn",), "bandwidths": (None,),
         "strategies": ("all-local", "uniform", "hidp"), "requests": 1, "stream": 2, "calibrate": False,
         "plan_from": ("measured",)}


def _cli(*args: str, timeout: float = 1800) -> str:
    exe = str(Path(sys.executable).with_name("dnninfer"))
    r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise UserError(f"bench testbed: `dnninfer {' '.join(args)}` failed: "
                        f"{(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return r.stdout


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-a between two orderings of the same items (1: same order, -1: reversed)."""
    n, s = len(a), 0
    for i in range(n):
        for j in range(i + 1, n):
            s += (1 if (a[i] - a[j]) * (b[i] - b[j]) > 0 else -1 if (a[i] - a[j]) * (b[i] - b[j]) < 0 else 0)
    return s / (n * (n - 1) / 2) if n > 1 else 1.0


def summarise(rows: list[dict[str, Any]], calibration: dict[str, Any],
              dilation: float | dict[str, float]) -> dict[str, Any]:
    """HiDP's measured gains per case (vs the best baseline and the mean over baselines), prediction
    errors over every plan, and the predicted-vs-measured rank agreement. The headline keys come from
    plans made with the measured profile where there are any; each profile's errors are also given."""
    failed = [r for r in rows if r.get("error")]
    rows = [r for r in rows if not r.get("error")]  # a failed plan has no measurement to compare
    if not rows:
        return {"failed_plans": len(failed), "planned_from": None}
    froms = list(dict.fromkeys(r.get("planned_from", "cited") for r in rows))
    primary = "measured" if "measured" in froms else froms[0]
    ours = _summary([r for r in rows if r.get("planned_from", "cited") == primary])
    ours["planned_from"] = primary
    for how in froms:
        part = _summary([r for r in rows if r.get("planned_from", "cited") == how])
        for key in ("pred_error_median", "pred_error_p90", "rank_tau", "measured_latency_reduction_vs_best_baseline",
                    "measured_latency_reduction_mean_over_baselines"):
            ours[f"{key}_{how}"] = part[key]
    ours["link_rate_error"] = calibration.get("link_rate_error")
    ours["pu_speed_error"] = calibration.get("pu_speed_error")
    ours["dilation"] = dilation if not isinstance(dilation, dict) else next(iter(dilation.values()))
    if isinstance(dilation, dict):
        ours["dilation_by_cluster"] = dilation
    ours["failed_plans"] = len(failed)
    ours["max_abs_error"] = max(r["max_abs_error"] for r in rows)
    ours["weights_shipped_bytes"] = max(r["weights_shipped_bytes"] for r in rows)
    return ours


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    cases: dict[tuple, dict[str, dict[str, Any]]] = {}
    for r in rows:
        cases.setdefault((r.get("cluster"), r["model"], r["bandwidth_mbps"]), {})[r["strategy"]] = r
    ours: dict[str, Any] = {}
    for metric, key in (("latency", "measured_latency_s"), ("energy", "measured_energy_j"),
                        ("throughput", "measured_throughput_ips")):
        best, mean, never_worse = [], [], []
        for c in cases.values():
            rivals = [c[b][key] for b in BASELINES if b in c]
            if "hidp" not in c or not rivals:
                continue
            h = c["hidp"][key]
            if h is None or None in rivals:
                continue
            if metric == "throughput":  # a gain: more is better
                best.append(h / max(rivals) - 1)
                mean.append(statistics.fmean(h / v - 1 for v in rivals))
            else:
                best.append(1 - h / min(rivals))
                mean.append(statistics.fmean(1 - h / v for v in rivals))
            never_worse.append(h <= min(rivals) * 1.05)  # within the 5% a repeat of one request varies
        label = "gain" if metric == "throughput" else "reduction"
        ours[f"measured_{metric}_{label}_vs_best_baseline"] = statistics.fmean(best) if best else None
        ours[f"measured_{metric}_{label}_mean_over_baselines"] = statistics.fmean(mean) if mean else None
        if metric == "latency":
            ours["hidp_measured_never_worse"] = statistics.fmean(never_worse) if never_worse else None
    errs = sorted(r["pred_error"] for r in rows)
    ours["pred_error_median"] = statistics.median(errs)
    ours["pred_error_p90"] = errs[min(len(errs) - 1, int(0.9 * len(errs)))]
    taus = [kendall_tau([r["predicted_latency_s"] for r in c.values()], [r["measured_latency_s"] for r in c.values()])
            for c in cases.values() if len(c) > 1]
    ours["rank_tau"] = statistics.fmean(taus) if taus else None
    ours["cases"] = len(cases)
    return ours


@register_system("testbed", description="HiDP and every baseline executed on the testbed: measured vs predicted",
                 report_section=report_section, headline=CLAIMS[0])
def bench_testbed(args: BenchArgs) -> dict[str, Any]:
    from dnninfer.testbed import procs

    procs.check_host()
    cfg = dict(args.pick(FULL, QUICK, SMOKE))
    rows, dilation, calibration, note = [], {}, {}, ""
    for cluster in cfg["clusters"]:
        up = ["testbed", "up", cluster, "--json", *([] if cfg.get("calibrate", True) else ["--no-calibrate"])]
        state = json.loads(_cli(*up))
        try:
            bws = [str(b) for b in cfg["bandwidths"] if b is not None]
            out = json.loads(_cli("testbed", "run", *cfg["models"], "--strategy", ",".join(cfg["strategies"]),
                                  "--requests", str(cfg["requests"]), "--stream", str(cfg["stream"]),
                                  "--seed", str(args.seed), "--json", "--plan-from", ",".join(cfg["plan_from"]),
                                  *(["--bandwidth-mbps", *bws] if bws else []), timeout=4 * 3600))
        finally:
            _cli("testbed", "down", "--json")
        rows += out["rows"]
        dilation[cluster] = state["dilation"]
        cal = state.get("calibration") or {}
        for key in ("link_rate_error", "pu_speed_error"):  # the worst over the clusters
            if cal.get(key) is not None:
                calibration[key] = max(calibration.get(key) or 0.0, cal[key])
        note = out["note"]
    return {
        "paper": {"latency_reduction": 0.38, "energy_reduction": 0.46, "throughput_gain": 0.56,
                  "note": "HiDP (DATE 2025) abstract: averages vs relevant distributed-inference techniques"},
        "ours": summarise(rows, calibration, dilation if len(dilation) > 1 else next(iter(dilation.values()))),
        "rows": rows,
        "note": note,
    }
