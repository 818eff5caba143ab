"""Opara (Chen et al., IEEE TC 74(1) 2025; arXiv 2312.10351): stream allocation (Alg. 1) and
resource-aware launch order (Alg. 2).

Alg. 1, as in Opara's ``StreamAllocator.Opara``: walk the operators in launch order; an operator
joins the stream of its first predecessor whose "SYNC flag" is still unset and sets that flag;
otherwise it opens a new stream. Each producer hands its stream to exactly one consumer, so every
extra branch gets its own stream. O(n x max in-degree). With a cap below the streams Alg. 1
opens, its streams are folded onto the cap by list scheduling on the operator costs (`fold`):
an addition the paper does not need on a GPU, but two CPU cores do.

Alg. 2, as in Opara's ``OperatorLauncher.launch``: Kahn's algorithm with two ready queues,
compute-bound and memory-bound; alternate between them when both are non-empty so a
compute-bound kernel and a memory-bound kernel are in flight together; within a queue launch
the operator with the smallest resource demand first. Two deliberate differences from the code:

* the class comes from MEASURED arithmetic intensity, not from substring matches on node names
  (Opara's list misses ops and concatenates ``'relu' 'sqrt'``): intensity = FLOPs / bytes moved
  (from the captured Graph); the machine's ridge point = peak FLOP rate / peak bandwidth, both
  taken as the best rates any operator achieved in the latency profile; an operator is
  compute-bound iff its intensity reaches the ridge (roofline);
* demand is the fraction of its bottleneck resource the operator achieves (its achieved FLOP
  rate over the peak, or its achieved bandwidth over the peak), the host-side stand-in for
  Opara's per-block shared-memory fraction. A GPU profile can pass its own ``demand`` mapping.

The alternation keys off the class of the operator launched last (the code toggles a flag every
iteration, even when only one queue had work); "alternate when both are ready" then holds
exactly.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

from dnninfer.schedule.dag import SOURCE, OpDAG

__all__ = ["COMPUTE", "MEMORY", "Roofline", "classify", "demand", "fold", "opara_order", "opara_streams", "roofline"]

COMPUTE, MEMORY = "compute", "memory"


class Roofline:
    """Peak FLOP rate and bandwidth as achieved by the best operators of one profile."""

    def __init__(self, peak_flops: float, peak_bw: float) -> None:
        self.peak_flops = peak_flops
        self.peak_bw = peak_bw

    @property
    def ridge(self) -> float:
        """FLOPs per byte at which an operator stops being memory-bound."""
        return self.peak_flops / self.peak_bw

    def __repr__(self) -> str:
        return (f"Roofline(peak {self.peak_flops / 1e9:.1f} GFLOP/s, {self.peak_bw / 1e9:.1f} GB/s, "
                f"ridge {self.ridge:.2f} FLOP/B)")


def roofline(dag: OpDAG) -> Roofline:
    """Peaks from the operators' achieved rates (cost_s is measured latency when the DAG has it)."""
    flops_rates = [dag.flops[n] / dag.cost_s[n] for n in dag.names if dag.flops[n] > 0 and dag.cost_s[n] > 0]
    bw_rates = [dag.bytes_moved[n] / dag.cost_s[n] for n in dag.names if dag.cost_s[n] > 0]
    peak_flops = max(flops_rates, default=1.0)
    peak_bw = max(bw_rates, default=1.0)
    return Roofline(max(peak_flops, 1.0), max(peak_bw, 1.0))


def classify(dag: OpDAG, roof: Roofline | None = None) -> dict[str, str]:
    """compute / memory per operator by arithmetic intensity against the measured ridge."""
    roof = roof or roofline(dag)
    return {n: COMPUTE if dag.flops[n] / dag.bytes_moved[n] >= roof.ridge and dag.flops[n] > 0 else MEMORY
            for n in dag.names}


