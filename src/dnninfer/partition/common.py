"""Small pieces the planners share: default targets, single-target plans, chain cuts, shares."""

from __future__ import annotations

from collections.abc import Sequence

from dnninfer.errors import UserError
from dnninfer.partition.costmodel import CostModel, Target
from dnninfer.partition.plan import Part, Plan, evaluate


def single(cm: CostModel, target: Target, *, strategy: str, objective: str, reason: str = "") -> Plan:
    """The whole model on one target (inputs sent there from the source, output sent back)."""
    nodes = tuple(n.name for n in cm.graph.compute_nodes())
    if not cm.fits(target.node, nodes):
        raise UserError(f"node {target.node!r}: {cm.need_bytes(nodes) / 2**20:.0f} MB needed, "
                        f"{cm.cap_bytes(target.node) / 2**20:.0f} MB available")
    return evaluate(cm, [Part(nodes, (target,))], strategy=strategy, objective=objective, mode="single",
                    reason=reason)


def feasible_nodes(cm: CostModel) -> list[str]:
    """Nodes that can hold the whole model (the candidates for single-node plans)."""
    nodes = tuple(n.name for n in cm.graph.compute_nodes())
    return [n for n in cm.nodes if cm.fits(n, nodes)]


def best(plans: Sequence[Plan], objective: str) -> Plan:
    """The plan with the lowest score; ties go to the earlier one (deterministic)."""
    if not plans:
        raise UserError("no feasible plan: every candidate exceeds a node's memory or has no link")
    return min(plans, key=lambda p: p.score(objective))


def proportional(weights: Sequence[float]) -> tuple[float, ...]:
    total = sum(weights)
    return tuple(w / total for w in weights)


def parts_nodes(parts: Sequence[Part]) -> set[str]:
    return {n for p in parts for n in p.nodes}
