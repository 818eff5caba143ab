"""`dnninfer ledger verify|show|demo`: check a B-DT ledger file, list its chain, or make a demo one.

`verify` replays every stored block from genesis (signatures, Merkle roots, stake targets, PoW,
reputation roots, fork choice) and prints a summary; a corrupt or forged ledger is one line,
``dnninfer: error: ...``, and exit status 2.
"""

from __future__ import annotations

import argparse
from typing import Any

from dnninfer.errors import UserError


def add_commands(sub: Any) -> None:
    from dnninfer.cli import _Parser

    p = sub.add_parser("ledger", help="verify or inspect a B-DT blockchain ledger (SQLite file)")
    cmds = p.add_subparsers(dest="ledger_command", required=True, parser_class=_Parser)

    v = cmds.add_parser("verify", help="re-validate every block; summary of height, head and reputations")
    v.add_argument("path")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_verify)

    s = cmds.add_parser("show", help="list the main chain's blocks (after verifying them)")
    s.add_argument("path")
    s.add_argument("--last", type=int, default=20, help="only the last N blocks (0: all)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_show)

    d = cmds.add_parser("demo", help="write a small synthetic ledger (gateways, APs, mined blocks)")
    d.add_argument("path")
    d.add_argument("--blocks", type=int, default=10)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--expected-hashes", type=float, default=4096, help="mean hashes per block at zero reputation")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_demo)


def _open_verified(path: str) -> Any:
    from dnninfer.ledger.store import open_ledger

    ledger = open_ledger(path, strict=False, readonly=True)
    if ledger.problems:
        n = len(ledger.problems)
        ledger.close()
        raise UserError(f"{path}: invalid ledger: {ledger.problems[0]}"
                        + (f" (and {n - 1} more invalid row(s))" if n > 1 else "")
                        + f"; {len(ledger.blocks) - 1} valid block(s) before it")
    return ledger


def summary(ledger: Any) -> dict[str, Any]:
    """What `verify` reports: size, head, and per-AP reputation, stake target and blocks mined."""
    chain = ledger.main_chain()
    rep = ledger.reputation()
    mined = ledger.mined_counts()
    aps = [{"ap": ap, "reputation": rep[ap], "blocks_mined": mined[ap],
            "next_expected_hashes": round(ledger.expected_hashes(ap), 1)} for ap in ledger.params.aps]
    return {"valid": True, "blocks": len(ledger.blocks) - 1, "height": ledger.height, "head": ledger.head.hash,
            "cumulative_work": ledger.work[ledger.head.hash], "orphans": len(ledger.stale_blocks()),
            "receipts": sum(len(b.receipts) for b in chain), "params": ledger.params.to_dict(), "aps": aps}


def cmd_verify(args: argparse.Namespace) -> None:
    from dnninfer.cli import _emit, _stdout

    with _open_verified(args.path) as ledger:
        s = summary(ledger)
    _emit(args, s, f"{args.path}: valid", s["aps"])
    if not args.json:
        _stdout().print(f"{s['blocks']} blocks, height {s['height']}, head {s['head']}, {s['orphans']} orphans "
                        f"(valid blocks off the main chain), {s['receipts']} receipts", markup=False)


def cmd_show(args: argparse.Namespace) -> None:
    from dnninfer.cli import _emit
    from dnninfer.ledger.consensus import HASH_SPACE

    with _open_verified(args.path) as ledger:
        chain = ledger.main_chain()
        rows = [{"height": b.index, "hash": b.hash[:16], "miner": b.miner, "receipts": len(b.receipts),
                 "expected_hashes": round(HASH_SPACE / b.target, 1), "timestamp_s": b.timestamp,
                 "reputation": ", ".join(f"{ap}={rho:.4f}" for ap, rho in ledger.reputation(b.hash).items())}
                for b in chain]
    if args.last > 0:
        rows = rows[-args.last:]
    _emit(args, {"blocks": rows}, f"{args.path}: main chain (height {chain[-1].index})", rows)


def cmd_demo(args: argparse.Namespace) -> None:
    import random

    from dnninfer.cli import _emit
    from dnninfer.ledger.demo import demo_params, extend_demo
    from dnninfer.ledger.receipt import Keyring
    from dnninfer.ledger.store import create_ledger

    params = demo_params(expected_hashes=args.expected_hashes)
    with create_ledger(args.path, params, Keyring.derive(params.gateways, f"demo-{args.seed}")) as ledger:
        hashes = extend_demo(ledger, args.blocks, random.Random(args.seed))
        s = summary(ledger)
    s["hashes"] = hashes
    _emit(args, s, f"{args.path}: {args.blocks} blocks mined ({hashes} hashes)", s["aps"])
