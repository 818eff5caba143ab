"""Persistence: one SQLite file per ledger, crash-safe, re-validated on every open.

Layout: `meta(key, value)` holds the format tag, the canonical parameters, the genesis public keys
of every gateway and AP (never a private key: those stay in key files, see `identity.py`) and the
head record; `blocks(hash PK, parent, height, body)` holds one row per block (canonical JSON).
The database runs in WAL mode with `synchronous=FULL` and every block is written in its own
transaction, so a crash (even SIGKILL or power loss) mid-write leaves the previous committed state.

Nothing stored is trusted: `open_ledger` first checks every row against itself (the body is
canonical JSON of a block whose hash, parent and height are the row's columns), then replays the
blocks from genesis through `Ledger.add_block` in the blocks' own height order, so an edited column
blames the row that was edited, not its child. Rows that fail (bad JSON, a hash that does not
match, a forged receipt, a child of a rejected block, ...) are reported one line each; blocks that
validate are kept; the file itself is never rewritten on open, so nothing is lost while someone
investigates.

Head record. Valid blocks prove themselves, but nothing in them says how many there were: deleting
the tip rows leaves a shorter chain that is perfectly valid. So every append also writes, in the
same transaction, `meta['head']` = {height, hash, blocks}: the heaviest tip (the fork-choice head:
most cumulative work, ties to the lowest hash) and the number of valid blocks on all branches
(genesis excluded). On open the replayed ledger must match it exactly: a deleted tip changes the
head, a deleted side-branch block (a lost fork, not on the main chain) changes only the count.
This catches truncation by a crash image, a bad copy or a careless edit. It does not stop a
deliberate rollback: whoever can write the file can delete tip blocks and rewrite the head record
(or put back an older copy of the whole file); what catches that is a head kept outside the file
(`check_expected_head`, `ledger verify --expect-head`). Blocks and receipts themselves cannot be
forged without the parties' private keys. The count does not detect deleting one side-branch block
and adding another.

Old files (formats `dnninfer-ledger/1` and `/2`) carry HMAC receipts whose gateway secrets sit in
the meta table: anyone holding them could have signed any receipt, and they cannot be re-signed
with Ed25519 identities without the gateways' own keys, so they are refused with a message naming
the format. A format-3 file without a head row is refused.

Read-only opens (`ledger verify`) create no files: with no `-wal` file beside the database (it was
closed cleanly) it is opened `immutable`, so SQLite takes no locks and writes no `-shm`; while a
writer is live (or after a crash) the `-wal` must be read, so it is opened `mode=ro` only, and SQLite
may then create a `-shm` if none exists.

The genesis public keys live in the meta table so that `dnninfer ledger verify PATH` needs nothing
else; the genesis block commits to them, so an edited key row disconnects every block. Replacing
the whole file by a different ledger (other genesis, other keys) is caught only by an expected head
or genesis hash kept elsewhere (`--expect-head 0:GENESIS` pins the keys).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnninfer.ledger.block import Block
from dnninfer.ledger.canonical import canonical_json, check_hex64, check_int, exact_keys, parse_json
from dnninfer.ledger.chain import Ledger, genesis_keys
from dnninfer.ledger.errors import CorruptLedgerError, LedgerError, Problem
from dnninfer.ledger.identity import Keyring, PublicKeys
from dnninfer.ledger.params import LedgerParams

FORMAT = "dnninfer-ledger/3"
#: HMAC-signed ledgers (1: no head record, 2: with one): refused, see the module docstring
HMAC_FORMATS = ("dnninfer-ledger/1", "dnninfer-ledger/2")
_META_KEYS = {FORMAT: {"format", "params", "keys", "head"}}
Keys = PublicKeys | Keyring | Mapping[str, str]
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE blocks (hash TEXT PRIMARY KEY, parent TEXT NOT NULL, height INTEGER NOT NULL, body TEXT NOT NULL);
CREATE INDEX blocks_height ON blocks(height);
"""


