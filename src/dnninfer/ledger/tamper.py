"""Tamper trials: how often does the ledger reject a block that was altered after it was mined?

We mine an honest chain (demo receipts, `TAMPER_EXPECTED_HASHES` per block), then apply many random
alterations to copies of its blocks and ask the ledger to validate each one against the honest
parent. Alterations, drawn per trial:

* `byte`: flip one byte of the block's canonical JSON (any field, any receipt, or the syntax);
* `block_field`: change one header field (index, prev_hash, merkle_root, miner, reputation_root,
  target, nonce, timestamp_us) or the miner's signature to a different value;
* `receipt_field`: change one field (chain and signature included) of one receipt;
* `structure`: drop, duplicate, swap, or import (from another block) a receipt;
* `resealed`: an attacker with mining power but no private key: (a) edit a receipt, fix the Merkle
  and reputation roots and re-mine, or (b) claim a higher reputation's (easier) target and mine at
  it; either way keeping the block's old signature, the best it can do.

The validators hold the chain's public keys only, as `ledger verify` does.

The rate is honest: a change that happens to leave a valid PoW (chance 1/expected hashes for
alterations that only PoW guards, e.g. a new nonce) is counted as accepted, not redrawn.
`tamper_trials(n, seed)` returns (rejected, total); `tamper_report` adds per-kind counts.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import random
from typing import Any

from dnninfer.ledger.block import Block, mine
from dnninfer.ledger.canonical import canonical_json
from dnninfer.ledger.chain import Ledger
from dnninfer.ledger.consensus import stake_target
from dnninfer.ledger.demo import demo_ledger
from dnninfer.ledger.errors import LedgerError
from dnninfer.ledger.receipt import Receipt
from dnninfer.ledger.reputation import apply_block, table_root

TAMPER_EXPECTED_HASHES = 2**16
_HEX = "0123456789abcdef"
_BLOCK_FIELDS = ("index", "prev_hash", "merkle_root", "miner", "reputation_root", "target", "nonce", "timestamp_us",
                 "signature")
_RECEIPT_FIELDS = ("chain", "gateway", "ap", "slot", "split", "first", "last", "intermediate_sha256",
                   "output_sha256", "cycles", "timestamp_us", "signature")
_KINDS = (("byte", 30), ("block_field", 30), ("receipt_field", 30), ("structure", 7), ("resealed", 3))


@functools.lru_cache(maxsize=4)
def _honest_chain(seed: int, n_blocks: int, expected_hashes: int) -> Ledger:
    return demo_ledger(seed, n_blocks, expected_hashes=expected_hashes, kappa=1.0, beta=0.3)


def _other(rng: random.Random, value: Any, pool: tuple[str, ...] = ()) -> Any:
    """A value of the same kind as `value` that differs from it."""
    if isinstance(value, int):
        bits = max(8, value.bit_length() + 1)
        choice = rng.randrange(4)
        new = (value + 1, value - 1, value ^ (1 << rng.randrange(bits)), rng.randrange(2 * value + 16))[choice]
        return new if new != value else value + 1
    if len(value) in (64, 128) and all(c in _HEX for c in value):
        i = rng.randrange(len(value))
        return value[:i] + rng.choice(_HEX.replace(value[i], "")) + value[i + 1:]
    others = [p for p in pool if p != value]
    if others and rng.random() < 0.5:
        return rng.choice(others)
    i = rng.randrange(len(value))
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return value[:i] + rng.choice(alphabet.replace(value[i], "")) + value[i + 1:]


def _flip_byte(rng: random.Random, d: dict[str, Any]) -> bytes:
    raw = bytearray(canonical_json(d))
    i = rng.randrange(len(raw))
    raw[i] ^= rng.randrange(1, 256)
    return bytes(raw)


def _resealed(rng: random.Random, ledger: Ledger, block: Block) -> Block:
    parent_table = ledger.reputation(block.prev_hash)
    if block.receipts and rng.random() < 0.5:  # edit a receipt's claim, fix every derived field, re-mine
        rs = list(block.receipts)
        i = rng.randrange(len(rs))
        d = rs[i].to_dict()
        d["cycles"] = d["cycles"] * 2 + 1
        rs[i] = Receipt.from_dict(d)
        template = Block.build(index=block.index, prev_hash=block.prev_hash, miner=block.miner, receipts=rs,
                               reputation_root=table_root(apply_block(ledger.params, parent_table, rs)),
                               target=block.target, timestamp_us=block.timestamp_us)
    else:  # claim the stake of a much more reputable miner: an easier target, then mine at it
        forged = stake_target(ledger.params.t0, ledger.params.kappa, parent_table[block.miner] + 1.0)
        template = Block.build(index=block.index, prev_hash=block.prev_hash, miner=block.miner,
                               receipts=block.receipts, reputation_root=block.reputation_root, target=forged,
                               timestamp_us=block.timestamp_us)
    mined = mine(template, start_nonce=rng.getrandbits(63))[0]
    return dataclasses.replace(mined, signature=block.signature)  # no key: the old signature is all it has


def _tampered(rng: random.Random, ledger: Ledger, blocks: list[Block], k: int, kind: str) -> Block:
    """One altered copy of blocks[k] (may raise LedgerError while parsing: that is a rejection)."""
    block = blocks[k]
    d = block.to_dict()
    p = ledger.params
    if kind == "resealed":
        return _resealed(rng, ledger, block)
    if kind == "byte":
        return Block.from_json(_flip_byte(rng, d))
    d = copy.deepcopy(d)
    rs = d["receipts"]
    if kind == "receipt_field" and rs:
        r = rng.choice(rs)
        f = rng.choice(_RECEIPT_FIELDS)
        r[f] = _other(rng, r[f], p.gateways if f == "gateway" else p.aps if f == "ap" else ())
    elif kind == "structure" and rs:
        op = rng.choice(("drop", "duplicate", "swap", "import"))
        i = rng.randrange(len(rs))
        if op == "drop":
            rs.pop(i)
        elif op == "duplicate":
            rs.insert(rng.randrange(len(rs) + 1), copy.deepcopy(rs[i]))
        elif op == "swap" and len(rs) > 1:
            j = rng.choice([j for j in range(len(rs)) if j != i])
            rs[i], rs[j] = rs[j], rs[i]
        else:
            donor = rng.choice([b for b in blocks if b is not block and b.receipts])
            rs.insert(rng.randrange(len(rs) + 1), rng.choice(donor.receipts).to_dict())
    else:
        f = rng.choice(_BLOCK_FIELDS)
        d[f] = _other(rng, d[f], p.aps if f == "miner" else ())
    return Block.from_dict(d)


def tamper_report(n: int = 1000, seed: int = 0, *, n_blocks: int = 10,
                  expected_hashes: int = TAMPER_EXPECTED_HASHES) -> dict[str, Any]:
    """Run `n` tamper trials; per-kind counts and a few example rejection reasons."""
    honest = _honest_chain(seed, n_blocks, expected_hashes)
    blocks = honest.main_chain()[1:]
    # validator k holds exactly the ancestors of blocks[k], as when block k first arrives
    validators = [Ledger(honest.params, honest.genesis_keys) for _ in blocks]
    for k, v in enumerate(validators):
        for b in blocks[:k]:
            v.add_block(b)
    originals = {b.hash: b.to_json() for b in blocks}
    rng = random.Random(seed * 1_000_003 + 17)
    names, weights = zip(*_KINDS, strict=True)
    per_kind = {k: {"rejected": 0, "total": 0} for k in names}
    reasons: dict[str, str] = {}
    rejected = 0
    for _ in range(n):
        k = rng.randrange(len(blocks))
        kind = rng.choices(names, weights)[0]
        per_kind[kind]["total"] += 1
        try:
            forged = _tampered(rng, validators[k], blocks, k, kind)
            if forged.to_json() == originals.get(forged.hash):  # an alteration must alter something
                raise AssertionError(f"tamper {kind} on block {k + 1} was a no-op")
            validators[k].check_block(forged)
        except LedgerError as e:
            rejected += 1
            per_kind[kind]["rejected"] += 1
            reasons.setdefault(kind, str(e))
    return {"rejected": rejected, "total": n, "rate": rejected / n if n else 1.0, "per_kind": per_kind,
            "example_reasons": reasons, "blocks": len(blocks), "expected_hashes": expected_hashes}


def tamper_trials(n: int = 1000, seed: int = 0) -> tuple[int, int]:
    """(rejected, total) over `n` random tamperings of a mined 10-block chain (see the module docstring)."""
    r = tamper_report(n, seed)
    return r["rejected"], r["total"]


__all__ = ["TAMPER_EXPECTED_HASHES", "tamper_report", "tamper_trials"]
