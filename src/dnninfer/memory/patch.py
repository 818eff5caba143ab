"""Patch-based execution inside the one vMCU pool (MCUNetV2, Lin et al., NeurIPS 2021, §3.1).

The memory-heavy first steps of a CNN hold large feature maps. MCUNetV2 runs them *patch by
patch*: the output of the first ``n`` steps (the *exit* tensor) is cut into ``p x q`` spatial
patches, and each patch is computed through the whole prefix from just the input region it needs
(its receptive field; the halo rows and columns shared with neighbours are recomputed), so no
full-size intermediate tensor ever exists. The rest of the network runs step by step as in
`vmcu_fused`. Here everything lives in one circular vMCU pool of ``P`` bytes (research report §1.2):

* **input and exit** (outer arc ``(0, P)``): the input starts at 0; the exit tensor starts ``d``
  bytes below it and grows into input rows no later patch row reads, the segment overlap of
  §1.2 item 3 at patch-row granularity: ``d = max(0, |exit| - |input|, max_i (b_i*so - f_i*si))``
  for patch row ``i`` writing exit rows ``< b_i`` while its patches still read input rows
  ``>= f_i`` (``si``/``so``: bytes per input/exit row);
* **patch buffers** (a nested arc of ``SB`` bytes right after the input): per patch, each step
  writes its output ``d_loc`` bytes below its input (the vMCU shift of that patch's rows, with
  `vmcu.min_shift`), so a patch's chain overlaps too; ``SB`` is the largest footprint;
* **kernel scratch** (tile, line buffer of expanded rows) *inside the pool* as well, each step's in
  a contiguous run free at that step (best fit); ``P`` grows until every run fits. ``peak_bytes``
  is therefore everything the kernels use (``scratch_bytes = 0``), a stricter count than the other
  planners' activations-plus-separate-scratch;
* **the rest** (`vmcu.unit_steps`, `vmcu.place_units`): the vMCU chain from the exit tensor on.

Receptive fields (halos, strides, padding, clipped at the edges) come from `graph/receptive.py`,
the walk the spatial tiler of `partition/tiles.py` uses; rows and columns are independent, so a
patch's region is (its patch row's rows) x (its patch column's columns). MAC overhead is
``macs / base_macs``: multiply-accumulates executed with halos recomputed over layer by layer
(conv, depthwise, pointwise and FC weights; adds and pools count 0).

`run_patch` executes a plan bit-exact against `kernels.reference` (the same row kernels, on
windows cut from the patch and padded with the zero point); the executor's shadow memory checks
every pool byte read and also marks scratch runs, so an unsafe patch plan raises `PlanUnsafe`.
`search`/`fit_budget` pick ``(n, p, q)`` (and the layer-wise planners) under a byte budget.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dnninfer.errors import UserError
from dnninfer.graph.receptive import Band, clip, required_ranges, stripes, window_need
from dnninfer.memory.ir import IR, IBBlock, Layer
from dnninfer.memory.kernels import layer_row
from dnninfer.memory.plan import MemoryPlan, PatchSpec, Step, accounting
from dnninfer.memory.vmcu import Unit, chain_units, min_shift, place_units, unit_steps

__all__ = ["check_layout", "fit_budget", "layer_macs", "network_macs", "plan_geometry", "plan_patch",
           "prefix_lengths", "run_patch", "scratch_runs", "search", "search_rows"]


# -- MACs ----------------------------------------------------------------------------------------------

def pixel_macs(layer: Layer) -> int:
    """Multiply-accumulates per output pixel (conv, depthwise, pointwise, FC; adds and pools: 0)."""
    if layer.kind == "conv":
        return layer.k * layer.kw * layer.cin * layer.cout
    if layer.kind == "dw":
        return layer.k * layer.kw * layer.cout
    if layer.kind == "pw":
        return layer.cin * layer.cout
    if layer.kind == "fc":
        return layer.hin * layer.win * layer.cin * layer.cout
    return 0


def layer_macs(layer: Layer) -> int:
    return layer.hout * layer.wout * pixel_macs(layer)


def network_macs(ir: IR) -> int:
    """MACs of one inference layer by layer."""
    return sum(layer_macs(layer) for layer in ir.layers)


# -- which prefixes can be patched -------------------------------------------------------------------

def _patchable(layer: Layer) -> bool:
    if layer.kind == "fc" or layer.whole_input:
        return False
    # a max-pool window of padding only: the -128 fill would not be the reference's max
    return not (layer.kind == "pool" and layer.pool == "max" and layer.p >= min(layer.k, layer.kw))


def prefix_lengths(ir: IR) -> list[int]:
    """Every ``n`` whose first ``n`` vMCU steps (a fused IB block is one) can run patch by patch: a
    chain of spatial steps (no FC, no global pool) with no tensor read past the prefix but its last
    output. Empty for IRs that are not vMCU chains."""
    try:
        units = chain_units(ir, fused=True)
    except UserError:
        return []
    out = []
    for n, u in enumerate(units, start=1):
        if u.role != "chain" or not all(_patchable(ir.layers[i]) for i in u.layers):
            break
        out.append(n)
    return out


# -- geometry: the band of every prefix tensor per patch row / column --------------------------------

def _walk(ir: IR, layers: tuple[int, ...], exit_: int, bands: Sequence[Band], axis: int) -> list[dict[int, Band]]:
    """Per band of the exit tensor (rows if ``axis == 0`` else columns): the band of every prefix
    tensor and of the input it needs (`graph.receptive.required_ranges`)."""
    order = [ir.layers[i].output for i in layers]

    def inputs(v: int) -> tuple[int, ...]:
        return ir.layers[v - 1].inputs

    def need(v: int, u: int, lo: int, hi: int) -> Band | None:
        layer = ir.layers[v - 1]
        if layer.kind in ("conv", "dw", "pool"):
            return window_need(lo, hi, layer.k if axis == 0 else layer.kw, layer.s, layer.p)
        return None  # pw, add: element-wise along the axis

    def height(u: int) -> int:
        t = ir.tensors[u]
        return t.h if axis == 0 else t.w

    return [required_ranges(order, {exit_: b}, inputs, need, height) for b in bands]


@dataclass(frozen=True)
class Geometry:
    units: tuple[Unit, ...]
    layers: tuple[int, ...]
    exit: int
    rows: tuple[Band, ...]
    cols: tuple[Band, ...]
    rg: tuple[dict[int, Band], ...]  # per patch row: tensor -> row band
    cg: tuple[dict[int, Band], ...]  # per patch column: tensor -> column band

    @property
    def n(self) -> int:
        return len(self.units)


def _geometry(ir: IR, units: Sequence[Unit], rows: Sequence[Band], cols: Sequence[Band]) -> Geometry:
    layers = tuple(i for u in units for i in u.layers)
    exit_ = units[-1].output
    rg = _walk(ir, layers, exit_, rows, 0)
    cg = _walk(ir, layers, exit_, cols, 1)
    return Geometry(tuple(units), layers, exit_, tuple(rows), tuple(cols), tuple(rg), tuple(cg))


def _macs(ir: IR, g: Geometry) -> int:
    """MACs of the patched prefix: per layer, its output's rows summed over patch rows times its
    columns summed over patch columns (the bands are separable)."""
    total = 0
    for i in g.layers:
        y = ir.layers[i].output
        rows = sum(b[y][1] - b[y][0] for b in g.rg)
        cols = sum(b[y][1] - b[y][0] for b in g.cg)
        total += rows * cols * pixel_macs(ir.layers[i])
    return total


def _shift_big(ir: IR, exit_: int, rows: Sequence[Band], rg: Sequence[dict[int, Band]]) -> int:
    """d between the input and the exit tensor (module docstring): patch row ``i`` writes exit
    rows below ``b_i`` while its patches still read input rows from ``rg[i][input][0]`` on."""
    x, e = ir.tensors[ir.input], ir.tensors[exit_]
    d = max(0, e.size - x.size)
    for (_, b), band in zip(rows, rg, strict=True):
        d = max(d, b * e.row_bytes - band[ir.input][0] * x.row_bytes)
    return d


# -- one patch's chain -------------------------------------------------------------------------------

def _first_needed(ir: IR, unit: Unit, t: np.ndarray) -> np.ndarray:
    """First input row (global) still needed once the unit's output rows below ``t`` are stored."""
    if unit.block is not None:
        b = unit.block
        dw = ir.layers[b.dw]
        if b.expand is not None:  # rows up to hi(t - 1) are expanded already
            fn = np.clip((t - 1) * dw.s - dw.p + dw.k, 0, dw.hin)
        else:
            fn = np.clip(t * dw.s - dw.p, 0, dw.hin)
        return np.minimum(fn, t) if b.residual else fn
    layer = ir.layers[unit.layers[0]]
    return np.array([layer.first_needed(int(v)) for v in t], dtype=np.int64)


