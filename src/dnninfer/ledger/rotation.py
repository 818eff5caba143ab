"""Key rotation: a record, signed by an identity's current key, that introduces its next key.

A rotation names the identity, its rotation number `seq` (1 for the first: a replayed or stale
record has the wrong number), the new public key and the ledger it belongs to (`chain`, the
genesis hash: a record from another ledger does not verify here). A block carries rotations
beside its receipts (the Merkle root covers both); the block itself, its receipts and its miner
signature are still checked with the old keys, and the new key is valid from the next block on
(`chain.Ledger` keeps the public keys per block, so each branch has its own).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from dnninfer.ledger.canonical import (
    canonical_json,
    check_hex64,
    check_hex128,
    check_id,
    check_int,
    exact_keys,
    parse_json,
    sha256_hex,
)
from dnninfer.ledger.errors import LedgerError
from dnninfer.ledger.fields import FieldCheck, check_fields
from dnninfer.ledger.identity import SigningKey, verify_signature

_SIGN_DOMAIN = b"dnninfer-key-rotation-v1\n"
_LEAF_DOMAIN = b"dnninfer-key-rotation-leaf\n"
_FIELDS = ("name", "seq", "new_key", "chain", "signature")
_CHECKS: dict[str, FieldCheck] = {"name": check_id, "seq": lambda v, w: check_int(v, w, 1),
                                  "new_key": check_hex64, "chain": check_hex64}


@dataclass(frozen=True)
class KeyRotation:
    """Identity `name`'s rotation number `seq` to the public key `new_key`, on ledger `chain`."""

    name: str
    seq: int
    new_key: str
    chain: str
    signature: str = ""

    def __post_init__(self) -> None:
        w = f"key rotation ({self.name!r}, #{self.seq!r})"
        check_fields(self, w, _CHECKS)
        if self.signature != "":
            check_hex128(self.signature, f"{w}: field 'signature'")

    @classmethod
    def create(cls, *, name: str, seq: int, new_key: str, chain: str, key: SigningKey) -> KeyRotation:
        """A rotation signed with `key`, which must be `name`'s current key for it to be accepted."""
        return cls(name=name, seq=seq, new_key=new_key, chain=chain).sign(key)

    def body(self) -> bytes:
        """What the old key signs: every field but the signature."""
        d = self.to_dict()
        del d["signature"]
        return canonical_json(d)

    def sign(self, key: SigningKey) -> KeyRotation:
        return dataclasses.replace(self, signature=key.sign(_SIGN_DOMAIN + self.body()))

    def signed_by(self, public: str) -> bool:
        return bool(self.signature) and verify_signature(public, self.signature, _SIGN_DOMAIN + self.body())

    @cached_property
    def hash(self) -> str:
        """The Merkle leaf (domain-separated from receipts' leaves)."""
        return sha256_hex(_LEAF_DOMAIN + canonical_json(self.to_dict()))

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in _FIELDS}

    @classmethod
    def from_dict(cls, d: Any) -> KeyRotation:
        exact_keys(d, set(_FIELDS), "key rotation")
        if not isinstance(d["signature"], str):
            raise LedgerError(f"key rotation: field 'signature': expected a hex string, got {d['signature']!r}")
        return cls(**{f: d[f] for f in _FIELDS})

    @classmethod
    def from_json(cls, text: str | bytes) -> KeyRotation:
        return cls.from_dict(parse_json(text, "key rotation"))
