"""Key rotation: a record signed by the old key introduces the new one, valid from the next block (on
that branch only); stale, replayed, foreign, duplicate or wrongly signed rotations are refused with
the reason; rotations persist and verify with public keys only."""

from __future__ import annotations

import dataclasses
import json
import random
import re

import pytest

from dnninfer.cli import main
from dnninfer.ledger.chain import Ledger
from dnninfer.ledger.demo import demo_params, extend_demo
from dnninfer.ledger.errors import LedgerError
from dnninfer.ledger.identity import Keyring, SigningKey
from dnninfer.ledger.miner import mine_block
from dnninfer.ledger.receipt import Receipt
from dnninfer.ledger.rotation import KeyRotation
from dnninfer.ledger.store import create_ledger, open_ledger

PARAMS = demo_params(expected_hashes=16)
KEYS = Keyring.derive((), "rotation-test")


def _ledger(blocks: int = 2) -> Ledger:
    lg = Ledger(PARAMS, KEYS)
    extend_demo(lg, blocks, random.Random(1))
    return lg


def _receipt(lg: Ledger, gw: str, key: SigningKey, slot: int | None = None) -> Receipt:
    slot = lg.height + 1 if slot is None else slot
    return Receipt.create(chain=lg.chain, gateway=gw, ap="ap0", slot=slot, split=1, layers=(2, 8),
                          intermediate="0" * 64, output="1" * 64, cycles=1000, timestamp=float(slot), key=key)


def test_gateway_rotation_is_valid_from_the_next_block():
    lg = _ledger()
    old, new = KEYS["gw0"], SigningKey.generate("gw0")
    rot = lg.rotation("gw0", new.public, old)
    assert rot.seq == 1 and rot.chain == lg.chain and KeyRotation.from_dict(rot.to_dict()) == rot
    with pytest.raises(LedgerError, match=r"receipt \(gw0, slot 3\): invalid signature"):
        lg.propose("ap1", [_receipt(lg, "gw0", new)], rotations=[rot])  # not yet: the rotating block uses old keys
    carrier = mine_block(lg, "ap1", [_receipt(lg, "gw0", old)], rotations=[rot], seed=1).block
    lg.add_block(carrier)
    assert lg.public_keys()["gw0"] == new.public and lg.public_keys()["gw1"] == KEYS["gw1"].public
    assert lg.public_keys(carrier.prev_hash)["gw0"] == old.public and lg.public_keys().rotations("gw0") == 1
    with pytest.raises(LedgerError, match=r"receipt \(gw0, slot 4\): invalid signature \(not signed by the key "
                                          r"registered for 'gw0'"):
        lg.propose("ap1", [_receipt(lg, "gw0", old)])  # the old key is retired
    lg.add_block(mine_block(lg, "ap1", [_receipt(lg, "gw0", new)], seed=2).block)  # the new one works
    assert lg.replay() == lg.reputation()


def test_ap_rotation_signs_its_next_blocks_with_the_new_key():
    lg = _ledger()
    new = SigningKey.generate("ap2")
    rot = lg.rotation("ap2", new.public, KEYS["ap2"])
    lg.add_block(mine_block(lg, "ap2", [], rotations=[rot], seed=1).block)  # signed with the old key: fine
    with pytest.raises(LedgerError, match="not its registered key"):
        mine_block(lg, "ap2", [], seed=2)  # the miner is told before it spends any work
    fresh = mine_block(lg, "ap2", [], key=new, seed=2).block
    with pytest.raises(LedgerError, match="invalid miner signature"):
        lg.add_block(fresh.signed(KEYS["ap2"]))  # the same block signed with the retired key
    lg.add_block(fresh)  # negative control: signed with the new key
    assert lg.mined_counts()["ap2"] >= 2