def _scratch(ir: IR, unit: Unit, out_cols: Band, cg: dict[int, Band]) -> int:
    """Scratch of one patch step: output-row tile; fused: + depthwise row + line buffer of k
    expanded rows (the `vmcu_fused` kernel's, at the patch's width)."""
    wo = out_cols[1] - out_cols[0]
    if unit.block is None:
        return wo * ir.layers[unit.layers[0]].cout
    dw, out = ir.layers[unit.block.dw], ir.layers[unit.block.last]
    line = 0
    if unit.block.expand is not None:
        ca, cb = cg[dw.inputs[0]]
        line = dw.k * (cb - ca) * dw.cin
    return line + wo * dw.cout + wo * out.cout


@dataclass(frozen=True)
class _Local:
    """Step ``u`` of one patch: bytes of its input/output patch buffers (0 when that tensor is the
    global input or exit), its in-patch shift and its scratch."""

    s_in: int
    s_out: int
    shift: int
    scratch: int

    @property
    def footprint(self) -> int:
        if self.s_in and self.s_out:
            return max(self.s_in + self.shift, self.s_out)
        return self.s_in or self.s_out


def _region_bytes(ir: IR, t: int, rb: dict[int, Band], cb: dict[int, Band]) -> int:
    (r0, r1), (c0, c1) = rb[t], cb[t]
    return (r1 - r0) * (c1 - c0) * ir.tensors[t].c


