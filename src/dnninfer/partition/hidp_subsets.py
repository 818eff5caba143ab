"""HiDP as it was planned before issue 22: node subsets enumerated (the reference for the new planner).

Kept verbatim but for the names, so the new planner (hidp.py: device types, multiset DP, a bounded
spatial search) can be checked against it: on clusters of up to 9 nodes the new plan must never
be worse (tests/partition/test_hidp_scale.py, `dnninfer bench hidp-scale`). Its cost grows
exponentially with the number of nodes: the chain DP keeps a bitmask of used nodes
(chain_dp.py) and the spatial and hybrid modes score every node subset of size >= 2. Not a
strategy of its own: `plan_hidp_subsets` is called by the tests and the bench only.

The design-space description of hidp.py (modes x node subsets x split points, then the local
level on the best candidates) applies unchanged.

`plan_hidp_brute_force` is the other reference: hidp.py's own design space enumerated without any
pruning or cap, which the new planner must equal on clusters of up to 5 nodes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from dnninfer.errors import UserError
from dnninfer.partition.chain_dp import bottleneck_dp
from dnninfer.partition.common import feasible_nodes, single
from dnninfer.partition.costmodel import CostModel
from dnninfer.partition.hidp import REFINE_TOP, _baselines, _fits, _fmt, _local_block_s, refine
from dnninfer.partition.layerwise import dp_parts
from dnninfer.partition.plan import Plan, evaluate
from dnninfer.partition.spatial import cut_candidates, row_local_prefix, spatial_parts


def chain_dp(cm: CostModel, nodes: Sequence[str], cost: Callable[[int, str], float], *, objective: str):
    """The node-level chain DP (a bitmask of used nodes), as layerwise.chain_dp was before issue 22."""
    import numpy as np

    from dnninfer.partition.chain_dp import latency_dp
    from dnninfer.partition.layerwise import _need

    nodes = list(nodes)
    comp = np.array([[cost(b, n) for b in range(len(cm.blocks))] for n in nodes])
    hop = cm.serial_s if objective == "throughput" else cm.transfer_s

    def comm(u: int, v: int, nbytes: float) -> float:
        return hop(nodes[u], nodes[v], nbytes)

    dp = bottleneck_dp if objective == "throughput" else latency_dp
    return dp(comp, [b.out_bytes for b in cm.blocks], cm.input_bytes, comm, nodes.index(cm.source),
              need=_need(cm), cap=[cm.cap_bytes(n) for n in nodes])


def _global_candidates(cm: CostModel, objective: str, local: bool) -> list[tuple[Plan, bool]]:
    """(plan, refine-it-regardless) pairs for every mode x subset x split point."""
    from dnninfer.partition.dads import plan_dads
    from dnninfer.partition.tiles import row_local_blocks

    out: list[tuple[Plan, bool]] = []
    dp_objective = "throughput" if objective == "throughput" else "latency"
    # single node
    for n in feasible_nodes(cm):
        for t in (cm.targets(n) if local else [cm.default_target(n)]):
            out.append((single(cm, t, strategy="hidp", objective=objective, reason=f"whole model on {t}"), False))
    # layer-wise chain DP, default PUs and (local) all-PU rates
    costs: list[tuple[str, Callable[[int, str], float]]] = [
        ("default PUs", lambda b, n: cm.block_s(b, cm.default_target(n)))]
    if local:
        row_local = row_local_blocks(cm.graph)
        costs.append(("all PUs", _local_block_s(cm, dp_objective, row_local)))
    for label, cost in costs:
        try:
            dp = chain_dp(cm, cm.nodes, cost, objective=dp_objective)
        except UserError:
            continue
        parts = dp_parts(cm, cm.nodes, dp, cm.default_target)
        if not _fits(cm, parts):
            continue
        used = " -> ".join(cm.nodes[d] for d, _, _ in dp.stages)
        out.append((evaluate(cm, parts, strategy="hidp", objective=objective, mode="layer",
                             reason=f"{dp_objective} chain DP on {label}: {used}"), label == "all PUs"))
    # DAG cut
    if len(cm.nodes) > 1:
        try:
            p = cm.memo(("plan", "dads", objective), lambda: plan_dads(cm, objective))
            out.append((evaluate(cm, p.parts, strategy="hidp", objective=objective, mode="layer",
                                 reason="DAG min-cut " + p.reason), False))
        except UserError:
            pass
    # spatial and hybrid
    prefix = row_local_prefix(cm)
    for size in range(2, len(cm.nodes) + 1):
        for subset in itertools.combinations(cm.nodes, size):
            targets = [cm.default_target(n) for n in subset]
            tails = list(dict.fromkeys([max(subset, key=lambda n: cm.rate(cm.default_target(n), "conv")),
                                        cm.source]))
            for last in cut_candidates(cm):
                for tail in tails:
                    parts = spatial_parts(cm, last, targets, cm.default_target(tail))
                    if not _fits(cm, parts):
                        continue
                    mode = "spatial" if last == prefix - 1 else "hybrid"
                    out.append((evaluate(
                        cm, parts, strategy="hidp", objective=objective, mode=mode,
                        reason=f"{mode}: rows of blocks 0-{last} over {', '.join(subset)}, tail on {tail}"), False))
    # the rivals' own plans
    for p in _baselines(cm, objective):
        if not _fits(cm, p.parts):
            continue
        out.append((evaluate(cm, p.parts, strategy="hidp", objective=objective, mode=p.mode,
                             reason=f"{p.strategy}'s plan: {p.reason}"), False))
    return out


def plan_hidp_subsets(cm: CostModel, objective: str = "latency", *, levels: Sequence[str] = ("global", "local"),
              strategy: str | None = None) -> Plan:
    """The best plan HiDP finds for `objective`; `levels` selects the ablations."""
    levels = tuple(levels)
    if not set(levels) <= {"global", "local"} or not levels:
        raise UserError(f"levels {levels}: expected a non-empty subset of ('global', 'local')")
    use_local = "local" in levels
    name = strategy or ("hidp" if len(levels) == 2 else f"hidp-{levels[0]}-only")
    if "global" in levels:
        pool = _global_candidates(cm, objective, use_local)
    else:
        pool = [(single(cm, cm.default_target(n), strategy=name, objective=objective,
                        reason=f"whole model on {n}"), True) for n in feasible_nodes(cm)]
    if not pool:
        raise UserError("hidp: no feasible plan: the model fits no node's memory")
    pool.sort(key=lambda pf: pf[0].score(objective))
    finalists = [p for p, _ in pool]
    if use_local:
        chosen = [p for p, _ in pool[:REFINE_TOP]] + [p for p, force in pool[REFINE_TOP:] if force]
        finalists += [refine(cm, p, objective) for p in chosen]
    winner = min(finalists, key=lambda p: p.score(objective))
    runner_up = min((p for p in finalists if p.mode != winner.mode), key=lambda p: p.score(objective), default=None)
    why = f"{winner.mode} wins among {len(pool)} global candidates ({objective})"
    if runner_up is not None:
        why += f"; best {runner_up.mode} plan scores {_fmt(runner_up, objective)} vs {_fmt(winner, objective)}"
    return evaluate(cm, winner.parts, strategy=name, objective=objective, mode=winner.mode,
                    reason=f"{why}. {winner.reason}")


def plan_hidp_brute_force(cm: CostModel, objective: str = "latency") -> Plan:
    """hidp.py's design space enumerated without pruning, types or caps: the reference the new
    planner must equal on small clusters (tests/partition/test_hidp_scale.py).

    Single-node plans on every node and PU, the node-level (bitmask) chain DPs, the DAG cut, the
    baselines, and for the spatial and hybrid modes every node subset of size >= 2 at every cut
    point (a subset is planned as its multiset of types, as hidp.py plans it: the tiler keeps a
    subset's fastest nodes when it has more than the tensor has rows); then hidp.py's local level
    and choice. Exponential in the number of nodes."""
    from dnninfer.partition import hidp
    from dnninfer.partition.fleet import fleet
    from dnninfer.partition.spatial import region, tile_rows
    from dnninfer.partition.tiles import row_local_blocks

    search = hidp.Search(None, effort=1 << 62)
    fl = fleet(cm)
    search.types, search.nodes = len(fl), len(cm.nodes)
    pool: list[tuple[Plan, bool]] = []
    for n in feasible_nodes(cm):
        for t in cm.targets(n):
            pool.append((single(cm, t, strategy="hidp", objective=objective, reason=f"whole model on {t}"), False))
    dp_objective = "throughput" if objective == "throughput" else "latency"
    costs = [("default PUs", lambda b, n: cm.block_s(b, cm.default_target(n))),
             ("all PUs", _local_block_s(cm, dp_objective, row_local_blocks(cm.graph)))]
    for label, cost in costs:
        try:
            dp = chain_dp(cm, cm.nodes, cost, objective=dp_objective)
        except UserError:
            continue
        parts = dp_parts(cm, cm.nodes, dp, cm.default_target)
        if _fits(cm, parts):
            pool.append((evaluate(cm, parts, strategy="hidp", objective=objective, mode="layer",
                                  reason=f"{dp_objective} chain DP on {label}"), label == "all PUs"))
    if len(cm.nodes) > 1:
        from dnninfer.partition.dads import plan_dads

        try:
            p = plan_dads(cm, objective)
            pool.append((evaluate(cm, p.parts, strategy="hidp", objective=objective, mode="layer",
                                  reason="DAG min-cut " + p.reason), False))
        except UserError:
            pass
    for p in _baselines(cm, objective):
        if _fits(cm, p.parts):
            pool.append((evaluate(cm, p.parts, strategy="hidp", objective=objective, mode=p.mode,
                                  reason=f"{p.strategy}'s plan: {p.reason}"), False))
    search.candidates += len(pool)
    if len(cm.nodes) > 1:
        prefix = row_local_prefix(cm)
        rate = {n: cm.rate(cm.default_target(n), "conv") for n in cm.nodes}
        for last in cut_candidates(cm):
            rows = tile_rows(cm, region(cm, 0, last))
            mode = "spatial" if last == prefix - 1 else "hybrid"
            cut = hidp._CutSearch(cm, objective, fl, search, last, mode, rate, min(rows, len(cm.nodes)))
            for size in range(2, len(cm.nodes) + 1):
                for subset in itertools.combinations(cm.nodes, size):
                    kept = sorted(subset, key=lambda n: -rate[n])[:rows]  # what the tiler keeps
                    m = [0] * len(fl)
                    for n in kept:
                        m[fl.type_of[n]] += 1
                    if sum(m) >= 2:
                        cut.score(tuple(m))
            search.spatial_space += len(cut.scores)
            pool += [(p, False) for p in cut.best_plans()]
    return hidp.choose(cm, pool, objective, "hidp", True, search)
