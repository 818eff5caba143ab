"""The operator DAG a stream scheduler works on, built from a captured `Graph`.

Only compute nodes are scheduled (research/gpu_and_serving.md §1.3 step 2): placeholders and
weights (`get_attr`) exist before the first launch and the output node is the join. Besides data
edges the DAG carries *ordering* edges for in-place operators: once operators run concurrently,
``relu_(x)`` must wait for every other reader of ``x`` that comes before it in program order, and
every reader after it must wait for it (write-after-read / read-after-write on one buffer). Eager
PyTorch gets this for free from program order; a multi-stream schedule does not.

Per-node cost, FLOPs and bytes moved feed the launch-order heuristics (opara.py): cost is the
MEASURED latency (`dnninfer.cost.measure.profile`) when given, otherwise a roofline estimate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import networkx as nx

from dnninfer.errors import UserError
from dnninfer.graph import Graph
from dnninfer.graph.ops import is_inplace, may_alias

__all__ = ["SOURCE", "OpDAG", "estimate_cost_s"]

#: Stands for the model inputs in stream allocation (Opara's placeholder nodes): the first
#: operator that reads an input inherits "the input's stream", stream 0.
SOURCE = "<inputs>"

#: Nominal rates for the roofline estimate used when no measured profile is given (a 2-core CPU
#: order of magnitude; only relative costs matter to the heuristics).
_EST_FLOPS = 20e9
_EST_BW = 8e9
_EST_OVERHEAD_S = 5e-6


def estimate_cost_s(flops: int, nbytes: int) -> float:
    """Roofline estimate: max(compute time, memory time) plus a fixed dispatch overhead."""
    return max(flops / _EST_FLOPS, nbytes / _EST_BW) + _EST_OVERHEAD_S


@dataclass(frozen=True)
class OpDAG:
    """Compute operators in program (fx) order with their dependencies and costs.

    ``preds[v]`` lists data predecessors first (in fx argument order, as Opara's Alg. 1 reads
    ``node.all_input_nodes``), then ordering-only predecessors from in-place hazards.
    ``reads_input`` marks operators that read a model input, which Alg. 1 treats as reading
    `SOURCE`.
    """

    names: tuple[str, ...]
    preds: Mapping[str, tuple[str, ...]]
    cost_s: Mapping[str, float]
    flops: Mapping[str, int]
    bytes_moved: Mapping[str, int]
    kind: Mapping[str, str] = field(default_factory=dict)
    reads_input: frozenset[str] = frozenset()
    hazard_edges: frozenset[tuple[str, str]] = frozenset()
    measured: bool = False  # True when cost_s came from a measured profile
    name: str = "dag"

    def __post_init__(self) -> None:
        known = set(self.names)
        if len(known) != len(self.names):
            raise ValueError("OpDAG: duplicate node names")
        pos = {n: i for i, n in enumerate(self.names)}
        for v in self.names:
            for u in self.preds.get(v, ()):
                if u not in known:
                    raise ValueError(f"OpDAG: {v!r} depends on unknown node {u!r}")
                if pos[u] >= pos[v]:
                    raise ValueError(f"OpDAG: names must be in topological order; {u!r} comes after {v!r}")

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_edges(
        cls,
        edges: Iterable[tuple[str, str]],
        nodes: Sequence[str] | None = None,
        *,
        cost_s: Mapping[str, float] | None = None,
        flops: Mapping[str, int] | None = None,
        bytes_moved: Mapping[str, int] | None = None,
        name: str = "dag",
    ) -> OpDAG:
        """A DAG from plain edges (tests, hand-made examples). Nodes with no predecessor read the
        input. Without ``nodes`` the order is a topological sort (lexicographic on ties)."""
        edges = list(edges)
        g = nx.DiGraph()
        g.add_nodes_from(nodes or [])
        g.add_edges_from(edges)
        if not nx.is_directed_acyclic_graph(g):
            raise ValueError("OpDAG.from_edges: the edges contain a cycle")
        order = list(nodes) if nodes is not None else list(nx.lexicographical_topological_sort(g))
        preds: dict[str, list[str]] = {n: [] for n in order}
        for u, v in edges:
            if u not in preds[v]:
                preds[v].append(u)
        flops = dict(flops or {})
        nbytes = dict(bytes_moved or {})
        for n in order:
            flops.setdefault(n, 0)
            nbytes.setdefault(n, 1)
        cost = dict(cost_s) if cost_s is not None else {n: 1.0 for n in order}
        return cls(
            names=tuple(order), preds={n: tuple(p) for n, p in preds.items()}, cost_s=cost, flops=flops,
            bytes_moved=nbytes, kind={n: "op" for n in order},
            reads_input=frozenset(n for n in order if not preds[n]), measured=cost_s is not None, name=name,
        )

    @classmethod
    def from_graph(cls, graph: Graph, node_s: Mapping[str, float] | None = None) -> OpDAG:
        """The scheduling DAG of a captured graph; ``node_s`` is a measured per-node latency
        (`profile(graph).node_s`), else costs are roofline estimates."""
        compute = [n for n in graph.nodes.values() if n.is_compute]
        if not compute:
            raise UserError(f"model {graph.name}: no compute nodes to schedule")
        names = [n.name for n in compute]
        is_compute = set(names)
        preds: dict[str, list[str]] = {}
        reads_input: set[str] = set()
        flops: dict[str, int] = {}
        nbytes: dict[str, int] = {}
        for n in compute:
            preds[n.name] = [i for i in dict.fromkeys(n.inputs) if i in is_compute]
            if any(graph.nodes[i].op == "placeholder" for i in n.inputs):
                reads_input.add(n.name)
            flops[n.name] = int(n.flops)
            read = sum(graph.nodes[i].out_bytes for i in n.inputs if graph.nodes[i].op != "get_attr")
            nbytes[n.name] = max(int(read + n.out_bytes + n.param_bytes), 1)
        hazards = _without_implied(_inplace_hazards(graph, names), names, preds)
        for u, v in hazards:
            preds[v].append(u)
        if node_s is not None:
            missing = [n for n in names if n not in node_s]
            if missing:
                raise ValueError(f"latency profile lacks nodes {missing[:5]} (profile of another graph?)")
            cost = {n: float(node_s[n]) for n in names}
        else:
            cost = {n: estimate_cost_s(flops[n], nbytes[n]) for n in names}
        # nodes with neither a compute predecessor nor an input (e.g. torch.ones(...)) start at SOURCE too
        reads_input |= {n for n in names if not preds[n]}
        return cls(
            names=tuple(names), preds={n: tuple(p) for n, p in preds.items()}, cost_s=cost, flops=flops,
            bytes_moved=nbytes, kind={n.name: n.kind for n in compute}, reads_input=frozenset(reads_input),
            hazard_edges=frozenset(hazards), measured=node_s is not None, name=graph.name,
        )

    # -- views -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.names)

    @cached_property
    def index(self) -> dict[str, int]:
        """Program-order position of each node (a topological order)."""
        return {n: i for i, n in enumerate(self.names)}

    @cached_property
    def succs(self) -> dict[str, tuple[str, ...]]:
        out: dict[str, list[str]] = {n: [] for n in self.names}
        for v in self.names:
            for u in self.preds[v]:
                out[u].append(v)
        return {n: tuple(s) for n, s in out.items()}

    def edges(self) -> list[tuple[str, str]]:
        return [(u, v) for v in self.names for u in self.preds[v]]

    @cached_property
    def nx(self) -> nx.DiGraph:
        g = nx.DiGraph()
        g.add_nodes_from(self.names)
        g.add_edges_from(self.edges())
        return g

    @cached_property
    def memo(self) -> dict[Any, Any]:
        """Per-DAG cache for derived structures (e.g. the minimum chain decomposition)."""
        return {}

    @cached_property
    def descendants_bits(self) -> dict[str, int]:
        """Every node's descendants as a bitset over program positions (bit i = names[i])."""
        bits: dict[str, int] = {}
        for v in reversed(self.names):
            b = 0
            for s in self.succs[v]:
                b |= bits[s] | (1 << self.index[s])
            bits[v] = b
        return bits

    def reaches(self, u: str, v: str) -> bool:
        """True when a path leads from u to v (u != v)."""
        return bool(self.descendants_bits[u] >> self.index[v] & 1)

    def closure_edges(self) -> list[tuple[str, str]]:
        """Edges of the transitive closure, in program order of (tail, head)."""
        out = []
        for u in self.names:
            b, i = self.descendants_bits[u], 0
            while b:
                if b & 1:
                    out.append((u, self.names[i]))
                b >>= 1
                i += 1
        return out

    def is_linear_extension(self, order: Sequence[str]) -> bool:
        """True when ``order`` lists every node once and each after all its predecessors."""
        if len(order) != len(self.names) or set(order) != set(self.names):
            return False
        pos = {n: i for i, n in enumerate(order)}
        return all(pos[u] < pos[v] for u, v in self.edges())

    def longest_path(self) -> list[str]:
        """The critical path: the chain of nodes with the largest total cost (ties: program order)."""
        best: dict[str, float] = {}
        back: dict[str, str | None] = {}
        for v in self.names:
            p = max(self.preds[v], key=lambda u: (best[u], -self.index[u]), default=None)
            best[v] = self.cost_s[v] + (best[p] if p is not None else 0.0)
            back[v] = p
        end = max(self.names, key=lambda n: (best[n], -self.index[n]))
        path = [end]
        while back[path[-1]] is not None:
            path.append(back[path[-1]])  # type: ignore[arg-type]
        return path[::-1]

    def bottom_level(self) -> dict[str, float]:
        """Longest remaining path from each node to a sink, the node's own cost included."""
        level: dict[str, float] = {}
        for v in reversed(self.names):
            level[v] = self.cost_s[v] + max((level[s] for s in self.succs[v]), default=0.0)
        return level


