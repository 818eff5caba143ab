"""Receipts, blocks and Merkle roots: Ed25519 signing, strict parsing with named fields, digests, mining."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dnninfer.errors import UserError
from dnninfer.ledger.block import Block, mine
from dnninfer.ledger.consensus import target_for_expected_hashes
from dnninfer.ledger.errors import LedgerError
from dnninfer.ledger.identity import Keyring
from dnninfer.ledger.merkle import merkle_root
from dnninfer.ledger.receipt import Receipt, tensor_digest

KEYS = Keyring.derive(["gw0", "gw1"], "test")
PUB = KEYS.public_keys()  # what a validator holds
CHAIN = "c0" * 32


def _receipt(**kw) -> Receipt:
    args = dict(chain=CHAIN, gateway="gw0", ap="ap0", slot=3, split=2, layers=(3, 8), intermediate=torch.arange(6.0),
                output=np.zeros(4, dtype=np.float32), cycles=12345, timestamp=3.25)
    args.update(kw)
    return Receipt.create(**args, key=KEYS[args["gateway"]])


def test_sign_verify_and_round_trip():
    r = _receipt()
    r.verify(PUB, CHAIN)
    assert r.timestamp_us == 3_250_000 and r.timestamp == 3.25 and r.layers == (3, 8)
    assert len(r.signature) == 128  # Ed25519: 64 bytes
    assert Receipt.from_json(r.to_json()) == r
    assert Receipt.from_dict(r.to_dict()).hash == r.hash
    assert r.sign(KEYS["gw1"]).sign(KEYS["gw0"]) == r  # deterministic: re-signing with the right key restores it


@pytest.mark.parametrize("change", [{"cycles": 12346}, {"slot": 4}, {"ap": "ap1"}, {"first": 2}, {"chain": "c1" * 32}])
def test_any_change_after_signing_breaks_the_signature(change):
    d = _receipt().to_dict() | change
    with pytest.raises(LedgerError, match="invalid signature"):
        Receipt.from_dict(d).verify(PUB)


def test_wrong_key_unknown_gateway_unsigned_and_other_ledger():
    forged = _receipt().sign(KEYS["gw1"])
    with pytest.raises(LedgerError, match=r"receipt \(gw0, slot 3\): invalid signature"):
        forged.verify(PUB)
    with pytest.raises(LedgerError, match="unknown gateway 'gw9'"):
        Receipt.from_dict(_receipt().to_dict() | {"gateway": "gw9"}).verify(PUB)
    with pytest.raises(LedgerError, match="unsigned"):
        Receipt.from_dict(_receipt().to_dict() | {"signature": ""}).verify(PUB)
    with pytest.raises(LedgerError, match=r"receipt \(gw0, slot 3\): belongs to another ledger"):
        _receipt().verify(PUB, "c1" * 32)


@pytest.mark.parametrize(("change", "field"), [
    ({"cycles": "12"}, "cycles"), ({"cycles": True}, "cycles"), ({"cycles": -1}, "cycles"),
    ({"slot": 1.0}, "slot"), ({"gateway": ""}, "gateway"), ({"ap": "a p"}, "ap"),
    ({"intermediate_sha256": "AB" * 32}, "intermediate_sha256"), ({"output_sha256": "00"}, "output_sha256"),
    ({"signature": 5}, "signature"), ({"signature": "zz"}, "signature"), ({"signature": "ab" * 32}, "signature"),
    ({"last": 1}, "last"), ({"timestamp_us": 1.5}, "timestamp_us"), ({"chain": "c0"}, "chain"),
])
def test_malformed_receipt_names_the_field(change, field):
    with pytest.raises(LedgerError, match=f"'{field}'") as e:
        Receipt.from_dict(_receipt().to_dict() | change)
    assert isinstance(e.value, UserError) and "\n" not in str(e.value)


def test_missing_extra_and_non_object():
    d = _receipt().to_dict()
    del d["cycles"]
    with pytest.raises(LedgerError, match="missing field 'cycles'"):
        Receipt.from_dict(d)
    with pytest.raises(LedgerError, match="unknown field 'bonus'"):
        Receipt.from_dict(_receipt().to_dict() | {"bonus": 1})
    with pytest.raises(LedgerError, match="expected an object"):
        Receipt.from_dict([1, 2])
    with pytest.raises(LedgerError, match="malformed JSON"):
        Receipt.from_json(b"{\"gateway\": ")


def test_tensor_digest_covers_dtype_shape_and_bytes():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert tensor_digest(a) == tensor_digest(torch.from_numpy(a.copy()))
    assert tensor_digest(a) == tensor_digest(np.asfortranarray(a))  # layout does not matter
    assert tensor_digest(a) == tensor_digest(a.astype(">f4"))  # neither does byte order
    assert tensor_digest(a) != tensor_digest(a.reshape(3, 2))
    assert tensor_digest(a) != tensor_digest(a.view(np.int32))
    b = a.copy()
    b[1, 2] = np.nextafter(b[1, 2], 10)
    assert tensor_digest(a) != tensor_digest(b)
    t = torch.randn(3, 4).to(torch.bfloat16)
    assert len(tensor_digest(t)) == 64 and tensor_digest(t) == tensor_digest(t.clone())
    assert tensor_digest(torch.randn(4, 3).t()) != ""  # non-contiguous is fine


def test_merkle_root_standard_tree():
    leaves = [hashlib.sha256(bytes([i])).hexdigest() for i in range(3)]
    raw = [bytes.fromhex(x) for x in leaves]
    h01 = hashlib.sha256(raw[0] + raw[1]).digest()
    h22 = hashlib.sha256(raw[2] + raw[2]).digest()
    assert merkle_root(leaves) == hashlib.sha256(h01 + h22).hexdigest()
    assert merkle_root(leaves[:1]) == leaves[0]
    assert merkle_root([]) == hashlib.sha256(b"").hexdigest()
    assert merkle_root(leaves[:2]) != merkle_root(leaves[1::-1])


def _block(receipts=(), target=None) -> Block:
    return Block.build(index=1, prev_hash="ab" * 32, miner="ap0", receipts=receipts, reputation_root="cd" * 32,
                       target=target or target_for_expected_hashes(512), timestamp_us=7)


def test_block_round_trip_header_and_mining():
    b, tried = mine(_block((_receipt(), _receipt(gateway="gw1"))), start_nonce=123)
    assert b.pow_ok() and b.merkle_ok() and tried >= 1 and b.nonce == 123 + tried - 1
    assert b.signature == "" and not b.signed_by(KEYS["gw0"].public)
    b = b.signed(KEYS["gw0"])  # the key's owner signs the sealed header; the hash does not change
    assert b.signed_by(KEYS["gw0"].public) and not b.signed_by(KEYS["gw1"].public)
    assert not dataclasses.replace(b, nonce=b.nonce + 1).signed_by(KEYS["gw0"].public)  # the nonce is signed too
    assert int(b.hash, 16) < b.target
    assert Block.from_json(b.to_json()) == b
    assert Block.from_json(b.to_json()).hash == b.hash
    assert b.header_bytes().endswith(b.nonce.to_bytes(8, "big"))
    assert hashlib.sha256(b.header_bytes()).hexdigest() == b.hash
    with pytest.raises(LedgerError, match="no nonce below the target in 3 hashes"):
        mine(_block(target=1), max_hashes=3)


@pytest.mark.parametrize(("change", "field"), [
    ({"target": 5}, "target"), ({"target": "0" * 63}, "target"), ({"nonce": -1}, "nonce"),
    ({"nonce": 2**64}, "nonce"), ({"index": "1"}, "index"), ({"prev_hash": "xy" * 32}, "prev_hash"),
    ({"receipts": {}}, "receipts"), ({"miner": None}, "miner"), ({"rotations": None}, "rotations"),
    ({"signature": 7}, "signature"), ({"signature": "ab" * 32}, "signature"),
])
def test_malformed_block_names_the_field(change, field):
    d = _block().to_dict() | change
    with pytest.raises(LedgerError, match=f"'{field}'"):
        Block.from_dict(d)


def test_malformed_receipt_inside_a_block_names_it():
    d = _block((_receipt(),)).to_dict()
    d["receipts"][0]["slot"] = -3
    with pytest.raises(LedgerError, match=r"receipts\[0\]: .*field 'slot'"):
        Block.from_dict(d)


_ids = st.sampled_from(["gw0", "gw1"])
_hex = st.integers(0, 2**256 - 1).map(lambda v: f"{v:064x}")
_nat = st.integers(0, 2**40)


@settings(max_examples=60, deadline=None)
@given(gw=_ids, ap=st.from_regex(r"[a-z0-9_]{1,8}", fullmatch=True), slot=_nat, split=st.integers(0, 50),
       n=st.integers(0, 50), inter=_hex, out=_hex, cycles=_nat, ts=_nat, field=st.sampled_from(
           ["chain", "ap", "slot", "split", "first", "last", "intermediate_sha256", "output_sha256", "cycles",
            "timestamp_us"]))
def test_round_trip_and_any_field_change_is_detected(gw, ap, slot, split, n, inter, out, cycles, ts, field):
    r = Receipt(chain=CHAIN, gateway=gw, ap=ap, slot=slot, split=split, first=split + 1, last=split + n,
                intermediate_sha256=inter, output_sha256=out, cycles=cycles, timestamp_us=ts).sign(KEYS[gw])
    assert Receipt.from_json(r.to_json()) == r
    r.verify(PUB, CHAIN)
    d = r.to_dict()
    v = d[field]
    d[field] = v + 1 if isinstance(v, int) else (v[:-1] + ("0" if v[-1] != "0" else "1"))
    try:
        changed = Receipt.from_dict(d)
    except LedgerError:
        return  # the change made it malformed: rejected at parse time
    assert changed.hash != r.hash
    with pytest.raises(LedgerError, match="invalid signature"):
        changed.verify(PUB)
