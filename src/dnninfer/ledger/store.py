"""Persistence: one SQLite file per ledger, crash-safe, re-validated on every open.

Layout: `meta(key, value)` holds the format tag, the canonical parameters and the gateway keys;
`blocks(hash PK, parent, height, body)` holds one row per block (canonical JSON). The database runs
in WAL mode with `synchronous=FULL` and every block is written in its own transaction, so a crash
(even SIGKILL or power loss) mid-write leaves the previous committed state.

Nothing stored is trusted: `open_ledger` replays every row from genesis through `Ledger.add_block`.
Rows that fail (bad JSON, a hash that does not match, a forged receipt, a child of a rejected
block, ...) are reported one line each; blocks that validate are kept; the file itself is never
rewritten on open, so nothing is lost while someone investigates.

The gateway HMAC keys live in the meta table so that `dnninfer ledger verify PATH` needs nothing
else. That is acceptable only for a research prototype (anyone who can read the file can forge
receipts); a real deployment would store Ed25519 public keys instead.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dnninfer.ledger.block import Block
from dnninfer.ledger.canonical import canonical_json, parse_json
from dnninfer.ledger.chain import Ledger
from dnninfer.ledger.errors import CorruptLedgerError, LedgerError
from dnninfer.ledger.params import LedgerParams
from dnninfer.ledger.receipt import Keyring

FORMAT = "dnninfer-ledger/1"
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE blocks (hash TEXT PRIMARY KEY, parent TEXT NOT NULL, height INTEGER NOT NULL, body TEXT NOT NULL);
CREATE INDEX blocks_height ON blocks(height);
"""


class LedgerStore:
    """The SQLite file behind a `Ledger` (its `store`): appends blocks, one transaction each."""

    def __init__(self, path: str | Path, *, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        try:
            if readonly:
                self.conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                            isolation_level=None, timeout=30)
            else:
                self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
                self.conn.execute("PRAGMA journal_mode=WAL").fetchall()
                self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
        except sqlite3.Error as e:
            with contextlib.suppress(Exception):
                self.conn.close()
            hint = "" if "not a database" in str(e) or "unable to open" in str(e) else "; truncated or damaged?"
            raise LedgerError(f"{self.path}: cannot read it as a ledger database ({e}{hint})") from None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def initialise(self, params: LedgerParams, keyring: Keyring, genesis: Block) -> None:
        """Create the tables and write the meta rows and genesis in one transaction."""
        try:
            with self._transaction() as c:
                # one statement at a time: executescript() would COMMIT the open transaction
                for stmt in filter(str.strip, _SCHEMA.split(";")):
                    c.execute(stmt)
                c.executemany("INSERT INTO meta(key, value) VALUES (?, ?)",
                              [("format", FORMAT), ("params", params.to_json().decode()),
                               ("keys", canonical_json(keyring.to_hex()).decode())])
                self._insert(c, genesis)
        except sqlite3.Error as e:
            raise LedgerError(f"{self.path}: cannot create the ledger ({e})") from None

    def is_empty(self) -> bool:
        return not self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]

    def meta(self) -> dict[str, str]:
        try:
            rows = self.conn.execute("SELECT key, value FROM meta").fetchall()
        except sqlite3.Error as e:
            raise LedgerError(f"{self.path}: not a dnninfer ledger (no readable meta table: {e})") from None
        meta = {str(k): v for k, v in rows}
        if meta.get("format") != FORMAT:
            got = meta.get("format")
            raise LedgerError(f"{self.path}: not a dnninfer ledger (format {got!r}, expected {FORMAT!r})")
        for key in ("params", "keys"):
            if not isinstance(meta.get(key), str):
                raise LedgerError(f"{self.path}: meta table has no {key!r} row")
        return meta

    def rows(self) -> Iterator[tuple[Any, Any, Any, Any]]:
        """(hash, parent, height, body) ordered by height, then hash. May raise sqlite3.DatabaseError."""
        yield from self.conn.execute("SELECT hash, parent, height, body FROM blocks ORDER BY height, hash")

    @staticmethod
    def _insert(c: sqlite3.Connection, block: Block) -> None:
        # OR REPLACE: a row with this hash can only exist if it is corrupt (valid ones are rejected as
        # duplicates before we get here), so re-adding the genuine block repairs it.
        c.execute("INSERT OR REPLACE INTO blocks(hash, parent, height, body) VALUES (?, ?, ?, ?)",
                  (block.hash, block.prev_hash, block.index, block.to_json().decode()))

    def append(self, block: Block) -> None:
        """Write one block durably (its own transaction)."""
        if self.readonly:
            raise LedgerError(f"{self.path}: opened read-only; cannot append block {block.index}")
        try:
            with self._transaction() as c:
                self._insert(c, block)
        except sqlite3.Error as e:
            raise LedgerError(f"{self.path}: could not write block {block.index} ({e})") from None

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()


