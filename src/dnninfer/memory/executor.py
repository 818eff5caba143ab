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

* patch plans (`dnninfer.memory.patch`): the first steps run patch by patch on buffers in a nested
  arc, then the rest as a circular plan; kernel scratch lives in the pool too (`patch.run_patch`).

A pool or scratch area smaller than the plan needs is refused before anything runs.

Bit equality of the output is not a proof of safety: a clobbered byte may happen to hold the value
it replaced, or only move an accumulator that requantisation rounds away (MobileNetV2-0.35/144,
``vmcu_fused`` with ``shifts={1: 575}``, one byte short of d* = 576, reads one corrupted byte and
still matches the reference). So every run keeps a *shadow memory* by default (`Shadow`): per pool
byte, the tensor and element that last wrote it. Every read of tensor ``t`` element ``i`` must find
exactly ``(t, i)`` there, otherwise another write landed on a live byte (or the byte was never
written) and the plan is refused with `PlanUnsafe`. Checks are numpy compares over whole row runs
(or channel planes), so they are exact, cover every byte read and cost about one pass over the data.
Kernel scratch is private to one step and laid out by the executor itself, so it is not shadowed;
where a plan puts scratch inside the pool (patch plans) its bytes are marked as written by the
scratch (`Shadow.scratch`) when the step starts, so a live byte under it is caught on its next read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from dnninfer.errors import UserError
from dnninfer.memory.ir import IR, IBBlock, Layer
from dnninfer.memory.kernels import dw_plane, layer_row
from dnninfer.memory.plan import MemoryPlan, Step

NEVER = -1  # shadow tag of a byte nobody has written
_ELEM_BITS = 40  # tag = tensor << 40 | element: elements up to 1 TiB, tensor ids up to 2**23
SCRATCH = (1 << 23) - 1  # pseudo tensor id of kernel scratch kept inside the pool (patch plans)


class PlanUnsafe(UserError):
    """A plan let a byte be overwritten while its tensor was still to be read (shadow checker).

    Attributes name the reading ``layer``, the ``tensor`` (id) and its ``element`` being read, the
    physical pool ``offset`` and what last wrote that byte: ``clobber`` (tensor id, or None if the
    byte was never written) and ``clobber_element``.
    """

    def __init__(self, message: str, *, planner: str, layer: str, tensor: int, element: int, offset: int,
                 clobber: int | None, clobber_element: int | None) -> None:
        super().__init__(message)
        self.planner, self.layer, self.tensor, self.element = planner, layer, tensor, element
        self.offset, self.clobber, self.clobber_element = offset, clobber, clobber_element


class Shadow:
    """Shadow memory of the pool: per byte, ``tensor << 40 | element`` of its last write (`NEVER` if none).

    Only the producer of a tensor writes its elements, so "the tag equals (t, i)" on a read of
    tensor ``t`` element ``i`` means the byte still holds what the producer stored there.
    ``bytes_checked``/``reads_checked`` count what was verified (a check that ran at all).
    """

    def __init__(self, ir: IR, planner: str, size: int) -> None:
        self.ir = ir
        self.planner = planner
        self.tag = np.full(size, NEVER, dtype=np.int64)
        self.bytes_checked = 0
        self.reads_checked = 0

    def write(self, t: int, phys: slice, elems: np.ndarray) -> None:
        """Record that tensor ``t``'s elements ``elems`` were stored at pool bytes ``phys``."""
        self.tag[phys] = (t << _ELEM_BITS) + elems

    def scratch(self, phys: slice) -> None:
        """Pool bytes ``phys`` are a kernel's scratch from now on (plans that keep scratch in the pool):
        any later read of a tensor byte there is refused, naming the scratch as the clobberer."""
        self.tag[phys] = (SCRATCH << _ELEM_BITS) + np.arange(phys.stop - phys.start)

    def check(self, reader: str, t: int, phys: slice, elems: np.ndarray) -> None:
        """Refuse the plan unless pool bytes ``phys`` still hold tensor ``t``'s elements ``elems``."""
        got = self.tag[phys]
        bad = np.flatnonzero(got != (t << _ELEM_BITS) + elems)
        self.reads_checked += 1
        self.bytes_checked += int(got.size)
        if bad.size:
            self._refuse(reader, t, phys, elems, int(bad[0]), int(got[bad[0]]), int(bad.size))

    def _refuse(self, reader: str, t: int, phys: slice, elems: np.ndarray, k: int, tag: int, n_bad: int) -> None:
        offset = int(np.arange(self.tag.size)[phys][k])
        element = int(elems[k])
        ten = self.ir.tensors[t]
        if tag == NEVER:
            clobber = clobber_el = None
            what = "no tensor ever wrote it"
        else:
            clobber, clobber_el = tag >> _ELEM_BITS, tag & ((1 << _ELEM_BITS) - 1)
            if clobber == SCRATCH:
                who = "kernel scratch"
            else:
                other = self.ir.tensors[clobber]
                who = "its own" if clobber == t else f"tensor {other.name!r} (#{clobber})"
            what = f"it was overwritten by {who} byte {clobber_el}"
        more = f" ({n_bad} bad bytes in this read)" if n_bad > 1 else ""
        raise PlanUnsafe(
            f"executor: plan {self.planner} is unsafe: {reader} reads byte {element} of tensor {ten.name!r} "
            f"(#{t}) at pool offset {offset}, but {what}{more}; refusing the plan",
            planner=self.planner, layer=reader, tensor=t, element=element, offset=offset,
            clobber=clobber, clobber_element=clobber_el)


