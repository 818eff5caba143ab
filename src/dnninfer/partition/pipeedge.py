"""PipeEdge (Hu et al., DSD'22): contiguous layer ranges per device chosen by a bottleneck DP.

Minimises the slowest pipeline stage or link, max(compute, comm), over the ordered subset of
devices and split points, with a memory check per stage (partitioning.md §3.2; the DP is
partition/chain_dp.py's, run over device types by partition/multiset_dp.py). A throughput method:
its single-request latency is reported as is.
"""

from __future__ import annotations

from dnninfer.partition.costmodel import CostModel
from dnninfer.partition.layerwise import default_pu_dp, dp_parts
from dnninfer.partition.plan import Plan, evaluate


def plan_pipeedge(cm: CostModel, objective: str = "latency") -> Plan:
    nodes = cm.nodes
    dp = default_pu_dp(cm, "throughput")
    parts = dp_parts(cm, nodes, dp, cm.default_target)
    used = " -> ".join(nodes[d] for d, _, _ in dp.stages)
    return evaluate(cm, parts, strategy="pipeedge", objective=objective, mode="layer",
                    reason=f"bottleneck DP: {used}, slowest stage or link {dp.cost_s * 1e3:.1f} ms")
