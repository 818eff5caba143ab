"""Uniform layer split: the chain cut into k contiguous stages of about equal FLOPs, one per node.

The naive distributed baseline (the shape of MoDNN's layer mode and of a hand-written pipeline):
nodes in cluster order starting at the source, no regard for their speeds or links.
"""

from __future__ import annotations

from dnninfer.errors import UserError
from dnninfer.graph import equal_flops_chain
from dnninfer.partition.costmodel import CostModel
from dnninfer.partition.plan import Part, Plan, evaluate


def plan_uniform(cm: CostModel, objective: str = "latency", k: int | None = None) -> Plan:
    order = [cm.source] + [n for n in cm.nodes if n != cm.source]
    k = min(k or len(order), len(cm.blocks))
    labels = equal_flops_chain(cm.graph, k)
    groups: dict[int, list[str]] = {}
    for n in cm.graph.compute_nodes():
        groups.setdefault(labels[n.name], []).append(n.name)
    parts = [Part(tuple(groups[s]), (cm.default_target(order[i]),)) for i, s in enumerate(sorted(groups))]
    for p in parts:
        if not cm.fits(p.targets[0].node, p.nodes):
            raise UserError(f"uniform: stage on {p.targets[0].node!r} needs {cm.need_bytes(p.nodes) / 2**20:.0f} MB, "
                            f"the node has {cm.cap_bytes(p.targets[0].node) / 2**20:.0f} MB memory")
    return evaluate(cm, parts, strategy="uniform", objective=objective, mode="layer",
                    reason=f"equal-FLOPs chain split over {len(parts)} nodes: {', '.join(order[:len(parts)])}")
