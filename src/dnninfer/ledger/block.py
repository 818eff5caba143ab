"""Blocks, proof-of-work mining and the miner's signature.

A block commits, in its header, to its parent (`prev_hash`), its receipts and key rotations
(`merkle_root`), its miner, the reputation table after applying it (`reputation_root`), the PoW
`target` it claims, a timestamp and the `nonce`. The block hash is SHA-256 of the header; PoW holds
when int(hash) < target. Once mined, the miner signs the whole header, nonce included, with its
Ed25519 key (`signed`): nobody else can turn a header naming that miner (and so claiming its
stake's easier target) into a valid block, nor re-mine its block under another nonce. The
signature is not part of the hash (it is made after the hash is found); it binds to the ledger
through `prev_hash`, which chains back to the genesis block.

The header is a canonical JSON prefix followed by the nonce as 8 big-endian bytes, so mining hashes
the fixed prefix once and only feeds the nonce per try (about 1.5 M hashes/s per core in CPython),
which keeps simulated mining at 2^10..2^16 expected hashes cheap.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any

from dnninfer.ledger.canonical import (
    canonical_json,
    check_hex64,
    check_hex128,
    check_id,
    check_int,
    exact_keys,
    parse_json,
)
from dnninfer.ledger.consensus import MAX_TARGET
from dnninfer.ledger.errors import LedgerError
from dnninfer.ledger.fields import FieldCheck, check_fields
from dnninfer.ledger.identity import SigningKey, verify_signature
from dnninfer.ledger.merkle import merkle_root
from dnninfer.ledger.receipt import Receipt
from dnninfer.ledger.rotation import KeyRotation

NONCE_BITS = 64
_NONCE_MASK = 2**NONCE_BITS - 1
HEADER_VERSION = 2
GENESIS_MINER = "genesis"
_SIGN_DOMAIN = b"dnninfer-block-v2\n"
_FIELDS = ("index", "prev_hash", "merkle_root", "miner", "reputation_root", "target", "nonce", "timestamp_us",
           "receipts", "rotations", "signature")
_CHECKS: dict[str, FieldCheck] = {
    "index": check_int, "prev_hash": check_hex64, "merkle_root": check_hex64, "miner": check_id,
    "reputation_root": check_hex64, "target": partial(check_int, lo=1, hi=MAX_TARGET),
    "nonce": partial(check_int, lo=0, hi=_NONCE_MASK), "timestamp_us": check_int,
}


@dataclass(frozen=True)
class Block:
    """One block (see the module docstring). `target` is an int; in JSON it is 64 hex digits.

    `signature` is the miner's Ed25519 signature of the header ("" until signed; genesis is unsigned).
    """

    index: int
    prev_hash: str
    merkle_root: str
    miner: str
    reputation_root: str
    target: int
    nonce: int
    timestamp_us: int
    receipts: tuple[Receipt, ...] = ()
    rotations: tuple[KeyRotation, ...] = ()
    signature: str = ""

    def __post_init__(self) -> None:
        w = f"block {self.index!r}"
        check_fields(self, w, _CHECKS)
        if not isinstance(self.receipts, tuple) or not all(isinstance(r, Receipt) for r in self.receipts):
            raise LedgerError(f"{w}: field 'receipts': expected a tuple of Receipt")
        if not isinstance(self.rotations, tuple) or not all(isinstance(k, KeyRotation) for k in self.rotations):
            raise LedgerError(f"{w}: field 'rotations': expected a tuple of KeyRotation")
        if self.signature != "":
            check_hex128(self.signature, f"{w}: field 'signature'")

    @classmethod
    def build(cls, *, index: int, prev_hash: str, miner: str, receipts: Iterable[Receipt], reputation_root: str,
              target: int, timestamp_us: int, nonce: int = 0, rotations: Iterable[KeyRotation] = ()) -> Block:
        """A block over `receipts` and `rotations` with its Merkle root filled in (unsealed until mined)."""
        rs, ks = tuple(receipts), tuple(rotations)
        return cls(index=index, prev_hash=prev_hash, merkle_root=merkle_root(_leaves(rs, ks)), miner=miner,
                   reputation_root=reputation_root, target=target, nonce=nonce, timestamp_us=timestamp_us,
                   receipts=rs, rotations=ks)

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
        return merkle_root(_leaves(self.receipts, self.rotations)) == self.merkle_root

    # -- the miner's signature -----------------------------------------------------------------
    def signing_message(self) -> bytes:
        """What the miner signs: a domain tag and the full header (nonce included)."""
        return _SIGN_DOMAIN + self.header_bytes()

    def signed(self, key: SigningKey) -> Block:
        """A copy signed with `key` (the miner's, once the nonce is found)."""
        out = dataclasses.replace(self, signature=key.sign(self.signing_message()))
        out.__dict__.update({k: v for k, v in self.__dict__.items() if k in ("header_prefix", "hash")})
        return out

    def signed_by(self, public: str) -> bool:
        """Whether the Ed25519 key `public` made this block's signature."""
        return bool(self.signature) and verify_signature(public, self.signature, self.signing_message())

    @property
    def timestamp(self) -> float:
        return self.timestamp_us / 1e6

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "prev_hash": self.prev_hash, "merkle_root": self.merkle_root,
                "miner": self.miner, "reputation_root": self.reputation_root, "target": f"{self.target:064x}",
                "nonce": self.nonce, "timestamp_us": self.timestamp_us,
                "receipts": [r.to_dict() for r in self.receipts],
                "rotations": [k.to_dict() for k in self.rotations], "signature": self.signature}

    def to_json(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, d: Any) -> Block:
        """Strict inverse of `to_dict`; a malformed field is a `LedgerError` naming it."""
        exact_keys(d, set(_FIELDS), "block")
        w = f"block {d['index']!r}"
        target = check_hex64(d["target"], f"{w}: field 'target'")
        receipts = _records(d, "receipts", Receipt.from_dict, w)
        rotations = _records(d, "rotations", KeyRotation.from_dict, w)
        if not isinstance(d["signature"], str):
            raise LedgerError(f"{w}: field 'signature': expected a hex string, got {d['signature']!r}")
        fields = {f: d[f] for f in _FIELDS if f not in ("target", "receipts", "rotations")}
        return cls(**fields, target=int(target, 16), receipts=receipts, rotations=rotations)

    @classmethod
    def from_json(cls, text: str | bytes) -> Block:
        return cls.from_dict(parse_json(text, "block"))


