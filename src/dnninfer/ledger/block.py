"""Blocks and proof-of-work mining.

A block commits, in its header, to its parent (`prev_hash`), its receipts (`merkle_root`), its
miner, the reputation table after applying it (`reputation_root`), the PoW `target` it claims,
a timestamp and the `nonce`. The block hash is SHA-256 of the header; PoW holds when
int(hash) < target. The header is a canonical JSON prefix followed by the nonce as 8 big-endian
bytes, so mining hashes the fixed prefix once and only feeds the nonce per try (about 1.5 M
hashes/s per core in CPython), which keeps simulated mining at 2^10..2^16 expected hashes cheap.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any

from dnninfer.ledger.canonical import canonical_json, check_hex64, check_id, check_int, exact_keys, parse_json
from dnninfer.ledger.consensus import MAX_TARGET
from dnninfer.ledger.errors import LedgerError
from dnninfer.ledger.fields import FieldCheck, check_fields
from dnninfer.ledger.merkle import merkle_root
from dnninfer.ledger.receipt import Receipt

NONCE_BITS = 64
_NONCE_MASK = 2**NONCE_BITS - 1
HEADER_VERSION = 1
GENESIS_MINER = "genesis"
_FIELDS = ("index", "prev_hash", "merkle_root", "miner", "reputation_root", "target", "nonce", "timestamp_us",
           "receipts")
_CHECKS: dict[str, FieldCheck] = {
    "index": check_int, "prev_hash": check_hex64, "merkle_root": check_hex64, "miner": check_id,
    "reputation_root": check_hex64, "target": partial(check_int, lo=1, hi=MAX_TARGET),
    "nonce": partial(check_int, lo=0, hi=_NONCE_MASK), "timestamp_us": check_int,
}


@dataclass(frozen=True)
class Block:
    """One block (see the module docstring). `target` is an int; in JSON it is 64 hex digits."""

    index: int
    prev_hash: str
    merkle_root: str
    miner: str
    reputation_root: str
    target: int
    nonce: int
    timestamp_us: int
    receipts: tuple[Receipt, ...] = ()

    def __post_init__(self) -> None:
        w = f"block {self.index!r}"
        check_fields(self, w, _CHECKS)
        if not isinstance(self.receipts, tuple) or not all(isinstance(r, Receipt) for r in self.receipts):
            raise LedgerError(f"{w}: field 'receipts': expected a tuple of Receipt")

    @classmethod
    def build(cls, *, index: int, prev_hash: str, miner: str, receipts: Iterable[Receipt], reputation_root: str,
              target: int, timestamp_us: int, nonce: int = 0) -> Block:
        """A block over `receipts` with its Merkle root filled in (unsealed until mined)."""
        rs = tuple(receipts)
        return cls(index=index, prev_hash=prev_hash, merkle_root=merkle_root(r.hash for r in rs), miner=miner,
                   reputation_root=reputation_root, target=target, nonce=nonce, timestamp_us=timestamp_us,
                   receipts=rs)

    # -- header and PoW ------------------------------------------------------------------------
    @cached_property
    def header_prefix(self) -> bytes:
        """Canonical header without the nonce (constant while mining)."""
        return canonical_json({"v": HEADER_VERSION, "index": self.index, "prev_hash": self.prev_hash,
                               "merkle_root": self.merkle_root, "miner": self.miner,
                               "reputation_root": self.reputation_root, "target": f"{self.target:064x}",
                               "timestamp_us": self.timestamp_us}) + b"\n"

    def header_bytes(self) -> bytes:
        return self.header_prefix + self.nonce.to_bytes(8, "big")

    @cached_property
    def hash(self) -> str:
        """SHA-256 (hex) of the header: the block's id and its PoW value."""
        return hashlib.sha256(self.header_bytes()).hexdigest()

    def pow_ok(self) -> bool:
        return int(self.hash, 16) < self.target

    def merkle_ok(self) -> bool:
        return merkle_root(r.hash for r in self.receipts) == self.merkle_root

    @property
    def timestamp(self) -> float:
        return self.timestamp_us / 1e6

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "prev_hash": self.prev_hash, "merkle_root": self.merkle_root,
                "miner": self.miner, "reputation_root": self.reputation_root, "target": f"{self.target:064x}",
                "nonce": self.nonce, "timestamp_us": self.timestamp_us,
                "receipts": [r.to_dict() for r in self.receipts]}

    def to_json(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, d: Any) -> Block:
        """Strict inverse of `to_dict`; a malformed field is a `LedgerError` naming it."""
        exact_keys(d, set(_FIELDS), "block")
        w = f"block {d['index']!r}"
        target = check_hex64(d["target"], f"{w}: field 'target'")
        if not isinstance(d["receipts"], list):
            raise LedgerError(f"{w}: field 'receipts': expected a list, got {type(d['receipts']).__name__}")
        receipts = []
        for i, r in enumerate(d["receipts"]):
            try:
                receipts.append(Receipt.from_dict(r))
            except LedgerError as e:
                raise LedgerError(f"{w}: receipts[{i}]: {e}") from None
        fields = {f: d[f] for f in _FIELDS if f not in ("target", "receipts")}
        return cls(**fields, target=int(target, 16), receipts=tuple(receipts))

    @classmethod
    def from_json(cls, text: str | bytes) -> Block:
        return cls.from_dict(parse_json(text, "block"))


def mine(block: Block, *, start_nonce: int = 0, max_hashes: int | None = None) -> tuple[Block, int]:
    """Search nonces from `start_nonce` (wrapping at 2^64) until the hash is below the target.

    Returns the sealed block and the number of hashes tried (>= 1). Comparing 32-byte big-endian
    digests as bytes is the same as comparing them as integers, and avoids a conversion per try.
    """
    check_int(start_nonce, "start_nonce", 0, _NONCE_MASK)
    limit = _NONCE_MASK + 1 if max_hashes is None else max_hashes
    base = hashlib.sha256(block.header_prefix)
    target = block.target.to_bytes(32, "big")
    nonce = start_nonce
    tried = 0
    while tried < limit:
        h = base.copy()
        h.update(nonce.to_bytes(8, "big"))
        tried += 1
        if h.digest() < target:
            sealed = dataclasses.replace(block, nonce=nonce)
            sealed.__dict__["header_prefix"] = block.header_prefix  # same header fields
            return sealed, tried
        nonce = (nonce + 1) & _NONCE_MASK
    raise LedgerError(f"block {block.index}: no nonce below the target in {limit} hashes")
