"""Canonical bytes and the validation helpers shared by receipts, blocks and parameters.

Every replica must hash exactly the same bytes, so objects are serialised as sorted-key JSON with
no whitespace, ASCII only, and no floats where bit-exact agreement matters (timestamps are integer
microseconds, targets are hex strings). Parsing is strict in the other direction: an unknown or
missing key, a bool where an int belongs, upper-case hex, ... is rejected, so two different byte
strings never decode to the same object (which would let a tampered record slip through).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from dnninfer.ledger.errors import LedgerError

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")
_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")


def canonical_json(obj: Any) -> bytes:
    """The one byte string every replica hashes and signs for `obj`."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_json(text: str | bytes, what: str) -> Any:
    """`json.loads` that reports malformed input as a `LedgerError` naming `what`."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise LedgerError(f"{what}: malformed JSON ({e})") from None


def exact_keys(d: Any, keys: set[str], what: str) -> Mapping[str, Any]:
    """`d` must be a mapping with exactly `keys`: a missing or extra field is a named error."""
    if not isinstance(d, Mapping):
        raise LedgerError(f"{what}: expected an object, got {type(d).__name__}")
    missing = sorted(keys - set(d))
    if missing:
        raise LedgerError(f"{what}: missing field {missing[0]!r}")
    extra = sorted(set(d) - keys, key=str)
    if extra:
        raise LedgerError(f"{what}: unknown field {extra[0]!r}")
    return d


def check_int(value: Any, what: str, lo: int = 0, hi: int | None = None) -> int:
    """An int (not a bool) in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise LedgerError(f"{what}: expected an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bounds = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise LedgerError(f"{what}: expected an integer {bounds}, got {value}")
    return value


def check_hex64(value: Any, what: str) -> str:
    """A SHA-256 digest as 64 lower-case hex digits."""
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise LedgerError(f"{what}: expected 64 lower-case hex digits, got {value!r}")
    return value


def check_hex128(value: Any, what: str) -> str:
    """An Ed25519 signature: 64 bytes as 128 lower-case hex digits."""
    if not isinstance(value, str) or not _HEX128.fullmatch(value):
        raise LedgerError(f"{what}: expected 128 lower-case hex digits (an Ed25519 signature), got {value!r}")
    return value


def check_id(value: Any, what: str) -> str:
    """A gateway or AP name: 1-64 characters from [A-Za-z0-9_.:-] (no look-alike Unicode)."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise LedgerError(f"{what}: expected a name of 1-64 characters [A-Za-z0-9_.:-], got {value!r}")
    return value


def check_number(value: Any, what: str, lo: float, hi: float | None = None, lo_open: bool = False) -> float:
    """A finite real number in [lo, hi] (or (lo, hi] with `lo_open`)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise LedgerError(f"{what}: expected a number, got {value!r}")
    below = value <= lo if lo_open else value < lo
    if below or (hi is not None and value > hi) or value in (float("inf"), float("-inf")):
        lo_s = "(" if lo_open else "["
        raise LedgerError(f"{what}: expected a number in {lo_s}{lo}, {hi if hi is not None else 'inf'}], got {value}")
    return float(value)
