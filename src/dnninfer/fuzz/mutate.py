"""Seeded mutators: byte-level edits and a deterministic way to draw from hypothesis strategies.

Determinism: every surface gets its own ``random.Random`` derived from (campaign seed, surface
name) by `rng_for`, so adding cases to one surface never shifts another's inputs. Hypothesis
strategies (random YAML documents, numeric-looking CLI strings) are drawn by `draw`, which runs a
``@given`` collector under an explicit ``@seed`` with the generate phase only and no example
database: the same seed gives the same values on every run.
"""

from __future__ import annotations

import random
import zlib
from typing import Any, TypeVar

__all__ = [
    "BYTE_OPS",
    "draw",
    "flip_byte",
    "mutate_bytes",
    "preview_bytes",
    "rng_for",
    "truncate",
    "typo",
]

T = TypeVar("T")
INTERESTING_BYTES = (0x00, 0xFF, 0x7F, 0x80, 0x0A, 0x0D, 0x22, 0x27, 0x3A, 0x5C, 0x25, 0xC0, 0xFE)


def rng_for(seed: int, surface: str) -> random.Random:
    """An RNG for one surface, independent of every other surface's."""
    return random.Random(seed * 1_000_003 + zlib.crc32(surface.encode()))


def draw(strategy: Any, n: int, seed: int) -> list[Any]:
    """Up to ``n`` values of a hypothesis ``strategy``, the same ones for the same ``seed``."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    out: list[Any] = []

    @hseed(seed)
    @settings(max_examples=max(1, n), database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=False, report_multiple_bugs=False)
    @given(strategy)
    def collect(value: Any) -> None:
        out.append(value)

    collect()
    return out[:n]


def flip_byte(rng: random.Random, data: bytes, lo: int = 0, hi: int | None = None) -> tuple[bytes, str]:
    """XOR one byte in ``data[lo:hi]`` with a non-zero mask."""
    hi = len(data) if hi is None else min(hi, len(data))
    if not data or hi <= lo:
        return data + b"\x00", "appended 00 (nothing to flip)"
    i = rng.randrange(lo, hi)
    mask = rng.randrange(1, 256)
    out = bytearray(data)
    out[i] ^= mask
    return bytes(out), f"byte {i} xor {mask:02x}"


def truncate(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """Cut ``data`` at a random length shorter than it (possibly empty)."""
    n = rng.randrange(len(data)) if data else 0
    return data[:n], f"truncated to {n} of {len(data)} bytes"


def _set_interesting(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    if not data:
        return b"\xff", "one FF byte"
    i = rng.randrange(len(data))
    v = rng.choice(INTERESTING_BYTES)
    return data[:i] + bytes([v]) + data[i + 1:], f"byte {i} := {v:02x}"


def _insert(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    i = rng.randrange(len(data) + 1)
    blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
    return data[:i] + blob + data[i:], f"inserted {blob.hex()} at {i}"


def _delete(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    if not data:
        return data + b"\x00", "appended 00 (nothing to delete)"
    i = rng.randrange(len(data))
    k = rng.randrange(1, min(16, len(data) - i) + 1)
    return data[:i] + data[i + k:], f"deleted {k} byte(s) at {i}"


def _duplicate(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    if not data:
        return b"\x00\x00", "two 00 bytes"
    i = rng.randrange(len(data))
    k = rng.randrange(1, min(32, len(data) - i) + 1)
    return data[:i + k] + data[i:i + k] + data[i + k:], f"duplicated {k} byte(s) at {i}"


BYTE_OPS = {"flip": flip_byte, "set": _set_interesting, "insert": _insert, "delete": _delete,
            "duplicate": _duplicate}


def mutate_bytes(rng: random.Random, data: bytes, rounds: int = 1) -> tuple[bytes, str]:
    """Apply ``rounds`` random byte edits (flip / set / insert / delete / duplicate)."""
    notes = []
    for _ in range(rounds):
        name = rng.choice(sorted(BYTE_OPS))
        data, note = BYTE_OPS[name](rng, data)
        notes.append(note)
    return data, "; ".join(notes)


def typo(rng: random.Random, word: str) -> str:
    """A different word one edit away: swap, drop, double, replace or change the case of a letter."""
    for _ in range(20):
        if not word:
            return "x"
        i = rng.randrange(len(word))
        op = rng.randrange(5)
        if op == 0 and len(word) > 1:
            j = min(i + 1, len(word) - 1) if i < len(word) - 1 else i - 1
            a, b = sorted((i, j))
            new = word[:a] + word[b] + word[a + 1:b] + word[a] + word[b + 1:]
        elif op == 1 and len(word) > 1:
            new = word[:i] + word[i + 1:]
        elif op == 2:
            new = word[:i] + word[i] + word[i:]
        elif op == 3:
            new = word[:i] + rng.choice("abcdefghijklmnopqrstuvwxyz_-") + word[i + 1:]
        else:
            new = word[:i] + word[i].swapcase() + word[i + 1:]
        if new != word:
            return new
    return word + "_"


def preview_bytes(data: bytes, n: int = 24) -> str:
    """The first ``n`` bytes as hex plus the length: the repro of a binary input."""
    return f"{data[:n].hex()}{'...' if len(data) > n else ''} ({len(data)} bytes)"
