"""What the Opara bench reports as ``ours``: the per-(model, batch) case summaries of the CPU and GPU
runs folded into per-model figures, with a null and its reason for every figure not measured here
(nothing GPU-side is ever estimated)."""

from __future__ import annotations

import statistics
from typing import Any

__all__ = ["ours_of"]

Cases = dict[str, dict[str, dict[str, Any]]]  # model -> str(batch) -> case summary


def _per_model(cases: Cases, key: str) -> dict[str, dict[str, Any]]:
    return {m: {b: s[key] for b, s in per.items()} for m, per in cases.items()}


def ours_of(cpu: Cases, gpu: Cases, gpu_reason: str | None, lanes: int) -> dict[str, Any]:
    """The bench's ``ours`` from the CPU and (possibly empty) GPU case summaries."""
    all_cpu = [s for per in cpu.values() for s in per.values()]
    ort_reasons = {m: s["reasons"].get("ort_parallel") for m, per in cpu.items() for s in per.values()
                   if s["reasons"].get("ort_parallel")}
    compile_reasons = sorted({s["reasons"]["compile"] for s in all_cpu if "compile" in s["reasons"]})
    ours: dict[str, Any] = {
        "cpu_speedup_vs_eager2": _per_model(cpu, "vs_eager2"),
        "cpu_speedup_vs_ort_parallel": _per_model(cpu, "vs_ort_parallel"),
        "cpu_speedup_vs_ort_sequential": _per_model(cpu, "vs_ort_sequential"),
        "cpu_speedup_vs_eager1": _per_model(cpu, "vs_eager1"),
        "cpu_speedup_vs_compile": _per_model(cpu, "vs_compile"),
        "cpu_opara_order_vs_topo_order": _per_model(cpu, "opara_order_vs_topo"),
        "cpu_best_mode": _per_model(cpu, "best_mode"),
        "cpu_median_speedup_vs_eager2": statistics.median(s["vs_eager2"] for s in all_cpu),
        "cpu_lanes": lanes,
        "ort_reasons": ort_reasons or None,
        "compile_reason": compile_reasons[0] if compile_reasons else None,
        "streams_used": {m: next(iter(per.values()))["streams"]["opara"] for m, per in cpu.items()},
        "streams_by_algo": {m: next(iter(per.values()))["streams"] for m, per in cpu.items()},
    }
    errs = [s["max_abs_error"] for s in all_cpu]
    if gpu:
        ours["gpu_speedup_vs_cudagraph"] = _per_model(gpu, "speedup_vs_cudagraph")
        ours["gpu_speedup_vs_compile"] = _per_model(gpu, "speedup_vs_compile")
        ours["gpu_speedup_vs_nimble"] = _per_model(gpu, "speedup_vs_nimble")
        ours["gpu_reason"] = None
        errs += [s["max_abs_error"] for per in gpu.values() for s in per.values()]
    else:
        ours["gpu_speedup_vs_cudagraph"] = dict.fromkeys(cpu)
        ours["gpu_speedup_vs_compile"] = dict.fromkeys(cpu)
        ours["gpu_speedup_vs_nimble"] = dict.fromkeys(cpu)
        ours["gpu_reason"] = gpu_reason
    ours["max_abs_error"] = max(errs)
    return ours
