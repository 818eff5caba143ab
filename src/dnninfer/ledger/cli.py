"""`dnninfer ledger verify|head|show|demo|keygen`: check a B-DT ledger file, print its head, list its
chain, make a demo one, or make a party's key file.

`verify` replays every stored block from genesis (Ed25519 signatures against the public keys in the
ledger, Merkle roots, stake targets, PoW, reputation roots, fork choice, the head record) and prints
a summary; it needs no private key, opens the file read-only and changes nothing beside it. With
``--expect-head HEIGHT:HASH`` (a head printed by `ledger head` earlier and kept outside the file)
the ledger must still hold that block on its main chain: a file rolled back to an older copy, or
replaced by another ledger, fails. Exit status: 0 valid, 2 invalid or unreadable. An invalid ledger is
one line on stderr, ``dnninfer: error: ...``; with ``--json`` stdout still gets exactly one JSON
object, ``{"path", "valid": false, "error", "block", "problems", "valid_blocks"}``, where `block`
is the height blamed by the first problem (null when unknown, e.g. the file is not a database).
Warnings in `ledger.warnings` (none are raised at present) would go to stderr as
``dnninfer: warning: ...`` and into the JSON as `warnings`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dnninfer import argtypes as at
from dnninfer.cliutil import Parser, emit, stdout
from dnninfer.errors import UserError

#: Past these a demo mines for hours (blocks x expected hashes SHA-256 evaluations in Python).
MAX_DEMO_BLOCKS = 100_000
MAX_EXPECTED_HASHES = 1e8


def add_commands(sub: Any) -> None:
    p = sub.add_parser("ledger", help="verify or inspect a B-DT blockchain ledger (SQLite file)")
    cmds = p.add_subparsers(dest="ledger_command", required=True, parser_class=Parser)

    v = cmds.add_parser("verify", help="re-validate every block; summary of height, head and reputations")
    v.add_argument("path")
    v.add_argument("--json", action="store_true",
                   help="one JSON object on stdout, also for an invalid ledger (then with exit status 2)")
    v.add_argument("--expect-head", type=_head_arg, default=None, metavar="HEIGHT:HASH",
                   help="a head kept from `ledger head`: fail unless that block is still on the main chain")
    v.set_defaults(func=cmd_verify)

    h = cmds.add_parser("head", help="verify, then print the head (HEIGHT:HASH) to keep for --expect-head")
    h.add_argument("path")
    h.add_argument("--json", action="store_true")
    h.set_defaults(func=cmd_head)

    s = cmds.add_parser("show", help="list the main chain's blocks (after verifying them)")
    s.add_argument("path")
    s.add_argument("--last", type=at.nonneg_int, default=20, help="only the last N blocks (0: all)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_show)

    d = cmds.add_parser("demo", help="write a small synthetic ledger (gateways, APs, mined blocks)")
    d.add_argument("path")
    d.add_argument("--blocks", type=at.bounded_int(0, MAX_DEMO_BLOCKS), default=10)
    d.add_argument("--seed", type=at.seed, default=0)
    d.add_argument("--expected-hashes", type=at.bounded_float(1, MAX_EXPECTED_HASHES), default=4096,
                   help="mean hashes per block at zero reputation")
    d.add_argument("--keys", default=None, metavar="DIR",
                   help="key files NAME.key of every party (missing ones are generated, mode 0600); default: "
                        "keys derived from --seed (reproducible, not secret)")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_demo)

    k = cmds.add_parser("keygen", help="make a party's Ed25519 key file (mode 0600) and print its public key")
    k.add_argument("name", help="the gateway or AP the key is for")
    k.add_argument("--out", required=True, help="the key file to write (never overwritten)")
    k.add_argument("--json", action="store_true")
    k.set_defaults(func=cmd_keygen)


def _head_arg(text: str) -> tuple[int, str]:
    from dnninfer.ledger.store import parse_head

    try:
        return parse_head(text)
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _open_verified(path: str, expect_head: tuple[int, str] | None = None) -> Any:
    """The verified ledger, or a `LedgerVerifyError` (a `UserError`) naming the first problem."""
    from dnninfer.ledger.errors import LedgerError
    from dnninfer.ledger.store import check_expected_head, describe_problems, open_ledger

    try:
        ledger = open_ledger(path, strict=False, readonly=True)
    except LedgerError as e:
        raise LedgerVerifyError(str(e), {"path": path, "valid": False, "error": str(e), "block": None,
                                         "problems": [str(e)], "valid_blocks": None}) from None
    if expect_head is not None:
        problem = check_expected_head(ledger, *expect_head)
        if problem is not None:
            ledger.problems.append(problem)
    if ledger.problems:
        ledger.close()
        msg = describe_problems(path, ledger)
        first = ledger.problems[0]
        raise LedgerVerifyError(msg, {"path": path, "valid": False, "error": msg,
                                      "block": getattr(first, "height", None),
                                      "problems": [str(p) for p in ledger.problems],
                                      "valid_blocks": len(ledger.blocks) - 1})
    for w in ledger.warnings:
        print(f"dnninfer: warning: {w}", file=sys.stderr)
    return ledger


def _open_for(args: argparse.Namespace) -> Any:
    """`_open_verified`, and with ``--json`` the invalid ledger's report as the one JSON object on
    stdout (cli.main still prints the one-line error, exit 2)."""

    try:
        return _open_verified(args.path, getattr(args, "expect_head", None))
    except LedgerVerifyError as e:
        if args.json:
            emit(args, e.report, "")
        raise


class LedgerVerifyError(UserError):
    """An invalid ledger: the one-line message, plus the JSON object `verify --json` prints for it."""

    def __init__(self, message: str, report: dict[str, Any]):
        super().__init__(message)
        self.report = report


def summary(ledger: Any) -> dict[str, Any]:
    """What `verify` reports: size, head, and per-AP reputation, stake target and blocks mined."""
    chain = ledger.main_chain()
    rep = ledger.reputation()
    mined = ledger.mined_counts()
    aps = [{"ap": ap, "reputation": rep[ap], "blocks_mined": mined[ap],
            "next_expected_hashes": round(ledger.expected_hashes(ap), 1)} for ap in ledger.params.aps]
    return {"path": str(ledger.store.path) if ledger.store is not None else None, "valid": True,
            "warnings": list(ledger.warnings), "blocks": len(ledger.blocks) - 1, "height": ledger.height,
            "head": ledger.head.hash, "genesis": ledger.chain, "keys": ledger.public_keys().to_dict(),
            "cumulative_work": ledger.work[ledger.head.hash], "orphans": len(ledger.stale_blocks()),
            "receipts": sum(len(b.receipts) for b in chain), "params": ledger.params.to_dict(), "aps": aps}


def cmd_verify(args: argparse.Namespace) -> None:
    ledger = _open_for(args)
    with ledger:
        s = summary(ledger)
    emit(args, s, f"{args.path}: valid" + (" (see the warning)" if s["warnings"] else ""),
         s["aps"])
    if not args.json:
        stdout().print(f"{s['blocks']} blocks, height {s['height']}, head {s['head']}, {s['orphans']} orphans "
                       f"(valid blocks off the main chain), {s['receipts']} receipts", markup=False)


def cmd_head(args: argparse.Namespace) -> None:
    ledger = _open_for(args)
    with ledger:
        b = ledger.head
        s = {"head": f"{b.index}:{b.hash}", "height": b.index, "hash": b.hash, "miner": b.miner,
             "signature": b.signature, "genesis": ledger.chain, "blocks": len(ledger.blocks) - 1,
             "cumulative_work": ledger.work[b.hash]}
    if args.json:
        emit(args, s, "")
    else:
        print(f"dnninfer: head of {args.path}: height {b.index}, mined and signed by {b.miner!r}; keep this line "
              "outside the file and check it with `ledger verify --expect-head`", file=sys.stderr)
        print(s["head"])


def cmd_show(args: argparse.Namespace) -> None:
    from dnninfer.ledger.consensus import HASH_SPACE

    ledger = _open_for(args)
    with ledger:
        chain = ledger.main_chain()
        rows = [{"height": b.index, "hash": b.hash[:16], "miner": b.miner, "receipts": len(b.receipts),
                 "expected_hashes": round(HASH_SPACE / b.target, 1), "timestamp_s": b.timestamp,
                 "reputation": ", ".join(f"{ap}={rho:.4f}" for ap, rho in ledger.reputation(b.hash).items())}
                for b in chain]
    if args.last > 0:
        rows = rows[-args.last:]
    emit(args, {"blocks": rows}, f"{args.path}: main chain (height {chain[-1].index})", rows)


def cmd_demo(args: argparse.Namespace) -> None:
    import random
    from pathlib import Path

    from dnninfer.ledger.demo import demo_keys, demo_params, extend_demo
    from dnninfer.ledger.identity import Keyring
    from dnninfer.ledger.store import create_ledger

    params = demo_params(expected_hashes=args.expected_hashes)
    if Path(args.path).exists() and Path(args.path).stat().st_size > 0:  # before any key file is written
        raise UserError(f"{args.path}: already exists; `ledger demo` never overwrites a ledger")
    keys = (demo_keys(args.seed) if args.keys is None
            else Keyring.open_dir(args.keys, dict.fromkeys(params.gateways + params.aps)))
    with create_ledger(args.path, params, keys) as ledger:
        hashes = extend_demo(ledger, args.blocks, random.Random(args.seed))
        s = summary(ledger)
    s["hashes"] = hashes
    s["key_dir"] = args.keys
    emit(args, s, f"{args.path}: {args.blocks} blocks mined ({hashes} hashes)", s["aps"])


def cmd_keygen(args: argparse.Namespace) -> None:
    from dnninfer.ledger.canonical import check_id
    from dnninfer.ledger.identity import SigningKey, write_key_file

    key = SigningKey.generate(check_id(args.name, "name"))
    write_key_file(args.out, key)
    s = {"name": key.name, "public_key": key.public, "key_file": args.out}
    if args.json:
        emit(args, s, "")
    else:
        print(f"dnninfer: wrote the private key of {key.name!r} to {args.out} (mode 0600); its public key:",
              file=sys.stderr)
        print(key.public)
