"""Spatial (row-stripe) partitions: where they can start and end, and how the rows are shared.

CoEdge / MoDNN split each conv layer's output rows in proportion to device capability and account
for the halo transfer; DeepThings fuses a stack of layers so tiles need no traffic inside it
(partitioning.md §3.2, §6.1 "Spatial mode"). We fuse: the row-local prefix of the chain (or any
row-local block range) is one region, tiled once, then gathered where the tail runs. Shares start
proportional to each target's conv throughput and are refined so that every tile finishes at the
same time including its input and output transfers (the bisection of §6.1, done as a damped
fixed-point iteration on the tile finishing times).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

from dnninfer.graph import Graph
from dnninfer.partition.costmodel import CostModel, Target
from dnninfer.partition.plan import Part

_PREFIX: weakref.WeakKeyDictionary[Graph, int] = weakref.WeakKeyDictionary()  # no graph kept alive


def row_local_prefix(cm: CostModel) -> int:
    """How many leading chain blocks form one row-local region (0: spatial mode does not apply)."""
    from dnninfer.partition.tiles import row_local_blocks

    if cm.graph not in _PREFIX:
        n = 0
        for ok in row_local_blocks(cm.graph):
            if not ok:
                break
            n += 1
        _PREFIX[cm.graph] = n
    return _PREFIX[cm.graph]


def region(cm: CostModel, first: int, last: int) -> tuple[str, ...]:
    return tuple(n for b in cm.blocks[first:last + 1] for n in b.nodes)


def cut_candidates(cm: CostModel, limit: int = 4) -> list[int]:
    """Last blocks of a spatial prefix worth trying: where the activation shrinks, always the full prefix."""
    p = row_local_prefix(cm)
    if p == 0:
        return []
    blocks = cm.blocks
    drops = [b for b in range(p - 1) if blocks[b].out_bytes < blocks[b + 1].out_bytes
             or (b > 0 and blocks[b].out_bytes < blocks[b - 1].out_bytes)]
    drops = [b for b in drops if b != p - 1]
    if len(drops) > limit - 1:
        step = len(drops) / (limit - 1)
        drops = [drops[int(i * step)] for i in range(limit - 1)]
    return sorted({*drops, p - 1})


def tile_rows(cm: CostModel, nodes: Sequence[str]) -> int:
    """Rows of the region's first exit tensor: the most tiles it can be cut into."""
    from dnninfer.partition.tilecache import tile_cost

    return sum(hi - lo for lo, hi in tile_cost(cm.graph, nodes, (1.0,)).rows)


def balance(cm: CostModel, nodes: Sequence[str], targets: Sequence[Target], src: str, dst: str,
            iters: int = 8) -> tuple[float, ...]:
    """Shares of the rows for each target so that all tiles finish together (None if too few rows)."""
    from dnninfer.partition.tilecache import costs, tile_cost

    if len(targets) == 1:
        return (1.0,)
    c = costs(cm)
    shares = [cm.rate(t, "conv") for t in targets]
    total = sum(shares)
    shares = [s / total for s in shares]
    for _ in range(iters):
        tc = tile_cost(cm.graph, nodes, shares)
        finish = [c.transfer_s(src, t.node, tc.in_bytes[i]) + c.tile_seconds(nodes, t, tc.node_fraction[i])
                  + c.transfer_s(t.node, dst, tc.out_bytes[i]) for i, t in enumerate(targets)]
        mean = sum(finish) / len(finish)
        if max(finish) - min(finish) < 1e-3 * mean:
            break
        shares = [s * (mean / f) ** 0.7 for s, f in zip(shares, finish, strict=True)]
        total = sum(shares)
        shares = [s / total for s in shares]
    return tuple(shares)


def spatial_parts(cm: CostModel, last_block: int, targets: Sequence[Target], tail: Target | None,
                  *, role: str = "spatial") -> tuple[Part, ...]:
    """Tiles of blocks 0..last_block across `targets`, then the rest of the chain on `tail`."""
    nodes = region(cm, 0, last_block)
    rest = region(cm, last_block + 1, len(cm.blocks) - 1)
    dst = tail.node if (tail is not None and rest) else cm.source
    targets = list(targets)
    rows = tile_rows(cm, nodes)
    if len(targets) > rows:  # more devices than rows: keep the fastest
        targets = sorted(targets, key=lambda t: -cm.rate(t, "conv"))[:rows]
    shares = balance(cm, nodes, targets, cm.source, dst)
    head = Part(nodes, tuple(targets), shares, role=role) if len(targets) > 1 else Part(nodes, (targets[0],), role=role)
    if not rest:
        return (head,)
    return head, Part(rest, (tail,), role="layer")