#: what a damaged file can raise from sqlite: its own errors, and undecodable bytes in a schema or
#: error message (a flipped byte in sqlite_master surfaces as a UnicodeDecodeError from the driver)
_DB_ERRORS = (sqlite3.Error, UnicodeDecodeError)


def _text(raw: bytes) -> str:
    """TEXT columns: invalid UTF-8 must not abort reading the other rows; it fails validation instead."""
    return raw.decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class HeadRecord:
    """`meta['head']`: the heaviest tip and the valid-block count after the latest append."""

    height: int
    hash: str
    blocks: int

    @classmethod
    def of(cls, head: Block, blocks: int) -> HeadRecord:
        return cls(head.index, head.hash, blocks)

    def to_json(self) -> str:
        return canonical_json({"height": self.height, "hash": self.hash, "blocks": self.blocks}).decode()

    @classmethod
    def from_json(cls, text: str) -> HeadRecord:
        d = exact_keys(parse_json(text, "head"), {"height", "hash", "blocks"}, "head")
        return cls(check_int(d["height"], "head: field 'height'"), check_hex64(d["hash"], "head: field 'hash'"),
                   check_int(d["blocks"], "head: field 'blocks'"))


class LedgerStore:
    """The SQLite file behind a `Ledger` (its `store`): appends blocks, one transaction each."""

    def __init__(self, path: str | Path, *, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        try:
            if readonly:
                wal = self.path.with_name(self.path.name + "-wal")
                mode = "mode=ro" if wal.exists() else "mode=ro&immutable=1"  # see the module docstring
                self.conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?{mode}", uri=True,
                                            isolation_level=None, timeout=30)
            else:
                self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
                self.conn.execute("PRAGMA journal_mode=WAL").fetchall()
                self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.text_factory = _text
            self.conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
        except _DB_ERRORS as e:
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

    def initialise(self, params: LedgerParams, keys: PublicKeys, genesis: Block) -> None:
        """Create the tables and write the meta rows (head: genesis) and genesis in one transaction."""
        try:
            with self._transaction() as c:
                # one statement at a time: executescript() would COMMIT the open transaction
                for stmt in filter(str.strip, _SCHEMA.split(";")):
                    c.execute(stmt)
                c.executemany("INSERT INTO meta(key, value) VALUES (?, ?)",
                              [("format", FORMAT), ("params", params.to_json().decode()),
                               ("keys", keys.to_json().decode()),
                               ("head", HeadRecord.of(genesis, 0).to_json())])
                self._insert(c, genesis)
        except _DB_ERRORS as e:
            raise LedgerError(f"{self.path}: cannot create the ledger ({e})") from None

    def is_empty(self) -> bool:
        return not self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]

    def meta(self) -> dict[str, str]:
        """The meta rows, checked: a known format, exactly its keys, every value text."""
        try:
            rows = self.conn.execute("SELECT key, value FROM meta").fetchall()
        except _DB_ERRORS as e:
            raise LedgerError(f"{self.path}: not a dnninfer ledger (no readable meta table: {e})") from None
        meta: dict[str, Any] = {}
        for k, v in rows:
            if str(k) in meta:
                raise LedgerError(f"{self.path}: meta table has two {str(k)!r} rows")
            meta[str(k)] = v
        fmt = meta.get("format")
        if fmt in HMAC_FORMATS:
            raise LedgerError(f"{self.path}: format {fmt!r} is an old HMAC-signed ledger (its gateway secrets are "
                              "in the file, so anyone who held it could have signed any receipt); it cannot be "
                              "re-signed with Ed25519 identities without the gateways' own keys: start a new ledger "
                              f"({FORMAT!r})")
        if fmt not in _META_KEYS:
            raise LedgerError(f"{self.path}: not a dnninfer ledger (format {fmt!r}, expected {FORMAT!r})")
        for key in sorted(_META_KEYS[fmt]):
            if key not in meta:
                why = " (it anchors the chain's length)" if key == "head" else ""
                raise LedgerError(f"{self.path}: meta table has no {key!r} row{why}")
            if not isinstance(meta[key], str):
                raise LedgerError(f"{self.path}: meta {key!r} is {type(meta[key]).__name__}, expected JSON text")
        extra = sorted(set(meta) - _META_KEYS[fmt])
        if extra:
            raise LedgerError(f"{self.path}: meta table has an unknown row {extra[0]!r} for format {fmt!r} "
                              f"(expected only {sorted(_META_KEYS[fmt])})")
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

    def append(self, block: Block, head: Block, blocks: int) -> None:
        """Write one block and the new head record durably, in one transaction (see `BlockSink`)."""
        if self.readonly:
            raise LedgerError(f"{self.path}: opened read-only; cannot append block {block.index}")
        try:
            with self._transaction() as c:
                self._insert(c, block)
                c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('head', ?)",
                          (HeadRecord.of(head, blocks).to_json(),))
        except _DB_ERRORS as e:
            raise LedgerError(f"{self.path}: could not write block {block.index} ({e})") from None

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()


