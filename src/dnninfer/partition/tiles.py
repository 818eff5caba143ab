"""Spatial (row-stripe) tiling of a CNN region with halo rows: DeepThings FTP, CoEdge, MoDNN.

A planner picks a connected region of row-local nodes (conv, pool, BN, activations, residual adds,
channel concatenations) and k devices. Each device computes a horizontal stripe (a range of rows,
dim 2 of NCHW) of the region's exit tensors; the rows it needs from the region's entry tensors are
found by walking receptive fields back through the region DAG (halo rows are recomputed, never
exchanged; the walk is `graph/receptive.py`'s, shared with the MCU patch planner). Stitching the
stripes together gives exactly what the whole model computes.

Two entry points:

* `tile_cost` is analytic (integer math on recorded shapes, cached per region): what each tile
  computes and sends, for planners that score thousands of share vectors.
* `tile` rewrites the fx graph into scatter -> k independent tiles -> gather, keeping every other
  node's name, and annotates it, so it can be split and run like any other `Graph`.

Names in the tiled graph (original names are kept for everything outside the region):

* ``{entry}__slice_t{t}``: scatter; rows of an entry tensor that tile t needs (a view).
* ``{node}__t{t}``: tile t's copy of region node ``node`` (convs and pools become ``F.conv2d`` /
  ``F.max_pool2d`` / ``F.avg_pool2d`` with zero row padding).
* ``{node}__t{t}__pad``: explicit padding of rows outside the image (zeros; -inf for max pool).
* ``{node}__t{t}__r{a}_{b}``: rows [a, b) of a tile value, when a consumer needs fewer rows.
* ``{node}__t{t}__clone``: a private copy for an in-place op whose input is a view.
* ``{exit}__gather``: ``torch.cat`` of the stripes of an exit tensor on dim 2.
"""

from __future__ import annotations

import copy
import math
import operator
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx

from dnninfer.errors import UserError
from dnninfer.graph.core import Graph
from dnninfer.graph.ops import Param, Window, row_local
from dnninfer.graph.receptive import clip as _clip
from dnninfer.graph.receptive import required_ranges
from dnninfer.graph.receptive import stripes as _stripes

# ---------------------------------------------------------------------------------------------
# Public results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TileCost:
    """What a planner needs to score a share vector, computed without building a graph."""

    rows: tuple[tuple[int, int], ...]  # per tile: [lo, hi) rows of the first exit tensor
    node_fraction: tuple[dict[str, float], ...]  # per tile: region node -> rows computed / rows of the node
    in_bytes: tuple[int, ...]  # per tile: bytes of the entry-tensor rows it needs (halo included)
    out_bytes: tuple[int, ...]  # per tile: bytes of the exit-tensor rows it produces


@dataclass(frozen=True)
class Tiling:
    """A region split into row stripes: the rewritten graph and which new nodes play which part."""

    graph: Graph  # the rewritten, annotated graph; its outputs equal the original's
    region: tuple[str, ...]  # original region node names, in graph order
    scatter: tuple[tuple[str, ...], ...]  # per tile: the slicing nodes feeding it (one per entry tensor)
    tiles: tuple[tuple[str, ...], ...]  # per tile: its compute nodes (pads, row slices, convs, ...)
    gather: tuple[str, ...]  # the concatenation nodes, one per exit tensor
    # new tile node -> (original region node, fraction of its rows); pads, row slices and clones
    # serve a region node too but do none of its work, so they carry fraction 0.0
    origin: dict[str, tuple[str, float]]
    cost: TileCost


# ---------------------------------------------------------------------------------------------
# Per-node row behaviour (the rules are graph/ops.py's `row_local`)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Op:
    name: str
    h: int  # output rows
    row_bytes: int  # bytes of one output row (all batches and channels)
    inputs: tuple[str, ...]  # inputs that carry rows (for a window: the data input only)
    window: Window | None  # None: output row r needs row r of every input
    inplace: bool


