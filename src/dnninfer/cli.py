"""The one entry point, `dnninfer`. Core commands live here; each area may add its own by
shipping ``dnninfer/<area>/cli.py`` with ``add_commands(subparsers)`` (built from the public helpers
in `dnninfer.cliutil`), and each system's bench comes from the bench registry, so this file never
lists systems.

It answers at once (issue 22): nothing heavy (torch, Ray, an area, a bench) is imported before the
arguments are parsed. `AREA_COMMANDS` names each area command with its help line, so ``dnninfer
--help`` lists them without importing an area; the area's ``cli.py`` is imported, and its
``add_commands`` called, only when one of its commands is on the command line, and the bench
registry only for ``bench``. A command missing from the table (an area that just grew one) still
works: a word the table does not know builds the whole parser, every area included, as before.
`build_parser()` with no argument also builds it whole. tests/test_cli_lazy.py checks the table
against what the areas register.

User mistakes (`UserError`) print one line, ``dnninfer: error: ...``, and exit 2. Numeric options
are checked where they are parsed (`dnninfer.argtypes`), so a nan or a 0 never reaches the work.
Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dnninfer import argtypes as at
from dnninfer.cliutil import Parser, emit, load_graph, model_args, one_line, stdout
from dnninfer.errors import UserError

#: Longest emulated round trip (ms) `run` accepts: the emulation sleeps for real.
MAX_RTT_MS = 60_000.0


# -- commands ----------------------------------------------------------------------------------
def cmd_models(args: argparse.Namespace) -> None:
    from dnninfer import zoo
    from dnninfer.graph import capture

    rows = []
    names = args.names or zoo.names()
    for name in names:
        spec = zoo.get(name)
        model = zoo.build_model(name)
        g = capture(model, zoo.example_inputs(name), name=name)
        rows.append({
            "name": name, "task": spec.task, "origin": spec.origin,
            "input": " ".join(f"{list(s.shape)}:{str(s.dtype).removeprefix('torch.')}" for s in spec.input_specs),
            "params": g.param_count, "mflops": round(g.total_flops / 1e6, 2), "flops": g.total_flops,
            "nodes": len(g.compute_nodes()), "description": spec.description,
        })
        del model, g
    emit(args, {"models": rows}, "model zoo", rows, ["name", "task", "origin", "input", "params", "mflops", "nodes"])


def cmd_inspect(args: argparse.Namespace) -> None:
    loaded, g = load_graph(args)
    rows = g.to_rows()
    if args.blocks:
        rows = [{"block": b.index, "first": b.nodes[0], "last": b.nodes[-1], "nodes": len(b.nodes),
                 "flops": b.flops, "param_bytes": b.param_bytes, "out_bytes": b.out_bytes} for b in g.chain()]
    obj = {"model": loaded.name, "summary": g.summary(), "blocks" if args.blocks else "nodes": rows}
    emit(args, obj, f"{loaded.name}: {g!r}", rows)


def cmd_profile(args: argparse.Namespace) -> None:
    from dnninfer.cost import load_device, predict, profile
    from dnninfer.cost.predict import fit

    if args.cluster is not None:
        return _profile_cluster(args)
    if args.out is not None or args.config is not None:
        raise UserError(f"{'--out' if args.out is not None else '--config'}: goes with --cluster (a measured "
                        "profile of a cluster's devices)")
    loaded, g = load_graph(args)
    measured = profile(g, warmup=args.warmup, repeats=args.repeats, threads=args.threads, cache=not args.no_cache)
    samples = [(g.nodes[n], s) for n, s in measured.node_s.items()]
    model = fit(samples, graph=g)
    devices = [load_device(d) for d in args.device]
    preds = {d.name: predict(g, d, model=model) for d in devices}
    host_pred = predict(g, load_device("host"), model=model)
    rows = []
    for n in g.compute_nodes():
        row = {"name": n.name, "kind": n.kind, "flops": n.flops, "out_bytes": n.out_bytes,
               "measured_ms": measured.node_s.get(n.name, 0.0) * 1e3,
               "predicted_host_ms": host_pred[n.name] * 1e3}
        for dev, p in preds.items():
            row[f"{dev}_ms"] = p[n.name] * 1e3
        rows.append(row)
    totals = {"measured_ms": sum(r["measured_ms"] for r in rows),
              "whole_model_ms": measured.whole_model_s * 1e3,
              "predicted_host_ms": sum(r["predicted_host_ms"] for r in rows),
              **{f"{d}_ms": sum(p.values()) * 1e3 for d, p in preds.items()}}
    obj = {"model": loaded.name, "threads": args.threads, "repeats": args.repeats, "totals": totals, "nodes": rows}
    if args.json:
        emit(args, obj, "")
    else:
        emit(args, obj, f"{loaded.name}: measured (this host, {args.threads} thread) vs predicted", rows)
        emit(args, totals, "totals (ms)")


def _profile_cluster(args: argparse.Namespace) -> None:
    """Per-node latency measured on every PU of a running testbed or of real boards, saved as the
    measured profile `partition --profile` plans from."""
    from dnninfer.cost import profile
    from dnninfer.testbed.profile import profile_cluster, resolve_cluster, summary_rows
    from dnninfer.testbed.runtime import ModelSource

    if args.out is None:
        raise UserError("--cluster: needs --out FILE (where the measured profile is written)")
    out = Path(args.out)
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder; expected a file path for the profile")
    state = resolve_cluster(args.cluster, args.config)
    source = ModelSource.of(args.model, seed=args.seed, batch=args.batch, input_shape=args.input_shape,
                            weights=args.weights, trust_pickle=args.trust_pickle, flops_rules=args.flops_rules)
    loaded, g = load_graph(args)  # fails here, before any node is asked, for a model that does not load
    with contextlib.redirect_stdout(sys.stderr):  # Ray's notices: stdout keeps the one JSON object
        prof = profile_cluster(source, state, warmup=args.warmup, repeats=args.repeats,
                               log=lambda m: print(f"dnninfer: {m}", file=sys.stderr))
    try:
        prof.save(out)
    except OSError as e:
        raise UserError(f"--out {out}: cannot write the profile: {e.strerror or e}") from None
    host = profile(g, threads=1, repeats=args.repeats, warmup=args.warmup, cache=not args.no_cache)
    rows = summary_rows(prof, state.load_cluster(), host.whole_model_s)
    obj = {"model": loaded.name, "cluster": state.cluster, "where": prof.where, "dilation": prof.dilation,
           "profile": str(out), "targets": rows}
    emit(args, obj, f"{loaded.name} measured on {prof.where} ({state.cluster}); speed = host one-thread time / "
                    f"PU time; written to {out}", rows)


def cmd_devices(args: argparse.Namespace) -> None:
    from dnninfer.cost import list_devices, load_device

    rows = []
    for name in list_devices():
        d = load_device(name)
        for pu in d.pus:
            rows.append({"device": d.name, "pu": pu.name, "kind": pu.kind, "cores": pu.cores,
                         "speed": pu.speed, "p_active_w": pu.p_active_w, "p_idle_w": pu.p_idle_w})
    emit(args, {"devices": rows}, "device profiles (speed: x one host core)", rows)


def cmd_run(args: argparse.Namespace) -> None:
    """Split a model into K chain stages and run it for real, checking output equality."""
    import torch

    from dnninfer.graph import equal_flops_chain, max_abs_diff
    from dnninfer.runtime import EMULATION_NOTE, RayRuntime, SimpleLink, run_inprocess

    if args.rtt_ms is not None and args.bandwidth_mbps is None:
        raise UserError("--rtt-ms: needs --bandwidth-mbps (links are emulated only when a bandwidth is given)")
    loaded, g = load_graph(args)
    blocks = len(g.chain())
    if args.stages > blocks:
        print(f"dnninfer: note: {loaded.name} has {blocks} chain block(s); running {blocks} stage(s), "
              f"not {args.stages}", file=sys.stderr)
    stages = g.split(equal_flops_chain(g, min(args.stages, blocks)))
    placement = [f"node{i}" for i in range(len(stages))]
    # `is not None`: a bandwidth was asked for, so emulate it (0 is refused at parse time)
    link = SimpleLink(args.bandwidth_mbps, args.rtt_ms or 0.0) if args.bandwidth_mbps is not None else None
    with torch.no_grad():
        ref = loaded.model(*loaded.inputs)
    if args.runtime == "ray":
        with RayRuntime(address=args.address, threads=args.threads) as rt:
            rt.deploy(stages, placement, links=link)
            result = rt.run(g, loaded.inputs)
    else:
        result = run_inprocess(g, stages, loaded.inputs, placement=placement, links=link)
    err = max_abs_diff(result.output, ref)
    obj = {"model": loaded.name, "runtime": args.runtime, "stages": len(stages), "max_abs_err": err,
           "equal": err <= 1e-5, **result.summary(), "note": EMULATION_NOTE if link else "no link emulation"}
    rows = [{"stage": s.index, "node": placement[i], "nodes": len(s.nodes), "inputs": len(s.inputs),
             "compute_ms": result.compute_s.get(s.index, 0) * 1e3} for i, s in enumerate(stages)]
    if args.json:
        emit(args, obj, "")
    else:
        emit(args, obj, f"{loaded.name} on {len(stages)} stages ({args.runtime})", rows)
        print(f"max |split - whole| = {err:.2e}; wall {result.wall_s * 1e3:.1f} ms; "
              f"{result.bytes_sent} bytes sent; {obj['note']}")


def cmd_bench(args: argparse.Namespace) -> None:
    from dnninfer.bench import registry
    from dnninfer.bench.output import emit_json, print_table

    extra = {k: v for k, v in vars(args).items() if k not in _BENCH_KEYS}
    if args.out:
        _make_out_dir(Path(args.out), "--out")
    result = registry.run_system(args.system, registry.BenchArgs(quick=args.quick, seed=args.seed,
                                                                 out=args.out, extra=extra, smoke=args.smoke))
    if args.out:
        import json

        from dnninfer.bench.output import to_jsonable

        target = Path(args.out) / f"{args.system}.json"
        try:
            target.write_text(json.dumps(to_jsonable(result), indent=2))
        except OSError as e:
            raise UserError(f"--out {args.out}: cannot write {target.name}: {e.strerror or e}") from None
    if args.json:
        emit_json(result)
    else:
        print_table(f"{args.system}: ours", [result["ours"]], console=stdout())
        if result.get("rows"):
            print_table(f"{args.system}: rows", result["rows"], console=stdout())


_BENCH_KEYS = {"command", "func", "system", "quick", "smoke", "json", "seed", "out"}


def _make_out_dir(path: Path, flag: str) -> None:
    """Create the output folder the user named, before any work: a bad path fails in one line, not
    after minutes of benchmarking."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as e:  # not a folder, read-only, a NUL byte...
        raise UserError(f"{flag} {path}: expected a folder that can be created and written, "
                        f"got {type(e).__name__}: {getattr(e, 'strerror', None) or e}") from None


