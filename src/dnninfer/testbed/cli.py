"""`dnninfer testbed up|status|down|run`: the edge testbed (needs root)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from dnninfer import argtypes as at
from dnninfer.cliutil import emit


def _dilation(text: str) -> float | None:
    if text == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number > 0, got {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected auto or a number > 0, got {text!r}")
    return value


def _plan_from(text: str) -> tuple[str, ...]:
    parts = tuple(dict.fromkeys(x.strip() for x in text.split(",")))
    if not parts or any(x not in ("cited", "measured") for x in parts):
        raise argparse.ArgumentTypeError(f"expected measured, cited or both (comma list), got {text!r}")
    return parts


def add_commands(sub: Any) -> None:
    p = sub.add_parser("testbed", help="edge testbed: Ray nodes in shaped network namespaces, PUs throttled by cgroups")
    tsub = p.add_subparsers(dest="testbed_command", required=True)
    u = tsub.add_parser("up", help="bring up one namespace + Ray node per device of CLUSTER, calibrate")
    u.add_argument("cluster", help="cluster config name or YAML (one default link)")
    u.add_argument("--dilation", type=_dilation, default=None, metavar="auto|D",
                   help="time dilation (default auto: the smallest that fits the PUs in 1.6 cores)")
    u.add_argument("--no-calibrate", action="store_true", help="skip the PU and link calibration")
    u.add_argument("--json", action="store_true")
    u.set_defaults(func=cmd_up)
    for name, text, func in (("status", "configured vs calibrated PU speeds and link rates", cmd_status),
                             ("down", "stop and remove everything the testbed made (idempotent)", cmd_down)):
        q = tsub.add_parser(name, help=text)
        q.add_argument("--json", action="store_true")
        q.set_defaults(func=func)
    r = tsub.add_parser("run", help="plan MODEL(s) on the testbed's cluster with each strategy and execute there")
    r.add_argument("models", nargs="+", help="zoo model names (nodes rebuild them from name and seed)")
    r.add_argument("--strategy", default="hidp", help="a strategy, a comma list, or all")
    r.add_argument("--objective", choices=["latency", "energy", "throughput"], default="latency")
    r.add_argument("--bandwidth-mbps", type=at.positive_float, nargs="*", default=None,
                   help="link bandwidths to run (undilated Mbit/s; default the cluster's)")
    r.add_argument("--requests", type=at.bounded_int(1, 1000), default=5)
    r.add_argument("--stream", type=at.bounded_int(0, 1000), default=0,
                   help="also measure throughput over a stream of this many pipelined requests")
    r.add_argument("--seed", type=at.seed, default=0)
    r.add_argument("--host-estimate", choices=["measure", "flops"], default="measure")
    r.add_argument("--plan-from", default="measured", type=_plan_from, metavar="measured|cited|cited,measured",
                   help="plan from each model's profile measured on the testbed's PUs (default) or from the "
                        "device YAMLs' cited speeds; both: every distinct plan executed once")
    r.add_argument("--cluster", default="testbed", metavar="testbed|HOST:PORT",
                   help="the testbed that is up, or the Ray address of real boards (with --config)")
    r.add_argument("--config", default=None, help="real boards: the cluster YAML naming their nodes and PUs")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_run)
    f = tsub.add_parser("fault", help="a link or raylet fault during a request stream: re-plan, count lost requests")
    f.add_argument("model", help="zoo model name")
    f.add_argument("--fault", choices=["link", "raylet"], default="link")
    f.add_argument("--strategy", default="uniform", help="a strategy whose plan uses a non-source device")
    f.add_argument("--requests", type=at.bounded_int(2, 1000), default=8)
    f.add_argument("--timeout-s", type=at.positive_float, default=20.0,
                   help="real seconds without an answer before a device counts as failed")
    f.add_argument("--seed", type=at.seed, default=0)
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=cmd_fault)


def _ray_quiet() -> contextlib.AbstractContextManager[object]:
    """Ray's driver prints node-death notices to stdout; keep stdout for the one JSON object."""
    return contextlib.redirect_stdout(sys.stderr)


def _log(msg: str) -> None:
    print(f"testbed: {msg}", file=sys.stderr)


def cmd_up(args: argparse.Namespace) -> None:
    from dnninfer.testbed.core import NOTE, status, up

    with _ray_quiet():
        up(args.cluster, args.dilation, calibrate=not args.no_calibrate, log=_log)
    _show(args, status(), NOTE)


def cmd_status(args: argparse.Namespace) -> None:
    from dnninfer.testbed.core import NOTE, status

    _show(args, status(), NOTE)


def _show(args: argparse.Namespace, st: dict[str, Any], note: str) -> None:
    cal = st.get("calibration") or {}
    rows = []
    for n in st["nodes"]:
        for pu, speed in n["pus"].items():
            c = cal.get("pus", {}).get(f"{n['name']}/{pu}", {})
            q = st["quotas"].get(f"{n['name']}/{pu}", {})
            rows.append({"target": f"{n['name']}/{pu}", "netns": n["netns"], "ip": n["ip"],
                         "speed (host cores)": round(speed, 3), "measured": c.get("measured"),
                         "quota us/period": f"{q.get('quota_us')}/{q.get('period_us')}",
                         "link Mbit/s": n["rate_mbps"] or "per pair"})
    if not args.json:
        emit(args, st, f"testbed {st['cluster']}: dilation {st['dilation']:g}; {note}", rows)
        links = [{"link": k, **v} for k, v in cal.get("links", {}).items()]
        if links:
            emit(args, st, "links (undilated): configured vs measured", links)
    else:
        emit(args, st, "")


def cmd_down(args: argparse.Namespace) -> None:
    from dnninfer.testbed.core import down

    out = down()
    removed = {k: len(v) for k, v in out["removed"].items()}
    emit(args, out, "testbed down: removed", [removed])


def cmd_run(args: argparse.Namespace) -> None:
    from dnninfer.partition.strategies import STRATEGIES
    from dnninfer.testbed.core import NOTE
    from dnninfer.testbed.experiment import run_cases
    from dnninfer.testbed.profile import resolve_cluster

    state = resolve_cluster(args.cluster, args.config)
    strategies = list(STRATEGIES) if args.strategy == "all" else args.strategy.split(",")
    with _ray_quiet():
        rows = run_cases(args.models, strategies, bandwidths=args.bandwidth_mbps or (None,), requests=args.requests,
                         stream=args.stream, objective=args.objective, host=args.host_estimate, seed=args.seed,
                         plan_from=args.plan_from, log=_log, state=state)
    note = f"real boards at {state.address}: their own speeds and links, nothing emulated" if state.boards else NOTE
    obj = {"cluster": state.cluster, "dilation": state.dilation, "note": note, "rows": rows,
           "calibration": state.calibration}
    emit(args, obj, f"testbed {state.cluster} (dilation {state.dilation:g}); {note}",
         [{k: r[k] for k in ("model", "bandwidth_mbps", "strategy", "planned_from", "stages", "predicted_latency_s",
                             "measured_latency_s", "pred_error", "max_abs_error")} for r in rows])


def cmd_fault(args: argparse.Namespace) -> None:
    from dnninfer.testbed.faults import fault_run

    with _ray_quiet():
        out = fault_run(args.model, fault=args.fault, strategy=args.strategy, requests=args.requests,
                        timeout_s=args.timeout_s, seed=args.seed)
    emit(args, out, f"testbed fault: {out['fault']} of {out['node']}; {out['note']}",
         [{k: out[k] for k in ("fault", "node", "requests", "answered", "lost", "retried", "recovery_s",
                               "max_abs_error")}])