def _patch_chain(ir: IR, g: Geometry, i: int, j: int) -> list[_Local]:
    rb, cb = g.rg[i], g.cg[j]
    n = len(g.units)
    out = []
    for u, unit in enumerate(g.units):
        x, y = unit.main, unit.output
        s_in = _region_bytes(ir, x, rb, cb) if u > 0 else 0
        s_out = _region_bytes(ir, y, rb, cb) if u < n - 1 else 0
        d = 0
        if s_in and s_out:
            (r0, r1), (xr0, xr1) = rb[y], rb[x]
            t = np.arange(r0 + 1, r1, dtype=np.int64)
            fn = np.clip(_first_needed(ir, unit, t) - xr0, 0, xr1 - xr0)
            si = (cb[x][1] - cb[x][0]) * ir.tensors[x].c
            so = (cb[y][1] - cb[y][0]) * ir.tensors[y].c
            d = min_shift(fn, si, so, xr1 - xr0)
        out.append(_Local(s_in, s_out, d, _scratch(ir, unit, cb[y], cb)))
    return out


# -- placement ---------------------------------------------------------------------------------------

def _pieces(base: int, length: int, size: int, va: int, n: int) -> list[Band]:
    from dnninfer.memory.executor import arc_pieces

    return [(p, p + c) for p, _, c in arc_pieces(base, length, size, va, n)] if n else []


def _fit(busy: Iterable[Band], size: int, need: int) -> tuple[int | None, int]:
    """Best-fit start of ``need`` contiguous free bytes in ``[0, size)`` around the ``busy`` runs,
    or None; and the largest free run."""
    if need == 0:
        return 0, size
    best, largest, at = None, 0, 0
    for lo, hi in sorted([*busy, (size, size)]):
        gap = lo - at
        if gap > largest:
            largest = gap
        if gap >= need and (best is None or gap < best[1]):
            best = (at, gap)
        at = max(at, hi)
    return (best[0] if best else None), largest


def _busy_bytes(busy: list[Band]) -> int:
    total, at = 0, 0
    for lo, hi in sorted(busy):
        lo = max(lo, at)
        if hi > lo:
            total += hi - lo
            at = hi
    return total


@dataclass
class _Layout:
    pool: int
    offsets: dict[int, int]
    arcs: dict[int, tuple[int, int]]
    scratch_at: list[list[int]]
    tail_at: list[int]
    live: list[int]  # per layer, bytes live while it runs (scratch included)
    deficit: int  # bytes missing for the worst scratch run that did not fit (0: all placed)


def _layout(ir: IR, g: Geometry, chains: dict[tuple[int, int], list[_Local]],
            local_va: dict[tuple[int, int], list[int]], sb: int, d: int, tail: Sequence[Unit],
            tail_steps: Sequence[Step], pool: int) -> _Layout:
    x, e = ir.tensors[ir.input], ir.tensors[g.exit]
    offsets = {ir.input: 0, g.exit: (pool - d) % pool}
    arcs = {ir.input: (0, pool), g.exit: (0, pool)}
    place_units(ir, list(tail), list(tail_steps), pool, offsets, arcs)
    live = [0] * len(ir.layers)
    deficit = 0
    scratch_at: list[list[int]] = []
    for i, (_, b) in enumerate(g.rows):
        keep_in = (g.rg[i][ir.input][0] * x.row_bytes, x.size)
        exit_runs = _pieces(0, pool, pool, offsets[g.exit], b * e.row_bytes)
        for j in range(len(g.cols)):
            at_k = []
            for u, loc in enumerate(chains[i, j]):
                busy = [keep_in, *exit_runs]
                if loc.s_in:
                    busy += _pieces(x.size, sb, pool, local_va[i, j][u - 1], loc.s_in)
                if loc.s_out:
                    busy += _pieces(x.size, sb, pool, local_va[i, j][u], loc.s_out)
                at, largest = _fit(busy, pool, loc.scratch)
                if at is None:
                    deficit = max(deficit, loc.scratch - largest)
                    at = 0
                at_k.append(at)
                held = _busy_bytes(busy) + loc.scratch
                for li in g.units[u].layers:
                    live[li] = max(live[li], held)
            scratch_at.append(at_k)
    tail_at = []
    for u, st in zip(tail, tail_steps, strict=True):
        busy = []
        for t in dict.fromkeys(v for v in (u.main, u.output, u.skip) if v is not None):
            busy += _pieces(*arcs[t], pool, offsets[t], ir.tensors[t].size)
        at, largest = _fit(busy, pool, st.scratch)
        if at is None:
            deficit = max(deficit, st.scratch - largest)
            at = 0
        tail_at.append(at)
        for li in st.layers:
            live[li] = _busy_bytes(busy) + st.scratch
    return _Layout(pool, offsets, arcs, scratch_at, tail_at, live, deficit)