def cmd_report(args: argparse.Namespace) -> None:
    from dnninfer.report import build_report

    _make_out_dir(Path(args.out), "--out")
    index = build_report(Path(args.out), quick=args.quick, smoke=args.smoke, seed=args.seed,
                         systems=args.systems or None)
    print(index)


# -- parser ------------------------------------------------------------------------------------
#: Area commands: name -> (the module whose ``add_commands`` registers it, its help line), in the
#: order ``--help`` lists them (areas alphabetically, as the package walk finds them).
AREA_COMMANDS: dict[str, tuple[str, str]] = {
    "cbnet": ("dnninfer.adaptive.cli", "CBNet: converting autoencoder + light classifier vs BranchyNet"),
    "dpra": ("dnninfer.bdt.cli", "DPRA: Lyapunov dynamic partitioning with a reputation-staked ledger"),
    "ledger": ("dnninfer.ledger.cli", "verify or inspect a B-DT blockchain ledger (SQLite file)"),
    "mcu": ("dnninfer.memory.cli", "MCU int8 inference: vMCU / TinyEngine / TFLM memory plans, pool execution, C"),
    "partition": ("dnninfer.partition.cli", "partition a model across a cluster (HiDP and baselines)"),
    "quant": ("dnninfer.quant.cli", "signed binarization (PLUM) and binary/ternary QAT"),
    "rns": ("dnninfer.rns.cli", "Mirage: RNS arithmetic for analog DNN training (train, cost model)"),
    "schedule": ("dnninfer.schedule.cli", "plan a model onto streams (Opara, Nimble, ...) and run the plan"),
    "serve": ("dnninfer.serving.cli", "serve a zoo classifier (and a detector -> classifier pipeline) over HTTP"),
    "loadtest": ("dnninfer.serving.cli", "load a dnninfer server: closed loop (--concurrency) or open loop (--rate)"),
    "testbed": ("dnninfer.testbed.cli",
                "edge testbed: Ray nodes in shaped network namespaces, PUs throttled by cgroups"),
}
CORE_COMMANDS = ("models", "inspect", "profile", "devices", "run", "bench", "report")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv`, importing only what its command needs (the other area commands are
    listed by name and help line). Without `argv`: the whole parser, every area's commands and
    every bench system."""
    command = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    whole = command is None or (command and command not in AREA_COMMANDS and command not in CORE_COMMANDS)
    parser = Parser(prog="dnninfer", description="Fast, cheap DNN inference on the hardware you have.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    _core_commands(sub, benches=bool(whole) or command == "bench")
    if whole:
        for area in _area_cli_modules():
            area.add_commands(sub)
        return parser
    wanted = AREA_COMMANDS[command][0] if command in AREA_COMMANDS else None
    for name, (module, help_line) in AREA_COMMANDS.items():
        if module != wanted:
            sub.add_parser(name, help=help_line)  # listed; its options are parsed only when it runs
        elif next(c for c, (m, _) in AREA_COMMANDS.items() if m == module) == name:
            importlib.import_module(module).add_commands(sub)  # the area's commands, at its first one's place
    return parser


def _core_commands(sub: Any, *, benches: bool) -> None:
    p = sub.add_parser("models", help="list the model zoo: input shape, params, FLOPs")
    p.add_argument("names", nargs="*", help="only these models")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("inspect", help="per-layer table of a model's captured graph")
    model_args(p)
    p.add_argument("--blocks", action="store_true", help="show the chain of blocks instead of nodes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("profile", help="measure per-node latency here; predict it on device profiles")
    model_args(p)
    p.add_argument("--device", action="append", default=None, help="device profile (repeatable)")
    p.add_argument("--repeats", type=at.bounded_int(1, 10_000), default=10)
    p.add_argument("--warmup", type=at.bounded_int(0, 10_000), default=3)
    p.add_argument("--threads", type=at.threads, default=1)
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--cluster", default=None, metavar="testbed|HOST:PORT",
                   help="measure on every PU of a running cluster instead: the testbed, or real boards' Ray address")
    p.add_argument("--config", default=None, metavar="CLUSTER",
                   help="with --cluster HOST:PORT: the cluster YAML naming the boards (resources tb_<node>)")
    p.add_argument("--out", default=None, metavar="FILE", help="with --cluster: write the measured profile here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("devices", help="list device profiles")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("run", help="split a model into stages and run it (in-process or on Ray)")
    model_args(p)
    p.add_argument("--stages", type=at.positive_int, default=3,
                   help="chain stages (at most the model's chain blocks; more are capped, with a note)")
    p.add_argument("--runtime", choices=["inprocess", "ray"], default="inprocess")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local one)")
    p.add_argument("--threads", type=at.threads, default=1, help="intra-op threads per Ray node")
    p.add_argument("--bandwidth-mbps", type=at.positive_float, default=None,
                   help="emulate links of this bandwidth in Mbit/s (> 0); omit it for no link emulation")
    p.add_argument("--rtt-ms", type=at.bounded_float(0.0, MAX_RTT_MS), default=None,
                   help="round-trip time of the emulated links (needs --bandwidth-mbps; default 0)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("bench", help="benchmark a system against its baselines")
    if benches:
        _bench_systems(p)

    p = sub.add_parser("report", help="run every bench and write an HTML report")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--smoke", action="store_true", help="every bench at its smoke level (checks the pipeline, ~3 min)")
    p.add_argument("--out", default="report")
    p.add_argument("--seed", type=at.seed, default=0)
    p.add_argument("--systems", nargs="*", help="only these systems")
    p.set_defaults(func=cmd_report)


def _bench_systems(p: argparse.ArgumentParser) -> None:
    """One subcommand per registered bench system (imports every area's bench module)."""
    from dnninfer.bench import registry

    registry.load_all()
    systems = p.add_subparsers(dest="system", required=True, parser_class=Parser)
    for name, system in sorted(registry.SYSTEMS.items()):
        sp = systems.add_parser(name, help=system.description)
        sp.add_argument("--quick", action="store_true", help="small run, under a minute")
        sp.add_argument("--smoke", action="store_true",
                        help="smallest run through every code path (~20 s, what the tests run)")
        sp.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        sp.add_argument("--seed", type=at.seed, default=0)
        sp.add_argument("--out", type=Path, default=None, help="also write <system>.json (and plots) here")
        if system.add_arguments:
            system.add_arguments(sp)
        sp.set_defaults(func=cmd_bench)


def _area_cli_modules() -> list[Any]:
    import dnninfer

    mods = []
    for info in pkgutil.iter_modules(dnninfer.__path__):
        if info.ispkg and importlib.util.find_spec(f"dnninfer.{info.name}.cli") is not None:
            mods.append(importlib.import_module(f"dnninfer.{info.name}.cli"))
    return mods


def main(argv: Sequence[str] | None = None) -> int:
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        if getattr(args, "device", "unset") is None:
            args.device = ["rpi4", "jetson_nano"]
        args.func(args)
    except UserError as e:
        print(f"dnninfer: error: {one_line(str(e)) or type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dnninfer: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `dnninfer ... | head`: the reader left; nothing is wrong here
        _silencestdout()
        return 141
    return 0


def _silencestdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush is quiet."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (tests, capsys)
        pass


if __name__ == "__main__":
    raise SystemExit(main())
