"""SQLite persistence: reopen gives the same state, SIGKILL mid-append loses nothing committed,
corrupt or forged files are refused with a reason while every valid block is kept, and the CLI."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dnninfer.cli import main
from dnninfer.ledger.block import Block
from dnninfer.ledger.demo import demo_params, demo_receipts, extend_demo
from dnninfer.ledger.errors import CorruptLedgerError, LedgerError
from dnninfer.ledger.identity import Keyring
from dnninfer.ledger.miner import mine_block
from dnninfer.ledger.store import create_ledger, open_ledger

PARAMS = demo_params(expected_hashes=256)
KEYS = Keyring.derive(PARAMS.gateways + PARAMS.aps, "store-test")


def _write(path: Path, n_blocks: int = 8, seed: int = 0, fork: bool = False) -> dict:
    with create_ledger(path, PARAMS, KEYS) as lg:
        rng = random.Random(seed)
        extend_demo(lg, n_blocks, rng)
        if fork:  # a losing side branch must survive a reopen as well
            parent = lg.main_chain()[2].hash
            lg.add_block(mine_block(lg, "ap1", demo_receipts(lg, 99, rng), parent=parent, rng=rng).block)
        return {"head": lg.head.hash, "rep": lg.reputation(), "blocks": set(lg.blocks), "height": lg.height}


def _edit_row(path: Path, height: int, edit) -> None:
    con = sqlite3.connect(path)
    h, body = con.execute("SELECT hash, body FROM blocks WHERE height = ? ORDER BY hash LIMIT 1", (height,)).fetchone()
    con.execute("UPDATE blocks SET body = ? WHERE hash = ?", (edit(body), h))
    con.commit()
    con.close()


def test_reopen_gives_the_same_state_and_replay(tmp_path):
    path = tmp_path / "l.db"
    before = _write(path, fork=True)
    with open_ledger(path) as lg:
        assert lg.head.hash == before["head"] and lg.height == before["height"] == 8
        assert lg.reputation() == before["rep"]
        assert set(lg.blocks) == before["blocks"] and len(lg.stale_blocks()) == 1
        assert lg.replay() == before["rep"]
        con = sqlite3.connect(path)
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        con.close()
        assert lg.signers is None  # a ledger read from its file holds public keys only
        extend_demo(lg, 2, random.Random(5), KEYS)  # appending after a reopen persists too
        head = lg.head.hash
    with open_ledger(path, PARAMS, KEYS) as lg:  # matching params/keys are accepted
        assert lg.head.hash == head and lg.height == 10
    with pytest.raises(LedgerError, match="params differ"):
        open_ledger(path, demo_params(expected_hashes=512))
    with pytest.raises(LedgerError, match="keys differ"):
        open_ledger(path, keys=Keyring.derive((), "other"))
    with pytest.raises(LedgerError, match="already exists"):
        create_ledger(path, PARAMS, KEYS)


def test_open_creates_with_params_and_refuses_a_missing_file_without(tmp_path):
    with pytest.raises(LedgerError, match="no such ledger"):
        open_ledger(tmp_path / "none.db")
    assert not (tmp_path / "none.db").exists()
    with open_ledger(tmp_path / "new.db", PARAMS, KEYS) as lg:
        assert lg.height == 0
    with open_ledger(tmp_path / "new.db", readonly=True) as lg:
        assert lg.height == 0
        with pytest.raises(LedgerError, match="read-only"):
            extend_demo(lg, 1, random.Random(0), KEYS)
        assert lg.height == 0 and len(lg) == 1  # a failed write leaves memory as it was


_APPENDER = """
import random, sys
from dnninfer.ledger.demo import extend_demo
from dnninfer.ledger.identity import Keyring
from dnninfer.ledger.store import open_ledger
lg = open_ledger(sys.argv[1], keys=Keyring.derive((), "store-test"))
rng = random.Random(int(sys.argv[2]))
print("ready", flush=True)
while True:
    extend_demo(lg, 1, rng)
    print(lg.height, flush=True)
