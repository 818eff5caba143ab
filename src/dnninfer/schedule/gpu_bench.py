"""GPU half of `dnninfer bench opara` (research/gpu_and_serving.md §4b, experiment B1).

Runs only where ``torch.cuda.is_available()``. Modes: eager; the sequential CUDA Graph of the
model (the paper's baseline); ``torch.compile(mode="reduce-overhead")`` (the strongest stock
baseline); ours (Opara Alg. 1 + Alg. 2 in one multi-stream CUDA Graph); ablations (Alg. 1 with
program order, Nimble chains, critical-path-first, our executor with one stream). Timing: CUDA
events around each call, L2 flushed before every sample by zeroing a buffer larger than L2,
cases interleaved round by round; inputs are copied into the graphs' static buffers inside the
timed call for every graph mode alike.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

from dnninfer.bench.harness import Timing, round_orders
from dnninfer.bench.stats import ratio_ci
from dnninfer.graph import Graph, max_abs_diff
from dnninfer.schedule.cuda import CudaStreamGraph, cuda_node_profile
from dnninfer.schedule.dag import OpDAG
from dnninfer.schedule.plan import make_plan

__all__ = ["GPU_PLANS", "gpu_case", "gpu_cases", "gpu_unavailable_reason", "time_cuda"]

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


def time_cuda(cases: Mapping[str, Callable[[], Any]], *, warmup: int, repeats: int, seed: int = 0) -> dict[str, Timing]:
    """Interleaved CUDA-event timing with an L2 flush before every sample."""
    flush = torch.empty(FLUSH_BYTES // 4, dtype=torch.float32, device="cuda")
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    torch.cuda.synchronize()
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for order in round_orders(list(cases), repeats, seed):
        for name in order:
            flush.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            cases[name]()
            end.record()
            end.synchronize()
            samples[name].append(start.elapsed_time(end) * 1e-3)
    return {k: Timing.from_samples(v) for k, v in samples.items()}


def _cuda_graph_of(model: nn.Module, inputs: Sequence[torch.Tensor]) -> Callable[..., Any]:
    """PyTorch's standard whole-model CUDA Graph on one stream (the paper's baseline)."""
    static = [x.clone() for x in inputs]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            model(*static)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = model(*static)

    def run(*new: torch.Tensor) -> Any:
        for dst, src in zip(static, new, strict=True):
            dst.copy_(src)
        g.replay()
        return out

    return run


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
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every GPU mode of one (model, batch): rows, plus a summary for the headline."""
    notes: dict[str, str] = {}
    with torch.no_grad():
        gm_model = copy.deepcopy(model).cuda().eval()
        x = [t.cuda() for t in inputs]
        xf = [t.cuda() for t in fresh]
        ref = gm_model(*xf)
        dag = OpDAG.from_graph(graph, cuda_node_profile(graph))
        cases: dict[str, Callable[[], Any]] = {"eager": lambda: gm_model(*x)}
        errors: dict[str, float] = {"eager": 0.0}
        peak: dict[str, float] = {}
        torch.cuda.reset_peak_memory_stats()
        base = _cuda_graph_of(gm_model, x)
        peak["cudagraph"] = torch.cuda.max_memory_allocated() / 2**20
        errors["cudagraph"] = max_abs_diff(pytree.tree_map(torch.clone, base(*xf)), ref)
        cases["cudagraph"] = lambda: base(*x)
        if use_compile:
            try:
                t0 = time.perf_counter()
                compiled = torch.compile(copy.deepcopy(gm_model), mode="reduce-overhead")
                for _ in range(3):
                    compiled(*x)
                notes["compile_s"] = f"{time.perf_counter() - t0:.1f}"
                errors["compile"] = max_abs_diff(pytree.tree_map(torch.clone, compiled(*xf)), ref)
                cases["compile"] = lambda: compiled(*x)
            except Exception as e:  # an Inductor failure is a finding, not a crash
                notes["compile"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        else:
            notes["compile"] = "skipped: --quick or --no-compile"
        streams: dict[str, int] = {}
        for mode, (algo, order) in GPU_PLANS.items():
            plan = make_plan(dag, algo, order)
            torch.cuda.reset_peak_memory_stats()
            runner = CudaStreamGraph(graph, plan, dag, inputs=x, copy_outputs=False)
            peak[mode] = torch.cuda.max_memory_allocated() / 2**20
            errors[mode] = max_abs_diff(pytree.tree_map(torch.clone, runner(*xf)), ref)
            streams[mode] = plan.num_streams
            cases[mode] = lambda r=runner: r(*x)
        timings = time_cuda(cases, warmup=warmup, repeats=repeats, seed=seed)
    rows = []
    for mode, t in timings.items():
        row = {"device": "cuda", "model": name, "batch": batch, "mode": mode, **t.to_dict("ms"),
               "max_abs_err": errors.get(mode), "streams": streams.get(mode, 1), "peak_mem_mb": peak.get(mode)}
        for base_mode in ("cudagraph", "compile"):
            if base_mode in timings and mode != base_mode:
                r = ratio_ci(timings[base_mode].samples, t.samples, names=(base_mode, mode), seed=seed)
                row[f"speedup_vs_{base_mode}"] = r.ratio
                row[f"speedup_vs_{base_mode}_ci"] = [r.lo, r.hi]
        rows.append(row)
    ours = timings["ours"].median
    summary = {
        "speedup_vs_cudagraph": timings["cudagraph"].median / ours,
        "speedup_vs_compile": timings["compile"].median / ours if "compile" in timings else None,
        "speedup_vs_nimble": timings["nimble"].median / ours,
        "speedup_vs_topo_order": timings["ours_topo_order"].median / ours,
        "max_abs_error": max(errors[m] for m in GPU_PLANS),
        "streams": streams["ours"],
        "notes": notes,
    }
    return rows, summary


def gpu_cases(names: Sequence[str], batches: Sequence[int], *, warmup: int, repeats: int, seed: int = 0,
              use_compile: bool = True) -> tuple[list[dict[str, Any]], dict[str, dict[str, dict[str, Any]]]]:
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
                            seed=seed, use_compile=use_compile)
            rows += r
            summaries.setdefault(name, {})[str(b)] = s
    return rows, summaries