def test_rotation_applies_only_to_its_branch():
    lg = _ledger()
    fork_point = lg.head.hash
    new = SigningKey.generate("gw1")
    lg.add_block(mine_block(lg, "ap0", [], rotations=[lg.rotation("gw1", new.public, KEYS["gw1"])], seed=1).block)
    side_receipt = _receipt(lg, "gw1", KEYS["gw1"], slot=lg.height)
    lg.add_block(mine_block(lg, "ap1", [side_receipt], parent=fork_point, seed=2).block)  # old key, other branch
    assert lg.public_keys(fork_point)["gw1"] == KEYS["gw1"].public


@pytest.mark.parametrize("case", ["replayed", "attacker_signed", "self_signed", "taken_key", "twice", "unknown",
                                  "other_ledger", "unsigned", "skipped_seq"])
def test_bad_rotations_are_refused_with_the_reason(case):
    lg = _ledger()
    new = SigningKey.generate("gw0")
    good = lg.rotation("gw0", new.public, KEYS["gw0"])
    lg.propose("ap0", [], rotations=[good])  # negative control
    attacker = SigningKey.generate("gw0")
    if case == "replayed":
        lg.add_block(mine_block(lg, "ap0", [], rotations=[good], seed=1).block)
        back = lg.rotation("gw0", KEYS["gw0"].public, new)  # #2 back to the old key: fine
        lg.propose("ap0", [], rotations=[back])
        bad, reason = [good], "stale or replayed ('gw0' has rotated 1 time(s), so its next rotation is #2)"
    else:
        bad, reason = {
            "attacker_signed": ([good.sign(attacker)], "invalid signature (not signed by the current key of 'gw0'"),
            "self_signed": ([good.sign(new)], "invalid signature"),
            "taken_key": ([lg.rotation("gw0", KEYS["gw1"].public, KEYS["gw0"])],
                          "the new key is already registered (to 'gw1')"),
            "twice": ([good, lg.rotation("gw0", attacker.public, KEYS["gw0"])], "a second rotation of 'gw0'"),
            "unknown": ([dataclasses.replace(good, name="gw9").sign(attacker)], "unknown identity 'gw9'"),
            "other_ledger": ([dataclasses.replace(good, chain="ab" * 32).sign(KEYS["gw0"])],
                             "belongs to another ledger"),
            "unsigned": ([dataclasses.replace(good, signature="")], "unsigned"),
            "skipped_seq": ([dataclasses.replace(good, seq=2).sign(KEYS["gw0"])], "stale or replayed"),
        }[case]
    with pytest.raises(LedgerError, match=r"key rotation \(\w+, #\d\): " + re.escape(reason)):
        lg.propose("ap0", [], rotations=bad)


@pytest.mark.parametrize(("change", "field"), [({"seq": 0}, "seq"), ({"new_key": "zz"}, "new_key"),
                                               ({"signature": "ab"}, "signature"), ({"name": ""}, "name")])
def test_malformed_rotation_names_the_field(change, field):
    d = KeyRotation(name="gw0", seq=1, new_key="ab" * 32, chain="cd" * 32).to_dict() | change
    with pytest.raises(LedgerError, match=f"'{field}'"):
        KeyRotation.from_dict(d)


def test_rotations_persist_and_verify_with_public_keys_only(tmp_path, capsys):
    path = tmp_path / "r.db"
    new = SigningKey.generate("gw3")
    with create_ledger(path, PARAMS, KEYS) as lg:
        extend_demo(lg, 2, random.Random(2))
        lg.add_block(mine_block(lg, "ap1", [], rotations=[lg.rotation("gw3", new.public, KEYS["gw3"])], seed=3).block)
        extend_demo(lg, 2, random.Random(3), KEYS.with_key(new))  # gw3 now signs with its new key
    assert main(["ledger", "verify", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] and out["height"] == 5 and out["keys"]["gw3"] == new.public
    with open_ledger(path) as lg:
        assert lg.signers is None and lg.public_keys(2)["gw3"] == KEYS["gw3"].public