def plan_patch(ir: IR, *, n: int, p: int, q: int | None = None) -> MemoryPlan:
    """Patch plan: the first ``n`` vMCU steps run as ``p x q`` patches of their output (``q``
    defaults to ``p``), the rest as the `vmcu_fused` chain, all in one circular pool with scratch
    inside (module docstring). ``n`` must be one of `prefix_lengths`."""
    q = p if q is None else q
    ok = prefix_lengths(ir)
    if n not in ok:
        raise UserError(f"patch planner: expected n (leading steps run patch by patch) in "
                        f"{_ranges(ok) or 'none: the IR is not a chain of spatial steps'}, got {n}")
    units = chain_units(ir, fused=True)
    exit_t = ir.tensors[units[n - 1].output]
    if not (1 <= p <= exit_t.h and 1 <= q <= exit_t.w):
        raise UserError(f"patch planner: expected 1 <= p <= {exit_t.h} and 1 <= q <= {exit_t.w} patches of the "
                        f"{exit_t.h}x{exit_t.w} output of step {n} ({exit_t.name!r}), got p={p}, q={q}")
    rows = stripes(exit_t.h, [1.0] * p)
    cols = stripes(exit_t.w, [1.0] * q)
    return _plan(ir, units, _geometry(ir, units[:n], rows, cols))


def _plan(ir: IR, units: list[Unit], g: Geometry) -> MemoryPlan:
    n = len(g.units)
    x = ir.tensors[ir.input]
    d = _shift_big(ir, g.exit, g.rows, g.rg)
    chains: dict[tuple[int, int], list[_Local]] = {}
    local_va: dict[tuple[int, int], list[int]] = {}
    sb = 0
    for i in range(len(g.rows)):
        for j in range(len(g.cols)):
            chain = chains[i, j] = _patch_chain(ir, g, i, j)
            va = [0]
            for loc in chain[1:-1]:
                va.append(va[-1] - loc.shift)
            local_va[i, j] = va[: n - 1]
            sb = max(sb, *(loc.footprint for loc in chain))
    sb = max(sb, 1)
    local_va = {k: [v % sb for v in vas] for k, vas in local_va.items()}
    all_steps = unit_steps(ir, units)
    tail, tail_steps = units[n:], all_steps[n:]
    pool = max(x.size + sb + d, *(s.footprint + s.scratch for s in tail_steps), 1)
    for _ in range(256):
        lay = _layout(ir, g, chains, local_va, sb, d, tail, tail_steps, pool)
        if not lay.deficit:
            break
        pool += lay.deficit
    else:  # pragma: no cover - each round grows the pool; this bound is never reached in practice
        raise RuntimeError("patch planner: scratch placement did not converge")
    prefix_scratch = max(loc.scratch for chain in chains.values() for loc in chain)
    prefix_layers = g.layers
    steps = (Step(prefix_layers, "patched", d, max(lay.live[i] for i in prefix_layers), prefix_scratch), *tail_steps)
    spec = PatchSpec(
        units=tuple(u.layers for u in g.units), exit=g.exit, rows=g.rows, cols=g.cols, shift=d,
        local_arc=(x.size, sb),
        local_va=tuple(tuple(local_va[i, j]) for i in range(len(g.rows)) for j in range(len(g.cols))),
        scratch_at=tuple(tuple(a) for a in lay.scratch_at), tail_scratch_at=tuple(lay.tail_at),
        macs=_macs(ir, g) + sum(layer_macs(ir.layers[i]) for u in tail for i in u.layers),
        base_macs=network_macs(ir))
    return MemoryPlan(
        planner="patch", peak_bytes=lay.pool, scratch_bytes=0, mode="patch", offsets=lay.offsets,
        sizes={t: ir.tensors[t].size for t in lay.offsets}, steps=steps, live_per_layer=tuple(lay.live),
        accounting=accounting(
            scratch="inside the pool (counted in peak_bytes): output-row tile, depthwise row and line buffer "
                    "of k expanded rows per step, placed in a run free at that step",
            segment_bytes=1, pool="circular; patch buffers in a nested arc after the input",
            patches=f"first {n} steps as {len(g.rows)}x{len(g.cols)} patches of {ir.tensors[g.exit].name!r}",
            mac_overhead=round(spec.mac_overhead, 4)),
        arcs=lay.arcs, patch=spec,
    )


def _ranges(ns: Sequence[int]) -> str:
    return f"{ns[0]}..{ns[-1]}" if ns else ""


# -- execution ---------------------------------------------------------------------------------------

