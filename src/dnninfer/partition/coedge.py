"""CoEdge / MoDNN-style spatial split (Zeng et al., ToN'21; Mao et al., DATE'17).

Every node computes a stripe of rows of the conv/pool layers, shares in proportion to its speed and
balanced against its link (CoEdge's adaptive workload partitioning; MoDNN's biased 1-D partition),
with halo rows recomputed (partition/tiles.py). The stripes are gathered where the non-spatial tail
(classifier) runs: the node that gives the best plan. Every node runs its default PU. Fusing the
whole conv body would recompute ever-growing halos (DeepThings fuses only the first layers), so the
fused depth is chosen among the points where the activation shrinks, like the tail node.
"""

from __future__ import annotations

from dnninfer.errors import UserError
from dnninfer.partition.common import best
from dnninfer.partition.costmodel import CostModel
from dnninfer.partition.plan import Plan, evaluate
from dnninfer.partition.spatial import cut_candidates, row_local_prefix, spatial_parts


def plan_coedge(cm: CostModel, objective: str = "latency") -> Plan:
    p = row_local_prefix(cm)
    if p == 0:
        raise UserError(f"coedge: {cm.graph.name} has no row-local conv prefix to split spatially")
    targets = [cm.default_target(n) for n in cm.nodes]
    plans = []
    for last in cut_candidates(cm):
        for tail in cm.nodes:
            parts = spatial_parts(cm, last, targets, cm.default_target(tail))
            if not all(cm.fits(t.node, part.nodes) for part in parts for t in part.targets):
                continue
            plans.append(evaluate(cm, parts, strategy="coedge", objective=objective, mode="spatial",
                                  reason=f"rows of blocks 0-{last} over {len(parts[0].targets)} nodes "
                                         f"(shares {', '.join(f'{s:.2f}' for s in parts[0].shares) or '1.00'}), "
                                         f"tail on {tail}"))
    return best(plans, objective)