"""


def test_sigkill_mid_append_keeps_every_committed_block(tmp_path):
    path = tmp_path / "crash.db"
    _write(path, n_blocks=2)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    rng = random.Random(7)
    for round_ in range(4):  # each round: append, SIGKILL at a random moment, reopen and check
        proc = subprocess.Popen([sys.executable, "-c", _APPENDER, str(path), str(round_)], stdout=subprocess.PIPE,
                                text=True, env=env)
        try:
            assert proc.stdout.readline().strip() == "ready"
            target = rng.randrange(2, 12)
            for _ in range(target):
                line = proc.stdout.readline()
                assert line, "appender died"
                committed = int(line)
            time.sleep(rng.random() * 0.005)  # land somewhere inside a later append
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        with open_ledger(path) as lg:  # strict: every stored block re-validates
            assert lg.height >= committed
            assert not lg.problems
            assert lg.replay() == lg.reputation()
    with open_ledger(path, keys=KEYS) as lg:
        extend_demo(lg, 1, random.Random(99))  # and the chain is still writable
        assert lg.height >= committed + 1


def test_random_bytes_and_truncated_file(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(random.Random(0).randbytes(5000))
    with pytest.raises(LedgerError, match=r"cannot read it as a ledger database.*not a database"):
        open_ledger(junk)
    path = tmp_path / "t.db"
    _write(path, n_blocks=30)
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(LedgerError, match=r"t\.db: .*(malformed|truncated|damaged)") as e:
        open_ledger(path)
    assert "\n" not in str(e.value)
    plain = tmp_path / "plain.db"
    con = sqlite3.connect(plain)
    con.execute("CREATE TABLE t (x)")
    con.close()
    with pytest.raises(LedgerError, match="not a dnninfer ledger"):
        open_ledger(plain)


def test_torn_wal_tail_leaves_a_valid_prefix(tmp_path):
    """A crash image (db + wal copied while the writer is live) with the WAL cut mid-frame."""
    path = tmp_path / "live.db"
    lg = create_ledger(path, PARAMS, KEYS)
    con = sqlite3.connect(path)  # keeps the WAL from being checkpointed away on close
    con.execute("PRAGMA wal_autocheckpoint=0")
    lg.store.conn.execute("PRAGMA wal_autocheckpoint=0")
    extend_demo(lg, 10, random.Random(1))
    crash = tmp_path / "crash.db"
    shutil.copy(path, crash)
    wal = Path(f"{path}-wal").read_bytes()
    Path(f"{crash}-wal").write_bytes(wal[: len(wal) * 2 // 3])
    with open_ledger(crash) as got:
        assert 0 < got.height < 10
        assert [b.hash for b in got.main_chain()] == [b.hash for b in lg.main_chain()[: got.height + 1]]
    lg.close()
    con.close()


def test_edited_row_is_reported_and_the_valid_prefix_kept(tmp_path):
    path = tmp_path / "e.db"
    _write(path, n_blocks=8)

    def more_cycles(body: str) -> str:
        d = json.loads(body)
        d["receipts"][0]["cycles"] += 1
        return json.dumps(d)

    _edit_row(path, 5, more_cycles)
    size = path.stat().st_size
    with pytest.raises(CorruptLedgerError, match=r"invalid ledger: row .* \(height 5\): .*invalid signature.* "
                                                r"\(and 3 more problem\(s\)\); 4 valid block\(s\) kept") as e:
        open_ledger(path)
    assert e.value.ledger.height == 4 and len(e.value.problems) == 4
    assert all("was rejected" in p for p in e.value.problems[1:])
    assert e.value.ledger.replay() == e.value.ledger.reputation()
    lg = open_ledger(path, strict=False)  # nothing was deleted: the same rows are still there
    assert lg.height == 4 and len(lg.problems) == 4 and path.stat().st_size >= size
    lg.close()


@pytest.mark.parametrize(("edit", "reason"), [
    (lambda body: body[:-7], "malformed JSON"),
    (lambda body: body.replace('"nonce":', '"nonce_":'), "missing field 'nonce'"),
    (lambda body: body.replace('"receipts":[', '"receipts":[1,'), r"receipts\[0\]: receipt: expected an object"),
    (lambda body: json.dumps(json.loads(body) | {"nonce": json.loads(body)["nonce"] ^ 1}),
     "stored hash does not match"),
])
def test_bad_rows_give_specific_reasons(tmp_path, edit, reason):
    path = tmp_path / "b.db"
    _write(path, n_blocks=4)
    _edit_row(path, 3, edit)
    with pytest.raises(CorruptLedgerError, match=reason) as e:
        open_ledger(path)
    assert e.value.ledger.height == 2


def test_edited_params_disconnect_every_block(tmp_path):
    path = tmp_path / "p.db"
    _write(path, n_blocks=3)
    con = sqlite3.connect(path)
    easier = demo_params(expected_hashes=256, kappa=50.0)  # an attacker wants cheap blocks
    con.execute("UPDATE meta SET value = ? WHERE key = 'params'", (easier.to_json().decode(),))
    con.commit()
    con.close()
    with pytest.raises(CorruptLedgerError, match="genesis block does not match the stored parameters") as e:
        open_ledger(path)
    assert e.value.ledger.height == 0 and len(e.value.problems) == 4


def test_edited_genesis_keys_disconnect_every_block(tmp_path):
    """Swapping in the attacker's public keys (to sign with its own private ones) breaks genesis."""
    path = tmp_path / "k.db"
    _write(path, n_blocks=3)
    con = sqlite3.connect(path)
    mine = Keyring.derive((), "attacker").public_keys(PARAMS.gateways + PARAMS.aps)
    con.execute("UPDATE meta SET value = ? WHERE key = 'keys'", (mine.to_json().decode(),))
    con.commit()
    con.close()
    with pytest.raises(CorruptLedgerError, match="genesis block does not match the stored parameters and keys") as e:
        open_ledger(path)
    assert e.value.ledger.height == 0 and len(e.value.problems) == 4


def test_cli_verify_good_and_forged(tmp_path, capsys):
    path = tmp_path / "c.db"
    before = _write(path, n_blocks=5, fork=True)
    assert main(["ledger", "verify", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] and out["height"] == 5 and out["head"] == before["head"] and out["orphans"] == 1
    assert {a["ap"]: a["reputation"] for a in out["aps"]} == before["rep"]
    assert sum(a["blocks_mined"] for a in out["aps"]) == 5
    assert main(["ledger", "verify", str(path)]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["ledger", "show", str(path), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["blocks"]) == 6

    def forge(body: str) -> str:  # an AP inflates a receipt's cycles to earn stake
        b = Block.from_json(body).to_dict()
        b["receipts"][0]["cycles"] *= 10
        return json.dumps(b)

    _edit_row(path, 2, forge)
    assert main(["ledger", "verify", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dnninfer: error: ") and "invalid signature" in err
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"\x00" * 100)
    assert main(["ledger", "verify", str(junk)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_cli_demo_writes_a_ledger_that_verifies(tmp_path, capsys):
    path = tmp_path / "demo.db"
    assert main(["ledger", "demo", str(path), "--blocks", "3", "--expected-hashes", "128", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["height"] == 3
    assert main(["ledger", "verify", str(path)]) == 0
    assert main(["ledger", "demo", str(path)]) == 2  # never overwrites
    assert "never overwrites" in capsys.readouterr().err