class _Buf:
    """Rows x columns of tensor ``t`` held at ``va0`` (its element ``(r0, c0)``) of an arc, ``width``
    columns per stored row: the global input/exit (whole rows) or one patch's buffer."""

    def __init__(self, ir: IR, t: int, arc: Any, va0: int, r0: int, c0: int, width: int, shadow: Any) -> None:
        ten = ir.tensors[t]
        self.t, self.arc, self.va0, self.r0, self.c0 = t, arc, va0, r0, c0
        self.c, self.stride, self.row_elems, self.shadow = ten.c, width * ten.c, ten.w * ten.c, shadow

    def _va(self, r: int, c: int) -> int:
        return self.va0 + (r - self.r0) * self.stride + (c - self.c0) * self.c

    def read(self, lo: int, hi: int, ca: int, cb: int, who: str) -> np.ndarray:
        n = (cb - ca) * self.c
        out = np.empty((hi - lo, n), dtype=np.int8)
        for r in range(lo, hi):
            va = self._va(r, ca)
            if self.shadow is not None:
                for phys, off, cnt in self.arc._pieces(va, n):
                    e0 = r * self.row_elems + ca * self.c + off
                    self.shadow.check(who, self.t, slice(phys, phys + cnt), np.arange(e0, e0 + cnt))
            out[r - lo] = self.arc.read(va, n)
        return out.reshape(hi - lo, cb - ca, self.c)

    def store(self, r: int, ca: int, data: np.ndarray) -> None:
        va = self._va(r, ca)
        self.arc.write(va, data)
        if self.shadow is not None:
            for phys, off, cnt in self.arc._pieces(va, data.size):
                e0 = r * self.row_elems + ca * self.c + off
                self.shadow.write(self.t, slice(phys, phys + cnt), np.arange(e0, e0 + cnt))


@functools.lru_cache(maxsize=4096)
def _narrow(layer: Layer, win: int, wout: int) -> Layer:
    """`layer` computing one output row of ``wout`` columns from an explicitly padded
    ``(k, win, cin)`` window (no padding of its own): same weights, same arithmetic."""
    return dataclasses.replace(layer, hin=layer.k, win=win, hout=1, wout=wout, p=0)


def _window_row(layer: Layer, t: int, cols: Band, src: _Buf, who: str, data: np.ndarray | None = None,
                rows: Band | None = None) -> np.ndarray:
    """Output row ``t``, columns ``cols``, of a conv/dw/pool from the input rows and columns it
    needs (``data`` = those rows if already at hand, e.g. from a line buffer), padded by hand."""
    c0, c1 = cols
    top, left = t * layer.s - layer.p, c0 * layer.s - layer.p
    width = (c1 - c0 - 1) * layer.s + layer.kw
    lo, hi = rows if rows is not None else layer.needed_rows(t)
    ca, cb = clip(left, left + width, layer.win)
    # zero padding is the input zero point (real 0); for max pool -128 never beats a real value
    fill = -128 if layer.kind == "pool" else layer.quant.in_zp[0]
    xp = np.full((layer.k, width, layer.cin), fill, dtype=np.int8)
    xp[lo - top: hi - top, ca - left: cb - left] = src.read(lo, hi, ca, cb, who) if data is None else data
    return layer_row(_narrow(layer, width, c1 - c0), 0, xp)


def _run_layer(layer: Layer, bufs: dict[int, _Buf], rows: Band, cols: Band, tile: np.ndarray, who: str) -> None:
    c0, c1 = cols
    out = bufs[layer.output]
    for t in range(*rows):
        if layer.kind in ("conv", "dw", "pool"):
            y = _window_row(layer, t, cols, bufs[layer.inputs[0]], who)
        else:  # pw, add: element-wise along rows and columns
            ins = [bufs[v].read(t, t + 1, c0, c1, who) for v in layer.inputs]
            y = layer_row(layer, t, *ins)
        tile[:] = y.ravel()
        out.store(t, c0, tile)


def _run_fused(ir: IR, block: IBBlock, bufs: dict[int, _Buf], rows: Band, cols: Band, in_cols: Band,
               scratch: np.ndarray, who: str) -> None:
    """`executor._fused_ib` on one patch: expanded rows of the patch's width in a k-row line buffer."""
    dw, proj = ir.layers[block.dw], ir.layers[block.project]
    expand = ir.layers[block.expand] if block.expand is not None else None
    add = ir.layers[block.add] if block.add is not None else None
    x, out = bufs[block.block_input], bufs[ir.layers[block.last].output]
    (c0, c1), (ea, eb) = cols, in_cols
    wo = c1 - c0
    used = 0
    line = None
    if expand is not None:
        line = scratch[: dw.k * (eb - ea) * dw.cin].reshape(dw.k, eb - ea, dw.cin)
        used = line.size
    dw_row = scratch[used: used + wo * dw.cout].reshape(wo, dw.cout)
    tile = scratch[used + wo * dw.cout: used + wo * dw.cout + wo * proj.cout]
    expanded = dw.needed_rows(rows[0])[0]
    for t in range(*rows):
        lo, hi = dw.needed_rows(t)
        data = None
        if expand is not None:
            while expanded < hi:  # each row of the patch's expanded band exactly once, in order
                line[expanded % dw.k] = layer_row(expand, expanded, x.read(expanded, expanded + 1, ea, eb, who))
                expanded += 1
            data = np.stack([line[r % dw.k] for r in range(lo, hi)])
        dw_row[...] = _window_row(dw, t, cols, x, who, data, (lo, hi))
        y = layer_row(proj, t, dw_row[None])
        if add is not None:
            skip = x.read(t, t + 1, c0, c1, who)
            first, second = (skip, y[None]) if add.inputs[0] == block.block_input else (y[None], skip)
            y = layer_row(add, t, first, second)
        tile[:] = y.ravel()
        out.store(t, c0, tile)


