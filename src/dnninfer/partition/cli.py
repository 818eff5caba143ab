"""`dnninfer partition MODEL --cluster CFG`: plan (and optionally run) a partition of a model."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dnninfer import argtypes as at
from dnninfer.errors import UserError


def add_commands(sub: Any) -> None:
    from dnninfer.cli import _model_args
    from dnninfer.partition.plan import OBJECTIVES
    from dnninfer.partition.strategies import STRATEGIES

    p = sub.add_parser("partition", help="partition a model across a cluster (HiDP and baselines)")
    _model_args(p)
    p.add_argument("--cluster", default="edge3", help="cluster config name or YAML path (see configs/clusters)")
    p.add_argument("--strategy", default="hidp", choices=[*STRATEGIES, "all"],
                   help="planner; 'all' compares every strategy")
    p.add_argument("--objective", default="latency", choices=list(OBJECTIVES))
    p.add_argument("--source", default=None, help="node where inputs arrive (default: the first node)")
    p.add_argument("--bandwidth-mbps", type=at.positive_float, default=None,
                   help="override every link's bandwidth (Mbit/s, > 0)")
    p.add_argument("--host-estimate", choices=["measure", "flops"], default="measure",
                   help="per-node host times: measured here (cached) or a FLOPs estimate")
    p.add_argument("--run", action="store_true", help="execute the plan for real and check the output")
    p.add_argument("--runtime", choices=["inprocess", "ray"], default="inprocess")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_partition)
    add_dpra_commands(sub)


def _cost_model(args: argparse.Namespace) -> tuple[Any, Any]:
    from dnninfer.cli import _load_graph
    from dnninfer.cost import load_cluster
    from dnninfer.partition.costmodel import CostModel
    from dnninfer.partition.replan import with_bandwidth

    cluster = load_cluster(args.cluster)
    if args.bandwidth_mbps is not None:
        cluster = with_bandwidth(cluster, args.bandwidth_mbps)
    loaded, g = _load_graph(args)
    return loaded, CostModel.build(g, cluster, host=args.host_estimate, source=args.source)


def cmd_partition(args: argparse.Namespace) -> None:
    import torch

    from dnninfer.cli import _emit, _leaves, _stdout
    from dnninfer.partition.strategies import STRATEGIES, plan

    loaded, cm = _cost_model(args)
    names = list(STRATEGIES) if args.strategy == "all" else [args.strategy]
    plans = []
    for name in names:
        try:
            plans.append(plan(cm, name, args.objective))
        except UserError as e:
            if len(names) == 1:
                raise
            print(f"dnninfer: {name}: skipped: {e}", file=sys.stderr)
    if not plans:
        raise UserError("no strategy found a feasible plan")
    chosen = plans[0]
    out: dict[str, Any] = {"model": loaded.name, "cluster": cm.cluster.name, "objective": args.objective,
                           "plans": [p.to_dict() for p in plans]}
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
            err = max((a - b).abs().max().item()
                      for a, b in zip(_leaves(result.output), _leaves(ref), strict=True))
            runs.append({"strategy": p.strategy, "max_abs_err": err, "equal": err <= 1e-4,
                         "measured_ms": result.wall_s * 1e3, "predicted_ms": p.latency_s * 1e3,
                         "bytes_sent": result.bytes_sent})
        out["runs"] = runs
        out["note"] = ("measured on this host with emulated links; predicted for the cluster's devices "
                       "(equal only for host clusters such as local3)")
    if args.json:
        _emit(args, out, "")
        return
    if len(plans) > 1:
        rows = [{"strategy": p.strategy, "mode": p.mode, "latency_ms": p.latency_s * 1e3,
                 "energy_mj": p.energy_j * 1e3, "throughput_ips": p.throughput_ips,
                 "bytes_sent": p.bytes_sent, "nodes": ",".join(p.nodes_used)} for p in plans]
        _emit(args, out, f"{loaded.name} on {cm.cluster.name} ({args.objective})", rows)
    else:
        _emit(args, out, f"{chosen.strategy}: {loaded.name} on {cm.cluster.name}", chosen.stages,
              ["stage", "role", "target", "tile", "nodes", "first", "last", "in_bytes", "transfer_ms",
               "compute_ms", "start_ms", "finish_ms"])
        console = _stdout()
        console.print(f"[bold]{chosen.mode}[/]: latency {chosen.latency_s * 1e3:.1f} ms, energy "
                      f"{chosen.energy_j * 1e3:.1f} mJ, throughput {chosen.throughput_ips:.2f}/s "
                      f"(bottleneck: {chosen.bottleneck}), {chosen.bytes_sent} bytes sent")
        console.print(f"why: {chosen.reason}", markup=False)
    if args.run:
        _emit(args, out, "real execution", out["runs"])


def add_dpra_commands(sub: Any) -> None:
    from dnninfer.partition.dpra import METHODS

    p = sub.add_parser("dpra", help="DPRA: Lyapunov dynamic partitioning with a reputation-staked ledger")
    dsub = p.add_subparsers(dest="dpra_command", required=True)
    s = dsub.add_parser("simulate", help="simulate slots on a zoo model's workload; --run executes and keeps a ledger")
    s.add_argument("--model", default="vgg16", help="zoo model whose chain gives the split points")
    s.add_argument("--slots", type=at.bounded_int(1, 100_000), default=100)
    s.add_argument("--V", type=at.positive_float, default=None,
                   help="Lyapunov weight on latency, > 0 (default: the config's)")
    s.add_argument("--method", default="dpra", choices=[*METHODS, "all"])
    s.add_argument("--segments", type=at.positive_int, default=6,
                   help="split points = segments + 1 (chain grouped by time)")
    s.add_argument("--run", action="store_true", help="execute every split, sign receipts, mine one block per slot")
    s.add_argument("--ledger", default=None, help="SQLite ledger file for --run (must not exist yet)")
    s.add_argument("--host-estimate", choices=["measure", "flops"], default="measure")
    s.add_argument("--seed", type=at.seed, default=0)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_dpra_simulate)


def cmd_dpra_simulate(args: argparse.Namespace) -> None:
    from pathlib import Path

    from dnninfer.cli import _emit, _stdout
    from dnninfer.partition.dpra import METHODS
    from dnninfer.partition.dpra_run import run

    if args.ledger is not None and not args.run:
        raise UserError("--ledger needs --run (the ledger holds the receipts of executed splits)")
    if args.ledger is not None and Path(args.ledger).exists():
        raise UserError(f"--ledger {args.ledger}: file exists; give a new path (verify old ones with `ledger verify`)")
    methods = list(METHODS) if args.method == "all" else [args.method]
    cfg_overrides = {} if args.V is None else {"V": args.V}
    rows = []
    for i, method in enumerate(methods):
        out = run(args.model, slots=args.slots, method=method, segments=args.segments,
                  ledger_path=args.ledger if (args.run and i == 0) else None, execute=args.run and i == 0,
                  seed=args.seed, host=args.host_estimate, cfg=None if not cfg_overrides else _cfg(args, cfg_overrides))
        out.pop("result")
        rows.append(out)
    if args.json:
        _emit(args, {"runs": rows}, "")
        return
    table = [{"method": r["method"], "avg_latency_s": r["avg_latency_s"], "min_avg_u": min(r["avg_u"]),
              "u_th": r["u_th"], "constraint_met": r["constraint_met"], "avg_backlog": r["avg_backlog"]} for r in rows]
    _emit(args, {"runs": rows}, f"DPRA on {rows[0]['workload']} ({args.slots} slots)", table)
    if "ledger" in rows[0]:
        led = rows[0]["ledger"]
        _stdout().print(f"ledger: {led['blocks']} blocks, {led['receipts']} receipts, {led['hashes']} hashes "
                        f"(difficulty / {led['difficulty_scale']:g}), outputs max |err| {led['max_abs_err']:.1e}, "
                        f"reputation {led['reputation']} (controller gap {led['reputation_gap_vs_controller']:.1e})"
                        + (f"; saved to {led['path']}" if led["path"] else ""), markup=False)


def _cfg(args: argparse.Namespace, overrides: dict[str, Any]) -> Any:
    """The model's scaled default config with CLI overrides (needs the workload, so built here)."""
    from dnninfer import zoo
    from dnninfer.graph import capture
    from dnninfer.partition.costmodel import flops_estimate
    from dnninfer.partition.dpra_run import config_for, graph_workload, measured_block_seconds

    g = capture(zoo.build_model(args.model, seed=args.seed), zoo.example_inputs(args.model, seed=args.seed),
                name=args.model)
    if args.host_estimate == "measure":
        block_s = measured_block_seconds(g)
    else:
        est = flops_estimate(g)
        block_s = [sum(est[n] for n in b.nodes) for b in g.chain()]
    return config_for(graph_workload(g, block_s, args.segments).workload, args.seed, **overrides)
