"""The runtime report section: does a split model compute what the whole model does, and what the
split costs in process and on Ray (no paper behind it: the floor under every partitioner's gain)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dnninfer.bench.claims import Claim, lookup
from dnninfer.report.section import ReportSection, Table, build_section

CLAIMS = (
    Claim("split-model output equals the whole model: max |split - whole|", ours="max_abs_err", target=1e-5,
          better="lower", fmt=".1e",
          note=lambda r: f"models: {lookup(r, 'models')}; in process and on Ray; atol of the runtime tests"),
    Claim("Ray call overhead per inference, median (ms)", ours="median_ray_overhead_ms", fmt=".1f",
          note=lambda r: f"Ray / whole: {lookup(r, 'median_ray_over_whole'):.2f}x"),
    Claim("in-process stages / whole model, median", ours="median_inprocess_over_whole", fmt="x"),
)


def report_section(result: dict[str, Any], outdir: Path) -> ReportSection:
    return build_section("Runtime: split-model overhead", result, outdir, claims=CLAIMS,
                         parts=[Table(result["rows"], "Per model (medians, 1 thread, measured)")],
                         intro="Stages are an equal-FLOPs chain split; no link emulation, so the ratios are pure "
                               "runtime overhead on this machine.")