def _scratch_view(pool: np.ndarray, at: int, size: int, shadow: Any, who: str) -> np.ndarray:
    if at < 0 or at + size > pool.size:
        raise UserError(f"executor: patch plan puts the scratch of {who} at [{at}, {at + size}), outside the "
                        f"{pool.size}-byte pool; refusing to run")
    if shadow is not None and size:
        shadow.scratch(slice(at, at + size))
    return pool[at: at + size]


def plan_geometry(ir: IR, plan: MemoryPlan) -> Geometry:
    """The prefix geometry of a ``patch`` plan: per patch row (column), the row (column) band of
    every prefix tensor, recomputed from the exit's bands (`graph.receptive`), as `run_patch` and
    the C generator (`codegen`) use it. A plan whose prefix steps do not match the IR is refused."""
    spec = plan.patch
    if spec is None:
        raise UserError(f"patch plans: plan {plan.planner} ({plan.mode}) has no patched prefix")
    units = chain_units(ir, fused=True)
    if tuple(u.layers for u in units[: spec.n]) != spec.units:
        raise UserError(f"executor: patch plan's prefix steps {spec.units} do not match IR {ir.name!r}")
    return _geometry(ir, units[: spec.n], spec.rows, spec.cols)


def scratch_runs(ir: IR, plan: MemoryPlan, g: Geometry | None = None) -> list[tuple[str, int, int]]:
    """``(who, start, bytes)`` of every kernel-scratch run a ``patch`` plan puts in its pool: per
    patch and prefix step, then per tail step (the layout `run_patch` and the generated C use)."""
    spec = plan.patch
    g = plan_geometry(ir, plan) if g is None else g
    out = []
    for i in range(len(g.rows)):
        for j in range(len(g.cols)):
            k = i * len(g.cols) + j
            for u, unit in enumerate(g.units):
                y = unit.output
                out.append((f"patch ({i}, {j}) step {ir.layers[unit.layers[0]].name!r}", spec.scratch_at[k][u],
                            _scratch(ir, unit, g.cg[j][y], g.cg[j])))
    for at, step in zip(spec.tail_scratch_at, plan.steps[1:], strict=True):
        out.append((f"step {ir.layers[step.layers[0]].name!r}", at, step.scratch))
    return out


def check_layout(ir: IR, plan: MemoryPlan) -> None:
    """Refuse a ``patch`` plan whose patch-buffer arc or a kernel's scratch run leaves its pool, or
    whose tables do not cover every patch (`executor.required_bytes` calls it before any run or
    code generation)."""
    spec = plan.patch
    g = plan_geometry(ir, plan)
    size = plan.peak_bytes
    base, length = spec.local_arc
    if not (base >= 0 and length > 0 and base + length <= size):
        raise UserError(f"executor: patch plan {plan.planner}: patch-buffer arc {spec.local_arc} outside the "
                        f"{size}-byte pool; refusing it")
    k = len(g.rows) * len(g.cols)
    if (len(spec.local_va) != k or len(spec.scratch_at) != k or any(len(v) != g.n - 1 for v in spec.local_va)
            or any(len(a) != g.n for a in spec.scratch_at) or len(spec.tail_scratch_at) != len(plan.steps) - 1):
        raise UserError(f"executor: patch plan {plan.planner}: per-patch tables do not cover {k} patches of "
                        f"{g.n} steps and {len(plan.steps) - 1} tail steps; refusing it")
    for who, at, n in scratch_runs(ir, plan, g):
        if at < 0 or at + n > size:
            raise UserError(f"executor: patch plan puts the scratch of {who} at [{at}, {at + n}), outside the "
                            f"{size}-byte pool; refusing to run")


