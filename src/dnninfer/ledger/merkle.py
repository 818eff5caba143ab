"""Merkle root of a block's receipts: commits the block header to every receipt it carries.

The standard pairwise SHA-256 tree (as in Bitcoin, single hashing): leaves are the 32-byte receipt
hashes, a level with an odd count duplicates its last node, the empty tree is sha256(b"").
Duplicating the last node means [a, b, c] and [a, b, c, c] share a root (CVE-2012-2459); the
chain rejects a block that repeats a receipt, which closes that hole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def merkle_root(leaf_hashes: Iterable[str]) -> str:
    """Root (hex) over leaf digests given as hex strings, in order."""
    level = [bytes.fromhex(h) for h in leaf_hashes]
    if not level:
        return hashlib.sha256(b"").hexdigest()
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [hashlib.sha256(level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
    return level[0].hex()
