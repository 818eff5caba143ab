"""The testbed's report section: HiDP's gains measured on throttled, link-shaped Ray nodes, and how
far the simulator's predictions are from what ran."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dnninfer.bench.claims import Claim
from dnninfer.bench.figures import Figures
from dnninfer.report.section import ReportSection, Table, build_section

CLAIMS = (
    Claim("HiDP latency reduction, mean over baselines (measured on the testbed)", paper="38%",
          ours="measured_latency_reduction_mean_over_baselines", target=0.38, fmt=".1%"),
    Claim("HiDP latency reduction vs the best baseline per case (measured)",
          ours="measured_latency_reduction_vs_best_baseline", fmt=".1%"),
    Claim("HiDP energy reduction, mean over baselines (busy time x cited power)", paper="46%",
          ours="measured_energy_reduction_mean_over_baselines", target=0.46, fmt=".1%"),
    Claim("HiDP throughput gain, mean over baselines", paper="56%",
          ours="measured_throughput_gain_mean_over_baselines", target=0.56, fmt=".1%",
          note="a bounded stream of pipelined requests; the emulated RTT occupies the receiving PU (a lower bound)"),
    Claim("prediction error |measured - predicted| / measured, median over plans", ours="pred_error_median",
          fmt=".1%"),
    Claim("rank agreement of strategies, predicted vs measured (Kendall tau)", ours="rank_tau", fmt=".2f"),
    Claim("outputs equal the whole model's: max |testbed - whole|", ours="max_abs_error", target=1e-5,
          better="lower", fmt=".1e"),
)


def report_section(result: dict[str, Any], outdir: Path) -> ReportSection:
    figs = Figures(outdir)
    rows = result["rows"]
    with figs.plot("testbed_measured_vs_predicted.png",
                   "Latency per plan on the testbed: measured (y) vs the simulator's prediction (x); the line is "
                   "y = x.", figsize=(6, 5)) as (_fig, ax):
        primary = result.get("ours", {}).get("planned_from")  # one point per plan the headline keys read
        ok = [r for r in rows if r.get("measured_latency_s") is not None]  # failed plans have no point
        shown = [r for r in ok if primary is None or r.get("planned_from", primary) == primary] or ok
        for strategy in dict.fromkeys(r["strategy"] for r in shown):
            mine = [r for r in shown if r["strategy"] == strategy]
            ax.scatter([r["predicted_latency_s"] * 1e3 for r in mine], [r["measured_latency_s"] * 1e3 for r in mine],
                       label=strategy, s=18)
        top = max((max(r["predicted_latency_s"], r["measured_latency_s"]) for r in shown), default=1.0) * 1e3
        ax.plot([0, top], [0, top], color="grey", lw=0.8)
        ax.set_xlabel("predicted latency (ms)")
        ax.set_ylabel("measured latency (ms)")
        ax.legend(fontsize=7)
    keys = ("cluster", "model", "bandwidth_mbps", "strategy", "planned_from", "stages", "predicted_latency_s",
            "measured_latency_s", "pred_error", "measured_energy_j", "error")
    table = [{k: r.get(k) for k in keys} for r in rows]
    return build_section("Testbed: HiDP measured on throttled, link-shaped Ray nodes", result, outdir, claims=CLAIMS,
                         parts=[figs, Table(table, "Per plan (times undilated)")],
                         intro=result.get("note", ""))
