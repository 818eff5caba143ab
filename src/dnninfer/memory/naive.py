"""`naive`: no reuse at all, every tensor has its own bytes (research report §4, planner 1).

The baseline for "how much does sharing buy" (Pisarchyk & Lee 2020 report up to 10.5x).
"""

from __future__ import annotations

from dnninfer.memory.ir import IR
from dnninfer.memory.plan import MemoryPlan, Step, accounting, align_up, live_bytes


def plan_naive(ir: IR, *, alignment: int = 1) -> MemoryPlan:
    """Tensors laid out back to back in tensor-id order; peak = the sum of all (aligned) sizes."""
    offsets: dict[int, int] = {}
    sizes: dict[int, int] = {}
    top = 0
    for t in ir.tensors:
        offsets[t.id] = top
        sizes[t.id] = t.size
        top += align_up(t.size, alignment)
    segs = [(t.first, t.last, align_up(t.size, alignment)) for t in ir.tensors]
    return MemoryPlan(
        planner="naive", peak_bytes=top, scratch_bytes=0, mode="linear", offsets=offsets, sizes=sizes,
        steps=tuple(Step((i,)) for i in range(len(ir.layers))),
        live_per_layer=live_bytes(segs, len(ir.layers)),
        accounting=accounting(alignment=alignment, scratch="none"),
    )
