"""`tinyengine`: greedy first-fit plus in-place depthwise, as in TinyEngine / MCUNet (§1.3, §4 planner 3).

Source read: ``mit-han-lab/tinyengine: code_generator/GeneralMemoryScheduler.py`` and
``code_generator/allocator/{base_allocator,firstFit}.py``. Each tensor is a rectangle (lifetime x
size); rectangles are placed largest first at the lowest offset that overlaps no time-overlapping
rectangle. In-place depthwise: the output reuses the input's buffer when the input dies at the
depthwise layer; the kernel copies one channel plane at a time into a padded ``(H+2p)(W+2p)``
runtime buffer (charged as scratch) and writes that channel's output back into the same buffer.
A residual add whose input dies at the add is also computed in place (§4: "each residual-add
output"). With ``stride2_shrink=True`` a stride-2 in-place buffer shrinks to the output size after
the layer (TinyEngine's ``stride2_inplace_idx``; TinyEngine uses ``ceil(size/4)``, we use the exact
output size, which is the same for even H and W and never too small for odd ones).

With the input image in the pool and scratch reported separately this reproduces MCUNetV2's 1372 kB
peak for MobileNetV2-1.0/224 exactly (1372.0 KiB: the 16->96 expansion at 112x112, §3).
"""

from __future__ import annotations

from dataclasses import dataclass

from dnninfer.errors import UserError
from dnninfer.memory.ir import IR
from dnninfer.memory.plan import MemoryPlan, Step, accounting, align_up, live_bytes


@dataclass(frozen=True)
class Rect:
    """A buffer that may change size over time: ``(first, last, size)`` segments sharing one offset."""

    segments: tuple[tuple[int, int, int], ...]

    @property
    def size(self) -> int:
        return max(s for _, _, s in self.segments)


def _conflict(a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    return not (a[0] > b[1] or b[0] > a[1])


def first_fit(rects: list[Rect]) -> list[int]:
    """Largest first (stable), each at the lowest offset free over every one of its segments."""
    order = sorted(range(len(rects)), key=lambda i: -rects[i].size)
    offsets = [-1] * len(rects)
    placed: list[int] = []
    for i in order:
        busy: list[tuple[int, int, int]] = []  # (start, end, segment size of the new rect it blocks)
        for seg in rects[i].segments:
            for j in placed:
                for other in rects[j].segments:
                    if _conflict(seg, other):
                        busy.append((offsets[j], offsets[j] + other[2], seg[2]))
        for cand in sorted({0, *(end for _, end, _ in busy)}):
            if all(cand + need <= start or cand >= end for start, end, need in busy):
                offsets[i] = cand
                break
        placed.append(i)
    return offsets


def _find(parent: list[int], t: int) -> int:
    while parent[t] != t:
        t = parent[t]
    return t


def plan_tinyengine(ir: IR, *, inplace_dw: bool = True, inplace_add: bool = True, stride2_shrink: bool = False,
                    alignment: int = 1) -> MemoryPlan:
    """Merge in-place outputs into their inputs, then first-fit the merged buffers."""
    if alignment < 1:
        raise UserError(f"planner tinyengine: expected alignment >= 1, got {alignment}")
    parent = list(range(len(ir.tensors)))
    steps: list[Step] = []
    scratch = 0
    for i, layer in enumerate(ir.layers):
        src = None
        wanted = (layer.kind == "dw" and inplace_dw) or (layer.kind == "add" and inplace_add)
        for t in layer.inputs if wanted else ():
            tensor = ir.tensors[t]
            if tensor.last == i and t != ir.output and tensor.size >= layer.out_bytes and layer.inputs.count(t) == 1:
                src = t
                break
        if src is None:
            steps.append(Step((i,)))
            continue
        parent[layer.output] = _find(parent, src)
        if layer.kind == "dw":
            plane = (layer.hin + 2 * layer.p) * (layer.win + 2 * layer.p)
            scratch = max(scratch, plane)
            steps.append(Step((i,), "inplace_dw", scratch=plane))
        else:
            steps.append(Step((i,)))

    groups: dict[int, list[int]] = {}
    for t in range(len(ir.tensors)):
        groups.setdefault(_find(parent, t), []).append(t)
    roots = sorted(groups)
    rects = [_rect(ir, groups[r], stride2_shrink, alignment) for r in roots]
    offs = first_fit(rects)
    offsets = {t: offs[k] for k, r in enumerate(roots) for t in groups[r]}
    peak = max((o + rect.size for o, rect in zip(offs, rects, strict=True)), default=0)
    segs = [seg for rect in rects for seg in rect.segments]
    return MemoryPlan(
        planner="tinyengine", peak_bytes=peak, scratch_bytes=scratch, mode="linear",
        offsets=offsets, sizes={t.id: t.size for t in ir.tensors}, steps=tuple(steps),
        live_per_layer=live_bytes(segs, len(ir.layers)),
        accounting=accounting(alignment=alignment, scratch="max in-place depthwise plane (H+2p)(W+2p)",
                              stride2_shrink=stride2_shrink),
    )


def _rect(ir: IR, members: list[int], shrink: bool, alignment: int) -> Rect:
    """Size over time of a merged buffer: the largest member alive at each layer (or overall)."""
    first = min(ir.tensors[t].first for t in members)
    last = max(ir.tensors[t].last for t in members)
    if not shrink:
        return Rect(((first, last, align_up(max(ir.tensors[t].size for t in members), alignment)),))
    segs: list[list[int]] = []
    for time in range(first, last + 1):
        size = max((ir.tensors[t].size for t in members if ir.tensors[t].first <= time <= ir.tensors[t].last),
                   default=0)
        size = align_up(size, alignment)
        if segs and segs[-1][2] == size:
            segs[-1][1] = time
        else:
            segs.append([time, time, size])
    return Rect(tuple((a, b, c) for a, b, c in segs))
