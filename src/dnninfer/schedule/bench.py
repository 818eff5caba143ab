"""`dnninfer bench opara`: operator-parallel execution vs eager, ONNX Runtime and torch.compile.

CPU (always; research/gpu_and_serving.md §4a, experiment A1), every mode of one (model, batch)
interleaved in one `compare` run, threads pinned per mode:

* eager, 1 and 2 intra-op threads (2 threads is the baseline: the same two cores);
* our lanes: Opara Alg. 1 capped at ``--lanes`` streams, one thread per lane, 1 intra-op thread
  each; launch order Opara Alg. 2 (``lanes_opara``) or program order (``lanes_topo``, ablation);
* ONNX Runtime, ``ORT_SEQUENTIAL`` (2 intra-op threads) and ``ORT_PARALLEL`` (2 inter-op x 1);
* torch.compile (Inductor, default mode, 2 threads); skipped in --quick (compile cost).

GPU (only where CUDA is available; §4b, experiment B1): see gpu_bench.py. Otherwise every GPU
figure is null with the reason. Nothing GPU-side is estimated or simulated here.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils import _pytree as pytree

from dnninfer.bench.harness import compare
from dnninfer.bench.output import make_progress
from dnninfer.bench.registry import BenchArgs, register_system
from dnninfer.bench.stats import ratio_ci
from dnninfer.errors import expected
from dnninfer.report.section import ReportSection

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


def _max_err(a: Any, b: Any) -> float:
    la = [torch.as_tensor(x) for x in pytree.tree_leaves(a)]
    lb = [torch.as_tensor(x) for x in pytree.tree_leaves(b)]
    return max(float((x.float() - y.float()).abs().max()) for x, y in zip(la, lb, strict=True))


def _eager(model: Any, inputs: Any, threads: int) -> Any:
    def run() -> Any:
        torch.set_num_threads(threads)
        with torch.no_grad():
            return model(*inputs)

    return run


def _cpu_case(name: str, batch: int, cfg: dict[str, Any], args: BenchArgs, lanes: int,
              use_compile: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from dnninfer.cost.measure import profile
    from dnninfer.graph import capture
    from dnninfer.schedule import models
    from dnninfer.schedule.baselines import BaselineUnavailable, compiled_cpu, onnx_bytes, ort_session
    from dnninfer.schedule.dag import OpDAG
    from dnninfer.schedule.lanes import LaneExecutor
    from dnninfer.schedule.plan import ALGOS, make_plan

    t_case = time.perf_counter()
    model = models.build(name, seed=args.seed)
    x = models.example_inputs(name, batch=batch, seed=args.seed)
    fresh = models.example_inputs(name, batch=batch, seed=args.seed + 1)
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
        errors["eager2"] = _max_err(_eager(model, fresh, 2)(), ref)
        for mode, ex in execs.items():
            errors[mode] = _max_err(ex(*fresh), ref)
    cases: dict[str, Any] = {"eager1": _eager(model, x, 1), "eager2": _eager(model, x, 2)}
    cases.update({mode: (lambda ex=ex: ex(*x)) for mode, ex in execs.items()})
    try:
        onnx = onnx_bytes(model, x)
        for mode, parallel in (("ort_sequential", False), ("ort_parallel", True)):
            sess = ort_session(onnx, parallel=parallel, threads=lanes)
            errors[mode] = _max_err(torch.from_numpy(sess(*fresh)), ref)
            cases[mode] = lambda s=sess: s(*x)
    except BaselineUnavailable as e:
        reasons["ort_sequential"] = reasons["ort_parallel"] = str(e)
    compile_s = None
    if use_compile:
        try:
            fn, compile_s = compiled_cpu(model, x, threads=lanes)
            with torch.no_grad():
                errors["compile"] = _max_err(fn(*fresh), ref)

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
                 report_section=lambda result, outdir: report_section(result, outdir),
                 add_arguments=_add_arguments)
def bench_opara(args: BenchArgs) -> dict[str, Any]:
    from dnninfer.graph import capture
    from dnninfer.schedule import models
    from dnninfer.schedule.gpu_bench import gpu_case, gpu_unavailable_reason

    cfg = dict(SMOKE if args.smoke else QUICK if args.quick else FULL)
    if args.get("repeats"):
        cfg["repeats"] = args.get("repeats")
    names = args.get("models") or cfg["models"]
    batches = args.get("batches") or cfg["batches"]
    lanes = args.get("lanes") or 2
    use_compile = not args.quick and not args.get("no_compile")
    unknown = [n for n in names if n not in models.model_names()]
    if unknown:  # fail fast, as a user error
        raise expected("--models", f"names from {', '.join(models.model_names())}", unknown[0])
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
        for name in names:
            for b in batches:
                model = models.build(name, seed=args.seed)
                x = models.example_inputs(name, batch=b, seed=args.seed)
                fresh = models.example_inputs(name, batch=b, seed=args.seed + 1)
                g = capture(model, x, name=name)
                r, s = gpu_case(name, b, model, g, x, fresh, warmup=cfg["warmup"],
                                repeats=max(cfg["repeats"], 50 if args.quick else 300), seed=args.seed,
                                use_compile=use_compile)
                rows += r
                gpu.setdefault(name, {})[str(b)] = s

    ours = _ours(cpu, gpu, gpu_reason, lanes)
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


def _per_model(cpu: dict[str, dict[str, dict[str, Any]]], key: str) -> dict[str, dict[str, Any]]:
    return {m: {b: s[key] for b, s in per.items()} for m, per in cpu.items()}


def _ours(cpu: dict, gpu: dict, gpu_reason: str | None, lanes: int) -> dict[str, Any]:
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


# -- report ---------------------------------------------------------------------------------------
def plots(result: dict[str, Any], outdir: Path) -> list[Path]:
    """CPU speedup of every mode over eager with 2 threads, per model and batch."""
    from matplotlib.figure import Figure

    rows = [r for r in result["rows"] if r["device"] == "cpu" and r.get("speedup_vs_eager2") is not None]
    if not rows:
        return []
    outdir.mkdir(parents=True, exist_ok=True)
    cases = list(dict.fromkeys((r["model"], r["batch"]) for r in rows))
    modes = [m for m in CPU_MODES if m != "eager2" and any(r["mode"] == m for r in rows)]
    fig = Figure(figsize=(max(7.0, 1.3 * len(cases) + 2), 4.2), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(len(modes), 1)
    for i, m in enumerate(modes):
        vals = [next((r["speedup_vs_eager2"] for r in rows if (r["model"], r["batch"]) == c and r["mode"] == m),
                     float("nan")) for c in cases]
        ax.bar([j + i * width for j in range(len(cases))], vals, width, label=m)
    ax.axhline(1.0, color="#59636e", linestyle="--", linewidth=1)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cases))], [f"{m}\nb{b}" for m, b in cases])
    ax.set_ylabel("speedup vs eager, 2 threads")
    ax.set_title("CPU: operator-parallel lanes and baselines (same 2 cores)")
    ax.legend(ncol=3, fontsize=8)
    path = outdir / "opara_cpu_speedup.png"
    fig.savefig(path, dpi=110)
    return [path]


def report_section(result: dict[str, Any], outdir: Path) -> ReportSection:
    from dnninfer.report.html import figure_html, table_html

    images = plots(result, outdir)
    ours, paper = result["ours"], result["paper"]
    head = [
        {"figure": "GPU: Opara / sequential CUDA Graph", "paper": paper["speedup_vs_cudagraph"],
         "ours": ours["gpu_speedup_vs_cudagraph"] if not ours.get("gpu_reason") else ours["gpu_reason"]},
        {"figure": "GPU: Opara / Nimble", "paper": paper["speedup_vs_nimble"],
         "ours": ours["gpu_speedup_vs_nimble"] if not ours.get("gpu_reason") else "not measured"},
        {"figure": "GoogLeNet streams, Opara / Nimble",
         "paper": f"{paper['googlenet_streams_opara']} / {paper['googlenet_streams_nimble']}",
         "ours": "{} / {}".format(*(ours["streams_by_algo"].get("googlenet", {}).get(a) for a in ("opara", "nimble")))},
        {"figure": "CPU: median lanes / eager 2 threads", "paper": "", "ours": ours["cpu_median_speedup_vs_eager2"]},
        {"figure": "max |ours - eager|", "paper": "", "ours": ours["max_abs_error"]},
    ]
    per = [{"model": m, "batch": b, "vs_eager2": v, "vs_ort_parallel": ours["cpu_speedup_vs_ort_parallel"][m][b],
            "opara_vs_topo_order": ours["cpu_opara_order_vs_topo_order"][m][b],
            "best_mode": ours["cpu_best_mode"][m][b], "streams (opara, uncapped)": ours["streams_used"][m]}
           for m, bs in ours["cpu_speedup_vs_eager2"].items() for b, v in bs.items()]
    parts = ["<p>CPU figures are measured here (interleaved, threads pinned). GPU figures are measured only "
             "where a CUDA device exists; otherwise they are null with the reason.</p>",
             table_html(head, ["figure", "paper", "ours"]), "<h3>CPU speedups of our lanes (Opara order)</h3>",
             table_html(per)]
    parts += [figure_html(p, "CPU speedup over eager with 2 threads, every mode.", base=outdir) for p in images]
    parts += ["<h3>Rows</h3>", table_html(result["rows"])]
    return ReportSection(title="Opara: operator-parallel inference", html="\n".join(parts), images=images)
