"""DADS: optimal 2-way (device/server) DAG partition by minimum s-t cut.

Hu, Bai, Wang, Li, "Dynamic Adaptive DNN Surgery for Inference Acceleration on the Edge",
IEEE INFOCOM 2019 — the light-load case (DSL), where a request runs sequentially, so latency is
the plain sum of the parts (partitioning.md §3.2; reimplementation ``Tjyy-1223/DADS``).

Model. Every node ``v`` of the DAG runs locally (``local_s[v]``) or remotely (``remote_s[v]``).
Partitions are *monotone*: no edge goes from a remote node to a local one (once data reaches the
server it stays there). A local node with at least one remote successor uploads its output once,
``up_s[u]``, however many remote consumers read it. A remote node in ``returns`` (a producer of
the model output) sends its result back, ``down_s[u]``. Nodes in ``pinned_local`` stay local.

    cost = Σ_local local_s + Σ_remote remote_s + Σ_{local u, some succ remote} up_s[u]
         + Σ_{remote u ∈ returns} down_s[u]

Flow network (source ``s`` = local side, sink ``t`` = remote side; an edge is cut when it goes
from the source side to the sink side):

* ``s → v`` with capacity ``remote_s[v]`` (+ ``down_s[v]`` for returns): cut iff ``v`` is remote;
* ``v → t`` with capacity ``local_s[v]``: cut iff ``v`` is local;
* for each DAG edge ``u → w`` an infinite edge ``w → u``: forbids ``u`` remote with ``w`` local;
* DADS's auxiliary node ``a_u`` for each ``u`` with successors: ``u → a_u`` capacity ``up_s[u]``
  and ``a_u → w`` infinite for each successor ``w``. If ``u`` is local and any ``w`` remote,
  ``a_u`` must sit on the sink side, so ``up_s[u]`` is paid exactly once; otherwise ``a_u`` joins
  whichever side makes the edge free. Charging ``up_s[u]`` on every edge ``u → w`` instead would
  pay it once per remote consumer (wrong for fan-out, see the tests' negative control);
* ``s → v`` infinite for pinned nodes.

Every finite cut is a monotone assignment with cut value = its cost, and conversely, so the
minimum cut is the optimal partition.

Exactness. Float capacities make networkx's cut extraction (``flow == capacity``) unreliable:
a saturated edge off by one ulp reads as unsaturated and yields a partition far from optimal even
though the flow value is right. Every float is a dyadic rational, so all costs are scaled by the
largest power-of-two denominator among them to exact Python integers; the max flow, the cut and
the brute-force reference are then computed in exact arithmetic on the very values given.

Ties. The sink side of networkx's cut is the set of nodes that can still reach the sink in the
residual network: the smallest sink side over all minimum cuts. So among optimal assignments the
remote set is the intersection of all optimal remote sets (it keeps nodes local when it costs
nothing), which is also what `brute_force` returns (fewest remote nodes).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import networkx as nx

from dnninfer.errors import UserError
from dnninfer.partition.costmodel import CostModel
from dnninfer.partition.plan import Plan

__all__ = ["BRUTE_FORCE_MAX_NODES", "CutResult", "NodeSeconds", "brute_force", "cut_cost", "flow_network", "min_cut",
           "plan_dads"]

BRUTE_FORCE_MAX_NODES = 16

_SRC = ("dads", "source")
_SNK = ("dads", "sink")


@dataclass(frozen=True)
class CutResult:
    """An assignment: the nodes on the remote (server) side and the objective value."""

    remote: frozenset[str]
    cost_s: float


NodeSeconds = Mapping[str, float]
"""Seconds per DAG node (``inf``: not allowed there); the same shape for all four cost tables."""


def _scale(values: Iterable[float]) -> int:
    """The least common denominator (a power of two) of the finite floats in ``values``."""
    scale = 1
    for x in values:
        if math.isfinite(x):
            scale = max(scale, float(x).as_integer_ratio()[1])
    return scale


def _exact(x: float, scale: int) -> int | None:
    """``x * scale`` as an exact integer; ``None`` for inf."""
    if math.isinf(x):
        return None
    num, den = float(x).as_integer_ratio()
    return num * (scale // den)


class _Problem:
    """One validated DADS instance: the inputs as given, plus its costs as exact integers of
    ``1 / scale`` seconds (``None`` = inf), each remote cost already including ``down_s``. Every
    solver builds one, so validation and scaling are written once."""

    def __init__(
        self, dag: nx.DiGraph, local_s: NodeSeconds, remote_s: NodeSeconds, up_s: NodeSeconds, down_s: NodeSeconds,
        pinned_local: Iterable[str], returns: Iterable[str],
    ) -> None:
        self.dag, self.tables = dag, (local_s, remote_s, up_s, down_s)
        self.pins, self.rets = frozenset(pinned_local), frozenset(returns)
        self._check()
        ups = {v: up_s[v] for v in dag.nodes if dag.out_degree(v) > 0}
        downs = {v: down_s[v] for v in self.rets}
        self.scale = _scale(
            itertools.chain(
                (local_s[v] for v in dag.nodes), (remote_s[v] for v in dag.nodes), ups.values(), downs.values()
            )
        )
        self.local = {v: _exact(local_s[v], self.scale) for v in dag.nodes}
        self.up = {v: _exact(x, self.scale) for v, x in ups.items()}
        self.remote: dict[str, int | None] = {}
        for v in dag.nodes:
            r = _exact(remote_s[v], self.scale)
            d = _exact(downs[v], self.scale) if v in downs else 0
            self.remote[v] = None if r is None or d is None else r + d

    def _check(self) -> None:
        """Costs present, non-negative, not NaN; node names known; a DAG."""
        dag = self.dag
        if not nx.is_directed_acyclic_graph(dag):
            raise UserError("dads: expected a DAG, got a graph with a cycle")
        nodes = set(dag.nodes)
        for what, names in (("pinned_local", self.pins), ("returns", self.rets)):
            unknown = sorted(map(str, names - nodes))
            if unknown:
                raise UserError(f"dads: {what} names nodes not in the DAG: {unknown}")

        def check(table: NodeSeconds, name: str, v: str) -> None:
            if v not in table:
                raise UserError(f"dads: {name} has no cost for node {v!r}")
            try:
                x = float(table[v])
            except (TypeError, ValueError):
                x = math.nan
            if math.isnan(x) or x < 0:
                raise UserError(f"dads: {name}[{v!r}] must be a non-negative number, got {table[v]!r}")

        local_s, remote_s, up_s, down_s = self.tables
        for v in dag.nodes:
            check(local_s, "local_s", v)
            check(remote_s, "remote_s", v)
            if dag.out_degree(v) > 0:
                check(up_s, "up_s", v)
            if v in self.rets:
                check(down_s, "down_s", v)

    def network(self, per_edge_upload: bool = False) -> nx.DiGraph:
        """The flow network of the module docstring (see `flow_network`)."""
        dag = self.dag
        g = nx.DiGraph(scale=self.scale)
        g.add_node(_SRC)
        g.add_node(_SNK)
        for v in dag.nodes:
            g.add_edge(_SRC, v, **_cap(None if v in self.pins else self.remote[v]))
            g.add_edge(v, _SNK, **_cap(self.local[v]))
        for u in dag.nodes:
            succs = list(dag.successors(u))
            if not succs:
                continue
            if per_edge_upload:
                for w in succs:
                    g.add_edge(u, w, **_cap(self.up[u]))
            else:
                aux = ("dads", "aux", u)
                g.add_edge(u, aux, **_cap(self.up[u]))
                for w in succs:
                    g.add_edge(aux, w)  # infinite
            for w in succs:
                g.add_edge(w, u)  # infinite: w local => u local (monotone)
        return g

    def result(self, remote: Iterable[str]) -> CutResult:
        """The assignment with its objective recomputed in floats from the tables as given."""
        chosen = frozenset(remote)
        return CutResult(chosen, cut_cost(self.dag, *self.tables, set(chosen), returns=self.rets))


def _cap(x: int | None) -> dict[str, int]:
    """Edge attributes; networkx treats a missing capacity as infinite."""
    return {} if x is None else {"capacity": x}


def flow_network(
    dag: nx.DiGraph, local_s: NodeSeconds, remote_s: NodeSeconds, up_s: NodeSeconds, down_s: NodeSeconds,
    *, pinned_local: Iterable[str] = (), returns: Iterable[str] = (), per_edge_upload: bool = False,
) -> nx.DiGraph:
    """The DADS flow network (module docstring), capacities in exact integer units of
    ``1 / g.graph["scale"]`` seconds. ``per_edge_upload`` builds the naive network that charges
    ``up_s[u]`` on every DAG edge instead of using an auxiliary node (negative control)."""
    return _Problem(dag, local_s, remote_s, up_s, down_s, pinned_local, returns).network(per_edge_upload)


def min_cut(
    dag: nx.DiGraph, local_s: NodeSeconds, remote_s: NodeSeconds, up_s: NodeSeconds, down_s: NodeSeconds,
    *, pinned_local: Iterable[str] = (), returns: Iterable[str] = (),
) -> CutResult:
    """Optimal monotone local/remote assignment by one min s-t cut (DADS, INFOCOM'19).

    Costs may be ``inf`` (node not allowed on that side). Raises `UserError` when every
    assignment has infinite cost (e.g. a pinned node with ``local_s = inf``)."""
    p = _Problem(dag, local_s, remote_s, up_s, down_s, pinned_local, returns)
    try:
        _value, (src_side, _snk_side) = nx.minimum_cut(p.network(), _SRC, _SNK)
    except nx.NetworkXUnbounded as exc:
        raise UserError(
            "dads: no finite partition: some node is forced to a side where its cost is inf "
            "(check pinned_local and inf costs)"
        ) from exc
    return p.result(v for v in dag.nodes if v not in src_side)


def cut_cost(
    dag: nx.DiGraph, local_s: NodeSeconds, remote_s: NodeSeconds, up_s: NodeSeconds, down_s: NodeSeconds,
    remote: set[str] | frozenset[str], *, returns: Iterable[str] = (),
) -> float:
    """The objective of one assignment (module docstring); `UserError` if it is not monotone."""
    rets = frozenset(returns)
    unknown = sorted(map(str, set(remote) - set(dag.nodes)))
    if unknown:
        raise UserError(f"dads: remote names nodes not in the DAG: {unknown}")
    total = 0.0
    for u in dag.nodes:
        if u in remote:
            total += remote_s[u]
            if u in rets:
                total += down_s[u]
            bad = [w for w in dag.successors(u) if w not in remote]
            if bad:
                raise UserError(f"dads: not monotone: remote node {u!r} feeds local node {bad[0]!r}")
        else:
            total += local_s[u]
            if any(w in remote for w in dag.successors(u)):
                total += up_s[u]
    return total


def brute_force(
    dag: nx.DiGraph, local_s: NodeSeconds, remote_s: NodeSeconds, up_s: NodeSeconds, down_s: NodeSeconds,
    *, pinned_local: Iterable[str] = (), returns: Iterable[str] = (),
) -> CutResult:
    """Reference solver: enumerate every monotone assignment (at most 16 nodes), in exact arithmetic.

    Ties go to the fewest remote nodes (unique: optimal remote sets are closed under intersection)."""
    c = _Problem(dag, local_s, remote_s, up_s, down_s, pinned_local, returns)
    nodes = sorted(dag.nodes, key=str)
    n = len(nodes)
    if n > BRUTE_FORCE_MAX_NODES:
        raise UserError(f"dads.brute_force: expected at most {BRUTE_FORCE_MAX_NODES} nodes, got {n}")
    index = {v: i for i, v in enumerate(nodes)}
    succ = [sum(1 << index[w] for w in dag.successors(v)) for v in nodes]
    pin_mask = sum(1 << index[v] for v in c.pins)
    best: tuple[int, int, tuple[str, ...]] | None = None
    for mask in range(1 << n):
        if mask & pin_mask:
            continue
        if any(mask >> i & 1 and succ[i] & ~mask for i in range(n)):
            continue  # a remote node feeds a local one
        terms: list[int | None] = []
        for i, v in enumerate(nodes):
            if mask >> i & 1:
                terms.append(c.remote[v])
            else:
                terms.append(c.local[v])
                if succ[i] & mask:
                    terms.append(c.up[v])
        if None in terms:
            continue  # an inf cost
        total = sum(t for t in terms if t is not None)
        remote = tuple(v for i, v in enumerate(nodes) if mask >> i & 1)
        key = (total, len(remote), remote)
        if best is None or key < best:
            best = key
    if best is None:
        raise UserError("dads: no finite partition (every monotone assignment has an inf cost)")
    return c.result(best[2])


# -- planner -------------------------------------------------------------------------------------


def _cut_with(cm: CostModel, server: str) -> CutResult:
    """The min-cut between the source and `server` (it does not depend on the objective)."""
    g = cm.graph
    dag = cm.memo(("dads", "dag"),
                  lambda: g.nx.subgraph(list(g.input_names) + [n.name for n in g.compute_nodes()]).copy())
    local, remote = cm.default_target(cm.source), cm.default_target(server)
    local_s = {v: (0.0 if v in g.input_names else cm.seconds([v], local)) for v in dag.nodes}
    remote_s = {v: (math.inf if v in g.input_names else cm.seconds([v], remote)) for v in dag.nodes}
    up_s = {v: cm.transfer_s(cm.source, server, g.nodes[v].out_bytes) for v in dag.nodes}
    down_s = {v: cm.transfer_s(server, cm.source, g.nodes[v].out_bytes) for v in dag.nodes}
    returns = [n.name for n in g.output_node.all_input_nodes]
    return min_cut(dag, local_s, remote_s, up_s, down_s, pinned_local=g.input_names, returns=returns)


def plan_dads(cm: CostModel, objective: str = "latency") -> Plan:
    """DADS between the source and the best other node: one min-cut of the whole DAG per server.

    Unlike Neurosurgeon the cut may pass through a block (an inception branch stays local while
    its sibling goes remote), which is DADS's point; the plan is still two stages.
    """
    from dnninfer.partition.common import best
    from dnninfer.partition.fleet import fleet
    from dnninfer.partition.plan import Part, evaluate

    compute = [n.name for n in cm.graph.compute_nodes()]
    local = cm.default_target(cm.source)
    plans = []
    # one server of each type: interchangeable servers give the same plan, and the first of a
    # type is the one `best` would keep among them
    for server in (n for n in fleet(cm).reps if n != cm.source):
        cut = cm.memo(("dads-cut", server), lambda s=server: _cut_with(cm, s))
        here = tuple(v for v in compute if v not in cut.remote)
        there = tuple(v for v in compute if v in cut.remote)
        parts = [Part(p, (t,)) for p, t in ((here, local), (there, cm.default_target(server))) if p]
        if not all(cm.fits(p.targets[0].node, p.nodes) for p in parts):
            continue
        plans.append(evaluate(cm, parts, strategy="dads", objective=objective, mode="layer",
                              reason=f"min s-t cut with {server}: {len(here)} nodes local, {len(there)} remote, "
                                     f"cut value {cut.cost_s * 1e3:.1f} ms"))
    return best(plans, objective)
