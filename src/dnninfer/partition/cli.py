"""`dnninfer partition MODEL --cluster CFG`: plan (and optionally run) a partition of a model."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dnninfer import argtypes as at
from dnninfer.cliutil import emit, load_graph, model_args, stdout
from dnninfer.errors import UserError

#: the HiDP strategies and the levels each plans with (what `--time-budget` applies to)
HIDP_LEVELS = {"hidp": ("global", "local"), "hidp-global-only": ("global",), "hidp-local-only": ("local",)}


def add_commands(sub: Any) -> None:
    from dnninfer.partition.plan import OBJECTIVES
    from dnninfer.partition.strategies import STRATEGIES

    p = sub.add_parser("partition", help="partition a model across a cluster (HiDP and baselines)")
    model_args(p)
    p.add_argument("--cluster", default="edge3", help="cluster config name or YAML path (see configs/clusters)")
    p.add_argument("--strategy", default="hidp", choices=[*STRATEGIES, "all"],
                   help="planner; 'all' compares every strategy")
    p.add_argument("--objective", default="latency", choices=list(OBJECTIVES))
    p.add_argument("--source", default=None, help="node where inputs arrive (default: the first node)")
    p.add_argument("--bandwidth-mbps", type=at.positive_float, default=None,
                   help="override every link's bandwidth (Mbit/s, > 0)")
    p.add_argument("--host-estimate", choices=["measure", "flops"], default="measure",
                   help="per-node host times: measured here (cached) or a FLOPs estimate")
    p.add_argument("--profile", default=None, metavar="FILE",
                   help="plan from per-node latencies measured on the cluster's PUs (`dnninfer profile MODEL "
                        "--cluster ... --out FILE`) instead of cited speed ratios")
    p.add_argument("--time-budget", type=at.positive_float, default=None, metavar="SECONDS",
                   help="hidp: anytime search, stop after this long with the best plan so far and say how far it "
                        "got (default: a fixed search effort, polynomial in the number of nodes)")
    p.add_argument("--run", action="store_true", help="execute the plan for real and check the output")
    p.add_argument("--runtime", choices=["inprocess", "ray"], default="inprocess")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_partition)


def _cost_model(args: argparse.Namespace) -> tuple[Any, Any]:
    from dnninfer.cost import load_cluster
    from dnninfer.partition.costmodel import CostModel
    from dnninfer.partition.replan import with_bandwidth

    cluster = load_cluster(args.cluster)
    if args.bandwidth_mbps is not None:
        cluster = with_bandwidth(cluster, args.bandwidth_mbps)
    measured = None
    if args.profile is not None:
        from dnninfer.cost.measured import load_cluster_profile

        measured = load_cluster_profile(args.profile)
    loaded, g = load_graph(args)
    return loaded, CostModel.build(g, cluster, host=args.host_estimate, source=args.source, measured=measured)


def cmd_partition(args: argparse.Namespace) -> None:
    import torch

    from dnninfer.graph import max_abs_diff
    from dnninfer.partition.strategies import STRATEGIES, plan

    if args.time_budget is not None and args.strategy not in (*HIDP_LEVELS, "all"):
        raise UserError(f"--time-budget: applies to the hidp strategies ({', '.join(HIDP_LEVELS)} or all), "
                        f"got --strategy {args.strategy}")
    loaded, cm = _cost_model(args)
    names = list(STRATEGIES) if args.strategy == "all" else [args.strategy]
    plans = []
    for name in names:
        try:
            if args.time_budget is not None and name in HIDP_LEVELS:
                from dnninfer.partition.hidp import plan_hidp

                plans.append(plan_hidp(cm, args.objective, levels=HIDP_LEVELS[name], strategy=name,
                                       time_budget=args.time_budget))
            else:
                plans.append(plan(cm, name, args.objective))
        except UserError as e:
            if len(names) == 1:
                raise
            print(f"dnninfer: {name}: skipped: {e}", file=sys.stderr)
    if not plans:
        raise UserError("no strategy found a feasible plan")
    chosen = plans[0]
    out: dict[str, Any] = {"model": loaded.name, "cluster": cm.cluster.name, "objective": args.objective,
                           "plans": [{**p.to_dict(), **({"search": p.search} if p.search else {})} for p in plans]}
    if args.run:
        from dnninfer.partition.execute import run_plan

        with torch.no_grad():
            ref = loaded.model(*loaded.inputs)
        runs = []
        for p in plans:
            if args.runtime == "ray":
                from dnninfer.runtime import RayRuntime

                with RayRuntime(threads=1) as rt:
                    result = run_plan(p, cm, loaded.inputs, runtime=rt)
            else:
                result = run_plan(p, cm, loaded.inputs)
            err = max_abs_diff(result.output, ref)
            runs.append({"strategy": p.strategy, "max_abs_err": err, "equal": err <= 1e-4,
                         "measured_ms": result.wall_s * 1e3, "predicted_ms": p.latency_s * 1e3,
                         "bytes_sent": result.bytes_sent})
        out["runs"] = runs
        out["note"] = ("measured on this host with emulated links; predicted for the cluster's devices "
                       "(equal only for host clusters such as local3)")
    if args.json:
        emit(args, out, "")
        return
    if len(plans) > 1:
        rows = [{"strategy": p.strategy, "mode": p.mode, "latency_ms": p.latency_s * 1e3,
                 "energy_mj": p.energy_j * 1e3, "throughput_ips": p.throughput_ips,
                 "bytes_sent": p.bytes_sent, "nodes": ",".join(p.nodes_used)} for p in plans]
        emit(args, out, f"{loaded.name} on {cm.cluster.name} ({args.objective})", rows)
    else:
        emit(args, out, f"{chosen.strategy}: {loaded.name} on {cm.cluster.name}", chosen.stages,
             ["stage", "role", "target", "tile", "nodes", "first", "last", "in_bytes", "transfer_ms",
               "compute_ms", "start_ms", "finish_ms"])
        console = stdout()
        console.print(f"[bold]{chosen.mode}[/]: latency {chosen.latency_s * 1e3:.1f} ms, energy "
                      f"{chosen.energy_j * 1e3:.1f} mJ, throughput {chosen.throughput_ips:.2f}/s "
                      f"(bottleneck: {chosen.bottleneck}), {chosen.bytes_sent} bytes sent")
        console.print(f"why: {chosen.reason}", markup=False)
    if args.run:
        emit(args, out, "real execution", out["runs"])