def run_patch(ir: IR, plan: MemoryPlan, x: np.ndarray, pool: np.ndarray, shadow: Any = None) -> np.ndarray:
    """Execute a ``patch`` plan in ``pool`` (``peak_bytes``; scratch inside): each patch through the
    prefix, row-major, then the tail step by step. Called by `executor.run`."""
    from dnninfer.memory.executor import Arc, _fused_ib, _layer, _Pool

    spec = plan.patch
    units = chain_units(ir, fused=True)
    n = spec.n
    g = plan_geometry(ir, plan)
    mem = _Pool(ir, plan, pool, shadow)
    mem.store(ir.input, 0, x)
    local = Arc(pool, *spec.local_arc)
    glob = {t: _Buf(ir, t, mem.arcs[t], plan.offsets[t], 0, 0, ir.tensors[t].w, shadow) for t in (ir.input, g.exit)}
    for i in range(len(g.rows)):
        for j in range(len(g.cols)):
            k = i * len(g.cols) + j
            rb, cb = g.rg[i], g.cg[j]
            bufs = dict(glob)
            for u, unit in enumerate(g.units[:-1]):
                y = unit.output
                bufs[y] = _Buf(ir, y, local, spec.local_va[k][u], rb[y][0], cb[y][0], cb[y][1] - cb[y][0], shadow)
            for u, unit in enumerate(g.units):
                who = f"patch ({i}, {j}) step {ir.layers[unit.layers[0]].name!r}"
                y = unit.output
                scratch = _scratch_view(pool, spec.scratch_at[k][u], _scratch(ir, unit, cb[y], cb), shadow, who)
                if unit.block is not None:
                    dwin = ir.layers[unit.block.dw].inputs[0]
                    _run_fused(ir, unit.block, bufs, rb[y], cb[y], cb[dwin], scratch, who)
                else:
                    _run_layer(ir.layers[unit.layers[0]], bufs, rb[y], cb[y], scratch, who)
    for j, (unit, step) in enumerate(zip(units[n:], plan.steps[1:], strict=True)):
        scratch = _scratch_view(pool, spec.tail_scratch_at[j], step.scratch, shadow,
                                f"step {ir.layers[unit.layers[0]].name!r}")
        if unit.block is not None:
            _fused_ib(ir, unit.block, mem, scratch)
        else:
            _layer(ir, step, mem, scratch)
    out = ir.tensors[ir.output]
    return mem.rows(ir.output, 0, out.h, "the final output read").reshape(out.shape)


# -- choosing (n, p, q) ------------------------------------------------------------------------------

def _counts(h: int) -> list[int]:
    """Patch counts tried along an axis of ``h``: 1..8, and those giving bands of 1..8 rows."""
    return sorted({c for c in (*range(1, 9), *(math.ceil(h / r) for r in range(1, 9))) if 1 <= c <= h})


@dataclass(frozen=True)
class Candidate:
    """One ``(n, p, q)`` setting, costed cheaply: its MAC overhead and a lower bound on its peak."""

    n: int
    p: int
    q: int
    mac_overhead: float
    lower_bound: int


def candidates(ir: IR, ns: Sequence[int] | None = None, ps: Sequence[int] | None = None,
               qs: Sequence[int] | None = None, *, square: bool = False) -> list[Candidate]:
    """Every ``(n, p, q)`` tried by the search (``ps``/``qs`` default to `_counts` of the exit's
    height and width; ``square``: only ``q == p``), with its exact MAC overhead and a lower bound
    on its peak: the input, the shift d and the largest patch buffer side by side, or the tail's
    largest step."""
    ok = prefix_lengths(ir)
    units = chain_units(ir, fused=True) if ok else []
    steps = unit_steps(ir, units) if units else []
    base = network_macs(ir)
    x = ir.tensors[ir.input]
    out = []
    for n in ns if ns is not None else ok:
        if n not in ok:
            raise UserError(f"patch search: expected n in {_ranges(ok) or 'none'}, got {n}")
        e = ir.tensors[units[n - 1].output]
        tail_need = max((s.footprint + s.scratch for s in steps[n:]), default=0)
        tail_macs = sum(layer_macs(ir.layers[i]) for u in units[n:] for i in u.layers)
        pre = tuple(i for u in units[:n] for i in u.layers)
        local = [u.output for u in units[: n - 1]]
        row_walks = {p: _walk(ir, pre, e.id, stripes(e.h, [1.0] * p), 0) for p in (ps or _counts(e.h)) if p <= e.h}
        qq = (qs or _counts(e.w)) if not square else [p for p in row_walks if p <= e.w]
        col_walks = {q: _walk(ir, pre, e.id, stripes(e.w, [1.0] * q), 1) for q in qq if q <= e.w}
        for p, rg in row_walks.items():
            d = _shift_big(ir, e.id, stripes(e.h, [1.0] * p), rg)
            rows = {t: [r[t][1] - r[t][0] for r in rg] for t in (ir.layers[i].output for i in pre)}
            for q, cg in col_walks.items():
                if square and q != p:
                    continue
                cols = {t: [c[t][1] - c[t][0] for c in cg] for t in rows}
                macs = tail_macs + sum(sum(rows[ir.layers[i].output]) * sum(cols[ir.layers[i].output])
                                       * pixel_macs(ir.layers[i]) for i in pre)
                sb = max((max(rows[t]) * max(cols[t]) * ir.tensors[t].c for t in local), default=0)
                out.append(Candidate(n, p, q, macs / base if base else 1.0, max(x.size + d + sb, tail_need)))
    return out


def _evaluate(ir: IR, c: Candidate, cache: dict[tuple[int, int, int], MemoryPlan]) -> MemoryPlan:
    key = (c.n, c.p, c.q)
    if key not in cache:
        cache[key] = plan_patch(ir, n=c.n, p=c.p, q=c.q)
    return cache[key]


