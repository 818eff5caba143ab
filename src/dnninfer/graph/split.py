"""Turn any partition of a Graph's compute nodes into stage GraphModules (policy apart from
mechanism: planners choose the assignment, this module only builds it)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import networkx as nx
import numpy as np
from torch import fx
from torch.utils import _pytree as pytree

from dnninfer.errors import UserError
from dnninfer.graph.core import Graph, Stage


def _check(graph: Graph, assignment: Mapping[str, int]) -> None:
    compute = {n.name for n in graph.compute_nodes()}
    unknown = sorted(set(assignment) - compute)
    if unknown:
        raise UserError(f"assignment: names {unknown[:5]} are not compute nodes of {graph.name}")
    missing = [n for n in graph.nodes if n in compute and n not in assignment]
    if missing:
        raise UserError(f"assignment: {len(missing)} compute nodes have no stage, e.g. {missing[:5]}")
    bad = {k: v for k, v in assignment.items() if not isinstance(v, int) or isinstance(v, bool)}
    if bad:
        raise UserError(f"assignment: stage labels must be int, got {next(iter(bad.items()))}")


def equal_flops_chain(graph: Graph, k: int) -> dict[str, int]:
    """A neutral k-stage assignment: exactly `k` contiguous runs of chain blocks, labelled 0..k-1.

    Used by demos and runtime benches (real planners in partition/ choose their own cuts), so it
    must never hand back fewer stages than asked: every stage gets at least one block, the
    largest stage's FLOPs are as small as possible, and among such splits the stages are as even
    as possible. K < 1 or more stages than blocks is a `UserError`.
    """
    blocks = graph.chain()
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserError(f"stages: expected a positive integer, got {k!r}")
    if k > len(blocks):
        raise UserError(
            f"stages: {graph.name} has {len(blocks)} chain blocks (cuts between single tensors), "
            f"so it can be split into at most {len(blocks)} stages, got {k}"
        )
    ends = balanced_cuts([b.flops for b in blocks], k)
    labels = [s for s, (lo, hi) in enumerate(itertools.pairwise((0, *ends))) for _ in range(lo, hi)]
    return graph.blocks_to_assignment(blocks, labels)


def balanced_cuts(weights: Sequence[int], k: int) -> list[int]:
    """End index of each of `k` non-empty contiguous parts of `weights` (the last is len).

    Minimises the heaviest part (bisection on the bottleneck, exact for integer weights), then
    the sum of squared part weights among splits with that bottleneck (a DP over prefix sums).
    """
    n = len(weights)
    if not 1 <= k <= n:
        raise ValueError(f"cannot cut {n} weights into {k} non-empty parts")
    prefix = np.concatenate(([0], np.cumsum(np.asarray(weights, dtype=np.int64))))

    def parts(limit: int) -> int:  # fewest parts with every part <= limit (greedy is optimal)
        count, start = 1, 0
        for i in range(1, n + 1):
            if prefix[i] - prefix[start] > limit:
                count, start = count + 1, i - 1
        return count

    lo, hi = int(max(weights, default=0)), int(prefix[-1])
    while lo < hi:  # parts() is non-increasing in the limit; "at most k" == "exactly k" (split more)
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if parts(mid) <= k else (mid + 1, hi)
    # span[j, i] = weight of blocks j..i-1; allowed when it is non-empty and within the bottleneck.
    span = (prefix[None, :] - prefix[:, None]).astype(np.float64)
    allowed = (span <= lo) & np.triu(np.ones((n + 1, n + 1), dtype=bool), 1)
    cost = np.where(allowed, span**2, np.inf)
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    back = np.zeros((k, n + 1), dtype=np.int64)
    for s in range(k):
        total = best[:, None] + cost  # [j, i]: best split of 0..j into s parts, then part j..i
        back[s] = np.argmin(total, axis=0)
        best = total[back[s], np.arange(n + 1)]
    ends, i = [], n
    for s in range(k - 1, -1, -1):
        ends.append(i)
        i = int(back[s, i])
    return ends[::-1]


def stage_order(graph: Graph, assignment: Mapping[str, int]) -> list[int]:
    """Stage labels in an order that respects data dependencies (ties broken by label).

    Raises UserError if the partition makes two stages need each other's outputs.
    """
    q = nx.DiGraph()
    q.add_nodes_from(set(assignment.values()))
    for name, label in assignment.items():
        for src in graph.nodes[name].inputs:
            s = assignment.get(src)
            if s is not None and s != label:
                q.add_edge(s, label)
    try:
        return list(nx.lexicographical_topological_sort(q))
    except nx.NetworkXUnfeasible:
        cycle = nx.find_cycle(q)
        path = " -> ".join(str(a) for a, _ in cycle) + f" -> {cycle[0][0]}"
        raise UserError(f"assignment: stages depend on each other in a cycle ({path})") from None


def split_graph(graph: Graph, assignment: Mapping[str, int]) -> list[Stage]:
    _check(graph, assignment)
    order = stage_order(graph, assignment)
    fx_nodes = {n.name: n for n in graph.gm.graph.nodes}
    output = graph.output_node
    # Who reads each value: stage labels, or "out" for the model output.
    readers: dict[str, set[Any]] = {}
    for name, label in assignment.items():
        for src in graph.nodes[name].inputs:
            readers.setdefault(src, set()).add(label)
    for src in output.all_input_nodes:
        readers.setdefault(src.name, set()).add("out")

    stages = []
    for label in order:
        members = [n for n in graph.nodes if assignment.get(n) == label]
        member_set = set(members)
        inputs: list[str] = []
        g = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        # Placeholders first, in first-use order; weights (get_attr) are copied, never sent.
        for name in members:
            for src in fx_nodes[name].all_input_nodes:
                if src.name in member_set or src in env:
                    continue
                if src.op == "get_attr":
                    continue
                inputs.append(src.name)
                env[src] = g.placeholder(src.name)
        for name in members:
            node = fx_nodes[name]
            for src in node.all_input_nodes:
                if src.op == "get_attr" and src not in env:
                    env[src] = g.node_copy(src, env.__getitem__)
            env[node] = g.node_copy(node, env.__getitem__)
        outputs = [n for n in members if readers.get(n, set()) - {label}]
        g.output(tuple(env[fx_nodes[n]] for n in outputs))
        module = fx.GraphModule(graph.gm, g, class_name=f"Stage{label}")
        stages.append(Stage(index=label, module=module, nodes=tuple(members),
                            inputs=tuple(inputs), outputs=tuple(outputs)))
    return stages


def run_stages(graph: Graph, stages: Sequence[Stage], inputs: Sequence[Any]) -> Any:
    """Run stages in order, passing named values between them; rebuild the model's output."""
    names = graph.input_names
    if len(inputs) != len(names):
        raise UserError(f"inputs: expected {len(names)} tensors ({names}), got {len(inputs)}")
    env: dict[str, Any] = dict(zip(names, inputs, strict=True))
    for st in stages:
        outs = st(*(env[n] for n in st.inputs))
        env.update(zip(st.outputs, outs, strict=True))
    return assemble_output(graph, env)


def assemble_output(graph: Graph, env: Mapping[str, Any]) -> Any:
    """The model's output from a name -> value map, in the structure the model returns."""
    out = fx.node.map_arg(graph.output_node.args[0], lambda n: env[n.name])
    spec = getattr(graph.gm, "_out_spec", None)
    if spec is not None:  # torch.export modules return pytree-structured outputs
        return pytree.tree_unflatten(list(out), spec)
    return out