def create_ledger(path: str | Path, params: LedgerParams, keys: Keys) -> Ledger:
    """A new, empty (genesis-only) ledger file at `path`; refuses to overwrite an existing ledger.

    `keys`: the genesis public keys of every gateway and AP (a `Keyring` gives its public half and
    becomes the ledger's `signers`; only public keys are written)."""
    ledger = Ledger(params, keys)  # validates the keys against the params first
    if not Path(path).parent.is_dir():
        raise LedgerError(f"{path}: directory {Path(path).parent} does not exist")
    store = LedgerStore(path)
    try:
        if not store.is_empty():
            raise LedgerError(f"{path}: already exists and is not empty; use open_ledger")
        store.initialise(params, ledger.genesis_keys, ledger.genesis)
    except BaseException:
        store.close()
        raise
    ledger.store = store
    return ledger


def describe_problems(path: str | Path, ledger: Ledger) -> str:
    """The one line that names a loaded ledger's first problem, how many more, and what was kept."""
    n = len(ledger.problems)
    more = f" (and {n - 1} more problem(s))" if n > 1 else ""
    return f"{path}: invalid ledger: {ledger.problems[0]}{more}; {len(ledger.blocks) - 1} valid block(s) kept"


def open_ledger(path: str | Path, params: LedgerParams | None = None, keys: Keys | None = None, *,
                strict: bool = True, readonly: bool = False) -> Ledger:
    """Open (or, given `params` and `keys`, create) the ledger at `path`, re-validating every block.

    Parameters and genesis public keys come from the file; when `params`/`keys` are given they must
    match it (a `Keyring` is compared by its public half and becomes the ledger's `signers`).
    With `strict` (default) any invalid row or a head-record mismatch (see the module docstring)
    raises `CorruptLedgerError`, whose `.ledger` holds the blocks that did validate (not attached to
    the file) and `.problems` one line per problem (`errors.Problem`: with the blamed height).
    With `strict=False` the valid blocks are returned and the problems listed in `ledger.problems`;
    appending to such a ledger records its (shorter) head as the new anchor.
    Close with `ledger.close()` (or use it as a context manager).
    """
    p = Path(path)
    if not p.exists() or (p.is_file() and p.stat().st_size == 0 and not readonly):
        if readonly and not p.exists():
            raise LedgerError(f"{path}: no such ledger file")
        if params is None or keys is None:
            raise LedgerError(f"{path}: no such ledger (pass params and keys to create one)")
        return create_ledger(p, params, keys)
    if not p.is_file():
        raise LedgerError(f"{path}: not a file (a ledger is one SQLite file)")
    if p.stat().st_size == 0:
        raise LedgerError(f"{path}: empty file (0 bytes), expected a ledger database")
    store = LedgerStore(p, readonly=readonly)
    try:
        ledger = _load(store, params, keys)
    except BaseException:
        store.close()
        raise
    if ledger.problems and strict:
        store.close()
        raise CorruptLedgerError(describe_problems(path, ledger), ledger=ledger, problems=ledger.problems)
    ledger.store = store
    return ledger


