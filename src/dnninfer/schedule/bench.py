"""`dnninfer bench opara`: operator-parallel execution vs eager, ONNX Runtime and torch.compile.

CPU (always; research/gpu_and_serving.md §4a, experiment A1), every mode of one (model, batch)
interleaved in one `compare` run, threads pinned per mode:

* eager, 1 and 2 intra-op threads (2 threads is the baseline: the same two cores);
* our lanes: Opara Alg. 1 capped at ``--lanes`` streams, one thread per lane, 1 intra-op thread
  each; launch order Opara Alg. 2 (``lanes_opara``) or program order (``lanes_topo``, ablation);
* ONNX Runtime, ``ORT_SEQUENTIAL`` (2 intra-op threads) and ``ORT_PARALLEL`` (2 inter-op x 1);
* torch.compile (Inductor, default mode, 2 threads); skipped in --quick (compile cost).

GPU (only where CUDA is available; §4b, experiment B1): see gpu_bench.py. Otherwise the GPU keys
show the latest GPU check recorded in docs/results/gpu/ with its machine and date (``gpu_source``),
or null with the reason. Nothing GPU-side is estimated or simulated here.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from dnninfer.bench.harness import compare
from dnninfer.bench.output import make_progress
from dnninfer.bench.registry import BenchArgs, register_system
from dnninfer.bench.stats import ratio_ci
from dnninfer.errors import expected
from dnninfer.graph import max_abs_diff
from dnninfer.schedule.report import CLAIMS, plots, report_section
from dnninfer.schedule.summary import ours_of

PAPER = {
    "speedup_vs_cudagraph": 1.68,
    "speedup_vs_nimble": 1.29,
    "googlenet_streams_opara": 28,
    "googlenet_streams_nimble": 4,
    "source": "Opara, Chen et al., IEEE Trans. Computers 74(1):325-333, 2025 (arXiv 2312.10351): up to 1.68x "
              "over PyTorch's sequential CUDA Graph and up to 1.29x over Nimble (GoogLeNet, batch 1, RTX 2080 "
              "SUPER / A100, PyTorch 2.0); 28 vs 4 streams on GoogLeNet (Table/text); CCFSys 2023 version: "
              "1.61x and 1.24x. Repo README: GoogLeNet eager 3.59 ms, CUDA Graph 1.87 ms, Opara 1.11 ms.",
}
QUICK = {"models": ("googlenet", "deepfm", "bert_encoder"), "batches": (1,), "repeats": 6, "warmup": 1,
         "profile_repeats": 2}
FULL = {"models": ("googlenet", "inception_v3", "nasnet_cells", "deepfm", "bert_encoder"), "batches": (1, 8),
        "repeats": 20, "warmup": 3, "profile_repeats": 5}
#: --smoke (the test suite's run): one small model through every CPU mode, 3 rounds, 1 profile repeat.
SMOKE = {"models": ("deepfm",), "batches": (1,), "repeats": 3, "warmup": 1, "profile_repeats": 1}
CPU_MODES = ("eager1", "eager2", "lanes_opara", "lanes_topo", "ort_sequential", "ort_parallel", "compile")


def _add_arguments(p: Any) -> None:
    p.add_argument("--models", nargs="*", default=None, help="models (default: per --quick)")
    p.add_argument("--batches", nargs="*", type=int, default=None, help="batch sizes (default: 1 [8])")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds per case")
    p.add_argument("--lanes", type=int, default=2, help="CPU lanes (streams cap) for our executor")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (Inductor)")


def _eager(model: Any, inputs: Any, threads: int) -> Any:
    def run() -> Any:
        torch.set_num_threads(threads)
        with torch.no_grad():
            return model(*inputs)

    return run


def _cpu_case(name: str, batch: int, cfg: dict[str, Any], args: BenchArgs, lanes: int,
              use_compile: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from dnninfer import zoo
    from dnninfer.cost.measure import profile
    from dnninfer.graph import capture
    from dnninfer.schedule.baselines import BaselineUnavailable, compiled_cpu, onnx_bytes, ort_session
    from dnninfer.schedule.dag import OpDAG
    from dnninfer.schedule.lanes import LaneExecutor
    from dnninfer.schedule.plan import ALGOS, make_plan

    t_case = time.perf_counter()
    model = zoo.build_model(name, seed=args.seed)
    x = zoo.example_inputs(name, batch=batch, seed=args.seed)
    fresh = zoo.example_inputs(name, batch=batch, seed=args.seed + 1)
    g = capture(model, x, name=name)
    prof = profile(g, threads=1, warmup=1, repeats=cfg["profile_repeats"])
    dag = OpDAG.from_graph(g, prof.node_s)
    streams = {algo: make_plan(dag, algo, "opara").num_streams for algo in ALGOS}
    plans = {"lanes_opara": make_plan(dag, "opara", "opara", max_streams=lanes),
             "lanes_topo": make_plan(dag, "opara", "topo", max_streams=lanes)}
    execs = {mode: LaneExecutor(g, p, dag, intra_threads=1) for mode, p in plans.items()}
    reasons: dict[str, str] = {}
    errors: dict[str, float] = {}
    with torch.no_grad():
        ref = _eager(model, fresh, 1)()
        errors["eager2"] = max_abs_diff(_eager(model, fresh, 2)(), ref)
        for mode, ex in execs.items():
            errors[mode] = max_abs_diff(ex(*fresh), ref)
    cases: dict[str, Any] = {"eager1": _eager(model, x, 1), "eager2": _eager(model, x, 2)}
    cases.update({mode: (lambda ex=ex: ex(*x)) for mode, ex in execs.items()})
    try:
        onnx = onnx_bytes(model, x)
        for mode, parallel in (("ort_sequential", False), ("ort_parallel", True)):
            sess = ort_session(onnx, parallel=parallel, threads=lanes)
            errors[mode] = max_abs_diff(torch.from_numpy(sess(*fresh)), ref)
            cases[mode] = lambda s=sess: s(*x)
    except BaselineUnavailable as e:
        reasons["ort_sequential"] = reasons["ort_parallel"] = str(e)
    compile_s = None
    if use_compile:
        try:
            fn, compile_s = compiled_cpu(model, x, threads=lanes)
            with torch.no_grad():
                errors["compile"] = max_abs_diff(fn(*fresh), ref)

            def run_compiled(fn: Any = fn) -> Any:
                torch.set_num_threads(lanes)
                with torch.no_grad():
                    return fn(*x)

            cases["compile"] = run_compiled
        except BaselineUnavailable as e:
            reasons["compile"] = str(e)
    else:
        reasons["compile"] = ("skipped: --quick or --no-compile (Inductor compiles each model for 20-40 s on "
                              "this box)")
    load_before = _loadavg()
    t_setup = time.perf_counter() - t_case
    timings = compare(cases, warmup=cfg["warmup"], repeats=cfg["repeats"], seed=args.seed,
                      description=f"opara: {name} b{batch}")
    for ex in execs.values():
        ex.close()
    rows = []
    for mode in CPU_MODES:
        row: dict[str, Any] = {"device": "cpu", "model": name, "batch": batch, "mode": mode, "loadavg": load_before}
        if mode not in timings:
            row.update({"median_ms": None, "reason": reasons.get(mode, "not run")})
            rows.append(row)
            continue
        t = timings[mode]
        row.update(t.to_dict("ms"))
        if mode != "eager2":
            r = ratio_ci(timings["eager2"].samples, t.samples, names=("eager2", mode), seed=args.seed)
            row.update({"speedup_vs_eager2": r.ratio, "speedup_vs_eager2_ci": [r.lo, r.hi]})
        row["max_abs_err"] = errors.get(mode, 0.0)
        if mode.startswith("lanes"):
            row.update({"lanes": plans[mode].num_streams, **execs[mode].program.counts()})
        if mode == "compile":
            row["compile_s"] = compile_s
        rows.append(row)
    ours = timings["lanes_opara"].median
    med = {m: t.median for m, t in timings.items()}
    summary = {
        "vs_eager2": med["eager2"] / ours,
        "vs_eager1": med["eager1"] / ours,
        "vs_ort_parallel": med["ort_parallel"] / ours if "ort_parallel" in med else None,
        "vs_ort_sequential": med["ort_sequential"] / ours if "ort_sequential" in med else None,
        "vs_compile": med["compile"] / ours if "compile" in med else None,
        "opara_order_vs_topo": med["lanes_topo"] / ours,
        "best_mode": min(med, key=med.__getitem__),
        "max_abs_error": max(errors[m] for m in plans),
        "streams": streams,
        "lanes": plans["lanes_opara"].num_streams,
        "reasons": reasons,
        "loadavg_before": load_before,
        "profile_measured": prof.repeats,
        "setup_s": t_setup,
        "case_s": time.perf_counter() - t_case,
    }
    return rows, summary


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


@register_system("opara", description="Opara operator parallelism (streams/lanes) vs eager, ORT, torch.compile",
                 report_section=report_section, add_arguments=_add_arguments, headline=CLAIMS[0])
def bench_opara(args: BenchArgs) -> dict[str, Any]:
    from dnninfer import zoo
    from dnninfer.schedule.gpu_bench import gpu_cases, gpu_unavailable_reason
    from dnninfer.schedule.gpu_results import latest_recorded, no_record_note

    cfg = dict(args.pick(FULL, QUICK, SMOKE))
    if args.get("repeats"):
        cfg["repeats"] = args.get("repeats")
    names = args.get("models") or cfg["models"]
    batches = args.get("batches") or cfg["batches"]
    lanes = args.get("lanes") or 2
    use_compile = not args.quick and not args.get("no_compile")
    unknown = [n for n in names if n not in zoo.names()]
    if unknown:  # fail fast, as a user error
        raise expected("--models", f"names from {', '.join(zoo.names())}", unknown[0])
    if lanes < 1:
        raise expected("--lanes", "a positive integer", lanes)
    rows: list[dict[str, Any]] = []
    cpu: dict[str, dict[str, dict[str, Any]]] = {}
    with make_progress() as bar:
        task = bar.add_task("opara: cpu cases", total=len(names) * len(batches))
        for name in names:
            for b in batches:
                r, s = _cpu_case(name, b, cfg, args, lanes, use_compile)
                rows += r
                cpu.setdefault(name, {})[str(b)] = s
                bar.advance(task)

    gpu_reason = gpu_unavailable_reason()
    gpu: dict[str, dict[str, dict[str, Any]]] = {}
    if gpu_reason is None:
        gpu_rows, gpu = gpu_cases(names, batches, warmup=cfg["warmup"], repeats=max(cfg["repeats"], args.pick(300, 50)),
                                  seed=args.seed, use_compile=use_compile)
        rows += gpu_rows

    recorded = latest_recorded() if gpu_reason else None  # shown as recorded, never as this run's figure
    if gpu_reason and recorded is None:
        gpu_reason += f"; {no_record_note()}"
    ours = ours_of(cpu, gpu, gpu_reason, lanes, recorded)
    result = {"paper": PAPER, "ours": ours, "rows": rows,
              "config": {"models": list(names), "batches": list(batches), "repeats": cfg["repeats"],
                         "warmup": cfg["warmup"], "lanes": lanes, "intra_threads_per_lane": 1,
                         "baseline": "eager2 = eager PyTorch with 2 intra-op threads on the same 2 cores",
                         "ort": "TorchScript exporter (dynamo=False), opset 17, ORT_ENABLE_ALL, spinning off",
                         "profile": "per-node latency measured here (1 thread, cached) -> Alg. 2 classes and demand",
                         "cpu_count": os.cpu_count()}}
    if args.out:
        plots(result, Path(args.out))
    return result