def create_ledger(path: str | Path, params: LedgerParams, keyring: Keyring) -> Ledger:
    """A new, empty (genesis-only) ledger file at `path`; refuses to overwrite an existing ledger."""
    ledger = Ledger(params, keyring)  # validates the keyring against the params first
    if not Path(path).parent.is_dir():
        raise LedgerError(f"{path}: directory {Path(path).parent} does not exist")
    store = LedgerStore(path)
    try:
        if not store.is_empty():
            raise LedgerError(f"{path}: already exists and is not empty; use open_ledger")
        store.initialise(params, keyring, ledger.genesis)
    except BaseException:
        store.close()
        raise
    ledger.store = store
    return ledger


def open_ledger(path: str | Path, params: LedgerParams | None = None, keyring: Keyring | None = None, *,
                strict: bool = True, readonly: bool = False) -> Ledger:
    """Open (or, given `params` and `keyring`, create) the ledger at `path`, re-validating every block.

    Parameters and keys come from the file; when `params`/`keyring` are given they must match it.
    With `strict` (default) any invalid row raises `CorruptLedgerError`, whose `.ledger` holds the
    blocks that did validate (not attached to the file) and `.problems` one line per bad row.
    With `strict=False` the valid blocks are returned and the bad rows listed in `ledger.problems`.
    Close with `ledger.close()` (or use it as a context manager).
    """
    p = Path(path)
    if not p.exists() or (p.is_file() and p.stat().st_size == 0 and not readonly):
        if params is None or keyring is None:
            raise LedgerError(f"{path}: no such ledger (pass params and keyring to create one)")
        return create_ledger(p, params, keyring)
    if not p.is_file():
        raise LedgerError(f"{path}: not a file")
    store = LedgerStore(p, readonly=readonly)
    try:
        ledger = _load(store, params, keyring)
    except BaseException:
        store.close()
        raise
    if ledger.problems and strict:
        store.close()
        kept = len(ledger.blocks) - 1
        raise CorruptLedgerError(f"{path}: {len(ledger.problems)} invalid row(s), {kept} valid block(s) kept; "
                                 f"first: {ledger.problems[0]}", ledger=ledger, problems=ledger.problems)
    ledger.store = store
    return ledger


def _load(store: LedgerStore, params: LedgerParams | None, keyring: Keyring | None) -> Ledger:
    meta = store.meta()
    try:
        stored_params = LedgerParams.from_json(meta["params"])
        keys = parse_json(meta["keys"], "keys")
        if not isinstance(keys, dict):
            raise LedgerError("keys: expected an object")
        stored_keys = Keyring(keys)
        ledger = Ledger(stored_params, stored_keys)
    except LedgerError as e:
        raise LedgerError(f"{store.path}: bad meta table: {e}") from None
    if params is not None and params != stored_params:
        raise LedgerError(f"{store.path}: the given params differ from the ones stored in the ledger")
    if keyring is not None and keyring.to_hex() != stored_keys.to_hex():
        raise LedgerError(f"{store.path}: the given keyring differs from the one stored in the ledger")
    rejected: set[str] = set()
    seen_genesis = False
    n = 0
    try:
        for h, parent, height, body in store.rows():
            n += 1
            where = f"row {str(h)[:12]} (height {height})"
            try:
                if not isinstance(body, str):
                    raise LedgerError(f"body is {type(body).__name__}, not JSON text")
                b = Block.from_json(body)
                if b.hash != h:
                    raise LedgerError("stored hash does not match the block's hash")
                if b.prev_hash != parent or b.index != height:
                    raise LedgerError("parent/height columns disagree with the block")
                if b.index == 0:
                    if b != ledger.genesis:
                        raise LedgerError("genesis block does not match the stored parameters")
                    seen_genesis = True
                    continue
                if b.prev_hash in rejected:
                    raise LedgerError(f"parent {b.prev_hash[:12]} was rejected")
                ledger.add_block(b)
            except LedgerError as e:
                rejected.add(str(h))
                ledger.problems.append(f"{where}: {e}")
    except sqlite3.DatabaseError as e:
        ledger.problems.append(f"database damaged after {n} readable row(s): {e}")
    if not seen_genesis and not ledger.problems:
        ledger.problems.append("no genesis row")
    return ledger