class _Analysis:
    """Per-graph caches: fx nodes by name, users, per-node row behaviour."""

    def __init__(self, graph: Graph) -> None:
        self.fx = {n.name: n for n in graph.gm.graph.nodes}
        self.pos = {name: i for i, name in enumerate(graph.nodes)}
        self.users: dict[str, list[str]] = {name: [] for name in graph.nodes}
        for info in graph.nodes.values():
            for src in info.inputs:
                self.users[src].append(info.name)
        self.ops: dict[str, _Op | str] = {}
        self.regions: dict[tuple[str, ...], _Region] = {}


_MAX_REGIONS = 512
_CACHE: weakref.WeakKeyDictionary[Graph, _Analysis] = weakref.WeakKeyDictionary()


def _analysis(graph: Graph) -> _Analysis:
    a = _CACHE.get(graph)
    if a is None:
        a = _CACHE[graph] = _Analysis(graph)
    return a


def _op(graph: Graph, name: str) -> _Op | str:
    """The node's row behaviour, or why it has none (cached)."""
    a = _analysis(graph)
    got = a.ops.get(name)
    if got is None:
        got = a.ops[name] = _describe(graph, a, name)
    return got


def _describe(graph: Graph, a: _Analysis, name: str) -> _Op | str:
    if name not in a.fx:
        return "unknown node"
    rule = row_local(graph, a.fx[name])
    if isinstance(rule, str):
        return rule
    info = graph.nodes[name]
    h = info.shape[2]
    return _Op(name, h, info.out_bytes // h, rule.inputs, rule.window, rule.inplace)


# ---------------------------------------------------------------------------------------------
# Public queries
# ---------------------------------------------------------------------------------------------


def is_row_local(graph: Graph, node: str) -> bool:
    """Can `node` compute any stripe of its output rows from a stripe (plus halo) of its inputs?

    True for 2-D conv (zeros padding), max/avg pool (when exact per stripe), eval-mode BN/dropout,
    element-wise activations, same-shape add/mul and channel concatenation on 4-D tensors.
    """
    return isinstance(_op(graph, node), _Op)


def row_local_blocks(graph: Graph) -> list[bool]:
    """Per chain block: could it sit inside a spatially tiled region (all its nodes row-local)?"""
    return [all(is_row_local(graph, n) for n in b.nodes) for b in graph.chain()]


def region_of_blocks(graph: Graph, first: int, last: int) -> tuple[str, ...]:
    """Compute node names of chain blocks first..last inclusive (a convex region by construction)."""
    blocks = graph.chain()
    if not 0 <= first <= last < len(blocks):
        raise UserError(f"blocks: expected 0 <= first <= last < {len(blocks)}, got first={first}, last={last}")
    return tuple(n for b in blocks[first:last + 1] for n in b.nodes)


# ---------------------------------------------------------------------------------------------
# Regions and row propagation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Region:
    order: tuple[str, ...]  # region nodes in graph order
    ops: dict[str, _Op]
    entries: tuple[str, ...]  # outside tensors the region reads, first use first
    entry_rows: dict[str, tuple[int, int]]  # entry -> (rows, bytes per row)
    exits: tuple[str, ...]  # region nodes read outside the region (or unread), in graph order


def _region(graph: Graph, region: Sequence[str]) -> _Region:
    """Validate a region once and cache what row propagation needs."""
    a = _analysis(graph)
    if isinstance(region, str):
        region = (region,)
    names = set(region)
    if not names:
        raise UserError("region: expected at least one node, got none")
    key = tuple(sorted(names, key=lambda n: a.pos.get(n, -1)))
    got = a.regions.get(key)
    if got is not None:
        return got
    for n in key:
        if n not in graph.nodes:
            raise UserError(f"region: node {n!r} is not in graph {graph.name}")
    ops: dict[str, _Op] = {}
    for n in key:
        op = _op(graph, n)
        if isinstance(op, str):
            info = graph.nodes[n]
            raise UserError(f"region: node {n!r} ({info.target}) is not row-local: {op}")
        ops[n] = op
    # Convex: nothing reachable from the region through outside nodes feeds the region again.
    seen: set[str] = set()
    stack = [(u, n) for n in key for u in a.users[n] if u not in names]
    while stack:
        w, via = stack.pop()
        if w in seen:
            continue
        seen.add(w)
        for u in a.users[w]:
            if u in names:
                raise UserError(f"region: not convex: {u!r} reads {w!r}, which is outside the region "
                                f"but depends on region node {via!r}")
            stack.append((u, via))
    entries = tuple(dict.fromkeys(src for n in key for src in ops[n].inputs if src not in names))
    entry_rows = {}
    for e in entries:
        s = graph.nodes[e].shape
        assert s is not None and len(s) == 4  # guaranteed by the row-local check of its readers
        entry_rows[e] = (s[2], graph.nodes[e].out_bytes // s[2])
    exits = tuple(n for n in key if not a.users[n] or any(u not in names for u in a.users[n]))
    got = _Region(key, ops, entries, entry_rows, exits)
    if len(a.regions) >= _MAX_REGIONS:  # planners try many regions; keep the cache bounded
        a.regions.clear()
    a.regions[key] = got
    return got


def _check_shares(shares: Sequence[float]) -> list[float]:
    try:
        values = [float(s) for s in shares]
    except (TypeError, ValueError):
        raise UserError(f"shares: expected a sequence of positive numbers, got {shares!r}") from None
    if not values or not all(math.isfinite(s) and s > 0 for s in values):
        raise UserError(f"shares: expected one positive, finite weight per tile, got {list(shares)!r}")
    return values


_Rows = dict[str, tuple[int, int]]


def _plan(r: _Region, shares: Sequence[float]) -> tuple[list[_Rows], list[_Rows]]:
    """Per tile: rows each region node and entry must hold, and each exit's stripe."""
    values = _check_shares(shares)
    k = len(values)
    stripes: dict[str, list[tuple[int, int]]] = {}
    for e in r.exits:
        h = r.ops[e].h
        if k > h:
            raise UserError(f"shares: {k} tiles but exit tensor {e!r} has only {h} rows")
        stripes[e] = _stripes(h, values)
    reqs, outs = [], []

    def height(u: str) -> int:
        return r.entry_rows[u][0] if u in r.entry_rows else r.ops[u].h

    def need(v: str, u: str, lo: int, hi: int) -> tuple[int, int] | None:
        w = r.ops[v].window
        return None if w is None else w.need(lo, hi)

    for t in range(k):
        got = required_ranges(r.order, {e: stripes[e][t] for e in r.exits}, lambda v: r.ops[v].inputs, need, height)
        req = {v: got[v] for v in (*r.order, *r.entries)}
        reqs.append(req)
        outs.append({e: stripes[e][t] for e in r.exits})
    return reqs, outs


def _cost(r: _Region, reqs: list[_Rows], outs: list[_Rows]) -> TileCost:
    first = r.exits[0]
    return TileCost(
        rows=tuple(o[first] for o in outs),
        node_fraction=tuple({v: (req[v][1] - req[v][0]) / r.ops[v].h for v in r.order} for req in reqs),
        in_bytes=tuple(sum((req[e][1] - req[e][0]) * r.entry_rows[e][1] for e in r.entries) for req in reqs),
        out_bytes=tuple(sum((hi - lo) * r.ops[e].row_bytes for e, (lo, hi) in o.items()) for o in outs),
    )


def tile_cost(graph: Graph, region: Sequence[str], shares: Sequence[float]) -> TileCost:
    """Rows, per-node work fractions and bytes in/out of each tile, from shapes alone (fast, cached).

    Tile t gets a contiguous stripe of each exit tensor's rows, in proportion to ``shares[t]``
    (largest-remainder rounding, at least one row each); ``rows`` are those of the first exit
    tensor in graph order. Fractions over tiles sum to >= 1: the excess is the recomputed halo.
    """
    r = _region(graph, region)
    reqs, outs = _plan(r, shares)
    return _cost(r, reqs, outs)


# ---------------------------------------------------------------------------------------------
# Graph rewrite
# ---------------------------------------------------------------------------------------------


def _ident(name: str) -> str:
    """The name as fx would spell it (so the check that fx kept it means something)."""
    name = re.sub(r"[^0-9a-zA-Z_]", "_", name)
    return f"_{name}" if name[:1].isdigit() else name


class _Builder:
    """Emits the tiled graph, one tile at a time; checks every requested name comes out unchanged."""

    def __init__(self, graph: Graph, r: _Region) -> None:
        old = graph.gm.graph
        self.r = r
        self.g = fx.Graph()
        self.g._codegen = copy.deepcopy(old._codegen)
        self.taken = {n.name for n in old.nodes}
        self.fx = {n.name: n for n in old.nodes}
        self.env: dict[fx.Node, fx.Node] = {}  # old node -> new node (outside the region)
        self.attrs: dict[str, fx.Node] = {}
        self.origin: dict[str, tuple[str, float]] = {}
        # per tile state, reset by `begin`
        self.t = 0
        self.names: list[str] = []
        self.held: dict[str, tuple[fx.Node, int, int]] = {}  # value -> (node, lo, hi) in this tile
        self.views: set[fx.Node] = set()
        self.slices: dict[tuple[str, int, int], fx.Node] = {}

    # -- names ---------------------------------------------------------------------------------
    def _fresh(self, name: str) -> str:
        name = _ident(name)
        base, i = name, 1
        while name in self.taken:
            i += 1
            name = f"{base}__{i}"
        self.taken.add(name)
        return name

    def node(self, op: str, target: Any, args: tuple, kwargs: dict[str, Any] | None = None, *,
             name: str) -> fx.Node:
        name = self._fresh(name)
        n = self.g.create_node(op, target, args, kwargs or {}, name=name)
        if n.name != name:  # fx renamed it: names are how plans refer to nodes, so this is a bug
            raise RuntimeError(f"tiles: node {name!r} came out as {n.name!r}")
        return n

    def copy(self, old: fx.Node) -> None:
        n = self.g.node_copy(old, self.env.__getitem__)
        if n.name != old.name:
            raise RuntimeError(f"tiles: node {old.name!r} came out as {n.name!r}")
        self.env[old] = n

    def attr(self, value: Any) -> Any:
        if isinstance(value, Param):
            got = self.attrs.get(value.target)
            if got is None:
                got = self.node("get_attr", value.target, (), name=value.target.replace(".", "_") + "__tiled")
                self.attrs[value.target] = got
            return got
        return fx.node.map_arg(value, self.env.__getitem__)

    # -- one tile ------------------------------------------------------------------------------
    def _add(self, n: fx.Node, owner: str, frac: float) -> fx.Node:
        self.names.append(n.name)
        self.origin[n.name] = (owner, frac)
        return n

    def fetch(self, u: str, a: int, b: int, owner: str) -> fx.Node:
        """A node holding exactly rows [a, b) of value u in the current tile."""
        node, lo, hi = self.held[u]
        if (a, b) == (lo, hi):
            return node
        got = self.slices.get((u, a, b))
        if got is None:
            got = self._add(self.node("call_function", operator.getitem,
                                      (node, (slice(None), slice(None), slice(a - lo, b - lo))),
                                      name=f"{u}__t{self.t}__r{a}_{b}"), owner, 0.0)
            self.slices[(u, a, b)] = got
            self.views.add(got)
        return got

    def begin(self, t: int, req: dict[str, tuple[int, int]]) -> list[str]:
        """Start tile t: slice every entry tensor (the scatter); returns the slice names."""
        self.t, self.names, self.held, self.views, self.slices = t, [], {}, set(), {}
        out = []
        for e in self.r.entries:
            lo, hi = req[e]
            n = self.node("call_function", operator.getitem,
                          (self.env[self.fx[e]], (slice(None), slice(None), slice(lo, hi))), name=f"{e}__slice_t{t}")
            self.held[e] = (n, lo, hi)
            self.views.add(n)
            out.append(n.name)
        return out

    def compute(self, v: str, lo: int, hi: int) -> None:
        """Tile copy of region node v computing its rows [lo, hi)."""
        op, t = self.r.ops[v], self.t
        w = op.window
        if w is not None:
            u = op.inputs[0]
            h_in = self.r.entry_rows[u][0] if u in self.r.entry_rows else self.r.ops[u].h
            a, b = w.need(lo, hi)
            ca, cb = _clip(a, b, h_in)
            if ca < cb:
                top, bottom = ca - a, b - cb
            else:  # the window sees only padding rows: an empty slice, all fill
                ca = cb = self.held[u][1]
                top, bottom = b - a, 0
            x = self.fetch(u, ca, cb, v)
            if top or bottom or any(w.wpad):
                kw = {"value": w.fill} if w.fill != 0.0 else {}
                x = self._add(self.node("call_function", F.pad, (x, (*w.wpad, top, bottom)), kw,
                                        name=f"{v}__t{t}__pad"), v, 0.0)
            y = self.node("call_function", w.fn, (x, *(self.attr(p) for p in w.args)),
                          {key: self.attr(p) for key, p in w.kwargs.items()}, name=f"{v}__t{t}")
        else:
            orig = self.fx[v]
            rows = set(op.inputs)
            first = True

            def arg(n: fx.Node) -> fx.Node:
                nonlocal first
                if n.name not in rows:
                    return self.env[n]
                x = self.fetch(n.name, lo, hi, v)
                if op.inplace and first and x in self.views:  # never write into another value's rows
                    x = self._add(self.node("call_function", torch.clone, (x,), name=f"{v}__t{t}__clone"), v, 0.0)
                first = False
                return x

            args = fx.node.map_arg(orig.args, arg)
            kwargs = fx.node.map_arg(orig.kwargs, arg)
            y = self.node(orig.op, orig.target, args, kwargs, name=f"{v}__t{t}")
        self._add(y, v, (hi - lo) / op.h)
        self.held[v] = (y, lo, hi)


def tile(graph: Graph, region: Sequence[str], shares: Sequence[float]) -> Tiling:
    """Rewrite `graph` so `region` runs as len(shares) independent row stripes (scatter, tiles, gather).

    Every node outside the region keeps its name and code; the region's exit tensors are replaced
    by their gather nodes. The result is annotated, so it can be costed, split and run like the
    original (`Tiling.graph.split`).
    """
    from dnninfer.graph.capture import annotate

    r = _region(graph, region)
    reqs, outs = _plan(r, shares)
    cost = _cost(r, reqs, outs)
    names, last = set(r.order), r.order[-1]
    b = _Builder(graph, r)
    scatter: list[tuple[str, ...]] = []
    tiles: list[tuple[str, ...]] = []
    gather: list[str] = []

    def emit() -> None:
        parts: dict[str, list[fx.Node]] = {e: [] for e in r.exits}
        for t, req in enumerate(reqs):
            scatter.append(tuple(b.begin(t, req)))
            for v in r.order:
                b.compute(v, *req[v])
            for e in r.exits:
                parts[e].append(b.fetch(e, *outs[t][e], e))
            tiles.append(tuple(b.names))
        for e in r.exits:
            n = b.node("call_function", torch.cat, (parts[e],), {"dim": 2}, name=f"{e}__gather")
            gather.append(n.name)
            b.env[b.fx[e]] = n

    deferred: list[fx.Node] = []
    waiting: set[fx.Node] = set()
    done = False
    for node in graph.gm.graph.nodes:
        if node.name in names:
            if node.name == last:
                emit()
                done = True
                for d in deferred:
                    b.copy(d)
                deferred = []
            continue
        if not done and any(i.name in names or i in waiting for i in node.all_input_nodes):
            deferred.append(node)  # reads the region: must come after the gathers
            waiting.add(node)
            continue
        b.copy(node)

    gm = fx.GraphModule(graph.gm, b.g, class_name=type(graph.gm).__name__)
    for attr_name in ("_out_spec", "_in_spec"):
        if hasattr(graph.gm, attr_name):
            setattr(gm, attr_name, getattr(graph.gm, attr_name))
    tiled = annotate(gm, graph.example_inputs, method=graph.method, name=f"{graph.name}/tiled",
                     param_count=graph.param_count)
    return Tiling(graph=tiled, region=r.order, scatter=tuple(scatter), tiles=tuple(tiles),
                  gather=tuple(gather), origin=b.origin, cost=cost)
