"""Run a plan for real: build its stages (tiling where it splits rows) and hand them to a runtime.

Stages are placed on targets named ``node/pu``; the in-process runtime runs them one after the
other, the Ray runtime one actor per target (a PU is a thread group: its actor's intra-op
threads), with the links between nodes emulated and free between the PUs of one node.
Outputs must equal the whole model's: the tests check that for every strategy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dnninfer.graph import Graph, Stage
from dnninfer.partition.costmodel import CostModel
from dnninfer.partition.plan import Plan
from dnninfer.runtime.common import Link, RunResult, SameNode


@dataclass
class Deployment:
    """A plan made concrete: the (possibly tiled) graph, its stages and where each runs."""

    graph: Graph
    stages: list[Stage]
    placement: dict[int, str]  # stage label -> "node/pu"
    links: dict[tuple[str, str], Link]
    source: str

    def node_of(self, place: str) -> str:
        return place.split("/", 1)[0]


def materialize(plan: Plan, cm: CostModel) -> Deployment:
    """Tile the graph where the plan splits rows and label every node of the result with a stage."""
    from dnninfer.partition.tiles import tile

    graph = cm.graph
    tilings = {}
    for i, part in enumerate(plan.parts):
        if part.tiled:
            tilings[i] = tile(graph, part.nodes, part.shares)
            graph = tilings[i].graph
    assignment: dict[str, int] = {}
    place: dict[int, str] = {}
    sid = 0
    for i, part in enumerate(plan.parts):
        if i in tilings:
            for t, target in enumerate(part.targets):
                assignment.update({n: sid for n in tilings[i].tiles[t]})
                place[sid] = str(target)
                sid += 1
        else:
            assignment.update({n: sid for n in part.nodes})
            place[sid] = str(part.targets[0])
            sid += 1
    at_source = str(cm.default_target(cm.source))
    extra: dict[str, int] = {}

    def source_stage(kind: str) -> int:
        nonlocal sid
        if kind not in extra:
            extra[kind] = sid
            place[sid] = at_source
            sid += 1
        return extra[kind]

    # scatter nodes run where their input lives; gather nodes where their first reader runs, except
    # a gather that only feeds the next tiling's scatter: it gets a join stage on that part's target
    for i, tiling in tilings.items():
        for nodes in tiling.scatter:
            for n in nodes:
                src = next(a for a in graph.nodes[n].inputs if graph.nodes[a].op != "get_attr")
                if graph.nodes[src].op == "placeholder":
                    assignment[n] = source_stage("scatter")
                elif src in assignment:
                    assignment[n] = assignment[src]
                else:
                    assignment[src] = assignment[n] = sid
                    place[sid] = str(plan.parts[i].targets[0])
                    sid += 1
    readers: dict[str, list[str]] = {}
    for info in graph.nodes.values():
        for src in info.inputs:
            readers.setdefault(src, []).append(info.name)
    for tiling in tilings.values():
        for n in tiling.gather:
            if n in assignment:
                continue
            first = next((r for r in readers.get(n, []) if r in assignment), None)
            assignment[n] = assignment[first] if first is not None else source_stage("gather")
    stages = graph.split(assignment)
    links: dict[tuple[str, str], Link] = {}
    source = at_source  # the inputs live in the source node's default PU
    names = list(dict.fromkeys([source, *place.values()]))
    for a in names:
        for b in names:
            na, nb = a.split("/", 1)[0], b.split("/", 1)[0]
            if a != b:
                links[(a, b)] = SameNode() if na == nb else cm.cluster.link(na, nb)
    return Deployment(graph, stages, {st.index: place[st.index] for st in stages}, links, source)


def run_plan(plan: Plan, cm: CostModel, inputs: Sequence[Any], *, runtime: Any = None, sleep: bool = True,
             deployment: Deployment | None = None) -> RunResult:
    """One inference through the plan: in-process by default, or on a deployed `RayRuntime`."""
    from dnninfer.runtime import run_inprocess

    dep = deployment or materialize(plan, cm)
    if runtime is None:
        return run_inprocess(dep.graph, dep.stages, inputs, placement=dep.placement, links=dep.links,
                             source=dep.source, sleep=sleep)
    runtime.deploy(dep.stages, dep.placement, dep.links)
    return runtime.run(dep.graph, inputs, source=dep.source)
