"""Inference receipts: a gateway's signed statement that an AP ran the top layers of its DNN.

A receipt names the gateway, the AP, the slot, the partition point s and the layer range the AP
ran, pins the intermediate tensor sent and the output received by their SHA-256 digests, and
claims the cycles the AP spent. The gateway signs it, so an AP cannot inflate its own contribution
(its reputation, hence its mining stake, is computed from these claims).

The signature is Ed25519 by the gateway's private key (`identity.SigningKey`, kept in the
gateway's key file); validators check it with the gateway's public key as registered in the ledger,
so holding the ledger (or every public key) is not enough to make a receipt. The receipt also names
the ledger it is for (`chain`: the genesis block's hash), so it cannot be replayed into another
ledger, even one whose gateways hold the same keys.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
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
from dnninfer.ledger.identity import Keyring, SigningKey, verify_signature

__all__ = ["Keyring", "Receipt", "tensor_digest"]  # Keyring: the private keys, in identity.py

_SIGN_DOMAIN = b"dnninfer-receipt-v2\n"
_TENSOR_DOMAIN = b"dnninfer-tensor-v1\n"


def tensor_digest(tensor: Any) -> str:
    """SHA-256 (hex) of a torch tensor or numpy array: dtype, shape and raw little-endian bytes.

    The dtype and shape are hashed too, so a float32 [2, 3] and a float32 [3, 2] (or an int32 with
    the same bytes) differ. A torch tensor and the numpy array of the same values hash the same.
    """
    if type(tensor).__module__.startswith("torch"):
        import torch

        t = tensor.detach().to("cpu").contiguous()
        dtype = str(t.dtype).removeprefix("torch.")
        shape = list(t.shape)
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
    else:
        import numpy as np

        a = np.asarray(tensor)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        a = np.ascontiguousarray(a)
        dtype, shape, raw = a.dtype.name, list(a.shape), a.tobytes()
    h = hashlib.sha256(_TENSOR_DOMAIN)
    h.update(json.dumps([dtype, shape]).encode() + b"\n")
    h.update(raw)
    return h.hexdigest()


_FIELDS = ("chain", "gateway", "ap", "slot", "split", "first", "last", "intermediate_sha256", "output_sha256",
           "cycles", "timestamp_us", "signature")
_CHECKS: dict[str, FieldCheck] = {
    "chain": check_hex64, "gateway": check_id, "ap": check_id, "slot": check_int, "split": check_int,
    "first": check_int, "last": check_int, "intermediate_sha256": check_hex64, "output_sha256": check_hex64,
    "cycles": check_int, "timestamp_us": check_int,
}


@dataclass(frozen=True)
class Receipt:
    """One offloaded inference: gateway `gateway` ran layers 1..split, AP `ap` ran `first`..`last`.

    Layer numbering is the caller's (the DPRA model uses 1-based layers, so first = split + 1 and
    last = L; split = L gives the empty range first = last + 1 and, normally, zero cycles). The
    timestamp is integer microseconds so that serialisation is exact; `.timestamp` gives seconds.
    (gateway, slot) identifies a receipt: a gateway offloads once per slot. `chain` is the genesis
    hash of the ledger the receipt is for.
    """

    chain: str
    gateway: str
    ap: str
    slot: int
    split: int
    first: int
    last: int
    intermediate_sha256: str
    output_sha256: str
    cycles: int
    timestamp_us: int
    signature: str = ""

    def __post_init__(self) -> None:
        w = f"receipt ({self.gateway!r}, slot {self.slot!r})"
        check_fields(self, w, _CHECKS)
        if self.last < self.first - 1:
            raise LedgerError(f"{w}: field 'last': layer range {self.first}..{self.last} is inverted")
        if self.signature != "":
            check_hex128(self.signature, f"{w}: field 'signature'")

    @classmethod
    def create(cls, *, chain: str, gateway: str, ap: str, slot: int, split: int, layers: tuple[int, int],
               intermediate: Any, output: Any, cycles: int | float, timestamp: float,
               key: SigningKey | None = None) -> Receipt:
        """Build a receipt for the ledger whose genesis hash is `chain` (`Ledger.chain`).

        `intermediate`/`output` are tensors/arrays (digested here) or hex digests; `timestamp` is in
        seconds (rounded to microseconds), a float `cycles` is rounded to whole cycles; with `key`
        (the gateway's) the receipt comes back signed.
        """
        if isinstance(cycles, float) and math.isfinite(cycles):
            cycles = round(cycles)
        r = cls(chain=chain, gateway=gateway, ap=ap, slot=slot, split=split, first=layers[0], last=layers[1],
                intermediate_sha256=intermediate if isinstance(intermediate, str) else tensor_digest(intermediate),
                output_sha256=output if isinstance(output, str) else tensor_digest(output),
                cycles=cycles, timestamp_us=round(timestamp * 1e6))
        return r.sign(key) if key is not None else r

    @property
    def key(self) -> tuple[str, int]:
        """(gateway, slot): at most one receipt per key on any branch of the chain."""
        return (self.gateway, self.slot)

    @property
    def timestamp(self) -> float:
        return self.timestamp_us / 1e6

    @property
    def layers(self) -> tuple[int, int]:
        return (self.first, self.last)

    def body(self) -> bytes:
        """Canonical bytes of everything but the signature: what the gateway signs."""
        d = self.to_dict()
        del d["signature"]
        return canonical_json(d)

    def sign(self, key: SigningKey) -> Receipt:
        """A copy signed with `key` (Ed25519 over a domain tag and the body)."""
        return dataclasses.replace(self, signature=key.sign(_SIGN_DOMAIN + self.body()))

    def verify(self, keys: Mapping[str, str], chain: str | None = None) -> None:
        """Raise `LedgerError` unless the gateway's public key in `keys` signed the body (and, given
        `chain`, the receipt is for that ledger)."""
        w = f"receipt ({self.gateway}, slot {self.slot})"
        if chain is not None and self.chain != chain:
            raise LedgerError(f"{w}: belongs to another ledger (genesis {self.chain[:12]}.., this ledger's is "
                              f"{chain[:12]}..): replayed from elsewhere")
        if self.gateway not in keys:
            raise LedgerError(f"{w}: unknown gateway {self.gateway!r} (no public key registered)")
        if not self.signature:
            raise LedgerError(f"{w}: unsigned")
        if not verify_signature(keys[self.gateway], self.signature, _SIGN_DOMAIN + self.body()):
            raise LedgerError(f"{w}: invalid signature (not signed by the key registered for {self.gateway!r}, or "
                              "altered after signing)")

    @cached_property
    def hash(self) -> str:
        """SHA-256 (hex) of the full canonical receipt, signature included: the Merkle leaf."""
        return sha256_hex(canonical_json(self.to_dict()))

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in _FIELDS}

    def to_json(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, d: Any) -> Receipt:
        """Strict inverse of `to_dict`: a missing, extra or ill-typed field is a `LedgerError` naming it."""
        exact_keys(d, set(_FIELDS), "receipt")
        if not isinstance(d["signature"], str):
            raise LedgerError(f"receipt: field 'signature': expected a hex string, got {d['signature']!r}")
        return cls(**{f: d[f] for f in _FIELDS})

    @classmethod
    def from_json(cls, text: str | bytes) -> Receipt:
        return cls.from_dict(parse_json(text, "receipt"))
