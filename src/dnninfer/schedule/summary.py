"""What the Opara bench reports as ``ours``: the per-(model, batch) case summaries of the CPU and GPU
runs folded into per-model figures, with a null and its reason for every figure not measured here
(nothing GPU-side is ever estimated). Without CUDA, the GPU keys show the latest recorded GPU check
(docs/results/gpu/, gpu_results.py) with its machine and date in ``gpu_source``, never as this
run's measurement; with neither, they are null.

GPU keys: ``gpu_speedup_vs_{cudagraph,compile,nimble}[model]`` at batch 1, and the same with
``_b8`` (``_b<batch>``) at larger batches."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from dnninfer.schedule.gpu_results import Recorded

__all__ = ["GPU_KEYS", "gpu_keys", "ours_of"]

Cases = dict[str, dict[str, dict[str, Any]]]  # model -> str(batch) -> case summary


def _per_model(cases: Cases, key: str) -> dict[str, dict[str, Any]]:
    return {m: {b: s[key] for b, s in per.items()} for m, per in cases.items()}


GPU_KEYS = ("speedup_vs_cudagraph", "speedup_vs_compile", "speedup_vs_nimble")


def gpu_keys(gpu: Cases, models: Sequence[str], keys: Sequence[str] = GPU_KEYS) -> dict[str, Any]:
    """``gpu_KEY[model]`` at batch 1 and ``gpu_KEY_b<batch>[model]`` at the others (always ``_b8``)."""
    batches = sorted({1, 8, *(int(b) for per in gpu.values() for b in per)})
    return {(f"gpu_{key}" if b == 1 else f"gpu_{key}_b{b}"): {m: (gpu.get(m, {}).get(str(b)) or {}).get(key)
                                                             for m in models}
            for key in keys for b in batches}


def _recorded_keys(rec: Recorded, models: list[str]) -> dict[str, Any]:
    figures = rec.ours.get("opara") or {}
    keys = [k for k in figures if any(k == f"gpu_{g}" or k.startswith(f"gpu_{g}_b") for g in GPU_KEYS)]
    keys += [f"gpu_{g}{s}" for g in GPU_KEYS for s in ("", "_b8") if f"gpu_{g}{s}" not in keys]
    shown = list(dict.fromkeys([*models, *(figures.get("gpu_speedup_vs_cudagraph") or {})]))
    return {k: {m: (figures.get(k) or {}).get(m) for m in shown} for k in keys}


def ours_of(cpu: Cases, gpu: Cases, gpu_reason: str | None, lanes: int,
            recorded: Recorded | None = None) -> dict[str, Any]:
    """The bench's ``ours`` from the CPU and (possibly empty) GPU case summaries; ``recorded``: a
    GPU check's figures to show, labelled, when this run measured none."""
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
    models = list(dict.fromkeys([*cpu, *gpu]))
    if gpu:
        ours.update(gpu_keys(gpu, models))
        ours["gpu_reason"] = None
        ours["gpu_source"] = {"measured_here": True}
        errs += [s["max_abs_error"] for per in gpu.values() for s in per.values()]
    elif recorded is not None:
        ours.update(_recorded_keys(recorded, models))
        ours["gpu_reason"] = f"{gpu_reason}; showing the figures {recorded.note()}"
        ours["gpu_source"] = recorded.source()
    else:
        ours.update(gpu_keys({}, models))
        ours["gpu_reason"] = gpu_reason
        ours["gpu_source"] = None
    ours["max_abs_error"] = max(errs)
    return ours
