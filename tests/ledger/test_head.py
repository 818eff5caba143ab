"""The head record anchors a stored ledger: truncation and deleted forks are named, edited columns
blame the edited row, `verify --json` always prints one object, read-only verify leaves the
directory as it was, and damaged or foreign files give one error line (never a traceback, never
"valid")."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnninfer.cli import main, one_line
from dnninfer.ledger.demo import demo_params, demo_receipts, extend_demo
from dnninfer.ledger.errors import CorruptLedgerError, LedgerError
from dnninfer.ledger.identity import Keyring
from dnninfer.ledger.miner import mine_block
from dnninfer.ledger.store import create_ledger, open_ledger

PARAMS = demo_params(expected_hashes=64)
KEYS = Keyring.derive(PARAMS.gateways + PARAMS.aps, "head-test")
N = 6


def _write(path: Path, n_blocks: int = N, fork: bool = False) -> dict[str, Any]:
    with create_ledger(path, PARAMS, KEYS) as lg:
        rng = random.Random(1)
        extend_demo(lg, n_blocks, rng)
        stale = None
        if fork:  # a lighter side branch off height 2: kept, but not the head
            stale = mine_block(lg, "ap1", demo_receipts(lg, 99, rng), parent=lg.main_chain()[2].hash, rng=rng).block
            lg.add_block(stale)
        return {"head": lg.head.hash, "height": lg.height, "blocks": len(lg.blocks) - 1,
                "stale": stale.hash if stale else None}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    path = tmp_path_factory.mktemp("base") / "base.db"
    return path, _write(path)


@pytest.fixture(scope="module")
def forked(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    path = tmp_path_factory.mktemp("forked") / "fork.db"
    return path, _write(path, fork=True)


def _copy(src: Path, folder: Path, name: str = "l.db") -> Path:
    dst = folder / name
    shutil.copyfile(src, dst)
    return dst


def _sql(path: Path, *statements: str | tuple[str, tuple]) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    for s in statements:
        sql, args = (s, ()) if isinstance(s, str) else s
        con.execute(sql, args)
    con.close()


def _verify(path: Path, capsys, *extra: str) -> tuple[int, str, str]:
    code = main(["ledger", "verify", str(path), *extra])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _assert_one_error_line(code: int, out: str, err: str, json_mode: bool = False) -> str:
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("dnninfer: error: "), err
    assert "Traceback" not in err + out
    if json_mode:
        obj = json.loads(out)  # exactly one object on stdout
        assert out.count("\n") == 1 and obj["valid"] is False and one_line(obj["error"]) in err
    else:
        assert "valid" not in out
    return err


# -- the head record -------------------------------------------------------------------------------
def test_untouched_ledger_verifies_valid_also_after_reopen_and_append(base, tmp_path, capsys):
    """Negative control: nothing is flagged on a genuine file, before or after more appends."""
    path = _copy(base[0], tmp_path)
    code, out, err = _verify(path, capsys, "--json")
    assert code == 0 and json.loads(out)["valid"] and json.loads(out)["height"] == N and not err
    with open_ledger(path, keys=KEYS) as lg:
        assert not lg.problems and not lg.warnings and lg.head.hash == base[1]["head"]
        extend_demo(lg, 2, random.Random(9))
    with open_ledger(path) as lg:
        assert lg.height == N + 2 and not lg.problems
    assert _verify(path, capsys)[0] == 0


@pytest.mark.parametrize("deleted", [1, 2, N - 1])
def test_deleting_the_last_blocks_is_detected_and_named(base, tmp_path, capsys, deleted):
    path = _copy(base[0], tmp_path)
    _sql(path, ("DELETE FROM blocks WHERE height > ?", (N - deleted,)))
    err = _assert_one_error_line(*_verify(path, capsys))
    head = base[1]["head"]
    assert (f"head says height {N} hash {head[:12]}.. ({N} blocks), but the heaviest stored block is "
            f"height {N - deleted} ") in err
    assert "blocks were deleted or the file is truncated" in err
    with pytest.raises(CorruptLedgerError, match="blocks were deleted") as e:
        open_ledger(path)
    assert e.value.ledger.height == N - deleted  # the valid prefix is still there
    assert e.value.problems[0].height == N


def test_deleting_a_side_branch_block_is_detected_by_the_count(forked, tmp_path, capsys):
    path = _copy(forked[0], tmp_path)
    assert _verify(path, capsys)[0] == 0  # negative control: the fork itself is fine
    with open_ledger(path) as lg:
        assert len(lg.stale_blocks()) == 1 and lg.head.hash == forked[1]["head"]
    _sql(path, ("DELETE FROM blocks WHERE hash = ?", (forked[1]["stale"],)))
    err = _assert_one_error_line(*_verify(path, capsys))
    assert f"({N + 1} blocks), but the heaviest stored block is height {N} hash {forked[1]['head'][:12]}.. " \
           f"({N} valid blocks): blocks were deleted" in err


def test_head_record_follows_every_append_including_a_losing_fork(tmp_path):
    path = tmp_path / "h.db"

    def head_row() -> dict[str, Any]:
        con = sqlite3.connect(path)
        v = con.execute("SELECT value FROM meta WHERE key = 'head'").fetchone()[0]
        con.close()
        return json.loads(v)

    with create_ledger(path, PARAMS, KEYS) as lg:
        assert head_row() == {"height": 0, "hash": lg.genesis.hash, "blocks": 0}
        rng = random.Random(3)
        extend_demo(lg, 3, rng)
        assert head_row() == {"height": 3, "hash": lg.head.hash, "blocks": 3}
        side = mine_block(lg, "ap2", demo_receipts(lg, 50, rng), parent=lg.main_chain()[1].hash, rng=rng).block
        lg.add_block(side)  # lighter: the head stays, the count moves
        assert head_row() == {"height": 3, "hash": lg.head.hash, "blocks": 4} and lg.head.hash != side.hash


def test_added_rows_are_named_too(base, tmp_path, capsys):
    """A genuine block from a longer copy pasted into a shorter one: the head record disagrees."""
    short = tmp_path / "short.db"
    with create_ledger(short, PARAMS, KEYS) as lg:
        extend_demo(lg, N - 1, random.Random(1))  # the same blocks as `base` up to N - 1
    con = sqlite3.connect(base[0])
    tip = con.execute("SELECT hash, parent, height, body FROM blocks WHERE height = ?", (N,)).fetchone()
    con.close()
    _sql(short, ("INSERT INTO blocks VALUES (?, ?, ?, ?)", tip))
    err = _assert_one_error_line(*_verify(short, capsys))
    assert "blocks were added that the ledger never wrote" in err


# -- blame lands on the edited row -----------------------------------------------------------------
@pytest.mark.parametrize("new_height", ["+1", "+2", "+10", "-1", "'3'", "3.0"])
def test_edited_height_column_blames_the_edited_row(base, tmp_path, capsys, new_height):
    k = 3
    path = _copy(base[0], tmp_path)
    con = sqlite3.connect(path)
    h = con.execute("SELECT hash FROM blocks WHERE height = ?", (k,)).fetchone()[0]
    con.close()
    value = {"+1": k + 1, "+2": k + 2, "+10": k + 10, "-1": k - 1, "'3'": str(k), "3.0": float(k)}[new_height]
    if isinstance(value, str | float):  # INTEGER affinity would store them as 3: drop the column type first
        _rebuild_without_constraints(path)
    _sql(path, ("UPDATE blocks SET height = ? WHERE hash = ?", (value, h)))
    err = _assert_one_error_line(*_verify(path, capsys))
    assert f"invalid ledger: row {h[:12]} (height {k}): height column says {value!r}, but the block's index is {k}" \
        in err
    with pytest.raises(CorruptLedgerError) as e:
        open_ledger(path)
    assert e.value.problems[0].height == k and e.value.problems[0].row == h
    assert all("was rejected" in p for p in e.value.problems[1:])  # its children fall with it, after it


def test_edited_parent_column_blames_the_edited_row(base, tmp_path, capsys):
    path = _copy(base[0], tmp_path)
    con = sqlite3.connect(path)
    h, grandparent = con.execute("SELECT b.hash, p.parent FROM blocks b JOIN blocks p ON b.parent = p.hash "
                                 "WHERE b.height = 4").fetchone()
    con.close()
    _sql(path, ("UPDATE blocks SET parent = ? WHERE hash = ?", (grandparent, h)))
    err = _assert_one_error_line(*_verify(path, capsys))
    assert f"row {h[:12]} (height 4): parent column" in err


# -- verify --json ---------------------------------------------------------------------------------
def test_verify_json_on_an_invalid_ledger_is_one_object_and_exit_2(base, tmp_path, capsys):
    path = _copy(base[0], tmp_path)
    _sql(path, ("DELETE FROM blocks WHERE height = ?", (N,)))
    code, out, err = _verify(path, capsys, "--json")
    _assert_one_error_line(code, out, err, json_mode=True)
    obj = json.loads(out)
    assert obj["path"] == str(path) and obj["block"] == N and obj["valid_blocks"] == N - 1
    assert "blocks were deleted" in obj["error"] and len(obj["problems"]) == 1
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 100)
    code, out, err = _verify(junk, capsys, "--json")
    _assert_one_error_line(code, out, err, json_mode=True)
    assert json.loads(out)["block"] is None and "cannot read it as a ledger database" in json.loads(out)["error"]
    code, out, _ = _verify(tmp_path / "missing.db", capsys, "--json")
    assert code == 2 and json.loads(out)["valid"] is False
    code, out, _ = _verify(base[0], capsys, "--json")  # negative control
    assert code == 0 and json.loads(out)["valid"] is True and json.loads(out)["warnings"] == []


def test_show_json_on_an_invalid_ledger_is_one_object_and_exit_2(base, tmp_path, capsys):
    path = _copy(base[0], tmp_path)
    _sql(path, ("DELETE FROM blocks WHERE height = ?", (N,)))
    code = main(["ledger", "show", str(path), "--json"])
    cap = capsys.readouterr()
    _assert_one_error_line(code, cap.out, cap.err, json_mode=True)
    assert json.loads(cap.out)["block"] == N
    code = main(["ledger", "show", str(base[0]), "--json"])  # negative control
    assert code == 0 and len(json.loads(capsys.readouterr().out)["blocks"]) == N + 1


@pytest.mark.parametrize("argv", [["--blocks", "-1"], ["--blocks", "1e9"], ["--expected-hashes", "0"],
                                  ["--expected-hashes", "nan"], ["--expected-hashes", "1e300"], ["--seed", "-3"]])
def test_demo_refuses_out_of_range_values_before_writing(tmp_path, capsys, argv):
    path = tmp_path / "d.db"
    code = main(["ledger", "demo", str(path), *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("dnninfer: error: ") and err.count("\n") == 1, err
    assert argv[0] in err and not path.exists()


# -- read-only verify touches nothing --------------------------------------------------------------
def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("truncated", [False, True])
def test_verify_and_show_create_and_change_no_files(base, tmp_path, capsys, truncated):
    path = _copy(base[0], tmp_path)
    if truncated:
        _sql(path, "DELETE FROM blocks WHERE height > 3")
    before = _snapshot(tmp_path)
    assert set(before) == {"l.db"}
    for cmd in (["verify"], ["verify", "--json"], ["show"]):
        code = main(["ledger", *cmd[:1], str(path), *cmd[1:]])
        capsys.readouterr()
        assert code == (2 if truncated else 0)
        assert _snapshot(tmp_path) == before, cmd


def test_verify_reads_a_live_writers_wal(tmp_path, capsys):
    """Negative control for `immutable`: while a writer holds the file, committed WAL frames count."""
    path = tmp_path / "live.db"
    lg = create_ledger(path, PARAMS, KEYS)
    try:
        lg.store.conn.execute("PRAGMA wal_autocheckpoint=0")
        extend_demo(lg, 3, random.Random(4))
        assert Path(f"{path}-wal").stat().st_size > 0
        code, out, _ = _verify(path, capsys, "--json")
        assert code == 0 and json.loads(out)["height"] == 3
    finally:
        lg.close()


# -- old ledgers -----------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["dnninfer-ledger/1", "dnninfer-ledger/2"])
def test_old_hmac_ledgers_are_refused_naming_the_format(base, tmp_path, capsys, fmt):
    """HMAC-format files (gateway secrets in the file) cannot be trusted or re-signed: one clear line."""
    path = _copy(base[0], tmp_path)
    _sql(path, ("UPDATE meta SET value = ? WHERE key = 'format'", (fmt,)))
    err = _assert_one_error_line(*_verify(path, capsys))
    assert f"format '{fmt}' is an old HMAC-signed ledger" in err and "start a new ledger" in err
    with pytest.raises(LedgerError, match="HMAC-signed"):
        open_ledger(path)
    assert _verify(base[0], capsys)[0] == 0  # negative control: the current format verifies


@pytest.mark.parametrize(("edit", "reason"), [
    ("DELETE FROM meta WHERE key = 'head'", "meta table has no 'head' row"),
    ("UPDATE meta SET value = 'dnninfer-ledger/9' WHERE key = 'format'", "format 'dnninfer-ledger/9', expected"),
    ("UPDATE meta SET value = '{\"height\":1}' WHERE key = 'head'", "bad meta table: head: missing field"),
    ("UPDATE meta SET value = x'00' WHERE key = 'head'", "meta 'head' is bytes, expected JSON text"),
    ("INSERT INTO meta VALUES ('extra', '1')", "unknown row 'extra'"),
])
def test_damaged_head_or_meta_rows_are_refused(base, tmp_path, capsys, edit, reason):
    path = _copy(base[0], tmp_path)
    _sql(path, edit)
    assert reason in _assert_one_error_line(*_verify(path, capsys))


# -- robustness: foreign and damaged files ---------------------------------------------------------
def _rebuild_without_constraints(path: Path, *edits: str) -> None:
    """Recreate `blocks` with untyped, nullable columns, as a careless hand edit might, then apply `edits`."""
    _sql(path, "CREATE TABLE b2 (hash, parent, height, body)", "INSERT INTO b2 SELECT * FROM blocks",
         "DROP TABLE blocks", "ALTER TABLE b2 RENAME TO blocks", *edits)


_DAMAGE = {
    "random_bytes": lambda p: p.write_bytes(random.Random(0).randbytes(6000)),
    "zero_bytes": lambda p: p.write_bytes(b""),
    "text_file": lambda p: p.write_text("hash,parent,height,body\n"),
    "truncated_half": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "truncated_header": lambda p: p.write_bytes(p.read_bytes()[:50]),
    "truncated_one_page": lambda p: p.write_bytes(p.read_bytes()[:4096]),
    "wrong_schema": lambda p: (p.unlink(), _sql(p, "CREATE TABLE t (x)", "INSERT INTO t VALUES (1)")),
    "no_blocks_table": lambda p: _sql(p, "DROP TABLE blocks"),
    "blocks_without_body": lambda p: _sql(p, "ALTER TABLE blocks DROP COLUMN body"),
    "no_meta_table": lambda p: _sql(p, "DROP TABLE meta"),
    "null_body": lambda p: _rebuild_without_constraints(p, "UPDATE blocks SET body = NULL WHERE height = 2"),
    "null_hash": lambda p: _rebuild_without_constraints(p, "UPDATE blocks SET hash = NULL WHERE height = 2"),
    "null_height": lambda p: _rebuild_without_constraints(p, "UPDATE blocks SET height = NULL WHERE height = 2"),
    "blob_body": lambda p: _sql(p, "UPDATE blocks SET body = CAST(body AS BLOB) WHERE height = 2"),
    "int_body": lambda p: _sql(p, "UPDATE blocks SET body = 42 WHERE height = 2"),
    "invalid_utf8_body": lambda p: _sql(p, "UPDATE blocks SET body = CAST(x'7bff7d' AS TEXT) WHERE height = 2"),
    "blob_hash": lambda p: _sql(p, "UPDATE blocks SET hash = CAST(hash AS BLOB) WHERE height = 2"),
    "newline_hash": lambda p: _sql(p, "UPDATE blocks SET hash = 'ab' || char(10) || 'cd' WHERE height = 2"),
    "reformatted_body": lambda p: _sql(p, "UPDATE blocks SET body = body || ' ' WHERE height = 2"),
    "duplicate_genesis": lambda p: _rebuild_without_constraints(p, "INSERT INTO blocks SELECT * FROM blocks "
                                                                   "WHERE height = 0"),
    "no_genesis": lambda p: _sql(p, "DELETE FROM blocks WHERE height = 0"),
    "null_meta_value": lambda p: _sql(p, "CREATE TABLE m2 (key, value)", "INSERT INTO m2 SELECT * FROM meta",
                                      "DROP TABLE meta", "ALTER TABLE m2 RENAME TO meta",
                                      "UPDATE meta SET value = NULL WHERE key = 'params'"),
}


@pytest.mark.parametrize("kind", sorted(_DAMAGE))
@pytest.mark.parametrize("json_mode", [False, True])
def test_damaged_or_foreign_files_are_one_error_line(base, tmp_path, capsys, kind, json_mode):
    path = _copy(base[0], tmp_path)
    _DAMAGE[kind](path)
    code, out, err = _verify(path, capsys, *(["--json"] if json_mode else []))
    _assert_one_error_line(code, out, err, json_mode)


def test_a_directory_is_not_a_ledger(tmp_path, capsys):
    err = _assert_one_error_line(*_verify(tmp_path, capsys))
    assert "not a file" in err


def _logical(path: Path) -> Any:
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
        try:
            return (sorted(con.execute("SELECT key, value FROM meta").fetchall()),
                    sorted(con.execute("SELECT hash, parent, height, body FROM blocks").fetchall(),
                           key=lambda r: str(r)))
        finally:
            con.close()
    except sqlite3.Error:
        return None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_byte_flips_in_a_body_are_always_rejected(base, capsys, data):
    con = sqlite3.connect(base[0])
    rows = con.execute("SELECT hash, body FROM blocks ORDER BY height").fetchall()
    con.close()
    h, body = data.draw(st.sampled_from(rows), label="row")
    i = data.draw(st.integers(0, len(body) - 1), label="offset")
    x = data.draw(st.integers(1, 255), label="xor")
    raw = bytearray(body.encode())
    raw[i] ^= x
    with tempfile.TemporaryDirectory() as d:
        path = _copy(base[0], Path(d))
        _sql(path, ("UPDATE blocks SET body = CAST(? AS TEXT) WHERE hash = ?", (bytes(raw), h)))
        _assert_one_error_line(*_verify(path, capsys, "--json"), json_mode=True)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_byte_flips_in_the_file_never_pass_as_valid_unless_nothing_changed(base, capsys, data):
    raw = bytearray(base[0].read_bytes())
    original = _logical(base[0])
    for _ in range(data.draw(st.integers(1, 3), label="flips")):
        i = data.draw(st.integers(0, len(raw) - 1), label="offset")
        raw[i] ^= data.draw(st.integers(1, 255), label="xor")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.db"
        path.write_bytes(bytes(raw))
        code, out, err = _verify(path, capsys, "--json")
        assert "Traceback" not in out + err
        if code == 0:  # only bytes SQLite does not read (free space, unused header fields) may change
            assert json.loads(out)["valid"] and _logical(path) == original
        else:
            _assert_one_error_line(code, out, err, json_mode=True)


def test_open_ledger_read_write_refuses_damage_with_a_ledger_error(base, tmp_path):
    """The library path (dpra run reopens ledgers read-write) raises LedgerError, never anything else."""
    for kind in ("random_bytes", "truncated_half", "null_body", "invalid_utf8_body", "no_blocks_table"):
        path = _copy(base[0], tmp_path, f"{kind}.db")
        _DAMAGE[kind](path)
        with pytest.raises(LedgerError):
            open_ledger(path)


@pytest.mark.parametrize("key", ["params", "keys", "head"])
def test_reformatted_meta_json_is_refused(base, tmp_path, capsys, key):
    """Same content, other bytes (a trailing space): the file is no longer what the ledger wrote."""
    path = _copy(base[0], tmp_path)
    _sql(path, ("UPDATE meta SET value = value || ' ' WHERE key = ?", (key,)))
    err = _assert_one_error_line(*_verify(path, capsys))
    assert f"bad meta table: {key}: not the canonical JSON" in err
