"""Key files and keyrings: private keys live in 0600 files outside the ledger (every bad key file is one
clear error line), the ledger file holds public keys only, and the key/head commands of the CLI."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from dnninfer.cli import main
from dnninfer.errors import UserError
from dnninfer.ledger.identity import (
    KeyFileError,
    Keyring,
    SigningKey,
    load_key_file,
    verify_signature,
    write_key_file,
)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_key_file_round_trip_is_mode_0600_and_never_overwritten(tmp_path):
    key = SigningKey.generate("gw0")
    path = write_key_file(tmp_path / "gw0.key", key)
    assert _mode(path) == 0o600
    got = load_key_file(path, "gw0")
    assert got == key and got.public == key.public
    sig = got.sign(b"message")
    assert verify_signature(key.public, sig, b"message") and not verify_signature(key.public, sig, b"other")
    with pytest.raises(KeyFileError, match="already exists"):
        write_key_file(path, SigningKey.generate("gw0"))
    assert load_key_file(path) == key  # the first key is still there


def test_write_key_file_ignores_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        path = write_key_file(tmp_path / "k.key", SigningKey.generate("ap0"))
    finally:
        os.umask(old)
    assert _mode(path) == 0o600


def _good_file(folder: Path, name: str = "gw0") -> tuple[Path, SigningKey]:
    key = SigningKey.generate(name)
    return write_key_file(folder / f"{name}.key", key), key


def _malformed(path: Path, key: SigningKey, how: str) -> None:
    d = json.loads(path.read_text())
    text = {
        "garbage": "not json at all",
        "truncated": path.read_text()[:40],
        "empty": "",
        "binary": None,
        "format": json.dumps(d | {"format": "pem"}),
        "short_key": json.dumps(d | {"private_key": "ab" * 16}),
        "other_public": json.dumps(d | {"public_key": SigningKey.generate("x").public}),
        "extra_field": json.dumps(d | {"comment": "hi"}),
        "bad_name": json.dumps(d | {"name": "gw 0"}),
        "huge": "x" * 10_000,
    }[how]
    if text is None:
        path.write_bytes(b"\xff\xfe\x00" * 30)
    else:
        path.write_text(text)


@pytest.mark.parametrize("how", ["garbage", "truncated", "empty", "binary", "format", "short_key", "other_public",
                                 "extra_field", "bad_name", "huge"])
def test_malformed_key_file_is_one_line_naming_it(tmp_path, how):
    path, key = _good_file(tmp_path)
    _malformed(path, key, how)
    with pytest.raises(KeyFileError, match="malformed") as e:
        load_key_file(path, "gw0")
    msg = str(e.value)
    assert isinstance(e.value, UserError) and "\n" not in msg and msg.startswith(f"key file {path}: ")
    assert key.to_json().decode() not in msg  # the secret is never echoed


def test_missing_unreadable_and_readable_by_others_are_refused(tmp_path):
    with pytest.raises(KeyFileError, match=r"no such file \(the private key of 'gw0'\)"):
        load_key_file(tmp_path / "none.key", "gw0")
    (tmp_path / "dir.key").mkdir()
    with pytest.raises(KeyFileError, match="cannot read it"):
        load_key_file(tmp_path / "dir.key")
    path, key = _good_file(tmp_path)
    for mode in (0o644, 0o640, 0o604, 0o606):
        os.chmod(path, mode)
        with pytest.raises(KeyFileError, match=rf"readable by other users \(mode {mode:04o}\).*chmod 600") as e:
            load_key_file(path, "gw0")
        assert "\n" not in str(e.value)
    os.chmod(path, 0o600)  # negative control: the same file, private again, loads
    assert load_key_file(path, "gw0") == key
    os.chmod(path, 0o400)
    assert load_key_file(path, "gw0") == key
    with pytest.raises(KeyFileError, match="holds the key of 'gw0', expected 'gw1'"):
        load_key_file(path, "gw1")


def test_keyring_derive_is_deterministic_and_never_prints_secrets(tmp_path):
    a, b = Keyring.derive(["gw0"], "s"), Keyring.derive((), "s")
    assert a["gw0"] == b["gw0"] and a["ap7"].public == b["ap7"].public  # any name, on first use
    assert Keyring.derive((), "t")["gw0"].public != a["gw0"].public
    secret = json.loads(a["gw0"].to_json())["private_key"]
    assert secret not in repr(a) and secret not in repr(a["gw0"])
    ring = Keyring.generate(["gw0", "ap0"])
    ring.save(tmp_path / "keys")
    assert Keyring.load(tmp_path / "keys", ["gw0", "ap0"]).public_keys() == ring.public_keys()
    assert {_mode(p) for p in (tmp_path / "keys").iterdir()} == {0o600}
    with pytest.raises(KeyFileError, match="no such file"):
        Keyring.load(tmp_path / "keys", ["gw1"])


# -- the CLI ---------------------------------------------------------------------------------------
def test_keygen_writes_a_private_file_and_prints_the_public_key(tmp_path, capsys):
    out = tmp_path / "gw0.key"
    assert main(["ledger", "keygen", "gw0", "--out", str(out)]) == 0
    public = capsys.readouterr().out.strip()
    assert _mode(out) == 0o600 and load_key_file(out, "gw0").public == public
    assert main(["ledger", "keygen", "gw0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err
    assert main(["ledger", "keygen", "bad name", "--out", str(tmp_path / "x.key")]) == 2
    assert not (tmp_path / "x.key").exists()


def test_demo_with_key_files_keeps_only_public_keys_in_the_ledger(tmp_path, capsys):
    path, keys = tmp_path / "d.db", tmp_path / "keys"
    assert main(["ledger", "demo", str(path), "--blocks", "2", "--expected-hashes", "16", "--keys", str(keys),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    files = sorted(keys.iterdir())
    assert [p.name for p in files] == [f"{n}.key" for n in ("ap0", "ap1", "ap2", "gw0", "gw1", "gw2", "gw3")]
    assert {_mode(p) for p in files} == {0o600}
    loaded = {p.stem: load_key_file(p, p.stem) for p in files}
    assert out["keys"] == {n: k.public for n, k in loaded.items()}
    con = sqlite3.connect(path)
    stored = " ".join(str(v) for row in con.execute("SELECT * FROM meta UNION ALL SELECT hash, body FROM blocks")
                      for v in row)
    con.close()
    for k in loaded.values():  # the ledger holds every public key and no private one
        assert k.public in stored and json.loads(k.to_json())["private_key"] not in stored
    assert main(["ledger", "verify", str(path)]) == 0  # verifying needs no key file
    capsys.readouterr()


def test_demo_refuses_a_key_file_others_can_read(tmp_path, capsys):
    keys = tmp_path / "keys"
    Keyring.generate(["gw0"]).save(keys)
    os.chmod(keys / "gw0.key", 0o644)
    assert main(["ledger", "demo", str(tmp_path / "d.db"), "--keys", str(keys)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dnninfer: error: key file ") and "gw0.key" in err
    assert "readable by other users (mode 0644)" in err
    assert not (tmp_path / "d.db").exists()


def test_head_prints_the_line_that_verify_expects(tmp_path, capsys):
    path = tmp_path / "h.db"
    assert main(["ledger", "demo", str(path), "--blocks", "3", "--expected-hashes", "16"]) == 0
    capsys.readouterr()
    assert main(["ledger", "head", str(path)]) == 0
    head = capsys.readouterr().out
    assert head.count("\n") == 1
    height, h = head.strip().split(":")
    assert height == "3" and len(h) == 64
    assert main(["ledger", "head", str(path), "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["head"] == head.strip() and len(obj["signature"]) == 128 and obj["miner"].startswith("ap")
    assert main(["ledger", "verify", str(path), "--expect-head", head.strip()]) == 0
    capsys.readouterr()
    for bad in ("3", "x:" + h, "3:" + h[:12], "-1:" + h, "3:" + h.upper()):
        assert main(["ledger", "verify", str(path), "--expect-head", bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--expect-head" in err, err
