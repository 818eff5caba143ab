"""Critical-path-first stream assignment, after NVIDIA apex's ``torchsched`` (2025): the longest
path goes on stream 0 and every other operator is dealt round robin, in program order, over the
side streams (``TORCH_SCHED_NUM_STREAMS``, default 8). Here the path is the longest by cost
(measured latency when the DAG has it) rather than by depth.

Also the "critical path first" launch order of the research notes (§1.3 step 5): Kahn's algorithm
launching the ready operator with the longest remaining path (bottom level) first.
"""

from __future__ import annotations

import heapq

from dnninfer.schedule.dag import OpDAG

__all__ = ["DEFAULT_SIDE_STREAMS", "cpfirst_streams", "critical_path_order"]

DEFAULT_SIDE_STREAMS = 8


def cpfirst_streams(dag: OpDAG, *, max_streams: int | None = None) -> dict[str, int]:
    """Critical path on stream 0; the rest round robin over ``max_streams - 1`` side streams."""
    side = DEFAULT_SIDE_STREAMS if max_streams is None else max_streams - 1
    critical = set(dag.longest_path())
    out: dict[str, int] = {}
    k = 0
    for n in dag.names:
        if n in critical or side == 0:
            out[n] = 0
        else:
            out[n] = 1 + k % side
            k += 1
    return out


def critical_path_order(dag: OpDAG) -> list[str]:
    """Launch order: among ready operators, the one with the longest remaining path first."""
    level = dag.bottom_level()
    indeg = {n: len(dag.preds[n]) for n in dag.names}
    ready = [(-level[n], dag.index[n], n) for n in dag.names if indeg[n] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, _, n = heapq.heappop(ready)
        order.append(n)
        for s in dag.succs[n]:
            indeg[s] -= 1
            if indeg[s] == 0:
                heapq.heappush(ready, (-level[s], dag.index[s], s))
    return order