def _leaves(receipts: Iterable[Receipt], rotations: Iterable[KeyRotation]) -> list[str]:
    """Merkle leaves: the receipts, then the key rotations (their leaf hashes are domain-separated)."""
    return [r.hash for r in receipts] + [k.hash for k in rotations]


def _records(d: Any, field: str, parse: Any, w: str) -> tuple[Any, ...]:
    if not isinstance(d[field], list):
        raise LedgerError(f"{w}: field {field!r}: expected a list, got {type(d[field]).__name__}")
    out = []
    for i, r in enumerate(d[field]):
        try:
            out.append(parse(r))
        except LedgerError as e:
            raise LedgerError(f"{w}: {field}[{i}]: {e}") from None
    return tuple(out)


def mine(block: Block, *, start_nonce: int = 0, max_hashes: int | None = None) -> tuple[Block, int]:
    """Search nonces from `start_nonce` (wrapping at 2^64) until the hash is below the target.

    Returns the sealed block (unsigned: sign it with `Block.signed`) and the number of hashes tried
    (>= 1). Comparing 32-byte big-endian
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
            sealed = dataclasses.replace(block, nonce=nonce, signature="")
            sealed.__dict__["header_prefix"] = block.header_prefix  # same header fields
            return sealed, tried
        nonce = (nonce + 1) & _NONCE_MASK
    raise LedgerError(f"block {block.index}: no nonce below the target in {limit} hashes")
