"""Byte-pool executor: runs an int8 IR inside exactly the bytes a `MemoryPlan` asks for.

The proof that a plan is correct (research report §4 "Executor"): one ``np.int8`` arena of
``peak_bytes + scratch_bytes`` is allocated once; every activation lives in it at its planned
place and every kernel reads and writes there. The result must equal `kernels.reference` bit for
bit; a plan that lets a live byte be overwritten changes the output.

* linear plans: tensors are slice views ``pool[off:off + size]``; layers write output rows straight
  into their output view. An ``inplace_dw`` step copies one channel plane at a time into the padded
  scratch plane and writes that channel back into the shared buffer (TinyEngine, §1.3).
* circular plans: tensors are read and written through `Arc` (``read(va, n)`` / ``write(va, data)``,
  split at the wrap); each output row is staged in the scratch tile, then stored at
  ``out_va + t*so`` (§1.2 items 1-4). A ``fused_ib`` step keeps the k most recent expanded rows in a
  line buffer in scratch and reads the residual row ``t`` just before storing output row ``t``
  (§1.2 item 5).

A pool or scratch area smaller than the plan needs is refused before anything runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from dnninfer.errors import UserError
from dnninfer.memory.ir import IR, IBBlock
from dnninfer.memory.kernels import dw_plane, layer_row
from dnninfer.memory.plan import MemoryPlan, Step


class Arc:
    """A circular window of the pool: virtual byte ``va`` lives at ``(base + va mod length) mod P``."""

    def __init__(self, pool: np.ndarray, base: int, length: int) -> None:
        self.pool = pool
        self.base = base
        self.length = length

    def _pieces(self, va: int, n: int) -> Iterator[tuple[int, int, int]]:
        """(physical start, data offset, count) runs covering ``[va, va + n)``."""
        assert n <= self.length, f"access of {n} bytes exceeds an arc of {self.length}"
        size = self.pool.size
        start = va % self.length
        done = 0
        for pos, cnt in ((start, min(n, self.length - start)), (0, n - min(n, self.length - start))):
            while cnt > 0:
                phys = (self.base + pos) % size
                run = min(cnt, size - phys)
                yield phys, done, run
                pos, cnt, done = pos + run, cnt - run, done + run

    def read(self, va: int, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.int8)
        for phys, off, cnt in self._pieces(va, n):
            out[off: off + cnt] = self.pool[phys: phys + cnt]
        return out

    def write(self, va: int, data: np.ndarray) -> None:
        flat = np.ascontiguousarray(data, dtype=np.int8).ravel()
        for phys, off, cnt in self._pieces(va, flat.size):
            self.pool[phys: phys + cnt] = flat[off: off + cnt]


def required_bytes(ir: IR, plan: MemoryPlan) -> tuple[int, int]:
    """(pool bytes, scratch bytes) the plan needs: its peak (alignment padding included), after
    checking its placements against it.

    Linear: every tensor's ``[offset, offset + size)`` must lie in the pool. Circular: ``P`` is the
    modulus the arcs were built for, and every step's live window must fit its arc. Scratch: the
    largest step scratch.
    """
    scratch = max((s.scratch for s in plan.steps), default=0)
    if plan.mode == "linear":
        missing = [t.id for t in ir.tensors if t.id not in plan.offsets]
        if missing:
            raise UserError(f"executor: plan {plan.planner} places no byte range for tensors {missing}")
        return max(plan.peak_bytes, *(plan.offsets[t.id] + t.size for t in ir.tensors)), scratch
    for step in plan.steps:
        first, last = ir.layers[step.layers[0]], ir.layers[step.layers[-1]]
        src, dst = first.inputs[0], last.output
        if plan.arcs[src] == plan.arcs[dst]:
            length = plan.arcs[dst][1]
            a, o = plan.offsets[src], plan.offsets[dst]
            rel = (a - o) % length  # input start relative to output start, either way round the circle
            sin, sout = ir.tensors[src].size, ir.tensors[dst].size
            window = min(max(rel + sin, sout), max(sin, length - rel + sout))
            if window > length:
                raise UserError(f"executor: step {last.name!r} needs a {window}-byte window in a {length}-byte arc")
    return plan.peak_bytes, scratch


def run(ir: IR, plan: MemoryPlan, x: np.ndarray, *, pool_bytes: int | None = None,
        scratch_bytes: int | None = None) -> np.ndarray:
    """Execute `ir` on int8 input `x` ``(H, W, C)`` inside one arena laid out by `plan`.

    ``pool_bytes``/``scratch_bytes`` default to the plan's; smaller than the plan needs is a
    `UserError` raised before any kernel runs. Returns the output tensor (as `kernels.reference`).
    """
    ir.require_quantized("executor")
    need_pool, need_scratch = required_bytes(ir, plan)
    pool_bytes = plan.peak_bytes if pool_bytes is None else pool_bytes
    scratch_bytes = plan.scratch_bytes if scratch_bytes is None else scratch_bytes
    if pool_bytes < need_pool or scratch_bytes < need_scratch:
        raise UserError(f"executor: plan {plan.planner} needs a {need_pool}-byte pool and {need_scratch} bytes of "
                        f"scratch, got {pool_bytes} and {scratch_bytes}; refusing to run")
    arena = np.zeros(pool_bytes + scratch_bytes, dtype=np.int8)  # the one allocation
    pool, scratch = arena[:pool_bytes], arena[pool_bytes:]
    x = np.asarray(x, dtype=np.int8).reshape(ir.tensors[ir.input].shape)
    if plan.mode == "linear":
        return _run_linear(ir, plan, x, pool, scratch)
    return _run_circular(ir, plan, x, pool[: plan.peak_bytes], scratch)


# -- linear (offset) plans ---------------------------------------------------------------------------

def _run_linear(ir: IR, plan: MemoryPlan, x: np.ndarray, pool: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    views = {t.id: pool[plan.offsets[t.id]: plan.offsets[t.id] + t.size].reshape(t.shape) for t in ir.tensors}
    views[ir.input][...] = x
    for step in plan.steps:
        layer = ir.layers[step.layers[0]]
        if step.kind == "inplace_dw":
            assert plan.offsets[layer.output] == plan.offsets[layer.inputs[0]], "in-place step must share its buffer"
            _inplace_dw(layer, views[layer.inputs[0]], views[layer.output], scratch)
            continue
        a = views[layer.inputs[0]]
        b = views[layer.inputs[1]] if layer.kind == "add" else None
        out = views[layer.output]
        for t in range(layer.hout):
            lo, hi = layer.needed_rows(t)
            out[t] = layer_row(layer, t, a[lo:hi], None if b is None else b[lo:hi])
    return views[ir.output].copy()


def _inplace_dw(layer, src: np.ndarray, dst: np.ndarray, scratch: np.ndarray) -> None:
    """TinyEngine in-place depthwise: channel c is copied out to a padded plane, then overwritten."""
    hp, wp = layer.hin + 2 * layer.p, layer.win + 2 * layer.p
    plane = scratch[: hp * wp].reshape(hp, wp)
    zp = layer.quant.in_zp[0]
    for c in range(layer.cin):
        plane.fill(zp)
        plane[layer.p: layer.p + layer.hin, layer.p: layer.p + layer.win] = src[:, :, c]
        dst[:, :, c] = dw_plane(layer, plane, c)


# -- circular (vMCU) plans ---------------------------------------------------------------------------

class _Pool:
    """Tensor-level access to a circular plan: rows of tensor ``t`` at ``offsets[t]`` in ``arcs[t]``."""

    def __init__(self, ir: IR, plan: MemoryPlan, pool: np.ndarray) -> None:
        self.ir = ir
        self.offsets = plan.offsets
        self.arcs = {t: Arc(pool, *arc) for t, arc in plan.arcs.items()}

    def rows(self, t: int, lo: int, hi: int) -> np.ndarray:
        ten = self.ir.tensors[t]
        data = self.arcs[t].read(self.offsets[t] + lo * ten.row_bytes, (hi - lo) * ten.row_bytes)
        return data.reshape(hi - lo, ten.w, ten.c)

    def store(self, t: int, row: int, data: np.ndarray) -> None:
        ten = self.ir.tensors[t]
        self.arcs[t].write(self.offsets[t] + row * ten.row_bytes, data)


def _run_circular(ir: IR, plan: MemoryPlan, x: np.ndarray, pool: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    mem = _Pool(ir, plan, pool)
    mem.store(ir.input, 0, x)
    blocks = {b.first: b for b in ir.blocks}
    for step in plan.steps:
        if step.kind == "fused_ib":
            _fused_ib(ir, blocks[step.layers[0]], mem, scratch)
        else:
            _layer(ir, step, mem, scratch)
    out = ir.tensors[ir.output]
    return mem.rows(ir.output, 0, out.h).reshape(out.shape)


def _layer(ir: IR, step: Step, mem: _Pool, scratch: np.ndarray) -> None:
    layer = ir.layers[step.layers[0]]
    tile = scratch[: layer.so]
    for t in range(layer.hout):
        lo, hi = layer.needed_rows(t)
        a = mem.rows(layer.inputs[0], lo, hi)
        b = mem.rows(layer.inputs[1], lo, hi) if layer.kind == "add" else None
        tile[:] = layer_row(layer, t, a, b).ravel()  # the whole row is computed before it is stored
        mem.store(layer.output, t, tile)


def _fused_ib(ir: IR, block: IBBlock, mem: _Pool, scratch: np.ndarray) -> None:
    """expand 1x1 -> dw kxk -> project 1x1 [+ add], one output row at a time (§1.2 item 5)."""
    dw, proj = ir.layers[block.dw], ir.layers[block.project]
    expand = ir.layers[block.expand] if block.expand is not None else None
    add = ir.layers[block.add] if block.add is not None else None
    x = block.block_input
    out = ir.layers[block.last]
    used = 0
    line = None
    if expand is not None:  # k slots of expanded rows; row h lives in slot h mod k
        line = scratch[: dw.k * dw.win * dw.cin].reshape(dw.k, dw.win, dw.cin)
        used = line.size
    dw_row = scratch[used: used + dw.so].reshape(dw.wout, dw.cout)
    tile = scratch[used + dw.so: used + dw.so + out.so]
    expanded = 0
    for t in range(out.hout):
        lo, hi = dw.needed_rows(t)
        if expand is not None:
            while expanded < hi:  # each input row is expanded exactly once, in order
                line[expanded % dw.k] = layer_row(expand, expanded, mem.rows(x, expanded, expanded + 1))
                expanded += 1
            window = np.stack([line[r % dw.k] for r in range(lo, hi)])
        else:
            window = mem.rows(x, lo, hi)
        dw_row[...] = layer_row(dw, t, window)
        y = layer_row(proj, t, dw_row[None])
        if add is not None:
            skip = mem.rows(x, t, t + 1)
            first, second = (skip, y[None]) if add.inputs[0] == x else (y[None], skip)
            y = layer_row(add, t, first, second)
        tile[:] = y.ravel()
        mem.store(out.output, t, tile)
