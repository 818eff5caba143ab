"""`dnninfer bench hidp`: HiDP against every baseline, on every model x cluster x bandwidth, same run.

What is predicted and what is measured (report only what we measured):

* Latency, energy and throughput of every plan are PREDICTED by the shared simulator (plan.py)
  from per-node latencies MEASURED on this host (one thread, cached) scaled by the cited device
  profiles (configs/devices). Each strategy is planned for the objective being compared (a
  baseline's own choice among its options, e.g. Neurosurgeon's split, uses that objective too).
* Correctness is MEASURED: the latency plan of every strategy is executed for real (in-process
  runtime, tiled graphs where rows are split) and compared with the whole model.
* Prediction quality is MEASURED on the only devices we have: a cluster of host cores (local3,
  one host core per node, emulated 100 Mbit/s links). Plans run on the Ray runtime (one actor per
  node) and the median wall time is compared with the predicted latency.

Aggregates follow the paper's: mean over cases of HiDP's reduction against the best baseline in
that case (latency, energy) and its gain (throughput), and the same against each baseline.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import torch

from dnninfer.bench.output import make_progress
from dnninfer.bench.registry import BenchArgs, register_system
from dnninfer.env import pinned_threads
from dnninfer.graph import max_abs_diff
from dnninfer.partition.gains import METRIC, aggregate
from dnninfer.partition.report import CLAIMS, plots, report_section
from dnninfer.partition.scale import CLAIMS as SCALE_CLAIMS

PAPER = {
    "latency_reduction": 0.38, "energy_reduction": 0.46, "throughput_gain": 0.56,
    "source": "HiDP abstract (Taufique et al., DATE 2025, arXiv 2411.16086): on average vs relevant "
              "distributed-inference techniques, widely used DNNs, commercial edge devices",
}
QUICK = {"models": ("resnet18", "mobilenet_v2", "googlenet"), "clusters": ("edge3",), "bandwidths": (5, 20, 100)}
FULL = {"models": ("vgg16", "resnet18", "resnet50", "mobilenet_v2", "googlenet"), "clusters": ("edge3", "edge5"),
        "bandwidths": (5, 20, 50, 100)}
#: --smoke: one model at one bandwidth (where HiDP's plan is hybrid: tiled execution included), every strategy
#: and objective, 2 timing repeats; the host check on Ray keeps the quick run's 5 strategies
SMOKE = {"models": ("mobilenet_v2",), "clusters": ("edge3",), "bandwidths": (100,), "repeats": 2}
#: the host check on Ray: the quick run's strategies and models (the first two)
HOST_QUICK = {"strategies": ("all-local", "neurosurgeon", "uniform", "coedge", "hidp"), "models": 2}


def _add_arguments(p: Any) -> None:
    p.add_argument("--models", nargs="*", default=None, help="zoo models (default: per --quick)")
    p.add_argument("--clusters", nargs="*", default=None, help="cluster configs (default: edge3 [edge5])")
    p.add_argument("--bandwidths", nargs="*", type=float, default=None, help="Mbit/s, every link")


@register_system("hidp", description="HiDP hierarchical partitioning vs 7 distributed-inference baselines",
                 report_section=report_section, add_arguments=_add_arguments, headline=CLAIMS[0])
def bench_hidp(args: BenchArgs) -> dict[str, Any]:
    from dnninfer import zoo
    from dnninfer.cost import load_cluster
    from dnninfer.graph import capture
    from dnninfer.partition.costmodel import CostModel
    from dnninfer.partition.execute import run_plan
    from dnninfer.partition.hostcheck import host_check
    from dnninfer.partition.replan import with_bandwidth
    from dnninfer.partition.strategies import BASELINES, STRATEGIES, plan

    cfg = args.pick(FULL, QUICK, SMOKE)
    models = args.get("models") or cfg["models"]
    clusters = args.get("clusters") or cfg["clusters"]
    bandwidths = args.get("bandwidths") or cfg["bandwidths"]
    repeats = args.pick(10, 5, SMOKE["repeats"])
    rows: list[dict[str, Any]] = []
    exec_rows: list[dict[str, Any]] = []
    graphs: dict[str, Any] = {}
    n_cases = len(models) * len(clusters) * len(bandwidths)
    with pinned_threads(1), torch.no_grad(), make_progress() as bar:
        task = bar.add_task("hidp: planning", total=n_cases)
        for name in models:
            model = zoo.build_model(name, seed=args.seed)
            inputs = zoo.example_inputs(name, seed=args.seed)
            g = capture(model, inputs, name=name)
            ref = model(*inputs)
            graphs[name] = (model, inputs, g, ref)
            base_cm = CostModel.build(g, load_cluster(clusters[0]), host="measure", repeats=repeats)
            for cname in clusters:
                for bw in bandwidths:
                    cm = base_cm.with_cluster(with_bandwidth(load_cluster(cname), bw))
                    for objective in METRIC:
                        for strategy in STRATEGIES:
                            p = plan(cm, strategy, objective)
                            rows.append({
                                "model": name, "cluster": cname, "bandwidth_mbps": bw, "objective": objective,
                                "strategy": strategy, "mode": p.mode, "latency_ms": p.latency_s * 1e3,
                                "energy_mj": p.energy_j * 1e3, "throughput_ips": p.throughput_ips,
                                "bytes_sent": p.bytes_sent, "nodes": ",".join(p.nodes_used),
                                "value": getattr(p, METRIC[objective]), "reason": p.reason,
                                "_plan": p, "_cm": cm,
                            })
                    bar.advance(task)
        # real execution of every strategy's latency plan (middle bandwidth, first cluster)
        mid = bandwidths[len(bandwidths) // 2]
        todo = [r for r in rows if r["objective"] == "latency" and r["bandwidth_mbps"] == mid
                and r["cluster"] == clusters[0]]
        task = bar.add_task("hidp: executing plans", total=len(todo))
        for r in todo:
            model, inputs, g, ref = graphs[r["model"]]
            result = run_plan(r["_plan"], r["_cm"], inputs, sleep=False)
            exec_rows.append({"model": r["model"], "strategy": r["strategy"], "mode": r["mode"],
                              "stages": len(result.compute_s), "max_abs_err": max_abs_diff(result.output, ref)})
            bar.advance(task)
    host_rows = host_check(
        dict(list(graphs.items())[:HOST_QUICK["models"]]) if args.quick else graphs,
        HOST_QUICK["strategies"] if args.quick else tuple(STRATEGIES),
        repeats=args.pick(15, 5, SMOKE["repeats"]), profile_repeats=repeats)

    ours = aggregate(rows, list(BASELINES))
    ours["max_abs_error"] = max(r["max_abs_err"] for r in exec_rows)
    ours["plans_executed"] = len(exec_rows)
    ours["real_vs_predicted_error"] = statistics.median(r["rel_error"] for r in host_rows) if host_rows else None
    ours["real_vs_predicted_error_with_ray_call"] = (
        statistics.median(r["rel_error_with_ray_call"] for r in host_rows) if host_rows else None)
    ours["cases"] = n_cases
    for r in rows:
        r.pop("_plan")
        r.pop("_cm")
    result = {"paper": PAPER, "ours": ours, "rows": rows, "execution": exec_rows, "host_check": host_rows,
              "config": {"models": list(models), "clusters": list(clusters), "bandwidths": list(bandwidths),
                         "host_profile": "measured, 1 thread, cached", "energy": "cost/energy.py over nodes used"}}
    if args.out:
        plots(result, Path(args.out))
    return result


def _scale_arguments(p: Any) -> None:
    p.add_argument("--models", nargs="*", default=None, help="zoo models (default: resnet50 [resnet18 mobilenet_v2])")
    p.add_argument("--nodes", nargs="*", type=int, default=None, help="node counts (default: 3..64)")
    p.add_argument("--bandwidths", nargs="*", type=float, default=None, help="Mbit/s of the site's Wi-Fi")


def _scale_section(result: dict[str, Any], outdir: Path) -> Any:
    from dnninfer.partition.scale import report_section as section

    return section(result, outdir)


@register_system("hidp-scale", description="HiDP planning time and plan quality vs number of nodes (3-64)",
                 report_section=_scale_section, add_arguments=_scale_arguments, headline=SCALE_CLAIMS[0])
def bench_hidp_scale(args: BenchArgs) -> dict[str, Any]:
    from dnninfer.partition.scale import bench_hidp_scale as run

    return run(args)
