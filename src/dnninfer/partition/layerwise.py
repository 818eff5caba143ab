"""Layer-wise (vertical) plans from the chain DPs: per-block costs on chosen targets -> parts.

One helper for PipeEdge (bottleneck DP on default PUs) and HiDP's global level (latency or
bottleneck DP on whatever targets or local-level rates it proposes), so the DP inputs are built
the same way: comp[d][l] = predicted seconds of block l on device d's target, hops = the cluster
links (full transfer time for latency, radio time for throughput), memory = weights + 2 x the
largest activation of a stage against the node's memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from dnninfer.partition.chain_dp import ChainPlan, bottleneck_dp, latency_dp
from dnninfer.partition.costmodel import CostModel, Target
from dnninfer.partition.plan import Part, chain_parts

BlockCost = Callable[[int, str], float]  # (block index, node) -> seconds


def _need(cm: CostModel) -> Callable[[int, int], float]:
    blocks = cm.blocks
    params = np.cumsum([0] + [b.param_bytes for b in blocks])
    acts = [max(cm.graph.nodes[n].out_bytes for n in b.nodes) for b in blocks]
    n = len(blocks)
    peak = np.zeros((n, n))
    for i in range(n):
        running = 0
        for j in range(i, n):
            running = max(running, acts[j])
            peak[i, j] = running

    def need(i: int, j: int) -> float:
        return float(params[j + 1] - params[i] + 2 * peak[i, j])

    return need


def chain_dp(cm: CostModel, nodes: Sequence[str], cost: BlockCost, *, objective: str,
             max_devices: int | None = None) -> ChainPlan:
    """Run the latency (sum) or throughput (bottleneck) DP over `nodes`; the source must be among them."""
    nodes = list(nodes)
    comp = np.array([[cost(b, n) for b in range(len(cm.blocks))] for n in nodes])
    hop = cm.serial_s if objective == "throughput" else cm.transfer_s

    def comm(u: int, v: int, nbytes: float) -> float:
        return hop(nodes[u], nodes[v], nbytes)

    dp = bottleneck_dp if objective == "throughput" else latency_dp
    return dp(comp, [b.out_bytes for b in cm.blocks], cm.input_bytes, comm, nodes.index(cm.source),
              need=_need(cm), cap=[cm.cap_bytes(n) for n in nodes], max_devices=max_devices)


def dp_parts(cm: CostModel, nodes: Sequence[str], plan: ChainPlan, target: Callable[[str], Target],
             role: str = "layer") -> tuple[Part, ...]:
    return chain_parts(cm, [(target(nodes[d]), i, j) for d, i, j in plan.stages], role=role)
