"""A small synthetic B-DT chain: gateways offload random layer ranges to APs, APs mine blocks.

Used by the tamper trials, the tests and the CLI examples, so that all of them exercise the same
realistic mix of receipts (several per block, every AP, partition points from 0 to L) instead of
hand-made toy blocks. The demo plays every party, so it holds every private key: by default keys
derived from the seed (`Keyring.derive`, reproducible), or the keyring it is given.
"""

from __future__ import annotations

import random

from dnninfer.ledger.chain import Ledger
from dnninfer.ledger.consensus import target_for_expected_hashes
from dnninfer.ledger.errors import LedgerError
from dnninfer.ledger.identity import Keyring
from dnninfer.ledger.miner import mine_block
from dnninfer.ledger.params import LedgerParams
from dnninfer.ledger.receipt import Receipt

DEMO_LAYERS = 8
DEMO_LAYER_CYCLES = 25_000_000  # mean cycles of one layer; capacity is 10^9 cycles per slot


def demo_params(*, n_gateways: int = 4, n_aps: int = 3, expected_hashes: float = 4096, kappa: float = 1.0,
                beta: float = 0.2, rho0: float | dict[str, float] = 0.0) -> LedgerParams:
    """Parameters for gateways gw0.. and APs ap0..; T_0 gives `expected_hashes` at zero reputation."""
    return LedgerParams(gateways=[f"gw{i}" for i in range(n_gateways)], aps=[f"ap{i}" for i in range(n_aps)],
                        t0=target_for_expected_hashes(expected_hashes), kappa=kappa, beta=beta,
                        capacity_cycles=10**9, slot_s=1.0, rho0=rho0)


def demo_keys(seed: int = 0) -> Keyring:
    """The demo's keys for `seed`: derived, so a demo is reproducible (and its keys are no secret)."""
    return Keyring.derive((), f"demo-{seed}")


def _signers(ledger: Ledger, keys: Keyring | None) -> Keyring:
    if keys is not None:
        return keys
    if ledger.signers is None:
        raise LedgerError("this ledger holds public keys only: pass the parties' private keys (keys=...)")
    return ledger.signers


def demo_receipts(ledger: Ledger, slot: int, rng: random.Random, keys: Keyring | None = None) -> list[Receipt]:
    """One signed receipt per gateway for `slot`, each offloading layers split+1..L to a random AP.

    Signed with `keys` (default: the ledger's `signers`)."""
    keys = _signers(ledger, keys)
    out = []
    p = ledger.params
    for gw in p.gateways:
        split = rng.randrange(DEMO_LAYERS + 1)
        cycles = sum(rng.randrange(DEMO_LAYER_CYCLES // 2, 3 * DEMO_LAYER_CYCLES // 2)
                     for _ in range(split + 1, DEMO_LAYERS + 1))
        out.append(Receipt.create(chain=ledger.chain, gateway=gw, ap=rng.choice(p.aps), slot=slot, split=split,
                                  layers=(split + 1, DEMO_LAYERS), intermediate=f"{rng.getrandbits(256):064x}",
                                  output=f"{rng.getrandbits(256):064x}", cycles=cycles,
                                  timestamp=slot * p.slot_s + rng.random() * p.slot_s / 2,
                                  key=keys[gw]))
    return out


def extend_demo(ledger: Ledger, n_blocks: int, rng: random.Random, keys: Keyring | None = None) -> int:
    """Append `n_blocks` blocks (one slot each, after the head's slots) to the head; returns hashes spent.

    Receipts and blocks are signed with `keys` (default: the ledger's `signers`)."""
    keys = _signers(ledger, keys)
    hashes = 0
    for _ in range(n_blocks):
        slot = ledger.height + 1
        miner = rng.choice(ledger.params.aps)
        m = mine_block(ledger, miner, demo_receipts(ledger, slot, rng, keys), key=keys[miner], rng=rng,
                       timestamp_us=round((slot + 0.9) * ledger.params.slot_s * 1e6))
        ledger.add_block(m.block)
        hashes += m.hashes
    return hashes


def demo_ledger(seed: int = 0, n_blocks: int = 10, **params_kw: object) -> Ledger:
    """An in-memory ledger with `n_blocks` mined blocks of demo receipts (deterministic for `seed`)."""
    params = demo_params(**params_kw)  # type: ignore[arg-type]
    ledger = Ledger(params, demo_keys(seed))
    extend_demo(ledger, n_blocks, random.Random(seed))
    return ledger
