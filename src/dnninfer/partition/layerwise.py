"""Layer-wise (vertical) plans from the chain DPs: per-block costs on chosen targets -> parts.

One helper for PipeEdge (bottleneck DP on default PUs) and HiDP's global level (latency or
bottleneck DP on whatever targets or local-level rates it proposes), so the DP inputs are built
the same way: comp[d][l] = predicted seconds of block l on device d's target, hops = the cluster
links (full transfer time for latency, radio time for throughput), memory = weights + 2 x the
largest activation of a stage against the node's memory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dnninfer.partition.chain_dp import ChainPlan
from dnninfer.partition.costmodel import CostModel, Target
from dnninfer.partition.multiset_dp import TypedPlan, stage_tables, typed_dp
from dnninfer.partition.plan import Part, chain_parts

BlockCost = Callable[[int, str], float]
QUICK_BEAM = 4  # labels per state of the first, narrow pass of the typed DP  # (block index, node) -> seconds


def _need(cm: CostModel) -> Callable[[int, int], float]:
    return cm.memo(("layerwise", "need"), lambda: _need_table(cm))


def _need_table(cm: CostModel) -> Callable[[int, int], float]:
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
             max_devices: int | None = None, deadline: float | None = None) -> TypedPlan:
    """Run the latency (sum) or throughput (bottleneck) DP over `nodes`; the source must be among them.

    The DP runs over the nodes' types (partition/fleet.py, multiset_dp.py), so `cost(b, n)` must
    give interchangeable nodes the same seconds (any cost derived from the node's device and
    measured profile does). With `deadline` (a `time.perf_counter()` value) it may stop early
    with the best plan so far (`complete` False), or None if it had none yet."""
    from dnninfer.partition.fleet import fleet

    nodes = list(nodes)
    at = {n: i for i, n in enumerate(nodes)}
    types = [[at[n] for n in members if n in at] for members in fleet(cm).types]
    types = [t for t in types if t]
    from dnninfer.partition import tilecache

    comp = np.array([[cost(b, nodes[t[0]]) for b in range(len(cm.blocks))] for t in types])
    hop = tilecache.serial_s if objective == "throughput" else tilecache.transfer_s

    def comm(a: int, b: int, nbytes: float) -> float:
        u = types[a][0]
        v = types[b][0] if a != b else types[b][1]
        return hop(cm, nodes[u], nodes[v], nbytes)

    need = _need(cm)
    cap = [cm.cap_bytes(nodes[t[0]]) for t in types]
    tables = stage_tables(comp, need, cap)

    def solve(**how: Any) -> TypedPlan | None:
        return typed_dp(comp, types, [b.out_bytes for b in cm.blocks], cm.input_bytes, comm,
                        next(i for i, t in enumerate(types) if nodes[t[0]] == cm.source),
                        combine="max" if objective == "throughput" else "sum", need=need, cap=cap,
                        max_devices=max_devices, tables=tables, **how)

    # a narrow beam first: a good plan at once, whose value then prunes the default beam's search
    # (exact unless a state has more non-dominated labels than the beam keeps)
    quick = solve(beam=QUICK_BEAM)
    assert quick is not None  # no deadline: a plan, or UserError
    plan = solve(upper_s=quick.cost_s)
    if plan is None or plan.cost_s > quick.cost_s:
        plan = dataclasses.replace(quick, exact=False)
    if deadline is not None and not plan.exact:  # anytime: the exact DP, pruned by the beam's plan
        exact = solve(beam=None, deadline=deadline, upper_s=plan.cost_s)
        if exact is not None and exact.complete and exact.cost_s <= plan.cost_s:
            plan = exact
    return plan


def default_pu_dp(cm: CostModel, objective: str) -> TypedPlan:
    """`chain_dp` over every node with each node's default PU (PipeEdge's DP, and HiDP's first
    layer-wise candidate): computed once per cost model and objective."""
    objective = "throughput" if objective == "throughput" else "latency"
    def cost(b: int, n: str) -> float:
        return cm.block_s(b, cm.default_target(n))

    return cm.memo(("layerwise", "default-pu-dp", objective), lambda: chain_dp(cm, cm.nodes, cost, objective=objective))


def dp_parts(cm: CostModel, nodes: Sequence[str], plan: ChainPlan | TypedPlan, target: Callable[[str], Target],
             role: str = "layer") -> tuple[Part, ...]:
    return chain_parts(cm, [(target(nodes[d]), i, j) for d, i, j in plan.stages], role=role)
