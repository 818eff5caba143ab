"""The Opara report section: paper-vs-ours lines, the CPU speedup plot, the per-case tables."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from dnninfer.bench.claims import Claim, lookup
from dnninfer.bench.figures import Figures
from dnninfer.report.section import ReportSection, Table, build_section


def _best(result: dict[str, Any], key: str) -> tuple[float, str] | None:
    """The largest value of a GPU figure over models and batches (``KEY[model]`` at batch 1,
    ``KEY_b8[model]`` etc.) and its case: the paper's figures are "up to"; ``None`` where nothing
    was measured or recorded (every GPU figure on a machine without CUDA and no GPU check)."""
    found = []
    for k, per in (result.get("ours") or {}).items():
        m = re.fullmatch(rf"{re.escape(key)}(?:_b(\d+))?", k)
        if m and isinstance(per, dict):
            found += [(v, f"{model} b{m.group(1) or 1}") for model, v in per.items() if isinstance(v, int | float)]
    return max(found) if found else None


def _best_value(key: str) -> Any:
    def value(result: dict[str, Any]) -> float | None:
        best = _best(result, key)
        return best[0] if best else None

    return value


def _gpu_note(key: str) -> Any:
    def note(result: dict[str, Any]) -> str:
        best = _best(result, key)
        if not best:
            return str(lookup(result, "gpu_reason") or "not run")
        source = lookup(result, "gpu_source") or {}
        recorded = "" if source.get("measured_here", True) else (
            f"; recorded on {source.get('machine')}, {source.get('date')} ({source.get('file')}), not in this run")
        return f"best case: {best[1]}{recorded}"

    return note


def _googlenet_streams(result: dict[str, Any]) -> str | None:
    streams = lookup(result, "streams_by_algo.googlenet")
    return f"{streams['opara']} / {streams['nimble']}" if streams else None


CLAIMS = (
    Claim("GPU: Opara / sequential CUDA Graph", "up to 1.68x (GoogLeNet b1, PyTorch 2.0)",
          _best_value("gpu_speedup_vs_cudagraph"), target=1.68, fmt="x",
          note=_gpu_note("gpu_speedup_vs_cudagraph")),
    Claim("GPU: Opara / Nimble", "up to 1.29x", _best_value("gpu_speedup_vs_nimble"), target=1.29,
          fmt="x", note=_gpu_note("gpu_speedup_vs_nimble")),
    Claim("GoogLeNet streams, Opara / Nimble", "28 / 4", _googlenet_streams,
          note="Alg. 1 and Nimble's chains on our captured GoogLeNet graph, uncapped"),
    Claim("CPU: median lanes / eager with 2 threads", ours="cpu_median_speedup_vs_eager2", fmt="x",
          note=lambda r: f"our {lookup(r, 'cpu_lanes')} lanes x 1 thread (Opara order) on the same 2 cores, median "
                         "over models and batches; the paper is GPU-only"),
    Claim("max |ours - eager|", "0", "max_abs_error", target=1e-4, better="lower", fmt=".2g",
          note="our lanes (and every GPU plan, where run) vs eager on fresh inputs"),
)


def plots(result: dict[str, Any], outdir: Path) -> Figures:
    """CPU speedup of every mode over eager with 2 threads, per model and batch."""
    figs = Figures(outdir)
    rows = [r for r in result["rows"] if r["device"] == "cpu" and r.get("speedup_vs_eager2") is not None]
    if not rows:
        return figs
    cases = list(dict.fromkeys((r["model"], r["batch"]) for r in rows))
    modes = list(dict.fromkeys(r["mode"] for r in rows))  # rows come in the bench's mode order
    speedup = {(r["model"], r["batch"], r["mode"]): r["speedup_vs_eager2"] for r in rows}
    with figs.plot("opara_cpu_speedup.png", "CPU speedup over eager with 2 threads, every mode.",
                   figsize=(max(7.0, 1.3 * len(cases) + 2), 4.2)) as (_, ax):
        width = 0.8 / max(len(modes), 1)
        for i, m in enumerate(modes):
            ax.bar([j + i * width for j in range(len(cases))],
                   [speedup.get((*c, m), float("nan")) for c in cases], width, label=m)
        ax.axhline(1.0, color="#59636e", linestyle="--", linewidth=1)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cases))], [f"{m}\nb{b}" for m, b in cases])
        ax.set(ylabel="speedup vs eager, 2 threads", title="CPU: operator-parallel lanes and baselines (same 2 cores)")
        ax.legend(ncol=3, fontsize=8)
    return figs


def report_section(result: dict[str, Any], outdir: Path) -> ReportSection:
    ours = result["ours"]
    per = [{"model": m, "batch": b, "vs_eager2": v, "vs_ort_parallel": ours["cpu_speedup_vs_ort_parallel"][m][b],
            "opara_vs_topo_order": ours["cpu_opara_order_vs_topo_order"][m][b],
            "best_mode": ours["cpu_best_mode"][m][b], "streams (opara, uncapped)": ours["streams_used"][m]}
           for m, bs in ours["cpu_speedup_vs_eager2"].items() for b, v in bs.items()]
    parts: list[Any] = [Table(per, "CPU speedups of our lanes (Opara order)"), plots(result, outdir),
                        Table(result["rows"], "Rows")]
    return build_section("Opara: operator-parallel inference", result, outdir, claims=CLAIMS, parts=parts,
                         intro="CPU figures are measured here (interleaved, threads pinned). GPU figures are measured "
                               "only where a CUDA device exists; otherwise they are the latest GPU check recorded in "
                               "docs/results/gpu/ (machine and date in the notes) or null with the reason.")