def _without_implied(
    edges: set[tuple[str, str]], order: Sequence[str], preds: Mapping[str, Sequence[str]]
) -> list[tuple[str, str]]:
    """Hazard edges not already implied by a data path, in program order of their heads.

    Ancestor sets are Python-int bitsets over program positions; edges are added as they are
    accepted, so an accepted hazard edge can make a later one redundant too.
    """
    pos = {n: i for i, n in enumerate(order)}
    by_head: dict[str, list[str]] = {}
    for u, v in edges:
        by_head.setdefault(v, []).append(u)
    anc: dict[str, int] = {}
    kept: list[tuple[str, str]] = []
    for v in order:
        bits = 0
        for u in preds[v]:
            bits |= anc[u] | (1 << pos[u])
        for u in sorted(by_head.get(v, ()), key=pos.__getitem__, reverse=True):
            if not bits >> pos[u] & 1:
                kept.append((u, v))
                bits |= anc[u] | (1 << pos[u])
        anc[v] = bits
    return kept


def _inplace_hazards(graph: Graph, order: Sequence[str]) -> set[tuple[str, str]]:
    """Ordering edges that make in-place writes safe under concurrency (see module docstring)."""
    fx_nodes = {n.name: n for n in graph.gm.graph.nodes}
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    inplace: list[str] = []
    for name in order:
        n = fx_nodes[name]
        info = graph.nodes[name]
        module = graph.gm.get_submodule(str(n.target)) if n.op == "call_module" else None
        first = next(iter(n.all_input_nodes), None)
        if is_inplace(n, module):
            inplace.append(name)
        if first is not None and may_alias(n, module, info.kind):  # graph/ops.py: writes and views
            parent[root(name)] = root(first.name)  # output aliases the first input
    if not inplace:
        return set()
    pos = {n: i for i, n in enumerate(order)}
    readers: dict[str, set[str]] = {}
    for name in order:
        for a in fx_nodes[name].all_input_nodes:
            readers.setdefault(root(a.name), set()).add(name)
    edges: set[tuple[str, str]] = set()
    for w in inplace:
        first = next(iter(fx_nodes[w].all_input_nodes))
        for r in readers.get(root(first.name), ()):
            if r == w:
                continue
            edges.add((r, w) if pos[r] < pos[w] else (w, r))
    return edges