def demand(dag: OpDAG, roof: Roofline | None = None) -> dict[str, float]:
    """Achieved fraction of the operator's bottleneck resource (0..1): its "width" on the device."""
    roof = roof or roofline(dag)
    out = {}
    for n in dag.names:
        t = max(dag.cost_s[n], 1e-12)
        out[n] = max(dag.flops[n] / t / roof.peak_flops, dag.bytes_moved[n] / t / roof.peak_bw)
    return out


def opara_order(
    dag: OpDAG,
    classes: Mapping[str, str] | None = None,
    demands: Mapping[str, float] | None = None,
) -> list[str]:
    """Alg. 2: resource-aware launch order (see module docstring). Ties go to program order."""
    if classes is None or demands is None:
        roof = roofline(dag)
        classes = classes or classify(dag, roof)
        demands = demands or demand(dag, roof)
    indeg = {n: len(dag.preds[n]) for n in dag.names}
    ready: dict[str, list[tuple[float, int, str]]] = {COMPUTE: [], MEMORY: []}

    def push(n: str) -> None:
        heapq.heappush(ready[classes[n]], (demands[n], dag.index[n], n))

    for n in dag.names:
        if indeg[n] == 0:
            push(n)
    order: list[str] = []
    last = MEMORY  # so the first pick, when both are ready, is compute-bound (as in the code)
    while ready[COMPUTE] or ready[MEMORY]:
        if ready[COMPUTE] and ready[MEMORY]:
            cls = MEMORY if last == COMPUTE else COMPUTE
        else:
            cls = COMPUTE if ready[COMPUTE] else MEMORY
        _, _, n = heapq.heappop(ready[cls])
        last = cls
        order.append(n)
        for s in dag.succs[n]:
            indeg[s] -= 1
            if indeg[s] == 0:
                push(s)
    return order


def opara_streams(dag: OpDAG, order: Sequence[str] | None = None, *, max_streams: int | None = None) -> dict[str, int]:
    """Alg. 1: stream per operator, walking ``order`` (default program order).

    Model inputs count as one producer, `SOURCE`, on stream 0: the first operator to read an
    input takes stream 0, later readers of inputs open their own streams (Opara's placeholders).
    With ``max_streams`` below what Alg. 1 opens, the streams are folded onto that many (`fold`).
    """
    order = list(order) if order is not None else list(dag.names)
    handed: set[str] = set()
    stream_of: dict[str, int] = {SOURCE: 0}
    parent: dict[str, str | None] = {}
    count = 1
    for v in order:
        preds = list(dag.preds[v])
        if v in dag.reads_input:
            preds.insert(0, SOURCE)  # inputs come first in fx argument order for nearly every op
        parent[v] = next((u for u in preds if u not in handed), None)
        if parent[v] is not None:
            handed.add(parent[v])  # type: ignore[arg-type]
            stream_of[v] = stream_of[parent[v]]  # type: ignore[index]
        else:
            stream_of[v] = count
            count += 1
    del stream_of[SOURCE]
    if max_streams is None or count <= max_streams:
        return stream_of
    return fold(dag, order, parent, max_streams)


def fold(dag: OpDAG, order: Sequence[str], parent: dict[str, str | None], lanes: int) -> dict[str, int]:
    """Fold Alg. 1's streams onto ``lanes`` by list scheduling on the operator costs: an operator
    stays with the producer whose stream it inherited unless another lane lets it start strictly
    earlier (then it moves there). Operators that opened a stream go to the earliest-free lane."""
    free = [0.0] * lanes
    finish: dict[str, float] = {}
    lane_of: dict[str, int] = {SOURCE: 0}
    for v in order:
        ready = max((finish[u] for u in dag.preds[v]), default=0.0)
        best = min(range(lanes), key=lambda k: (max(free[k], ready), k))
        p = parent[v]
        lane = lane_of[p] if p is not None and max(free[lane_of[p]], ready) <= max(free[best], ready) else best
        lane_of[v] = lane
        finish[v] = free[lane] = max(free[lane], ready) + dag.cost_s[v]
    del lane_of[SOURCE]
    return lane_of