def arc_pieces(base: int, length: int, size: int, va: int, n: int) -> Iterator[tuple[int, int, int]]:
    """(physical start, data offset, count) runs covering virtual bytes ``[va, va + n)`` of the arc
    ``(base, length)`` in a pool of ``size`` bytes (planners use it to know which bytes a tensor holds)."""
    assert n <= length, f"access of {n} bytes exceeds an arc of {length}"
    start = va % length
    done = 0
    for pos, cnt in ((start, min(n, length - start)), (0, n - min(n, length - start))):
        while cnt > 0:
            phys = (base + pos) % size
            run = min(cnt, size - phys)
            yield phys, done, run
            pos, cnt, done = pos + run, cnt - run, done + run


class Arc:
    """A circular window of the pool: virtual byte ``va`` lives at ``(base + va mod length) mod P``."""

    def __init__(self, pool: np.ndarray, base: int, length: int) -> None:
        self.pool = pool
        self.base = base
        self.length = length

    def _pieces(self, va: int, n: int) -> Iterator[tuple[int, int, int]]:
        """(physical start, data offset, count) runs covering ``[va, va + n)``."""
        return arc_pieces(self.base, self.length, self.pool.size, va, n)

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
    largest step scratch. Patch plans keep their scratch inside the pool (scratch 0): their
    patch-buffer arc and every per-patch and tail scratch run must lie in it (`patch.check_layout`),
    and the tail steps' windows must fit their arcs as in a circular plan.
    """
    scratch = max((s.scratch for s in plan.steps), default=0)
    if plan.mode == "patch":
        from dnninfer.memory.patch import check_layout

        check_layout(ir, plan)
        scratch = 0
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
        scratch_bytes: int | None = None, shadow: bool = True, stats: dict[str, Any] | None = None) -> np.ndarray:
    """Execute `ir` on int8 input `x` ``(H, W, C)`` inside one arena laid out by `plan`.

    ``pool_bytes``/``scratch_bytes`` default to the plan's; smaller than the plan needs is a
    `UserError` raised before any kernel runs. With ``shadow`` (the default) every pool read is
    checked against the shadow memory and an unsafe plan raises `PlanUnsafe`, even when its output
    would be bit-equal; ``shadow=False`` only exists to show what an unsafe plan computes. ``stats``,
    if given, receives ``shadow_checked``, ``reads_checked`` and ``bytes_checked``. Returns the
    output tensor (as `kernels.reference`).
    """
    ir.require_quantized("executor")
    need_pool, need_scratch = required_bytes(ir, plan)  # a patch plan keeps its scratch in the pool
    pool_bytes = plan.peak_bytes if pool_bytes is None else pool_bytes
    scratch_bytes = plan.scratch_bytes if scratch_bytes is None else scratch_bytes
    if pool_bytes < need_pool or scratch_bytes < need_scratch:
        raise UserError(f"executor: plan {plan.planner} needs a {need_pool}-byte pool and {need_scratch} bytes of "
                        f"scratch, got {pool_bytes} and {scratch_bytes}; refusing to run")
    arena = np.zeros(pool_bytes + scratch_bytes, dtype=np.int8)  # the one allocation
    pool, scratch = arena[:pool_bytes], arena[pool_bytes:]
    x = np.asarray(x, dtype=np.int8).reshape(ir.tensors[ir.input].shape)
    if plan.mode != "linear":
        pool = pool[: plan.peak_bytes]
    sh = Shadow(ir, plan.planner, pool.size) if shadow else None
    if plan.mode == "linear":
        y = _run_linear(ir, plan, x, pool, scratch, sh)
    elif plan.mode == "patch":
        from dnninfer.memory.patch import run_patch

        y = run_patch(ir, plan, x, pool, sh)
    else:
        y = _run_circular(ir, plan, x, pool, scratch, sh)
    if stats is not None:
        stats.update(shadow_checked=sh is not None, reads_checked=sh.reads_checked if sh else 0,
                     bytes_checked=sh.bytes_checked if sh else 0)
    return y


# -- linear (offset) plans ---------------------------------------------------------------------------

def _run_linear(ir: IR, plan: MemoryPlan, x: np.ndarray, pool: np.ndarray, scratch: np.ndarray,
                sh: Shadow | None) -> np.ndarray:
    views = {t.id: pool[plan.offsets[t.id]: plan.offsets[t.id] + t.size].reshape(t.shape) for t in ir.tensors}

    def rows(t: int, lo: int, hi: int, who: str) -> None:
        """Check that rows ``[lo, hi)`` of tensor ``t`` still hold what its producer wrote."""
        if sh is not None:
            rb, off = ir.tensors[t].row_bytes, plan.offsets[t]
            sh.check(who, t, slice(off + lo * rb, off + hi * rb), np.arange(lo * rb, hi * rb))

    def stored(t: int, row: int) -> None:
        if sh is not None:
            rb, off = ir.tensors[t].row_bytes, plan.offsets[t]
            sh.write(t, slice(off + row * rb, off + (row + 1) * rb), np.arange(row * rb, (row + 1) * rb))

    views[ir.input][...] = x
    for r in range(ir.tensors[ir.input].h):
        stored(ir.input, r)
    for step in plan.steps:
        layer = ir.layers[step.layers[0]]
        if step.kind == "inplace_dw":
            _inplace_dw(ir, layer, views[layer.inputs[0]], views[layer.output], scratch, plan, sh)
            continue
        a = views[layer.inputs[0]]
        b = views[layer.inputs[1]] if layer.kind == "add" else None
        out = views[layer.output]
        for t in range(layer.hout):
            lo, hi = layer.needed_rows(t)
            rows(layer.inputs[0], lo, hi, f"layer {layer.name!r}")
            if b is not None:
                rows(layer.inputs[1], lo, hi, f"layer {layer.name!r}")
            out[t] = layer_row(layer, t, a[lo:hi], None if b is None else b[lo:hi])
            stored(layer.output, t)
    rows(ir.output, 0, ir.tensors[ir.output].h, "the final output read")
    return views[ir.output].copy()


def _inplace_dw(ir: IR, layer: Layer, src: np.ndarray, dst: np.ndarray, scratch: np.ndarray, plan: MemoryPlan,
                sh: Shadow | None) -> None:
    """TinyEngine in-place depthwise: channel c is copied out to a padded plane, then overwritten.

    The output normally shares the input's buffer; any other placement runs too and the shadow
    decides whether it is safe (one byte off the shared offset is not). Shadowed per channel plane:
    elements ``c, c + C, ...`` of the input are checked when copied out, the output's channel ``c``
    is recorded when written back.
    """
    hp, wp = layer.hin + 2 * layer.p, layer.win + 2 * layer.p
    plane = scratch[: hp * wp].reshape(hp, wp)
    zp = layer.quant.in_zp[0]
    t_in, t_out = layer.inputs[0], layer.output
    c_in, n_in, n_out = layer.cin, src.size, dst.size
    off_in, off_out = plan.offsets[t_in], plan.offsets[t_out]
    for c in range(layer.cin):
        if sh is not None:
            sh.check(f"layer {layer.name!r}", t_in, slice(off_in + c, off_in + n_in, c_in), np.arange(c, n_in, c_in))
        plane.fill(zp)
        plane[layer.p: layer.p + layer.hin, layer.p: layer.p + layer.win] = src[:, :, c]
        dst[:, :, c] = dw_plane(layer, plane, c)
        if sh is not None:
            sh.write(t_out, slice(off_out + c, off_out + n_out, c_in), np.arange(c, n_out, c_in))


# -- circular (vMCU) plans ---------------------------------------------------------------------------

class _Pool:
    """Tensor-level access to a circular plan: rows of tensor ``t`` at ``offsets[t]`` in ``arcs[t]``."""

    def __init__(self, ir: IR, plan: MemoryPlan, pool: np.ndarray, shadow: Shadow | None = None) -> None:
        self.ir = ir
        self.offsets = plan.offsets
        self.arcs = {t: Arc(pool, *arc) for t, arc in plan.arcs.items()}
        self.shadow = shadow

    def rows(self, t: int, lo: int, hi: int, who: str = "a read") -> np.ndarray:
        """Rows ``[lo, hi)`` of tensor ``t``; with a shadow, every byte is checked first (by ``who``)."""
        ten = self.ir.tensors[t]
        va, n = self.offsets[t] + lo * ten.row_bytes, (hi - lo) * ten.row_bytes
        if self.shadow is not None:
            for phys, off, cnt in self.arcs[t]._pieces(va, n):
                e0 = lo * ten.row_bytes + off
                self.shadow.check(who, t, slice(phys, phys + cnt), np.arange(e0, e0 + cnt))
        return self.arcs[t].read(va, n).reshape(hi - lo, ten.w, ten.c)

    def store(self, t: int, row: int, data: np.ndarray) -> None:
        ten = self.ir.tensors[t]
        va = self.offsets[t] + row * ten.row_bytes
        self.arcs[t].write(va, data)
        if self.shadow is not None:
            for phys, off, cnt in self.arcs[t]._pieces(va, data.size):
                e0 = row * ten.row_bytes + off
                self.shadow.write(t, slice(phys, phys + cnt), np.arange(e0, e0 + cnt))


def _run_circular(ir: IR, plan: MemoryPlan, x: np.ndarray, pool: np.ndarray, scratch: np.ndarray,
                  sh: Shadow | None = None) -> np.ndarray:
    mem = _Pool(ir, plan, pool, sh)
    mem.store(ir.input, 0, x)
    blocks = {b.first: b for b in ir.blocks}
    for step in plan.steps:
        if step.kind == "fused_ib":
            _fused_ib(ir, blocks[step.layers[0]], mem, scratch)
        else:
            _layer(ir, step, mem, scratch)
    out = ir.tensors[ir.output]
    return mem.rows(ir.output, 0, out.h, "the final output read").reshape(out.shape)


def _layer(ir: IR, step: Step, mem: _Pool, scratch: np.ndarray) -> None:
    layer = ir.layers[step.layers[0]]
    tile = scratch[: layer.so]
    for t in range(layer.hout):
        lo, hi = layer.needed_rows(t)
        who = f"layer {layer.name!r}"
        a = mem.rows(layer.inputs[0], lo, hi, who)
        b = mem.rows(layer.inputs[1], lo, hi, who) if layer.kind == "add" else None
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
    who = f"fused block {ir.layers[block.first].name!r}..{out.name!r}"
    for t in range(out.hout):
        lo, hi = dw.needed_rows(t)
        if expand is not None:
            while expanded < hi:  # each input row is expanded exactly once, in order
                line[expanded % dw.k] = layer_row(expand, expanded, mem.rows(x, expanded, expanded + 1, who))
                expanded += 1
            window = np.stack([line[r % dw.k] for r in range(lo, hi)])
        else:
            window = mem.rows(x, lo, hi, who)
        dw_row[...] = layer_row(dw, t, window)
        y = layer_row(proj, t, dw_row[None])
        if add is not None:
            skip = mem.rows(x, t, t + 1, who)
            first, second = (skip, y[None]) if add.inputs[0] == x else (y[None], skip)
            y = layer_row(add, t, first, second)
        tile[:] = y.ravel()
        mem.store(out.output, t, tile)
