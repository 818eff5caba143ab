"""Mining for simulations: real PoW hashes, simulated time.

An AP that dedicates f^blk cycles/s to mining hashes at `hash_rate` = f^blk / C_h hashes/s. We do
the hashes for real (so PoW, targets and validation are exercised end to end) but charge time by
count, seconds = hashes / hash_rate, so results are deterministic for a seed and do not depend on
how busy the host is. Once the nonce is found the miner signs the header with its private key.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import NamedTuple

from dnninfer.ledger.block import Block, mine
from dnninfer.ledger.chain import Ledger
from dnninfer.ledger.errors import LedgerError
from dnninfer.ledger.identity import SigningKey
from dnninfer.ledger.receipt import Receipt
from dnninfer.ledger.rotation import KeyRotation


class Mined(NamedTuple):
    block: Block
    hashes: int
    seconds: float


def mine_block(ledger: Ledger, miner: str, receipts: Iterable[Receipt], *, key: SigningKey | None = None,
               rotations: Iterable[KeyRotation] = (), seed: int | None = None, rng: random.Random | None = None,
               hash_rate: float = 1e6, parent: str | None = None, timestamp_us: int | None = None,
               max_hashes: int | None = None) -> Mined:
    """Propose, mine and sign `miner`'s next block on `parent` (default: the head); does not append it.

    `key` is the miner's private key (default: ``ledger.signers[miner]``, for a process that plays
    every party); it must be the key registered for `miner` at `parent`, which is checked before any
    work is spent. The start nonce is drawn from `rng` (or `random.Random(seed)`; 0 when neither is
    given), so seeded runs are reproducible and distinct seeds give independent draws of the hash
    count. Append with `ledger.add_block(result.block)`.
    """
    if not hash_rate > 0:
        raise LedgerError(f"hash_rate must be > 0, got {hash_rate}")
    if key is None:
        if ledger.signers is None or miner not in ledger.signers:
            raise LedgerError(f"no private key for miner {miner!r} (a ledger opened from a file holds public keys "
                              "only: pass the miner's key)")
        key = ledger.signers[miner]
    registered = ledger.public_keys(parent).get(miner)
    if registered is not None and key.public != registered:
        raise LedgerError(f"the key given for miner {miner!r} is not its registered key (rotated?)")
    if rng is None and seed is not None:
        rng = random.Random(seed)
    start = rng.getrandbits(64) if rng is not None else 0
    template = ledger.propose(miner, receipts, parent=parent, timestamp_us=timestamp_us, rotations=rotations)
    block, hashes = mine(template, start_nonce=start, max_hashes=max_hashes)
    return Mined(block.signed(key), hashes, hashes / hash_rate)