def _load(store: LedgerStore, params: LedgerParams | None, keys: Keys | None) -> Ledger:
    meta = store.meta()
    try:
        stored_params = LedgerParams.from_json(meta["params"])
        stored_keys = PublicKeys.from_json(meta["keys"])
        ledger = Ledger(stored_params, stored_keys)
        recorded = HeadRecord.from_json(meta["head"])
        # like block bodies, meta rows must be exactly what the ledger wrote (no reformatted JSON)
        for key, canonical in (("params", stored_params.to_json().decode()),
                               ("keys", stored_keys.to_json().decode()),
                               ("head", recorded.to_json())):
            if meta[key] != canonical:
                raise LedgerError(f"{key}: not the canonical JSON the ledger writes (edited by hand?)")
    except LedgerError as e:
        raise LedgerError(f"{store.path}: bad meta table: {e}") from None
    if params is not None and params != stored_params:
        raise LedgerError(f"{store.path}: the given params differ from the ones stored in the ledger")
    if keys is not None:
        if genesis_keys(stored_params, keys).to_dict() != stored_keys.to_dict():
            raise LedgerError(f"{store.path}: the given keys differ from the genesis keys stored in the ledger")
        if isinstance(keys, Keyring):
            ledger.signers = keys
    rejected: set[str] = set()
    noncanonical: set[str] = set()
    blocks, stored = _decode_rows(store, ledger, rejected, noncanonical)
    for b in sorted(blocks, key=lambda b: (b.index, b.hash)):  # the blocks' own heights, not the column
        try:
            if b.prev_hash in rejected:
                raise LedgerError(f"parent {b.prev_hash[:12]} was rejected")
            if b.hash in noncanonical:  # a stored row must be byte for byte what the ledger wrote
                ledger.check_block(b)
                raise LedgerError("body is not the block's canonical JSON (edited by hand, or a byte changed)")
            ledger.add_block(b)
        except LedgerError as e:
            rejected.add(b.hash)
            ledger.problems.append(Problem(f"row {b.hash[:12]} (height {b.index}): {e}", height=b.index, row=b.hash))
    _check_head(ledger, recorded, stored)
    return ledger


def _decode_rows(store: LedgerStore, ledger: Ledger, rejected: set[str],
                 noncanonical: set[str]) -> tuple[list[Block], set[str]]:
    """Pass 1: every row must be the canonical JSON of a block whose hash/parent/height are its columns.

    Returns the non-genesis blocks that pass and the hash column of every non-genesis row; the
    failing rows are added to `ledger.problems` (and their hash to `rejected`, so that children are
    rejected as such rather than as orphans). Blocks whose body is not exactly their canonical JSON
    go into `noncanonical`: they are rejected after validation, so that an edited receipt is
    reported as the forgery it is (bad signature), not merely as reformatted JSON.
    """
    out: list[Block] = []
    stored: set[str] = set()
    seen_genesis = False
    genesis_rows = 0
    n = 0
    try:
        for h, parent, height, body in store.rows():
            n += 1
            blame = height if isinstance(height, int) and not isinstance(height, bool) else None
            try:
                b = _row_body(body)
                blame = b.index  # a block that decodes is blamed at its own height, whatever the column says
                _check_columns(b, h, parent, height)
                if b.index == 0:
                    if b != ledger.genesis:
                        raise LedgerError("genesis block does not match the stored parameters and keys")
                    if seen_genesis:
                        raise LedgerError("a second genesis row")
                    seen_genesis = True
                    genesis_rows += 1
                    continue
                if b.to_json().decode() != body:
                    noncanonical.add(b.hash)
                out.append(b)
            except LedgerError as e:
                rejected.add(str(h))
                ledger.problems.append(Problem(f"row {_short(h)} (height {height if blame is None else blame!r}): "
                                               f"{e}", height=blame, row=str(h)))
            if blame == 0:
                genesis_rows += 1
            else:
                stored.add(str(h))
    except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
        what = "cannot read the blocks table" if n == 0 else f"database damaged after {n} readable row(s)"
        ledger.problems.append(Problem(f"{what}: {e}"))
        return out, stored
    if not genesis_rows:
        ledger.problems.append(Problem("no genesis row", height=0))
    return out, stored


