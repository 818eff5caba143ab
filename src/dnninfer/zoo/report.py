"""The ONNX intake report section (no paper behind it): does every imported model compute what
onnxruntime and the original compute, cost what the original costs, and run about as fast."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dnninfer.bench.claims import Claim, lookup
from dnninfer.report.section import ReportSection, Table, build_section

TOL = 1e-4  # atol = rtol, as tests/zoo/test_onnx_import.py


def _ort_error(result: Mapping[str, Any]) -> float | str:
    """The largest error vs ORT when every case imported and matched; otherwise what went wrong
    (a text, which no numeric target accepts)."""
    if lookup(result, "failed") == 0 and lookup(result, "all_match_ort"):
        return lookup(result, "max_err_ort")
    return f"imported {lookup(result, 'imported')}, all match ORT: {lookup(result, 'all_match_ort')}"


CLAIMS = (
    Claim("every model imported and equal to ONNX Runtime: max |imported - ORT|", ours=_ort_error, target=TOL,
          better="lower", fmt=".1e",
          note=lambda r: f"imported {lookup(r, 'imported')} ({lookup(r, 'cases')}); allclose at atol = rtol = {TOL:g}"),
    Claim("imported equals the original torch model", ours="all_match_torch", target=True,
          note=lambda r: f"max error {lookup(r, 'max_err_torch'):.1e}"),
    Claim("same conv/linear/matmul nodes as the original", ours="mac_nodes_all_match", target=True,
          note=lambda r: f"MAC FLOPs ratio {lookup(r, 'flops_ratio_min'):.3f}-{lookup(r, 'flops_ratio_max'):.3f}"),
    Claim("imported / eager latency, median (1 thread)", ours="median_imported_over_eager", fmt="x",
          note=lambda r: f"imported / ORT: {lookup(r, 'median_imported_over_ort'):.2f}x"),
    Claim("import time, median (s)", ours="median_import_s", fmt=".2f"),
)


def report_section(result: dict[str, Any], outdir: Path) -> ReportSection:
    return build_section("ONNX intake: import vs onnxruntime and the original", result, outdir, claims=CLAIMS,
                         parts=[Table(result["rows"], "Per model and exporter (measured)")],
                         intro=f"Timing: {result['paper'].get('timing', '')}.")
