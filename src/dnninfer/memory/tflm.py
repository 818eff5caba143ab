"""`tflm`: a port of TFLite Micro's ``GreedyMemoryPlanner`` (research report §1.3, §4 planner 2).

Source: ``tensorflow/tflite-micro: tensorflow/lite/micro/memory_planner/greedy_memory_planner.cc``,
``CalculateOffsetsIfNeeded``. Buffers are sorted by size, descending, with a stable bubble sort (ties
keep insertion order). Each buffer then walks the already-placed buffers that overlap it in time, in
offset order, and takes the first gap large enough; lifetimes are inclusive, so a layer's input
and output always conflict (TFLM has no in-place reuse). The arena aligns each buffer to
``kBufferAlignment = 16`` bytes (``micro_allocator.cc``: sizes are rounded up before ``AddBuffer``);
pass ``alignment=16`` to mirror it, the default 1 gives pure tensor bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dnninfer.errors import UserError
from dnninfer.memory.ir import IR
from dnninfer.memory.plan import MemoryPlan, Step, accounting, align_up, live_bytes


@dataclass(frozen=True)
class Buffer:
    """A planner request: ``size`` bytes live over layers ``[first, last]`` (inclusive)."""

    size: int
    first: int
    last: int


def _overlap(a: Buffer, b: Buffer) -> bool:
    return not (a.first > b.last or b.first > a.last)


def greedy_offsets(buffers: Sequence[Buffer]) -> list[int]:
    """Offsets from ``GreedyMemoryPlanner::CalculateOffsetsIfNeeded`` (online-planned buffers only).

    ``by_offset`` mirrors TFLM's offset-ordered linked list, including its insertion rule: a new
    entry goes before the first entry with a strictly larger offset (ties keep placement order).
    """
    n = len(buffers)
    if n == 0:
        return []
    order = sorted(range(n), key=lambda i: -buffers[i].size)  # stable, like ReverseSortInPlace
    offsets = [-1] * n
    offsets[order[0]] = 0
    by_offset = [order[0]]
    for i in order[1:]:
        want = buffers[i]
        candidate = 0
        prior_pos = -1
        while True:
            nxt = next((p for p in range(prior_pos + 1, len(by_offset))
                        if _overlap(buffers[by_offset[p]], want)), None)
            if prior_pos >= 0:
                prior = by_offset[prior_pos]
                candidate = max(candidate, offsets[prior] + buffers[prior].size)
            if nxt is None:
                break
            if offsets[by_offset[nxt]] - candidate >= want.size:
                break
            prior_pos = nxt
        offsets[i] = candidate
        pos = next((p for p in range(len(by_offset)) if offsets[by_offset[p]] > candidate), len(by_offset))
        by_offset.insert(pos, i)
    return offsets


def plan_tflm(ir: IR, *, alignment: int = 1) -> MemoryPlan:
    """Every tensor (graph input and output included) is one buffer; peak = max(offset + size)."""
    if alignment < 1:
        raise UserError(f"planner tflm: expected alignment >= 1, got {alignment}")
    bufs = [Buffer(align_up(t.size, alignment), t.first, t.last) for t in ir.tensors]
    offs = greedy_offsets(bufs)
    peak = max((o + b.size for o, b in zip(offs, bufs, strict=True)), default=0)
    return MemoryPlan(
        planner="tflm", peak_bytes=peak, scratch_bytes=0, mode="linear",
        offsets={t.id: o for t, o in zip(ir.tensors, offs, strict=True)},
        sizes={t.id: t.size for t in ir.tensors},
        steps=tuple(Step((i,)) for i in range(len(ir.layers))),
        live_per_layer=live_bytes([(b.first, b.last, b.size) for b in bufs], len(ir.layers)),
        accounting=accounting(alignment=alignment, scratch="none (operator scratch not modelled)"),
    )
