"""The threat model (docs/dpra.md): an attacker with read/write access to the ledger file and every
public key, but no private key, cannot
(a) add a receipt for any gateway,
(b) mine an accepted block for another AP's identity or target,
(c) replay a receipt or block from another ledger,
(d) roll back the head unnoticed when the expected head is given.
Each forgery is written into the file as a careful attacker would (row and head record both
updated) and `ledger verify` must reject it with a reason naming the block or receipt; each test
has a negative control: the honest parties' block, smuggled in the very same way, verifies."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import sqlite3
from pathlib import Path

import pytest

from dnninfer.cli import main
from dnninfer.ledger.block import Block, mine
from dnninfer.ledger.chain import Ledger
from dnninfer.ledger.demo import demo_params, demo_receipts, extend_demo
from dnninfer.ledger.identity import Keyring, SigningKey
from dnninfer.ledger.miner import mine_block
from dnninfer.ledger.receipt import Receipt
from dnninfer.ledger.reputation import apply_block, table_root
from dnninfer.ledger.store import HeadRecord, check_expected_head, create_ledger, open_ledger

PARAMS = demo_params(expected_hashes=16, kappa=3.0, rho0={"ap0": 0.9, "ap1": 0.0, "ap2": 0.3})
KEYS = Keyring.derive((), "forgery-test")  # the honest parties' private keys: never the attacker's
N = 5


@pytest.fixture(scope="module")
def honest(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("honest") / "ledger.db"
    with create_ledger(path, PARAMS, KEYS) as lg:
        extend_demo(lg, N, random.Random(4))
    return path


def _copy(src: Path, folder: Path, name: str = "l.db") -> Path:
    dst = folder / name
    shutil.copyfile(src, dst)
    return dst


def _attacker_view(path: Path) -> Ledger:
    """What the attacker can compute: the whole ledger, from the file, with public keys only."""
    lg = open_ledger(path, readonly=True)
    lg.close()
    assert lg.signers is None
    return lg


def _smuggle(path: Path, *blocks: Block) -> None:
    """Write `blocks` into the file as an honest append would: the row, and a head record naming the
    last one (heaviest) with the block count updated, so that only validation can tell."""
    con = sqlite3.connect(path, isolation_level=None)
    n = con.execute("SELECT count(*) FROM blocks WHERE height > 0").fetchone()[0]
    for b in blocks:
        con.execute("INSERT INTO blocks VALUES (?, ?, ?, ?)", (b.hash, b.prev_hash, b.index, b.to_json().decode()))
    con.execute("UPDATE meta SET value = ? WHERE key = 'head'", (HeadRecord.of(blocks[-1], n + len(blocks)).to_json(),))
    con.close()


def _verify(path: Path, capsys, *extra: str) -> tuple[int, str]:
    code = main(["ledger", "verify", str(path), *extra])
    cap = capsys.readouterr()
    if code:
        assert cap.err.count("\n") == 1 and cap.err.startswith("dnninfer: error: "), cap.err
    return code, cap.err


def _block(lg: Ledger, miner: str, receipts=(), *, target: int | None = None, rotations=(),
           key: SigningKey | None = None, seed: int = 0) -> Block:
    """A block on the head built field by field (as an attacker must), mined, and signed with `key`."""
    head = lg.head
    rs = tuple(receipts)
    template = Block.build(index=head.index + 1, prev_hash=head.hash, miner=miner, receipts=rs, rotations=rotations,
                           reputation_root=table_root(apply_block(lg.params, lg.reputation(), rs)),
                           target=target or lg.target_for(miner), timestamp_us=head.timestamp_us + 1)
    sealed = mine(template, start_nonce=random.Random(seed).getrandbits(63))[0]
    return sealed.signed(key) if key is not None else sealed


def _receipt(lg: Ledger, gw: str, key: SigningKey | None, *, chain: str | None = None, cycles: int = 10**9,
             ap: str = "ap1") -> Receipt:
    slot = lg.height + 1
    return Receipt.create(chain=chain or lg.chain, gateway=gw, ap=ap, slot=slot, split=1, layers=(2, 8),
                          intermediate="0" * 64, output="1" * 64, cycles=cycles, timestamp=float(slot), key=key)


# -- (a) receipts ----------------------------------------------------------------------------------
@pytest.mark.parametrize("gw", PARAMS.gateways)
def test_a_no_receipt_can_be_added_for_any_gateway(honest, tmp_path, capsys, gw):
    att = _attacker_view(honest)
    own = SigningKey.generate(gw)  # the attacker's own key, under the gateway's name
    slot, height = att.height + 1, att.height + 1
    honest_receipt = next(r for b in att.main_chain() for r in b.receipts if r.gateway == gw)
    forgeries = {
        "signed with the attacker's key": (_receipt(att, gw, own), "invalid signature"),
        "unsigned": (_receipt(att, gw, None), "unsigned"),
        "signature copied from a genuine receipt": (
            dataclasses.replace(_receipt(att, gw, None), signature=honest_receipt.signature), "invalid signature"),
    }
    for what, (receipt, reason) in forgeries.items():
        path = _copy(honest, tmp_path, f"{gw}-{len(what)}.db")
        _smuggle(path, _block(att, "ap1", [receipt], key=SigningKey.generate("ap1")))
        code, err = _verify(path, capsys)
        assert code == 2, what
        assert f"(height {height}): block {height} (" in err and f"receipt ({gw}, slot {slot}): {reason}" in err, err
    # or register its own key for the gateway: a rotation must be signed by the gateway's current key
    path = _copy(honest, tmp_path, f"{gw}-rotation.db")
    takeover = att.rotation(gw, own.public, own)
    _smuggle(path, _block(att, "ap1", rotations=(takeover,), key=SigningKey.generate("ap1")))
    code, err = _verify(path, capsys)
    assert code == 2, err
    assert f"key rotation ({gw}, #1): invalid signature (not signed by the current key of '{gw}'" in err, err
    # negative control: the gateway's own receipt, in a block signed by its miner, smuggled the same way
    path = _copy(honest, tmp_path, f"{gw}-honest.db")
    _smuggle(path, _block(att, "ap1", [_receipt(att, gw, KEYS[gw])], key=KEYS["ap1"]))
    assert _verify(path, capsys) == (0, "")


# -- (b) blocks ------------------------------------------------------------------------------------
def test_b_no_block_can_be_mined_for_another_aps_identity_or_target(honest, tmp_path, capsys):
    att = _attacker_view(honest)
    rep = att.reputation()
    high, low = max(rep, key=rep.get), min(rep, key=rep.get)
    assert att.target_for(high) > att.target_for(low), "precondition: the stake makes `high`'s blocks easier"
    height = att.height + 1
    genuine = mine_block(att, high, [], key=KEYS[high], seed=1).block  # made by `high`, never published
    forgeries = {
        "attacker's key": (_block(att, high, key=SigningKey.generate(high)),
                           f"invalid miner signature (not signed by the key registered for '{high}'"),
        "unsigned": (_block(att, high), "unsigned (a block must carry its miner's signature)"),
        "signature copied from a genuine block": (
            dataclasses.replace(_block(att, high), signature=att.head.signature), "invalid miner signature"),
        "genuine block re-mined under another nonce": (
            dataclasses.replace(mine(dataclasses.replace(genuine, nonce=0), start_nonce=genuine.nonce + 1)[0],
                                signature=genuine.signature), "invalid miner signature"),
        # stronger than the threat model: a rogue AP that holds its own key
        "rogue AP signs a block naming the high-stake AP": (
            _block(att, high, key=KEYS[low]), f"names miner '{high}' but was signed by the key of '{low}'"),
        "rogue AP claims the high-stake AP's target": (
            _block(att, low, target=att.target_for(high), key=KEYS[low]), "stale or forged target: block claims"),
    }
    for i, (what, (block, reason)) in enumerate(forgeries.items()):
        path = _copy(honest, tmp_path, f"b{i}.db")
        _smuggle(path, block)
        code, err = _verify(path, capsys)
        assert code == 2 and f"(height {height}): block {height} ({block.hash[:12]}): {reason}" in err, (what, err)
    for miner in (high, low):  # negative control: each AP's own block at its own target
        path = _copy(honest, tmp_path, f"b-{miner}.db")
        _smuggle(path, mine_block(att, miner, [], key=KEYS[miner], seed=2).block)
        assert _verify(path, capsys) == (0, ""), miner


# -- (c) replays -----------------------------------------------------------------------------------
def test_c_receipts_blocks_and_rotations_from_another_ledger_are_rejected(honest, tmp_path, capsys):
    att = _attacker_view(honest)
    other_params = dataclasses.replace(PARAMS, chain_id="b-dt-other")  # same parties, same keys
    other = Ledger(other_params, KEYS)
    extend_demo(other, 2, random.Random(8))
    assert other.chain != att.chain and other.public_keys().to_dict() == att.public_keys().to_dict()
    height = att.height + 1

    foreign = _receipt(other, "gw1", KEYS["gw1"], ap="ap1")  # genuine, for the other ledger
    other.propose("ap1", [foreign])  # negative control: it is valid where it belongs
    cases = {
        "foreign receipt": ([foreign], (), f"receipt (gw1, slot {foreign.slot}): belongs to another ledger"),
        "foreign receipt relabelled": ([dataclasses.replace(foreign, chain=att.chain)], (),
                                       f"receipt (gw1, slot {foreign.slot}): invalid signature"),
        "foreign rotation": ((), (other.rotation("gw2", SigningKey.generate("gw2").public, KEYS["gw2"]),),
                             "key rotation (gw2, #1): belongs to another ledger"),
    }
    for i, (what, (rs, ks, reason)) in enumerate(cases.items()):
        path = _copy(honest, tmp_path, f"c{i}.db")
        _smuggle(path, _block(att, "ap1", rs, rotations=ks, key=SigningKey.generate("ap1")))
        code, err = _verify(path, capsys)
        assert code == 2 and f"block {height} (" in err and reason in err, (what, err)

    path = _copy(honest, tmp_path, "c-block.db")  # a whole foreign block: it hangs off the other genesis
    b1 = other.main_chain()[1]
    _smuggle(path, b1)
    code, err = _verify(path, capsys)
    assert code == 2 and f"row {b1.hash[:12]} (height 1): block 1 ({b1.hash[:12]}): unknown parent" in err, err
    empty = mine_block(other, "ap1", [], seed=3).block  # re-pointed at our head and re-mined: the signature breaks
    moved = dataclasses.replace(_block(att, "ap1", []), signature=empty.signature)
    path = _copy(honest, tmp_path, "c-moved.db")
    _smuggle(path, moved)
    code, err = _verify(path, capsys)
    assert code == 2 and f"block {height} ({moved.hash[:12]}): invalid miner signature" in err, err


# -- (d) rollback ----------------------------------------------------------------------------------
def _head(path: Path, capsys) -> str:
    assert main(["ledger", "head", str(path)]) == 0
    return capsys.readouterr().out.strip()


def test_d_rollback_is_caught_when_the_expected_head_is_given(honest, tmp_path, capsys):
    old = _copy(honest, tmp_path, "old.db")  # the attacker kept this copy
    current = _copy(honest, tmp_path, "current.db")
    old_head = _head(current, capsys)
    with open_ledger(current, keys=KEYS) as lg:  # the honest parties go on
        extend_demo(lg, 3, random.Random(5))
    kept = _head(current, capsys)  # what a gateway keeps outside the file
    assert kept.startswith(f"{N + 3}:")
    # negative controls: the current file, against the kept head and against an older one it extends
    assert _verify(current, capsys, "--expect-head", kept) == (0, "")
    assert _verify(current, capsys, "--expect-head", old_head) == (0, "")

    shutil.copyfile(old, current)  # roll the whole file back
    assert _verify(current, capsys)[0] == 0  # invisible from inside the file...
    code, err = _verify(current, capsys, "--expect-head", kept)  # ...but not against the kept head
    assert code == 2 and f"expected head height {N + 3} hash {kept.split(':')[1][:12]}.. is not in the ledger" in err
    assert "rolled back to an older copy, or replaced" in err
    assert main(["ledger", "verify", str(current), "--expect-head", kept, "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["block"] == N + 3  # the block the kept head names

    # replaced by a ledger the attacker made from scratch (its own keys, same parameters), even a longer one
    forged = tmp_path / "forged.db"
    mine_keys = Keyring.derive((), "attacker")
    with create_ledger(forged, PARAMS, mine_keys) as lg:
        extend_demo(lg, N + 6, random.Random(6))
    assert _verify(forged, capsys)[0] == 0
    code, err = _verify(forged, capsys, "--expect-head", kept)
    assert code == 2 and "is not in the ledger" in err
    genesis = _attacker_view(honest).chain  # pinning the genesis pins the keys
    assert _verify(forged, capsys, "--expect-head", f"0:{genesis}")[0] == 2
    assert _verify(honest, capsys, "--expect-head", f"0:{genesis}") == (0, "")


def test_expected_head_off_the_main_chain_or_at_another_height():
    params = dataclasses.replace(PARAMS, rho0={"ap0": 1.0, "ap1": 0.0, "ap2": 0.0})
    lg = Ledger(params, KEYS)
    light = [mine_block(lg, "ap0", [], seed=1).block]  # rho 1: a quarter of the work
    lg.add_block(light[0])
    assert check_expected_head(lg, 1, light[0].hash) is None  # negative control
    p = check_expected_head(lg, 2, light[0].hash)
    assert p is not None and "that block is at height 1, not 2" in p and p.height == 2
    heavy = mine_block(lg, "ap1", [], parent=lg.genesis.hash, seed=2).block
    lg.add_block(heavy)
    assert lg.head == heavy
    p = check_expected_head(lg, 1, light[0].hash)
    assert p is not None and "is no longer on the main chain" in p


def test_honest_appends_after_a_verify_still_verify(honest, tmp_path, capsys):
    """Negative control for the whole file: more honest blocks (several miners, receipts) stay valid."""
    path = _copy(honest, tmp_path)
    with open_ledger(path, keys=KEYS) as lg:
        rng = random.Random(12)
        side = mine_block(lg, "ap2", demo_receipts(lg, 77, rng), parent=lg.main_chain()[2].hash, rng=rng).block
        lg.add_block(side)  # a fork: kept, not the head
        extend_demo(lg, 2, rng)
    assert _verify(path, capsys) == (0, "")
