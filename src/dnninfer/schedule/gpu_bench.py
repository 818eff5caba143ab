"""GPU half of `dnninfer bench opara` (research/gpu_and_serving.md §4b, experiment B1).

Runs only where ``torch.cuda.is_available()``. Modes: eager; the sequential CUDA Graph of the
model (the paper's baseline); ``torch.compile(mode="reduce-overhead")`` (the strongest stock
baseline); ours (Opara Alg. 1 + Alg. 2 in one multi-stream CUDA Graph); ablations (Alg. 1 with
program order, Nimble chains, critical-path-first, our executor with one stream). Timing: CUDA
events around each call, L2 flushed before every sample by zeroing a buffer larger than L2,
cases interleaved round by round; inputs are copied into the graphs' static buffers inside the
timed call for every graph mode alike. Every device call goes through a backend (schedule/cuda.py),
so `FakeCudaBackend` runs this same code on CPU (the GPU check's dry run, scripts/gpu_check.sh).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

from dnninfer.bench.harness import Timing, round_orders
from dnninfer.bench.stats import ratio_ci
from dnninfer.graph import Graph, max_abs_diff
from dnninfer.schedule.cuda import CudaBackend, CudaStreamGraph, cuda_node_profile, whole_model_graph
from dnninfer.schedule.dag import OpDAG
from dnninfer.schedule.plan import make_plan

__all__ = ["GPU_PLANS", "dag_profile", "equal_tolerance", "gpu_case", "gpu_cases", "gpu_unavailable_reason", "perturb",
           "time_cuda"]

#: mode -> (algo, order) for our executor
GPU_PLANS = {
    "ours": ("opara", "opara"),
    "ours_topo_order": ("opara", "topo"),
    "nimble": ("nimble", "opara"),
    "cpfirst": ("cpfirst", "cp"),
    "ours_one_stream": ("sequential", "topo"),
}
FLUSH_BYTES = 256 << 20  # > 50 MB H100 L2 (Opara flushed only 4 MB)


def gpu_unavailable_reason() -> str | None:
    if torch.cuda.is_available():
        return None
    build = "CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda} build"
    return f"no CUDA device on this machine (torch {torch.__version__}, {build}); GPU figures not measured"


def time_cuda(cases: Mapping[str, Callable[[], Any]], *, warmup: int, repeats: int, seed: int = 0,
              backend: Any = None) -> dict[str, Timing]:
    """Interleaved CUDA-event timing with an L2 flush before every sample."""
    backend = backend if backend is not None else CudaBackend()
    flush = backend.empty(FLUSH_BYTES)
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    backend.synchronize()
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for order in round_orders(list(cases), repeats, seed):
        for name in order:
            flush.zero_()
            start, end = backend.timer_event(), backend.timer_event()
            start.record()
            cases[name]()
            end.record()
            end.synchronize()
            samples[name].append(start.elapsed_time(end) * 1e-3)
    return {k: Timing.from_samples(v) for k, v in samples.items()}


def equal_tolerance(ref: Any) -> float:
    """What "equal to eager" allows: 1e-3 of the output's scale (at least 1e-3 absolute). The modes
    run the same kernels in another order or stream, or (torch.compile) fused ones; cuDNN's TF32
    convolutions, on by default, round at about 1e-3 relative."""
    scale = max((float(t.detach().abs().max()) for t in pytree.tree_leaves(ref) if isinstance(t, torch.Tensor)
                 and t.numel()), default=0.0)
    return 1e-3 * max(1.0, scale)


def perturb(module: nn.Module, seed: int = 0) -> None:
    """Negative control: add seeded noise to the first floating parameter, in place. A captured graph
    reads parameters by address, so this changes what every later replay computes."""
    p = next(p for p in module.parameters() if p.is_floating_point())
    noise = torch.randn(p.shape, generator=torch.Generator().manual_seed(seed), dtype=p.dtype)
    with torch.no_grad():
        p.add_(0.5 * noise.to(p.device))


def dag_profile(dag: OpDAG) -> dict[str, Any]:
    """Why a multi-stream graph can (not) win, from the measured per-operator GPU times: how many
    kernels, how small, their serial sum and the critical path (the bound on any stream plan)."""
    cost = sorted(dag.cost_s.values())
    total = sum(cost)
    critical = sum(dag.cost_s[n] for n in dag.longest_path())
    return {"nodes": len(cost), "node_ms_sum": total * 1e3, "critical_path_ms": critical * 1e3,
            "parallelism_bound": total / critical if critical > 0 else None,
            "node_us_median": statistics.median(cost) * 1e6 if cost else None,
            "node_us_p90": cost[int(0.9 * (len(cost) - 1))] * 1e6 if cost else None,
            "share_nodes_under_10us": sum(c < 10e-6 for c in cost) / len(cost) if cost else None}


def gpu_case(
    name: str,
    batch: int,
    model: nn.Module,
    graph: Graph,
    inputs: Sequence[torch.Tensor],
    fresh: Sequence[torch.Tensor],
    *,
    warmup: int,
    repeats: int,
    seed: int = 0,
    use_compile: bool = True,
    backend: Any = None,
    modes: Sequence[str] = tuple(GPU_PLANS),
    graph_warmup: int = 3,
    profile_repeats: int = 10,
    fault: Sequence[str] = (),
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every GPU mode of one (model, batch): rows, plus a summary for the headline.

    ``modes``: which of `GPU_PLANS` to build (eager and the sequential CUDA Graph always run);
    ``fault``: modes whose parameters are perturbed after capture (negative control of the
    equality check)."""
    backend = backend if backend is not None else CudaBackend()
    notes: dict[str, str] = {}
    with torch.no_grad():
        gm_model = backend.to_device(copy.deepcopy(model)).eval()
        x = [backend.to_device(t) for t in inputs]
        xf = [backend.to_device(t) for t in fresh]
        ref = gm_model(*xf)
        tol = equal_tolerance(ref)
        dag = OpDAG.from_graph(graph, cuda_node_profile(graph, backend=backend, inputs=inputs,
                                                        repeats=profile_repeats, warmup=min(3, profile_repeats)))
        cases: dict[str, Callable[[], Any]] = {"eager": lambda: gm_model(*x)}
        errors: dict[str, float] = {"eager": 0.0}
        peak: dict[str, float | None] = {}
        backend.reset_peak_memory()
        base = whole_model_graph(gm_model, x, backend, warmup=graph_warmup)
        peak["cudagraph"] = backend.peak_memory_mb()
        errors["cudagraph"] = max_abs_diff(pytree.tree_map(torch.clone, base(*xf)), ref)
        cases["cudagraph"] = lambda: base(*x)
        compile_s = None
        if use_compile:
            try:
                t0 = time.perf_counter()
                compiled = backend.compile(copy.deepcopy(gm_model))
                for _ in range(3):
                    compiled(*x)
                backend.synchronize()
                compile_s = time.perf_counter() - t0
                notes["compile_s"] = f"{compile_s:.1f}"
                errors["compile"] = max_abs_diff(pytree.tree_map(torch.clone, compiled(*xf)), ref)
                cases["compile"] = lambda: compiled(*x)
            except Exception as e:  # an Inductor failure is a finding, not a crash
                notes["compile"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        else:
            notes["compile"] = "not run in this case (--quick, --no-compile, or the GPU check's compile part)"
        streams: dict[str, int] = {}
        for mode in modes:
            algo, order = GPU_PLANS[mode]
            plan = make_plan(dag, algo, order)
            backend.reset_peak_memory()
            runner = CudaStreamGraph(graph, plan, dag, inputs=x, copy_outputs=False, backend=backend,
                                     warmup=graph_warmup)
            peak[mode] = backend.peak_memory_mb()
            if mode in fault:
                perturb(runner.table.gm, seed)
            errors[mode] = max_abs_diff(pytree.tree_map(torch.clone, runner(*xf)), ref)
            streams[mode] = plan.num_streams
            cases[mode] = lambda r=runner: r(*x)
        timings = time_cuda(cases, warmup=warmup, repeats=repeats, seed=seed, backend=backend)
    rows = []
    for mode, t in timings.items():
        row = {"device": "cuda", "model": name, "batch": batch, "mode": mode, **t.to_dict("ms"),
               "max_abs_err": errors.get(mode), "equal": errors.get(mode, 0.0) <= tol, "tolerance": tol,
               "streams": streams.get(mode, 1), "peak_mem_mb": peak.get(mode)}
        for base_mode in ("cudagraph", "compile"):
            if base_mode in timings and mode != base_mode:
                r = ratio_ci(timings[base_mode].samples, t.samples, names=(base_mode, mode), seed=seed)
                row[f"speedup_vs_{base_mode}"] = r.ratio
                row[f"speedup_vs_{base_mode}_ci"] = [r.lo, r.hi]
        rows.append(row)
    med = {m: t.median for m, t in timings.items()}
    ours = med["ours"]

    def vs(mode: str) -> float | None:
        return med[mode] / ours if mode in med else None

    summary = {
        "speedup_vs_cudagraph": vs("cudagraph"),
        "speedup_vs_compile": vs("compile"),
        "speedup_vs_nimble": vs("nimble"),
        "speedup_vs_topo_order": vs("ours_topo_order"),
        "speedup_vs_cpfirst": vs("cpfirst"),
        "speedup_vs_eager": vs("eager"),
        "median_ms": {m: v * 1e3 for m, v in med.items()},
        "max_abs_error": max(errors[m] for m in modes),
        "max_abs_error_by_mode": errors,
        "tolerance": tol,
        "all_equal": all(e <= tol for e in errors.values()),
        "streams": streams["ours"],
        "streams_by_mode": streams,
        "compile_s": compile_s,
        "dag": dag_profile(dag),
        "notes": notes,
    }
    return rows, summary


def gpu_cases(names: Sequence[str], batches: Sequence[int], *, warmup: int, repeats: int, seed: int = 0,
              use_compile: bool = True, backend: Any = None,
              ) -> tuple[list[dict[str, Any]], dict[str, dict[str, dict[str, Any]]]]:
    """``gpu_case`` for every (model, batch): all rows, and the summaries as model -> str(batch)."""
    from dnninfer import zoo
    from dnninfer.graph import capture

    rows: list[dict[str, Any]] = []
    summaries: dict[str, dict[str, dict[str, Any]]] = {}
    for name in names:
        for b in batches:
            model = zoo.build_model(name, seed=seed)
            x = zoo.example_inputs(name, batch=b, seed=seed)
            fresh = zoo.example_inputs(name, batch=b, seed=seed + 1)
            r, s = gpu_case(name, b, model, capture(model, x, name=name), x, fresh, warmup=warmup, repeats=repeats,
                            seed=seed, use_compile=use_compile, backend=backend)
            rows += r
            summaries.setdefault(name, {})[str(b)] = s
    return rows, summaries
