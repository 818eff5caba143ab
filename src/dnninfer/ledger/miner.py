"""Mining for simulations: real PoW hashes, simulated time.

An AP that dedicates f^blk cycles/s to mining hashes at `hash_rate` = f^blk / C_h hashes/s. We do
the hashes for real (so PoW, targets and validation are exercised end to end) but charge time by
count, seconds = hashes / hash_rate, so results are deterministic for a seed and do not depend on
how busy the host is.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import NamedTuple

from dnninfer.ledger.block import Block, mine
from dnninfer.ledger.chain import Ledger
from dnninfer.ledger.errors import LedgerError
from dnninfer.ledger.receipt import Receipt


class Mined(NamedTuple):
    block: Block
    hashes: int
    seconds: float


def mine_block(ledger: Ledger, miner: str, receipts: Iterable[Receipt], *, seed: int | None = None,
               rng: random.Random | None = None, hash_rate: float = 1e6, parent: str | None = None,
               timestamp_us: int | None = None, max_hashes: int | None = None) -> Mined:
    """Propose and mine `miner`'s next block on `parent` (default: the head); does not append it.

    The start nonce is drawn from `rng` (or `random.Random(seed)`; 0 when neither is given), so
    seeded runs are reproducible and distinct seeds give independent draws of the hash count.
    Append with `ledger.add_block(result.block)`.
    """
    if not hash_rate > 0:
        raise LedgerError(f"hash_rate must be > 0, got {hash_rate}")
    if rng is None and seed is not None:
        rng = random.Random(seed)
    start = rng.getrandbits(64) if rng is not None else 0
    template = ledger.propose(miner, receipts, parent=parent, timestamp_us=timestamp_us)
    block, hashes = mine(template, start_nonce=start, max_hashes=max_hashes)
    return Mined(block, hashes, hashes / hash_rate)
