"""Surface ``ledger``: files given to ``dnninfer ledger verify``.

A small valid ledger is mined once per campaign (demo receipts, easy targets); each case copies it
and damages the copy: raw byte flips, truncations and appended garbage on the SQLite file, row
deletions, column edits (hash, parent, height, body fields, meta params/keys/format), inserted
rows, plus files that are not ledgers at all. The label does not trust the verifier: the copy is
read back with sqlite3 (immutable, read-only) and compared with the original rows. It is ``maybe``
when the logical content is unchanged or is an ancestor-closed subset of the original blocks (a
shorter but genuine chain), and ``bad`` when any row differs, the meta table changed, or sqlite
cannot read it.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dnninfer.fuzz.classify import Case
from dnninfer.fuzz.drivers import run_cli
from dnninfer.fuzz.mutate import mutate_bytes, preview_bytes, rng_for

__all__ = ["cases", "logical_label", "read_rows"]

SURFACE = "ledger"
Rows = tuple[dict[str, Any], frozenset[tuple[Any, ...]]]


def read_rows(path: Path) -> Rows | None:
    """(meta, block rows) as sqlite reads them without changing the file; None if unreadable."""
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
        try:
            meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
            rows = frozenset(con.execute("SELECT hash, parent, height, body FROM blocks").fetchall())
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return meta, rows


def logical_label(original: Rows, path: Path) -> str:
    """``maybe`` if the file still holds genuine content (all rows original, ancestor-closed), else ``bad``."""
    got = read_rows(path)
    if got is None:
        return "bad"
    meta, rows = got
    if meta != original[0] or not rows <= original[1]:
        return "bad"
    hashes = {r[0] for r in rows}
    genesis = [r for r in rows if r[2] == 0]
    if len(genesis) != 1 or any(r[2] > 0 and r[1] not in hashes for r in rows):
        return "bad"
    return "maybe"


def _make_base(folder: Path) -> Path:
    import random as _random

    from dnninfer.ledger.demo import demo_params, extend_demo
    from dnninfer.ledger.receipt import Keyring
    from dnninfer.ledger.store import create_ledger

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "base.db"
    params = demo_params(expected_hashes=64)
    with create_ledger(path, params, Keyring.derive(params.gateways, "fuzz-ledger")) as lg:
        extend_demo(lg, 6, _random.Random(0))
    for side in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        side.unlink(missing_ok=True)
    return path


def _sql(path: Path, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=DELETE")
        for sql, params in statements:
            con.execute(sql, params)
    finally:
        con.close()


def _edit_body(rng: random.Random, body: str) -> tuple[str, str]:
    d = json.loads(body)
    keys = [k for k in d if k != "receipts"] or list(d)
    k = rng.choice(keys)
    v = d[k]
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        d[k] = 1
    elif isinstance(v, int):
        d[k] = v + rng.choice([1, -1, 2**31])
    else:
        d[k] = (v[:-1] + ("0" if v[-1:] != "0" else "1")) if v else "x"
    if "receipts" in d and d["receipts"] and rng.random() < 0.3:
        r = rng.choice(d["receipts"])
        rk = rng.choice(sorted(r))
        r[rk] = r[rk] + 1 if isinstance(r[rk], int) and not isinstance(r[rk], bool) else "tampered"
        k = f"receipts[].{rk}"
    return json.dumps(d, separators=(",", ":"), sort_keys=True), f"body field {k!r} changed"


def _mutate(rng: random.Random, src: Path, dst: Path, rows: list[tuple[Any, ...]]) -> tuple[str, str]:
    """Write a damaged copy of ``src`` to ``dst``; return (kind, description)."""
    raw = src.read_bytes()
    tip = max(rows, key=lambda r: r[2])
    middle = [r for r in rows if 0 < r[2] < tip[2]]
    op = rng.choice(["byte_flip", "byte_flip", "byte_flip", "truncate", "truncate_page", "append_garbage",
                     "delete_tip", "delete_middle", "delete_genesis", "delete_meta", "edit_hash", "edit_parent",
                     "edit_height", "edit_body", "edit_body_type", "edit_params", "edit_keys", "edit_format",
                     "insert_row", "drop_table", "not_a_ledger"])
    if op == "byte_flip":
        data, note = mutate_bytes(rng, raw, rng.randrange(1, 4))
        dst.write_bytes(data)
        return op, f"file bytes: {note}"
    if op in ("truncate", "truncate_page"):
        n = rng.randrange(len(raw)) if op == "truncate" else 4096 * rng.randrange(len(raw) // 4096 or 1)
        dst.write_bytes(raw[:n])
        return op, f"file truncated to {n} of {len(raw)} bytes"
    if op == "append_garbage":
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 5000)))
        dst.write_bytes(raw + junk)
        return op, f"{len(junk)} garbage bytes appended"
    if op == "not_a_ledger":
        kind = rng.choice(["empty", "random", "text", "other_db"])
        if kind == "other_db":
            dst.unlink(missing_ok=True)
            _sql(dst, [("CREATE TABLE t (x)", ()), ("INSERT INTO t VALUES (1)", ())])
        else:
            data = {"empty": b"", "random": bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9000))),
                    "text": b"hash,parent,height\n"}[kind]
            dst.write_bytes(data)
        return f"not_a_ledger:{kind}", f"a file that is not a ledger ({kind})"
    shutil.copyfile(src, dst)
    h, parent, height, body = rng.choice(middle or rows)
    stmts: list[tuple[str, tuple[Any, ...]]]
    if op == "delete_tip":
        stmts, note = [("DELETE FROM blocks WHERE hash = ?", (tip[0],))], f"tip row (height {tip[2]}) deleted"
    elif op == "delete_middle":
        stmts, note = [("DELETE FROM blocks WHERE hash = ?", (h,))], f"row at height {height} deleted"
    elif op == "delete_genesis":
        stmts, note = [("DELETE FROM blocks WHERE height = 0", ())], "genesis row deleted"
    elif op == "delete_meta":
        key = rng.choice(["format", "params", "keys"])
        stmts, note = [("DELETE FROM meta WHERE key = ?", (key,))], f"meta row {key!r} deleted"
    elif op == "edit_hash":
        new = ("0" if h[0] != "0" else "1") + h[1:]
        stmts, note = [("UPDATE blocks SET hash = ? WHERE hash = ?", (new, h))], f"hash of height {height} edited"
    elif op == "edit_parent":
        other = rng.choice([r[0] for r in rows if r[0] != parent])
        stmts, note = [("UPDATE blocks SET parent = ? WHERE hash = ?", (other, h))], f"parent of height {height} edited"
    elif op == "edit_height":
        new_h: Any = rng.choice([height + 1, height - 1, -1, 10**6, "3", None])
        if new_h is None:
            stmts = [("UPDATE blocks SET height = NULL WHERE hash = ?", (h,))]
        else:
            stmts = [("UPDATE blocks SET height = ? WHERE hash = ?", (new_h, h))]
        note = f"height {height} -> {new_h!r}"
    elif op == "edit_body":
        new_body, note = _edit_body(rng, body)
        stmts = [("UPDATE blocks SET body = ? WHERE hash = ?", (new_body, h))]
        note = f"height {height}: {note}"
    elif op == "edit_body_type":
        v: Any = rng.choice([b"\x00\x01", 42, None, 3.5, "", "{}", "[]", "null", body[: len(body) // 2]])
        if v is None:
            stmts = [("UPDATE blocks SET body = NULL WHERE hash = ?", (h,))]
        else:
            stmts = [("UPDATE blocks SET body = ? WHERE hash = ?", (v, h))]
        note = f"body of height {height} := {str(v)[:30]!r}"
    elif op in ("edit_params", "edit_keys", "edit_format"):
        key = {"edit_params": "params", "edit_keys": "keys", "edit_format": "format"}[op]
        con = sqlite3.connect(dst)
        value = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]
        con.close()
        i = rng.randrange(len(value))
        new_v = value[:i] + rng.choice("0123456789abcdef{}\",:x".replace(value[i], "")) + value[i + 1:]
        stmts, note = [("UPDATE meta SET value = ? WHERE key = ?", (new_v, key))], f"meta {key!r} char {i} edited"
    elif op == "insert_row":
        fake = "f" * 64
        stmts = [("INSERT INTO blocks(hash, parent, height, body) VALUES (?, ?, ?, ?)",
                  (fake, tip[0], tip[2] + 1, body))]
        note = "a forged row (copied body, new hash) appended on the tip"
    else:
        table = rng.choice(["meta", "blocks"])
        stmts, note = [(f"DROP TABLE {table}", ())], f"table {table} dropped"
    try:
        _sql(dst, stmts)
    except sqlite3.Error as e:  # e.g. a constraint: the mutation could not be made; keep the copy as is
        note += f" (not applied: {e})"
    return op, note


def cases(n: int, seed: int, work: Path) -> Iterator[Case]:
    """``n`` ledger files: the original first (label valid), then damaged copies."""
    rng = rng_for(seed, SURFACE)
    folder = work / "ledger"
    base = _make_base(folder)
    original = read_rows(base)
    assert original is not None, "the freshly mined base ledger must be readable"
    rows = sorted(original[1], key=lambda r: (r[2], r[0]))
    for i in range(n):
        dst = folder / f"case{i % 8}.db"
        for side in (dst, dst.with_name(dst.name + "-wal"), dst.with_name(dst.name + "-shm")):
            side.unlink(missing_ok=True)
        if i == 0:
            shutil.copyfile(base, dst)
            kind, what, label = "unmodified", "the mined ledger, unmodified", "valid"
        else:
            kind, what = _mutate(rng, base, dst, rows)
            label = logical_label(original, dst)
        data = dst.read_bytes()
        yield Case(SURFACE, kind, label, what,
                   lambda dst=dst, data=data: _run(dst, data, work),
                   preview=preview_bytes(data))


def _run(dst: Path, data: bytes, work: Path) -> Any:
    for side in (dst.with_name(dst.name + "-wal"), dst.with_name(dst.name + "-shm")):
        side.unlink(missing_ok=True)
    dst.write_bytes(data)
    return run_cli(["ledger", "verify", str(dst), "--json"], work)
