"""vMCU segment-overlap planners (Zheng et al., MLSys 2024; research report §1.2, §4 planners 5-6).

vMCU treats RAM as one circular pool. A kernel writes its output rows into bytes its input no
longer needs, so input and output overlap (§1.2 items 1-3). With the output placed at ``o = a - d``
(``a`` = where the input starts), output row ``t`` occupies ``[o + t*so, o + (t+1)*so)``; after it
is stored the earliest input byte still needed is ``a + fn(t+1)*si``, so the smallest safe shift is

    d* = max(0, max_t [(t+1)*so - fn(t+1)*si])          (t < T-1, fn(t+1) < H)

and the live window (footprint) is ``F = max(Sin + d*, Sout)``, plus a one-row tile buffer. In a
chain, layer l+1's input starts where layer l's output did, so windows drift through the virtual
space and the circular pool only needs ``P = max F`` (§1.2 item 4).

* ``vmcu`` (layer-wise): one step per layer. A residual's skip tensor must survive its block, so it
  is pinned: the layers inside run in a nested arc of length ``P - |skip|`` and are charged
  ``|skip|`` extra (§1.2 item 5, "without fusion").
* ``vmcu_fused``: each inverted-bottleneck block (expand 1x1 -> dw kxk -> project 1x1 [+ add]) is one
  kernel with a k-row line buffer of expanded rows; the expanded tensor is never materialised and
  the skip is the block input read row by row, so
  ``fn(t) = min(t if residual else inf, clamp((t-1)*s - p + k, 0, H))`` (no expansion:
  ``clamp(t*s - p, 0, H)``), with scratch ``k*W*C_exp + Wo*C_exp + so`` (§1.2 item 5).

The rule is reconstructed from the paper's public descriptions (§1.1); it reproduces the paper's
12.0-49.5 % single-layer range (`single_layer_reduction`) and, on MobileNetV2, the -60..-70 %
whole-network regime of its 61.5 % claim. ``segment_bytes`` rounds every shift up to a whole number
of segments (the paper's per-kernel tunable segment size). The chain split (`chain_units`), the
per-step shifts (`unit_steps`) and the address walk (`place_units`) are shared with the patch
planner (`memory/patch.py`), which runs the rest of the network after its patched prefix this way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from dnninfer.errors import UserError
from dnninfer.memory.ir import IR, IBBlock, Layer
from dnninfer.memory.plan import MemoryPlan, Step, accounting, align_up


def min_shift(fn: np.ndarray, si: int, so: int, h: int) -> int:
    """d* of §1.2 item 3 given fn(u) for u = 1..T-1 and the input height `h`.

    A row u with ``fn(u) == h`` needs no input at all (the last input rows were read already), so
    it bounds nothing: counting it would make d* larger than needed, and a shift one byte below
    such a d* would still be safe.
    """
    u = np.arange(1, fn.size + 1, dtype=np.int64)
    live = fn < h
    if not live.any():
        return 0
    return int(max(0, int((u[live] * so - fn[live] * si).max())))


def layer_shift(layer: Layer, segment_bytes: int = 1) -> tuple[int, int, int]:
    """(shift d, footprint F, tile bytes) of one layer computed output row by output row.

    A layer with a single output row (fc at batch 1, global pool) cannot overlap: its result is
    staged whole in the tile buffer, so ``F = max(Sin, Sout)`` and ``d = 0``.
    """
    if layer.hout == 1:
        return 0, max(layer.in_bytes, layer.out_bytes), layer.out_bytes
    u = np.arange(1, layer.hout, dtype=np.int64)
    fn = np.array([layer.first_needed(int(t)) for t in u], dtype=np.int64)
    d = align_up(min_shift(fn, layer.si, layer.so, layer.hin), segment_bytes)
    return d, max(layer.in_bytes + d, layer.out_bytes), layer.so


def fused_ib_shift(ir: IR, block: IBBlock, segment_bytes: int = 1) -> tuple[int, int, int]:
    """(shift d, footprint F, scratch bytes) of a fused inverted-bottleneck kernel (§1.2 item 5)."""
    dw = ir.layers[block.dw]
    out = ir.layers[block.last]
    x = ir.tensors[block.block_input]
    h, s, p, k = dw.hin, dw.s, dw.p, dw.k
    u = np.arange(1, out.hout, dtype=np.int64)
    if block.expand is not None:
        fn = np.clip((u - 1) * s - p + k, 0, h)
        scratch = k * dw.win * dw.cin + dw.wout * dw.cout + out.so
    else:
        fn = np.clip(u * s - p, 0, h)
        scratch = dw.wout * dw.cout + out.so
    if block.residual:
        fn = np.minimum(fn, u)
    d = align_up(min_shift(fn, x.row_bytes, out.so, x.h), segment_bytes)
    return d, max(x.size + d, out.out_bytes), scratch


@dataclass(frozen=True)
class Unit:
    """One kernel call of a vMCU chain: a layer, or a fused inverted-bottleneck block."""

    layers: tuple[int, ...]
    block: IBBlock | None
    main: int  # the chain input tensor
    output: int
    role: str  # "chain" | "skip_start" (reads the pinned skip) | "inside" | "skip_add" (closes it)
    skip: int | None = None  # the pinned skip tensor, for every role but "chain"


def chain_units(ir: IR, fused: bool) -> list[Unit]:
    """Split the IR into chain steps and check it is a chain with non-nested residual skips."""
    blocks = {b.first: b for b in ir.blocks} if fused else {}
    spans: list[tuple[tuple[int, ...], IBBlock | None]] = []
    i = 0
    while i < len(ir.layers):
        b = blocks.get(i)
        if b is not None:
            spans.append((tuple(range(b.first, b.last + 1)), b))
            i = b.last + 1
        else:
            spans.append(((i,), None))
            i += 1

    def bad(why: str) -> UserError:
        return UserError(f"vMCU planners: IR {ir.name!r} is not a chain with non-nested residual skips ({why})")

    units: list[Unit] = []
    prev = ir.input
    open_skip: tuple[int, int] | None = None  # (skip tensor, add layer that closes it)
    for layers, block in spans:
        inside = set(layers)
        ext: list[int] = []
        for li in layers:
            for t in ir.layers[li].inputs:
                if (t == ir.input or t - 1 not in inside) and t not in ext:
                    ext.append(t)
        if prev not in ext:
            raise bad(f"layer {ir.layers[layers[0]].name!r} does not read the previous layer's output")
        others = [t for t in ext if t != prev]
        role, skip = "chain", None
        if others:
            if len(others) > 1 or open_skip is None or others[0] != open_skip[0] or layers != (open_skip[1],):
                raise bad(f"layer {ir.layers[layers[-1]].name!r} reads {len(others)} earlier tensor(s)")
            role, skip, open_skip = "skip_add", others[0], None
        elif open_skip is not None:
            role, skip = "inside", open_skip[0]
        later = [c for c in ir.consumers(prev) if c not in inside]
        if later:
            if len(later) != 1 or ir.layers[later[0]].kind != "add" or open_skip is not None or role != "chain":
                raise bad(f"tensor {ir.tensors[prev].name!r} feeds layers {later} outside the chain")
            open_skip = (prev, later[0])
            role, skip = "skip_start", prev
        units.append(Unit(layers, block, prev, ir.layers[layers[-1]].output, role, skip))
        prev = units[-1].output
    if prev != ir.output or open_skip is not None:
        raise bad("the last layer's output is not the graph output")
    return units


def unit_steps(ir: IR, units: list[Unit], segment_bytes: int = 1,
               shifts: Mapping[int, int] | None = None) -> list[Step]:
    """One `Step` per unit: its shift d, footprint F (pinned skip included) and scratch (§1.2 items 3-5).

    ``shifts`` (unit index -> bytes) overrides d for what-if studies and negative controls.
    """
    shifts = dict(shifts or {})
    steps: list[Step] = []
    for j, u in enumerate(units):
        pinned = ir.tensors[u.skip].size if u.skip is not None else 0
        sin, sout = ir.tensors[u.main].size, ir.tensors[u.output].size
        if u.block is not None:
            d, f, scratch = fused_ib_shift(ir, u.block, segment_bytes)
        else:
            d, f, scratch = layer_shift(ir.layers[u.layers[0]], segment_bytes)
        if j in shifts:  # what-if / negative control: a hand-set shift, footprint recomputed
            d = shifts.pop(j)
            f = max(sin + d, sout)
        if u.role == "skip_start":  # reads the pinned tensor, writes into the nested arc: no overlap
            d, f = 0, pinned + sout
        elif u.role == "skip_add":  # elementwise, in place over the skip; the other input is in the nested arc
            d, f = 0, pinned + sin
        else:
            f += pinned
        steps.append(Step(u.layers, "fused_ib" if u.block is not None else "layer", d, f, scratch, pinned))
    if shifts:
        raise UserError(f"vMCU planners: shifts given for steps {sorted(shifts)}, but the plan has {len(units)} steps")
    return steps


def place_units(ir: IR, units: list[Unit], steps: list[Step], pool: int, offsets: dict[int, int],
                arcs: dict[int, tuple[int, int]]) -> None:
    """Give each unit's output its virtual address and arc, in order, from its input's (§1.2 item 4).

    ``offsets``/``arcs`` must already hold the first unit's input; they are filled in place. A
    chain output starts ``d`` bytes below its input; a pinned skip splits off a nested arc of
    length ``pool - |skip|`` that starts right after the skip.
    """
    for u, st in zip(units, steps, strict=True):
        arc, a = arcs[u.main], offsets[u.main]
        if u.role == "skip_add":
            arc, va = arcs[u.skip], offsets[u.skip]
        elif u.role == "skip_start":
            size = ir.tensors[u.skip].size
            arc, va = ((arc[0] + (a + size) % arc[1]) % pool, pool - size), 0
        else:
            va = (a - st.shift) % arc[1]
        arcs[u.output] = arc
        offsets[u.output] = va


def _plan_circular(ir: IR, fused: bool, segment_bytes: int, shifts: Mapping[int, int] | None) -> MemoryPlan:
    if segment_bytes < 1:
        raise UserError(f"vMCU planners: expected segment_bytes >= 1, got {segment_bytes}")
    name = "vmcu_fused" if fused else "vmcu"
    units = chain_units(ir, fused)
    steps = unit_steps(ir, units, segment_bytes, shifts)
    pool = align_up(max((s.footprint for s in steps), default=0), segment_bytes)
    pool = max(pool, ir.tensors[ir.input].size, 1)

    arcs = {ir.input: (0, pool)}
    offsets = {ir.input: 0}
    place_units(ir, units, steps, pool, offsets, arcs)
    live = [0] * len(ir.layers)
    for st in steps:
        for li in st.layers:
            live[li] = st.footprint
    sizes = {t: ir.tensors[t].size for t in offsets}
    return MemoryPlan(
        planner=name, peak_bytes=pool, scratch_bytes=max((s.scratch for s in steps), default=0),
        mode="circular", offsets=offsets, sizes=sizes, steps=tuple(steps), live_per_layer=tuple(live),
        accounting=accounting(
            scratch=("max over kernels of line buffer k*W*C_exp + one depthwise row + one output row"
                     if fused else "max output-row tile"),
            segment_bytes=segment_bytes, pool="circular, P = max footprint"),
        arcs=arcs,
    )


def plan_vmcu(ir: IR, *, segment_bytes: int = 1, shifts: Mapping[int, int] | None = None) -> MemoryPlan:
    """Layer-wise segment overlap in a circular pool; residual skips pinned (§4 planner 5).

    ``shifts`` overrides the shift d of chosen steps (step index -> bytes) for what-if studies; a
    shift below d* makes the plan unsafe, which is what the executor's negative control relies on.
    """
    return _plan_circular(ir, fused=False, segment_bytes=segment_bytes, shifts=shifts)


def plan_vmcu_fused(ir: IR, *, segment_bytes: int = 1, shifts: Mapping[int, int] | None = None) -> MemoryPlan:
    """Fused inverted-bottleneck kernels with a k-row line buffer; other layers as in `plan_vmcu`."""
    return _plan_circular(ir, fused=True, segment_bytes=segment_bytes, shifts=shifts)


# -- single layers (§1.2 item 6) -----------------------------------------------------------------------

def _single(name: str, kind: str, h: int, w: int, cin: int, cout: int, k: int = 1, s: int = 1) -> Layer:
    p = (k - 1) // 2
    if kind == "fc":
        return Layer(name, "fc", (0,), 1, 1, 1, cin, 1, 1, cout)
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    return Layer(name, kind, (0,), 1, h, w, cin, ho, wo, cout, k=k, s=s, p=p)


def standard_single_layers() -> tuple[Layer, ...]:
    """The single-layer set of §1.2 item 6 (typical MobileNetV2 / MCUNet layers)."""
    return (
        _single("pw expand 16->96 @56x56", "pw", 56, 56, 16, 96),
        _single("pw project 96->24 @28x28", "pw", 28, 28, 96, 24),
        _single("conv3x3 s1 32->32 @40x40", "conv", 40, 40, 32, 32, k=3),
        _single("conv3x3 s2 3->16 @144x144 (stem)", "conv", 144, 144, 3, 16, k=3, s=2),
        _single("conv3x3 s1 64->128 @20x20", "conv", 20, 20, 64, 128, k=3),
        _single("dw3x3 s1 96 @56x56", "dw", 56, 56, 96, 96, k=3),
        _single("fc 1024->1000, batch 1", "fc", 1, 1, 1024, 1000),
    )


def single_layer_reduction(layer: Layer, segment_bytes: int = 1) -> dict[str, float | int | str]:
    """RAM of one layer: input + output (TFLM/TinyEngine, no overlap) vs vMCU ``F + tile``."""
    _, f, tile = layer_shift(layer, segment_bytes)
    base = layer.in_bytes + layer.out_bytes
    ours = f + tile
    return {"layer": layer.name, "baseline_bytes": base, "vmcu_bytes": ours, "reduction": 1 - ours / base}