def _short(v: Any) -> str:
    """A column value fit for a one-line message: 12 hex digits, or a short escaped repr of anything else."""
    if isinstance(v, str) and v.isascii() and v.isprintable():
        return v[:12]
    return ascii(v)[:24]


def _row_body(body: Any) -> Block:
    """The block a row's body holds (whether it is canonical is checked last, see `_load`)."""
    if not isinstance(body, str):
        raise LedgerError(f"body is {type(body).__name__}, expected JSON text")
    if not body.isascii():
        at = next(i for i, ch in enumerate(body) if not ch.isascii())
        raise LedgerError(f"body has a non-ASCII character or invalid UTF-8 at offset {at} (canonical JSON is ASCII)")
    return Block.from_json(body)


def _check_columns(b: Block, h: Any, parent: Any, height: Any) -> None:
    """The hash, parent and height columns must repeat what the block itself says."""
    if not isinstance(h, str) or b.hash != h:
        raise LedgerError("stored hash does not match the block's hash")
    if not isinstance(parent, str) or parent != b.prev_hash:
        raise LedgerError(f"parent column {_short(parent)} disagrees with the block's prev_hash {b.prev_hash[:12]}")
    if isinstance(height, bool) or not isinstance(height, int) or height != b.index:
        raise LedgerError(f"height column says {height!r}, but the block's index is {b.index}")


def _check_head(ledger: Ledger, recorded: HeadRecord, stored: set[str]) -> None:
    """Compare the replayed ledger with the head record written by the latest append.

    When some rows were rejected the replayed head is shorter anyway; the head record is then only
    a problem of its own if the file does not even hold the rows it names (tip row, row count).
    """
    got = HeadRecord.of(ledger.head, len(ledger.blocks) - 1)
    if got == recorded:
        return
    rows_match = recorded.hash in stored and len(stored) == recorded.blocks
    if ledger.problems and rows_match:
        return
    if len(stored) < recorded.blocks or recorded.hash not in stored:
        why = "blocks were deleted or the file is truncated"
    elif len(stored) > recorded.blocks:
        why = "blocks were added that the ledger never wrote"
    else:
        why = "the head record does not match the stored blocks"
    ledger.problems.append(Problem(
        f"head says height {recorded.height} hash {recorded.hash[:12]}.. ({recorded.blocks} blocks), but the heaviest "
        f"stored block is height {got.height} hash {got.hash[:12]}.. ({got.blocks} valid blocks): {why}",
        height=recorded.height))


def parse_head(text: str) -> tuple[int, str]:
    """``HEIGHT:HASH`` (what `ledger head` prints) as (height, 64-hex block hash)."""
    height, sep, h = text.partition(":")
    if not sep or not height.isdigit():
        raise LedgerError(f"{text!r}: expected HEIGHT:HASH (what `dnninfer ledger head` prints)")
    return int(height), check_hex64(h, f"{text!r}: the block hash after ':'")


def check_expected_head(ledger: Ledger, height: int, block_hash: str) -> Problem | None:
    """A `Problem` unless block `block_hash` is at `height` on the main chain (the head or an ancestor of it).

    The head kept outside the file (`ledger head`, signed by its miner) proves what the ledger held
    then: a file rolled back to an older copy, or replaced by another ledger, no longer has it.
    """
    head = ledger.head
    want = f"expected head height {height} hash {block_hash[:12]}.."
    b = ledger.blocks.get(block_hash)
    if b is None:
        return Problem(f"{want} is not in the ledger (its head is height {head.index} hash {head.hash[:12]}..): "
                       "rolled back to an older copy, or replaced by another ledger", height=height)
    if b.index != height:
        return Problem(f"{want}: that block is at height {b.index}, not {height}", height=height, row=b.hash)
    on_main = ledger.main_chain()[height] if height <= head.index else None
    if on_main is None or on_main.hash != block_hash:
        return Problem(f"{want} is no longer on the main chain (head height {head.index} hash {head.hash[:12]}.. "
                       "is on another branch): the ledger was rolled back past it", height=height, row=b.hash)
    return None
