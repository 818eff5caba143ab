"""`dnninfer dpra simulate`: DPRA and its baselines on a zoo model's workload; ``--run`` executes
every split and mines a real ledger."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dnninfer import argtypes as at
from dnninfer.cliutil import emit, stdout
from dnninfer.errors import UserError

#: Longest simulation the CLI accepts: each slot solves an exact search, about 5 ms.
MAX_SLOTS = 100_000


def add_commands(sub: Any) -> None:
    from dnninfer.bdt.dpra import METHODS

    p = sub.add_parser("dpra", help="DPRA: Lyapunov dynamic partitioning with a reputation-staked ledger")
    dsub = p.add_subparsers(dest="dpra_command", required=True)
    s = dsub.add_parser("simulate", help="simulate slots on a zoo model's workload; --run executes and keeps a ledger")
    s.add_argument("--model", default="vgg16", help="zoo model whose chain gives the split points")
    s.add_argument("--slots", type=at.bounded_int(1, MAX_SLOTS), default=100)
    s.add_argument("--V", type=at.positive_float, default=None,
                   help="Lyapunov weight on latency, > 0 (default: the config's)")
    s.add_argument("--method", default="dpra", choices=[*METHODS, "all"])
    s.add_argument("--segments", type=at.positive_int, default=6,
                   help="split points = segments + 1 (chain grouped by time)")
    s.add_argument("--run", action="store_true", help="execute every split, sign receipts, mine one block per slot")
    s.add_argument("--ledger", default=None, help="SQLite ledger file for --run (must not exist yet)")
    s.add_argument("--testbed", action="store_true",
                   help="execute one gateway's split each slot on the running testbed (first device: gateway, "
                        "second: AP), its link's tbf rate following the channel slot by slot")
    s.add_argument("--gateway", type=at.bounded_int(0, 1000), default=None,
                   help="with --testbed: the gateway executed (default: the one that offloads most)")
    s.add_argument("--host-estimate", choices=["measure", "flops"], default="measure")
    s.add_argument("--seed", type=at.seed, default=0)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> None:
    from dnninfer.bdt.dpra import METHODS
    from dnninfer.bdt.run import run

    if args.ledger is not None and not args.run:
        raise UserError("--ledger needs --run (the ledger holds the receipts of executed splits)")
    if args.ledger is not None and Path(args.ledger).exists():
        raise UserError(f"--ledger {args.ledger}: file exists; give a new path (verify old ones with `ledger verify`)")
    methods = list(METHODS) if args.method == "all" else [args.method]
    cfg = None if args.V is None else _cfg(args, {"V": args.V})
    if args.gateway is not None and not args.testbed:
        raise UserError("--gateway: goes with --testbed (the gateway whose splits are executed there)")
    if args.testbed:
        return _on_testbed(args, methods, cfg)
    rows = []
    for i, method in enumerate(methods):
        out = run(args.model, slots=args.slots, method=method, segments=args.segments,
                  ledger_path=args.ledger if (args.run and i == 0) else None, execute=args.run and i == 0,
                  seed=args.seed, host=args.host_estimate, cfg=cfg)
        out.pop("result")
        rows.append(out)
    if args.json:
        emit(args, {"runs": rows}, "")
        return
    table = [{"method": r["method"], "avg_latency_s": r["avg_latency_s"], "min_avg_u": min(r["avg_u"]),
              "u_th": r["u_th"], "constraint_met": r["constraint_met"], "avg_backlog": r["avg_backlog"]} for r in rows]
    emit(args, {"runs": rows}, f"DPRA on {rows[0]['workload']} ({args.slots} slots)", table)
    if "ledger" in rows[0]:
        led = rows[0]["ledger"]
        stdout().print(f"ledger: {led['blocks']} blocks, {led['receipts']} receipts, {led['hashes']} hashes "
                       f"(difficulty / {led['difficulty_scale']:g}), outputs max |err| {led['max_abs_err']:.1e}, "
                       f"reputation {led['reputation']} (controller gap {led['reputation_gap_vs_controller']:.1e})"
                       + (f"; saved to {led['path']}" if led["path"] else ""), markup=False)


def _on_testbed(args: argparse.Namespace, methods: list[str], cfg: Any) -> None:
    import contextlib
    import sys

    from dnninfer.bdt.onbed import run_on_testbed

    if args.run or len(methods) > 1:
        raise UserError("--testbed: one --method at a time, without --run (the ledger run is in-process)")
    with contextlib.redirect_stdout(sys.stderr):  # Ray's notices stay off stdout
        out = run_on_testbed(args.model, slots=args.slots, method=methods[0], cfg=cfg, segments=args.segments,
                             gateway=args.gateway, seed=args.seed, host=args.host_estimate,
                             log=lambda m: print(f"dpra: {m}", file=sys.stderr))
    if args.json:
        emit(args, out, "")
        return
    keys = ("slot", "split", "rate_mbps", "f_inf_ghz", "predicted_s", "predicted_with_runtime_s", "measured_s", "error")
    emit(args, out, f"DPRA {out['method']} on the testbed ({out['cluster']}, dilation {out['dilation']:g}), gateway "
                    f"{out['gateway']}: {out['note']}", [{k: r[k] for k in keys} for r in out["rows"]])
    emit(args, out["summary"], "controller vs measured")


def _cfg(args: argparse.Namespace, overrides: dict[str, Any]) -> Any:
    """The model's scaled default config with CLI overrides (scaling needs the workload, so the model
    is captured here once more)."""
    from dnninfer import zoo
    from dnninfer.bdt.run import block_seconds, config_for, graph_workload
    from dnninfer.graph import capture

    g = capture(zoo.build_model(args.model, seed=args.seed), zoo.example_inputs(args.model, seed=args.seed),
                name=args.model)
    return config_for(graph_workload(g, block_seconds(g, args.host_estimate), args.segments).workload, args.seed,
                      **overrides)
