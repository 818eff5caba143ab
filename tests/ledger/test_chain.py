"""Block validity (each rule with its own reason), reputation updates, kappa = 0, fork choice, replay."""

from __future__ import annotations

import dataclasses
import random

import pytest

from dnninfer.ledger.block import Block, mine
from dnninfer.ledger.chain import Ledger
from dnninfer.ledger.consensus import block_work, stake_target, target_for_expected_hashes, update_reputation
from dnninfer.ledger.demo import demo_ledger, demo_params, demo_receipts, extend_demo
from dnninfer.ledger.errors import LedgerError
from dnninfer.ledger.identity import Keyring, PublicKeys, SigningKey
from dnninfer.ledger.miner import mine_block
from dnninfer.ledger.params import LedgerParams
from dnninfer.ledger.receipt import Receipt
from dnninfer.ledger.reputation import apply_block, table_root

CAP = 1_000_000
PARAMS = LedgerParams(gateways=["gw0", "gw1", "gw2"], aps=["ap0", "ap1"], t0=target_for_expected_hashes(512),
                      kappa=3.0, beta=0.5, capacity_cycles=CAP)
KEYS = Keyring.derive(PARAMS.gateways + PARAMS.aps, "chain-test")
CHAIN = Ledger(PARAMS, KEYS.public_keys()).chain


def _r(gw: str, ap: str, slot: int, cycles: int, key: SigningKey | None = None) -> Receipt:
    return Receipt.create(chain=CHAIN, gateway=gw, ap=ap, slot=slot, split=1, layers=(2, 4), intermediate="0" * 64,
                          output="1" * 64, cycles=cycles, timestamp=float(slot), key=key or KEYS[gw])


def _mine(ledger: Ledger, template: Block, seed: int = 0) -> Block:
    """Mine and sign with the named miner's own key: a dishonest AP forges only what its key allows."""
    return mine(template, start_nonce=random.Random(seed).getrandbits(63))[0].signed(KEYS[template.miner])