def search_rows(ir: IR, ns: Sequence[int] | None = None, ps: Sequence[int] | None = None,
                qs: Sequence[int] | None = None, *, square: bool = False,
                max_overhead: float | None = None) -> list[dict[str, Any]]:
    """Peak bytes and MAC overhead of every ``(n, p, q)`` of `candidates` (optionally only those
    within ``max_overhead``), each planned in full."""
    rows = []
    for c in candidates(ir, ns, ps, qs, square=square):
        if max_overhead is not None and c.mac_overhead > max_overhead:
            continue
        pl = plan_patch(ir, n=c.n, p=c.p, q=c.q)
        rows.append({"n": c.n, "p": c.p, "q": c.q, "exit": ir.tensors[pl.patch.exit].name,
                     "peak_bytes": pl.peak_bytes, "mac_overhead": round(pl.patch.mac_overhead, 4),
                     "shift": pl.patch.shift, "patch_buffer_bytes": pl.patch.local_arc[1]})
    return rows


def search(ir: IR, *, max_overhead: float | None = None, budget_bytes: int | None = None,
           ns: Sequence[int] | None = None) -> MemoryPlan | None:
    """The patch plan with the least MAC overhead whose peak fits ``budget_bytes`` (ties: smaller
    peak), or, without a budget, the smallest peak within ``max_overhead``; None if none qualifies.

    Candidates are visited cheapest first and skipped when their lower bound already misses the
    target, so only a few are planned in full.
    """
    cands = [c for c in candidates(ir, ns) if max_overhead is None or c.mac_overhead <= max_overhead + 1e-12]
    cache: dict[tuple[int, int, int], MemoryPlan] = {}
    if budget_bytes is not None:
        best = None
        for c in sorted(cands, key=lambda c: (c.mac_overhead, c.lower_bound)):
            if c.lower_bound > budget_bytes:
                continue
            if best is not None and c.mac_overhead > best.patch.mac_overhead + 1e-12:
                break
            pl = _evaluate(ir, c, cache)
            if pl.peak_bytes <= budget_bytes and (best is None or pl.peak_bytes < best.peak_bytes):
                best = pl
        return best
    best = None
    for c in sorted(cands, key=lambda c: (c.lower_bound, c.mac_overhead)):
        if best is not None and c.lower_bound >= best.peak_bytes:
            break
        pl = _evaluate(ir, c, cache)
        if best is None or (pl.peak_bytes, pl.patch.mac_overhead) < (best.peak_bytes, best.patch.mac_overhead):
            best = pl
    return best


def describe(plan: MemoryPlan) -> str:
    """``patch: first 3 steps as 8x8 patches, MAC x1.027`` or the planner's name."""
    if plan.patch is None:
        return plan.planner
    s = plan.patch
    steps = "step" if s.n == 1 else f"{s.n} steps"
    return f"patch: first {steps} as {s.p}x{s.q} patches, MAC x{s.mac_overhead:.3f}"


def peak_layer(ir: IR, plan: MemoryPlan) -> tuple[str, int]:
    """The layer that holds the most pool bytes while it runs, and how many (patch plans count
    the scratch they keep in the pool; the others' scratch is separate)."""
    live = plan.live_per_layer
    worst = max(range(len(live)), key=live.__getitem__)
    return ir.layers[worst].name, live[worst]


def fit_budget(ir: IR, budget_bytes: int, *, planners: Sequence[str] | None = None,
               max_overhead: float | None = None, who: str = "budget") -> MemoryPlan:
    """The plan that fits ``budget_bytes`` (activations + scratch: the RAM the kernels touch) with
    the least MAC overhead: the layer-wise ``planners`` first (default all; overhead 1, the
    smallest that fits), then patch settings (within ``max_overhead``), cheapest first. If none
    fits, one `UserError` line gives the smallest peak reachable, the plan that reaches it and the
    layer that sets it (``who`` starts the message)."""
    from dnninfer.memory.planners import PLANNERS, plan

    if budget_bytes < 1:
        raise UserError(f"{who}: expected a budget of at least 1 byte, got {budget_bytes}")
    tried: list[MemoryPlan] = []
    for name in planners if planners is not None else PLANNERS:
        try:
            tried.append(plan(ir, name))
        except UserError:
            continue
    fits = [p for p in tried if p.total_bytes <= budget_bytes]
    if fits:
        return min(fits, key=lambda p: p.total_bytes)
    patchable = bool(prefix_lengths(ir))
    best_patch = search(ir, budget_bytes=budget_bytes, max_overhead=max_overhead) if patchable else None
    if best_patch is not None:
        return best_patch
    smallest = search(ir, max_overhead=max_overhead) if patchable else None
    options = tried + ([smallest] if smallest is not None else [])
    if not options:
        raise UserError(f"{who}: no planner can plan IR {ir.name!r}")
    low = min(options, key=lambda p: p.total_bytes)
    name, held = peak_layer(ir, low)
    within = f" within MAC overhead x{max_overhead:g}" if max_overhead is not None else ""
    extra = "" if low.mode == "patch" else f" + {low.scratch_bytes} scratch"
    raise UserError(f"{who}: no plan fits{within}: the smallest peak reachable is {low.total_bytes} bytes "
                    f"({describe(low)}), over the budget of {budget_bytes}; the peak is set by layer {name!r} "
                    f"({held} bytes live there{extra})")
