"""HiDP's run-time loop: serve with a plan, watch the links and nodes, re-plan on drift or loss.

A small finite-state machine (partitioning.md §1.2 item 3, §6.1 step 5):
PLAN -> DEPLOY -> SERVE <-> MONITOR, and back to PLAN when a link's smoothed (EWMA) bandwidth
drifts more than `drift` from the bandwidth the plan assumed, or when a node stops answering.
A request that fails because its node died is re-run on the new plan, so none is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dnninfer.cost.profiles import Cluster, LinkProfile, LinkSpec
from dnninfer.errors import UserError
from dnninfer.partition.costmodel import CostModel
from dnninfer.partition.plan import Plan


def without_node(cluster: Cluster, node: str) -> Cluster:
    """The cluster after `node` left (its links too)."""
    if node not in cluster.node_names:
        raise UserError(f"node {node!r}: expected one of {', '.join(cluster.node_names)}")
    if len(cluster.nodes) == 1:
        raise UserError(f"node {node!r} is the last node of cluster {cluster.name!r}")
    return cluster.model_copy(update={
        "nodes": [n for n in cluster.nodes if n.name != node],
        "links": [s for s in cluster.links if node not in (s.a, s.b)],
    })


def with_bandwidth(cluster: Cluster, mbps: float, pair: tuple[str, str] | None = None) -> Cluster:
    """The cluster with one link's bandwidth changed, or every link's when `pair` is None."""
    if mbps <= 0:
        raise UserError(f"bandwidth: expected > 0 Mbit/s, got {mbps}")

    def set_bw(link: LinkProfile) -> LinkProfile:
        return link.model_copy(update={"bandwidth_mbps": float(mbps)})

    if pair is None:
        return cluster.model_copy(update={
            "links": [s.model_copy(update={"link": set_bw(s.link)}) for s in cluster.links],
            "default_link": set_bw(cluster.default_link) if cluster.default_link else None,
        })
    a, b = pair
    current = cluster.link(a, b)
    links = [s for s in cluster.links if {s.a, s.b} != {a, b}]
    links.append(LinkSpec(a=a, b=b, link=set_bw(current)))
    return cluster.model_copy(update={"links": links})


@dataclass
class Event:
    state: str
    detail: str
    plan: str = ""
    latency_ms: float | None = None


@dataclass
class Replanner:
    """Holds the current plan and re-plans it when the world changes."""

    cm: CostModel
    planner: Callable[[CostModel, str], Plan]
    objective: str = "latency"
    drift: float = 0.2
    alpha: float = 0.5
    plan: Plan | None = None
    state: str = "INIT"
    events: list[Event] = field(default_factory=list)
    _ewma: dict[frozenset[str], float] = field(default_factory=dict)

    def _log(self, state: str, detail: str) -> None:
        self.state = state
        p = self.plan
        self.events.append(Event(state, detail, p.mode + ": " + ", ".join(p.nodes_used) if p else "",
                                 p.latency_s * 1e3 if p else None))

    def replan(self, why: str = "start") -> Plan:
        self._log("PLAN", why)
        self.plan = self.planner(self.cm, self.objective)
        self._log("DEPLOY", f"{self.plan.strategy} -> {self.plan.mode} on {', '.join(self.plan.nodes_used)}")
        return self.plan

    def observe_bandwidth(self, a: str, b: str, mbps: float) -> bool:
        """Feed one bandwidth measurement; returns True when it triggered a re-plan."""
        key = frozenset((a, b))
        planned = self.cm.cluster.link(a, b).bandwidth_mbps
        ewma = self._ewma.get(key, planned)
        ewma = self.alpha * mbps + (1 - self.alpha) * ewma
        self._ewma[key] = ewma
        self._log("MONITOR", f"{a}-{b}: measured {mbps:.1f} Mbit/s, EWMA {ewma:.1f}, planned {planned:.1f}")
        if abs(ewma - planned) <= self.drift * planned:
            self.state = "SERVE"
            return False
        self.cm = self.cm.with_cluster(with_bandwidth(self.cm.cluster, ewma, (a, b)))
        self._ewma.pop(key)
        self.replan(f"bandwidth {a}-{b} drifted to {ewma:.1f} Mbit/s (planned {planned:.1f})")
        return True

    def node_lost(self, node: str) -> Plan:
        """Re-plan over the remaining nodes (the source holds the data: losing it is fatal)."""
        if node == self.cm.source:
            raise UserError(f"node {node!r} is the source: the inputs live there, nothing to re-plan")
        self.cm = self.cm.with_cluster(without_node(self.cm.cluster, node))
        return self.replan(f"node {node} lost")

    def serve(self, requests: Iterable[Sequence[Any]], runtime: Any, *,
              on_result: Callable[[int, Any], None] | None = None) -> list[Any]:
        """Run every request on a Ray runtime; a node failure re-plans and re-runs the request."""
        from dnninfer.partition.execute import materialize
        from dnninfer.runtime.ray_runtime import NodeFailure

        if self.plan is None:
            self.replan()
        dep = materialize(self.plan, self.cm)
        runtime.deploy(dep.stages, dep.placement, dep.links)
        self._log("SERVE", "deployed")
        outputs = []
        for i, inputs in enumerate(requests):
            for _attempt in range(len(self.cm.nodes) + 1):
                try:
                    result = runtime.run(dep.graph, inputs, source=dep.source)
                    break
                except NodeFailure as e:
                    if e.node is None:
                        raise
                    lost = dep.node_of(e.node)
                    self._log("MONITOR", f"request {i}: {e}")
                    self.node_lost(lost)
                    dep = materialize(self.plan, self.cm)
                    runtime.deploy(dep.stages, dep.placement, dep.links)
                    self._log("SERVE", f"redeployed without {lost}; retrying request {i}")
            else:
                raise UserError(f"request {i}: failed on every re-plan")
            outputs.append(result.output)
            if on_result is not None:
                on_result(i, result)
        return outputs