@pytest.fixture
def ledger() -> Ledger:
    lg = Ledger(PARAMS, KEYS)
    lg.add_block(mine_block(lg, "ap0", [_r("gw0", "ap0", 1, CAP // 2), _r("gw1", "ap1", 1, 2 * CAP)], seed=1).block)
    return lg


def test_reputation_update_from_receipts(ledger):
    # u_ap0 = 0.5, u_ap1 = clip(2.0) = 1; rho <- 0.5 rho + 0.5 u
    assert ledger.reputation() == {"ap0": 0.25, "ap1": 0.5}
    assert ledger.reputation(0) == {"ap0": 0.0, "ap1": 0.0}
    ledger.add_block(mine_block(ledger, "ap1", [], seed=2).block)  # no receipts: u = 0 for everyone
    assert ledger.reputation() == {"ap0": update_reputation(0.25, 0, 0.5), "ap1": 0.25}
    assert ledger.target_for("ap1") == stake_target(PARAMS.t0, 3.0, 0.25)
    assert ledger.expected_hashes("ap1") == pytest.approx(512 / 1.75, rel=1e-9)
    assert ledger.mined_counts() == {"ap0": 1, "ap1": 1}
    assert ledger.has_receipt("gw0", 1) and not ledger.has_receipt("gw0", 2)


def test_stale_target_from_the_wrong_table_is_rejected(ledger):
    # ap0's reputation rose in block 1; a target from the genesis table (stale) is smaller but wrong
    template = ledger.propose("ap0", [_r("gw2", "ap0", 2, 10)])
    stale = stake_target(PARAMS.t0, PARAMS.kappa, ledger.reputation(0)["ap0"])
    assert stale < template.target
    forged = _mine(ledger, dataclasses.replace(template, target=stale))
    assert forged.pow_ok()
    with pytest.raises(LedgerError, match=r"block 2 \(.*\): stale or forged target.*reputation 0.25"):
        ledger.add_block(forged)
    inflated = stake_target(PARAMS.t0, PARAMS.kappa, 1.0)  # claiming a stake it does not have
    with pytest.raises(LedgerError, match="stale or forged target"):
        ledger.add_block(_mine(ledger, dataclasses.replace(template, target=inflated)))
    ledger.add_block(_mine(ledger, template))  # the honest one is fine
    assert ledger.height == 2


def test_forged_reputation_root_is_rejected(ledger):
    template = ledger.propose("ap1", [])
    boosted = apply_block(PARAMS, ledger.reputation(), []) | {"ap1": 1.0}
    forged = _mine(ledger, dataclasses.replace(template, reputation_root=table_root(boosted)))
    with pytest.raises(LedgerError, match="reputation root does not match"):
        ledger.add_block(forged)


def test_invalid_signature_unknown_gateway_and_replay_are_rejected(ledger):
    bad = _r("gw2", "ap0", 2, 10, key=KEYS["gw1"])
    with pytest.raises(LedgerError, match=r"receipt \(gw2, slot 2\): invalid signature"):
        ledger.propose("ap0", [bad])  # a miner is told before it spends work
    template = Block.build(index=2, prev_hash=ledger.head.hash, miner="ap0", receipts=[bad],
                           reputation_root=table_root(apply_block(PARAMS, ledger.reputation(), [bad])),
                           target=ledger.target_for("ap0"), timestamp_us=ledger.head.timestamp_us)
    with pytest.raises(LedgerError, match=r"block 2 .*invalid signature"):
        ledger.add_block(_mine(ledger, template))
    stranger = Receipt.create(chain=CHAIN, gateway="gw7", ap="ap0", slot=2, split=0, layers=(1, 4),
                              intermediate="0" * 64, output="0" * 64, cycles=1, timestamp=2.0,
                              key=SigningKey.generate("gw7"))
    with pytest.raises(LedgerError, match="unknown gateway 'gw7'"):
        ledger.propose("ap0", [stranger])
    with pytest.raises(LedgerError, match="unknown AP 'ap9'"):
        ledger.propose("ap0", [_r("gw2", "ap9", 2, 1)])
    with pytest.raises(LedgerError, match=r"already on this branch \(replay\)"):
        ledger.propose("ap0", [_r("gw0", "ap0", 1, CAP // 2)])
    with pytest.raises(LedgerError, match="appears twice in the block"):
        ledger.propose("ap0", [_r("gw2", "ap0", 2, 1), _r("gw2", "ap0", 2, 1)])
    # the same receipt may sit on a competing branch (it is not on that branch yet)
    fork = mine_block(ledger, "ap1", [_r("gw0", "ap0", 1, CAP // 2)], parent=ledger.genesis.hash, seed=3).block
    ledger.add_block(fork)


def test_structural_rules(ledger):
    good = mine_block(ledger, "ap1", [_r("gw2", "ap1", 2, 5)], seed=4).block
    cases = [
        (dataclasses.replace(good, prev_hash="ee" * 32), "unknown parent eeeeeeeeeeee"),
        (dataclasses.replace(good, index=5), "index 5 does not follow its parent's index 1"),
        (dataclasses.replace(good, timestamp_us=ledger.head.timestamp_us - 1), "before its parent's"),
        (dataclasses.replace(good, miner="ap7"), "unknown miner 'ap7'"),
        (dataclasses.replace(good, merkle_root="00" * 32), "merkle root does not match"),
        (dataclasses.replace(good, receipts=()), "merkle root does not match"),
    ]
    for block, reason in cases:
        with pytest.raises(LedgerError, match=reason):
            ledger.add_block(block)
    nonce = good.nonce
    while True:  # a nonce whose hash is above the target (signed by the miner itself)
        nonce += 1
        weak = dataclasses.replace(good, nonce=nonce).signed(KEYS["ap1"])
        if not weak.pow_ok():
            break
    with pytest.raises(LedgerError, match="insufficient proof of work"):
        ledger.add_block(weak)
    ledger.add_block(good)
    with pytest.raises(LedgerError, match="already in the ledger"):
        ledger.add_block(good)
    assert ledger.height == 2 and len(ledger) == 3  # rejected blocks left no trace


def test_kappa_zero_is_pure_pow():
    lg = demo_ledger(5, 6, kappa=0.0, expected_hashes=512, rho0={"ap0": 0.9, "ap1": 0.0, "ap2": 0.4})
    t0 = lg.params.t0
    assert all(b.target == t0 for b in lg.main_chain())
    assert {ap: lg.target_for(ap) for ap in lg.params.aps} == dict.fromkeys(lg.params.aps, t0)
    assert lg.reputation()["ap0"] > 0  # reputation still moves, it just buys nothing


def _stake_params() -> LedgerParams:
    return LedgerParams(gateways=["gw0"], aps=["ap0", "ap1"], t0=target_for_expected_hashes(1024), kappa=3.0,
                        beta=0.5, capacity_cycles=CAP, rho0={"ap0": 1.0, "ap1": 0.0})


def test_fork_choice_heaviest_not_longest_and_reorg():
    lg = Ledger(_stake_params(), Keyring.derive())
    g = lg.genesis.hash
    light1 = mine_block(lg, "ap0", [], seed=1).block  # rho 1: target 4 T0, a quarter of the work
    lg.add_block(light1)
    light2 = mine_block(lg, "ap0", [], seed=2).block  # rho 0.5: target 2.5 T0
    lg.add_block(light2)
    assert lg.head == light2 and lg.height == 2
    heavy = mine_block(lg, "ap1", [], parent=g, seed=3).block  # rho 0: target T0, full work
    lg.add_block(heavy)
    assert lg.work[heavy.hash] == block_work(lg.params.t0) > lg.work[light2.hash]
    assert lg.head == heavy and lg.height == 1, "one heavy block beats two light ones"
    assert [b.hash for b in lg.main_chain()] == [g, heavy.hash]
    assert {b.hash for b in lg.stale_blocks()} == {light1.hash, light2.hash}
    light3 = mine_block(lg, "ap0", [], parent=light2.hash, seed=4).block  # rho 0.25: target 1.75 T0
    lg.add_block(light3)
    assert lg.work[light3.hash] > lg.work[heavy.hash]
    assert lg.head == light3, "head switches back when the light branch overtakes"
    assert lg.reputation() == lg.reputation(light3.hash) == {"ap0": 0.125, "ap1": 0.0}
    assert lg.mined_counts() == {"ap0": 3, "ap1": 0}


def test_equal_work_ties_go_to_the_lowest_hash_in_any_order():
    params = _stake_params()
    probe = Ledger(params, Keyring.derive())
    a = mine_block(probe, "ap1", [], seed=1, timestamp_us=1).block
    b = mine_block(probe, "ap1", [], seed=2, timestamp_us=2).block
    assert a.target == b.target and a.hash != b.hash
    for order in ([a, b], [b, a]):
        lg = Ledger(params, Keyring.derive())
        for blk in order:
            lg.add_block(blk)
        assert lg.head.hash == min(a.hash, b.hash)


def test_replay_is_deterministic_and_checks_everything():
    lg = demo_ledger(11, 8, expected_hashes=512)
    assert lg.replay() == lg.reputation()
    assert lg.replay(lg.main_chain()[1:5]) == lg.reputation(4)
    again = demo_ledger(11, 8, expected_hashes=512)
    assert again.head == lg.head and again.reputation() == lg.reputation()
    blocks = lg.main_chain()
    with pytest.raises(LedgerError, match="unknown parent"):
        lg.replay(blocks[2:])
    with pytest.raises(LedgerError, match="genesis block does not match"):
        lg.replay([dataclasses.replace(blocks[0], timestamp_us=99), *blocks[1:]])


def test_branch_reputations_are_independent():
    lg = demo_ledger(2, 3, expected_hashes=256)
    fork_at = lg.main_chain()[1]
    rng = random.Random(9)
    side = mine_block(lg, "ap2", demo_receipts(lg, 50, rng), parent=fork_at.hash, rng=rng).block
    lg.add_block(side)
    assert lg.reputation(side.hash) == apply_block(lg.params, lg.reputation(fork_at.hash), side.receipts)
    extend_demo(lg, 1, rng)
    assert lg.replay() == lg.reputation()


def test_params_validation():
    with pytest.raises(LedgerError, match="'beta'"):
        demo_params(beta=0.0)
    with pytest.raises(LedgerError, match="'capacity_cycles'"):
        LedgerParams(gateways=["g"], aps=["a", "b"], t0=5, capacity_cycles={"a": 1})
    with pytest.raises(LedgerError, match="'aps'"):
        LedgerParams(gateways=["g"], aps=["a", "a"], t0=5)
    ring = Keyring.derive((), "x")
    with pytest.raises(LedgerError, match="no public key for gateway 'gw3'"):
        Ledger(demo_params(), ring.public_keys(["gw0", "gw1", "gw2", "ap0", "ap1", "ap2"]))
    with pytest.raises(LedgerError, match="'gw9' is neither a gateway nor an AP"):
        Ledger(demo_params(), ring.public_keys(["gw0", "gw1", "gw2", "gw3", "gw9", "ap0", "ap1", "ap2"]))
    with pytest.raises(LedgerError, match="'gw0' and 'gw1' have the same public key"):
        PublicKeys({"gw0": ring["gw0"].public, "gw1": ring["gw0"].public})
    p = demo_params()
    assert LedgerParams.from_json(p.to_json()) == p and LedgerParams.from_json(p.to_json()).digest == p.digest
