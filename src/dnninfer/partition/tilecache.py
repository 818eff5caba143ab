"""Memoised costs for the planners' hot loop: tiles, part seconds, transfers.

A planner scores thousands of candidates that share their pieces: the same region cut into the
same row stripes (`spatial.balance` iterates share vectors that round to the same stripes; node
subsets of one size reuse them), the same part on the same target, the same bytes over the same
link. Each piece is computed once, by the very function the simulator used before (`tiles`'s row
walk, `CostModel.seconds`, `CostModel.transfer_s`), so a memoised value is bit for bit the value
it replaces.

A tile's cost depends only on its own stripe of each exit tensor (the rows asked of the exits
determine, through the receptive fields, everything it reads and computes), not on the other
tiles, so tiles are memoised one by one: `tile_cost` with any share vector is a few dict lookups
once its stripes have been seen.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from dnninfer.graph import Graph
from dnninfer.graph.receptive import required_ranges, stripes
from dnninfer.partition.costmodel import CostModel, Target
from dnninfer.partition.tiles import TileCost, _check_shares, _region

__all__ = ["Costs", "costs", "fits", "part_seconds", "serial_s", "tile_cost", "tile_seconds", "transfer_s"]

_Tile = tuple[dict[str, float], int, int, tuple[int, int]]  # fraction per node, in bytes, out bytes, first-exit rows
_TILES: weakref.WeakKeyDictionary[Graph, dict[Any, _Tile]] = weakref.WeakKeyDictionary()
_REGIONS: weakref.WeakKeyDictionary[Graph, dict[tuple[str, ...], Any]] = weakref.WeakKeyDictionary()
_MAX_TILES = 200_000


def _stripes_of(graph: Graph, region: Sequence[str], shares: Sequence[float]) -> tuple[Any, list[tuple]]:
    """The region (validated, as `tiles.tile_cost` does) and each tile's stripe of every exit."""
    from dnninfer.errors import UserError

    regions = _REGIONS.get(graph)
    if regions is None:
        regions = _REGIONS[graph] = {}
    key = tuple(region)
    r = regions.get(key)
    if r is None:
        r = _region(graph, region)
        if len(regions) >= 512:
            regions.clear()
        regions[key] = r
    values = _check_shares(shares)
    k = len(values)
    per_exit = []
    for e in r.exits:
        h = r.ops[e].h
        if k > h:
            raise UserError(f"shares: {k} tiles but exit tensor {e!r} has only {h} rows")
        per_exit.append(stripes(h, values))
    return r, [tuple(s[t] for s in per_exit) for t in range(k)]


def _tile(graph: Graph, r: Any, stripe: tuple) -> _Tile:
    cache = _TILES.get(graph)
    if cache is None:
        cache = _TILES[graph] = {}
    key = (r.order, stripe)
    got = cache.get(key)
    if got is not None:
        return got

    def height(u: str) -> int:
        return r.entry_rows[u][0] if u in r.entry_rows else r.ops[u].h

    def need(v: str, u: str, lo: int, hi: int) -> tuple[int, int] | None:
        w = r.ops[v].window
        return None if w is None else w.need(lo, hi)

    demand = dict(zip(r.exits, stripe, strict=True))
    req = required_ranges(r.order, demand, lambda v: r.ops[v].inputs, need, height)
    fraction = {v: (req[v][1] - req[v][0]) / r.ops[v].h for v in r.order}
    in_bytes = sum((req[e][1] - req[e][0]) * r.entry_rows[e][1] for e in r.entries)
    out_bytes = sum((hi - lo) * r.ops[e].row_bytes for e, (lo, hi) in demand.items())
    got = (fraction, in_bytes, out_bytes, stripe[0])
    if len(cache) >= _MAX_TILES:
        cache.clear()
    cache[key] = got
    return got


def tile_cost(graph: Graph, region: Sequence[str], shares: Sequence[float]) -> TileCost:
    """`tiles.tile_cost`, memoised per tile (same values, same errors)."""
    r, per_tile = _stripes_of(graph, region, shares)
    tiles = [_tile(graph, r, s) for s in per_tile]
    return TileCost(rows=tuple(t[3] for t in tiles), node_fraction=tuple(t[0] for t in tiles),
                    in_bytes=tuple(t[1] for t in tiles), out_bytes=tuple(t[2] for t in tiles))


class Costs:
    """The memoised costs of one cost model (`costs(cm)`); hot loops hold one and call its methods."""

    def __init__(self, cm: CostModel) -> None:
        self.cm = cm
        self._tile_s: dict[Any, tuple[dict[str, float], float]] = {}
        self._part_s: dict[Any, float] = {}
        self._transfer: dict[Any, float] = {}
        self._serial: dict[Any, float] = {}
        self._need: dict[tuple[str, ...], int] = {}

    def tile_seconds(self, region: Sequence[str], target: Target, fraction: dict[str, float]) -> float:
        """``cm.seconds(region, target, fraction)``: a tile's fraction dict is shared by every plan
        that cuts the same stripe (and held here), so its identity is the key."""
        key = (id(fraction), target)
        got = self._tile_s.get(key)
        if got is None or got[0] is not fraction:
            got = self._tile_s[key] = (fraction, self.cm.seconds(region, target, fraction))
        return got[1]

    def part_seconds(self, nodes: tuple[str, ...], target: Target) -> float:
        """``cm.seconds(nodes, target)`` of a whole part."""
        key = (nodes, target)
        got = self._part_s.get(key)
        if got is None:
            got = self._part_s[key] = self.cm.seconds(nodes, target)
        return got

    def transfer_s(self, a: str, b: str, nbytes: float) -> float:
        """``cm.transfer_s``."""
        key = (a, b, nbytes)
        got = self._transfer.get(key)
        if got is None:
            got = self._transfer[key] = self.cm.transfer_s(a, b, nbytes)
        return got

    def serial_s(self, a: str, b: str, nbytes: float) -> float:
        """``cm.serial_s``."""
        key = (a, b, nbytes)
        got = self._serial.get(key)
        if got is None:
            got = self._serial[key] = self.cm.serial_s(a, b, nbytes)
        return got

    def fits(self, node: str, nodes: tuple[str, ...]) -> bool:
        """``cm.fits(node, nodes)``, the part's need computed once."""
        need = self._need.get(nodes)
        if need is None:
            need = self._need[nodes] = self.cm.need_bytes(nodes)
        return need <= self.cm.cap_bytes(node)


def costs(cm: CostModel) -> Costs:
    """The memoised costs of `cm` (kept on the cost model)."""
    return cm.memo(("tilecache",), lambda: Costs(cm))


def tile_seconds(cm: CostModel, region: Sequence[str], target: Target, fraction: dict[str, float]) -> float:
    return costs(cm).tile_seconds(region, target, fraction)


def part_seconds(cm: CostModel, nodes: tuple[str, ...], target: Target) -> float:
    return costs(cm).part_seconds(nodes, target)


def transfer_s(cm: CostModel, a: str, b: str, nbytes: float) -> float:
    return costs(cm).transfer_s(a, b, nbytes)


def serial_s(cm: CostModel, a: str, b: str, nbytes: float) -> float:
    return costs(cm).serial_s(a, b, nbytes)


def fits(cm: CostModel, node: str, nodes: tuple[str, ...]) -> bool:
    return costs(cm).fits(node, nodes)
