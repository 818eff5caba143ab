"""Receptive fields along one spatial axis: which input rows (or columns) a band of outputs reads.

Written once for the two areas that split a feature map and recompute the halos instead of
exchanging them: the spatial tiler (`partition/tiles.py`: row stripes of an fx region across
devices, DeepThings/CoEdge) and the MCU patch planner (`memory/patch.py`: p x q patches of an int8
layer prefix, MCUNetV2). Both walk a region's nodes backwards from the bands asked of its exits,
taking at each node the hull of what its readers need, and clip at the tensor edges (rows outside
are padding, never stored).

* `stripes`: ``h`` rows cut into contiguous bands in proportion to shares (largest remainder,
  at least one row each).
* `window_need`: the rows ``[a, b)`` a window op (conv/pool: kernel ``k``, stride ``s``, padding
  ``top``, dilation ``d``) reads for output rows ``[lo, hi)``; may reach outside the input.
* `required_ranges`: the walk. A node none of whose readers needs a real row (a conv reading only
  padding) still keeps one row, so every node of the region has a non-empty band.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

Band = tuple[int, int]


def stripes(h: int, shares: Sequence[float]) -> list[Band]:
    """Contiguous [lo, hi) stripes of h rows proportional to shares (largest remainder), each >= 1 row."""
    k = len(shares)
    total = sum(shares)
    quota = [h * w / total for w in shares]
    rows = [int(q) for q in quota]
    rest = h - sum(rows)
    by_remainder = sorted(range(k), key=lambda t: (rows[t] - quota[t], t))
    i = 0
    while rest > 0:
        rows[by_remainder[i % k]] += 1
        rest -= 1
        i += 1
    while rest < 0:  # float round-off only
        j = max(range(k), key=lambda t: rows[t])
        rows[j] -= 1
        rest += 1
    for t in range(k):
        while rows[t] < 1:
            j = max(range(k), key=lambda u: (rows[u], -u))
            rows[j] -= 1
            rows[t] += 1
    out, lo = [], 0
    for r in rows:
        out.append((lo, lo + r))
        lo += r
    return out


def window_need(lo: int, hi: int, k: int, s: int, top: int, d: int = 1) -> Band:
    """Input rows ``[a, b)`` that output rows ``[lo, hi)`` of a window op read (unclipped):
    output row ``o`` reads ``[o*s - top, o*s - top + d*(k-1) + 1)``."""
    return lo * s - top, (hi - 1) * s - top + d * (k - 1) + 1


def clip(a: int, b: int, h: int) -> Band:
    """``[a, b)`` clipped to ``[0, h)`` (possibly empty: ``a >= b``)."""
    return max(a, 0), min(b, h)


def required_ranges(order: Iterable[K], demand: Mapping[K, Band], inputs: Callable[[K], Iterable[K]],
                    need: Callable[[K, K, int, int], Band | None], height: Callable[[K], int]) -> dict[K, Band]:
    """The band ``[lo, hi)`` each node of a region, and each tensor it reads, must hold.

    ``order`` lists the region's nodes in topological order; ``demand`` gives the band asked of
    each exit; ``inputs(v)`` the row-carrying inputs of ``v``; ``need(v, u, lo, hi)`` the
    (unclipped) band of ``u`` that ``v`` reads to produce its band ``[lo, hi)``, or None for an
    element-wise reader (same band); ``height(u)`` the extent of ``u`` along the axis. A node read
    by several region nodes holds the hull of their needs. Returns bands for the region's nodes
    and for the entries (inputs from outside the region) alike.
    """
    lo_: dict[K, int] = {}
    hi_: dict[K, int] = {}
    fallback: dict[K, int] = {}
    for e, (lo, hi) in demand.items():
        lo_[e], hi_[e] = lo, hi
    out: dict[K, Band] = {}
    nodes = list(order)
    for v in reversed(nodes):
        if v in lo_:
            lo, hi = lo_[v], hi_[v]
        else:  # every reader needs no real row (a window reading only padding): keep one row
            c = fallback[v]
            lo, hi = c, c + 1
        out[v] = (lo, hi)
        for u in inputs(v):
            got = need(v, u, lo, hi)
            if got is None:
                a, b = lo, hi
            else:
                h = height(u)
                a, b = clip(*got, h)
                if a >= b:
                    fallback.setdefault(u, min(a, h - 1))
                    continue
            if u in lo_:
                lo_[u] = min(lo_[u], a)
                hi_[u] = max(hi_[u], b)
            else:
                lo_[u], hi_[u] = a, b
    region = set(nodes)
    for u in list(lo_) + list(fallback):
        if u not in region and u not in out:
            out[u] = (lo_[u], hi_[u]) if u in lo_ else (fallback[u], fallback[u] + 1)
    return out
