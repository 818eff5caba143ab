"""HiDP (Taufique et al., DATE'25): hierarchical partitioning, across nodes then across each node's PUs.

Global level (partitioning.md §1.2, §6.1 step 3): a design-space exploration over partitioning
modes x node subsets x split points, every candidate scored by the same simulator (plan.py):

* single node: the whole model on one node (all-local, all-offload and their kin);
* layer-wise: the chain DP over all nodes (sum of compute and hops for latency, PipeEdge's
  bottleneck for throughput), with per-block costs from each node's default PU and, when the
  local level is on, from the rate the node reaches with all its PUs;
* layer-wise on the DAG: the DADS min-cut between the source and each other node;
* spatial and hybrid: row tiles of the conv prefix (up to several cut points) over every node
  subset of size >= 2, gathered on a tail node that runs the rest (spatial when the prefix is the
  whole row-local part, hybrid otherwise);
* the baselines' own plans, so the search space contains every rival.

Local level (§6.1 step 4): each part placed on a node is re-split across that node's processing
units, whichever the cost model prefers: the single best PU, an intra-layer split (row tiles of
the part's row-local blocks across all PUs, one sync per tile), or an inter-layer pipeline across
PUs (bottleneck DP over the part's blocks). A spatial tile on a node becomes tiles on each PU.
The global candidates are refined best-first and the best refined plan wins; because the unrefined
candidates stay in the pool, HiDP is never worse than a candidate it saw under the cost model.

Ablations: `levels=("global",)` (no local level: every node runs its default PU) and
`levels=("local",)` (no global level: the whole model on the best single node, split across its PUs).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from dnninfer.errors import UserError
from dnninfer.partition.chain_dp import bottleneck_dp
from dnninfer.partition.common import feasible_nodes, single
from dnninfer.partition.costmodel import CostModel
from dnninfer.partition.layerwise import chain_dp, dp_parts
from dnninfer.partition.plan import Part, Plan, evaluate
from dnninfer.partition.spatial import balance, cut_candidates, region, row_local_prefix, spatial_parts, tile_rows

REFINE_TOP = 6  # global candidates refined by the local level, best first


def _baselines(cm: CostModel, objective: str) -> list[Plan]:
    from dnninfer.partition.strategies import BASELINES, plan

    out = []
    for name in BASELINES:
        try:
            out.append(plan(cm, name, objective))
        except UserError:
            continue  # a baseline with no feasible plan here (e.g. no spatial prefix)
    return out


def _fits(cm: CostModel, parts: Sequence[Part]) -> bool:
    return all(cm.fits(t.node, p.nodes) for p in parts for t in p.targets)


def _local_block_s(cm: CostModel, objective: str, row_local: Sequence[bool]) -> Callable[[int, str], float]:
    """Per-block seconds a node reaches with all its PUs (an estimate the DP can add up)."""

    def cost(b: int, n: str) -> float:
        times = [cm.block_s(b, t) for t in cm.targets(n)]
        best_one = min(times)
        if len(times) < 2:
            return best_one
        together = 1.0 / sum(1.0 / t for t in times)
        if objective == "throughput":  # a balanced pipeline across PUs
            return min(best_one, together)
        if row_local[b]:  # an intra-layer split pays a sync per PU
            return min(best_one, together + cm.sync_s)
        return best_one

    return cost


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


# -- local level ---------------------------------------------------------------------------------


def _block_range(cm: CostModel, part: Part) -> tuple[int, int] | None:
    """The chain blocks a part covers exactly, if it is a contiguous run of whole blocks."""
    members = set(part.nodes)
    inside = [b.index for b in cm.blocks if members.issuperset(b.nodes)]
    if not inside or inside != list(range(inside[0], inside[-1] + 1)):
        return None
    if sum(len(cm.blocks[b].nodes) for b in inside) != len(part.nodes):
        return None
    return inside[0], inside[-1]


def _alternatives(cm: CostModel, part: Part, objective: str) -> list[tuple[list[Part], str]]:
    """Ways to run one part on its node's PUs (the part itself first)."""
    from dnninfer.partition.tiles import row_local_blocks

    node = part.targets[0].node
    pus = cm.targets(node)
    out: list[tuple[list[Part], str]] = [([part], "as planned")]
    if part.tiled:
        if all(t.node == t2.node for t in part.targets for t2 in part.targets):
            return out
        flat = [t for n in dict.fromkeys(t.node for t in part.targets) for t in cm.targets(n)]
        if len(flat) > len(part.targets):
            shares = balance(cm, part.nodes, flat, cm.source, cm.source)
            out.append(([Part(part.nodes, tuple(flat), shares, role=part.role)], "tiles on every PU of each node"))
        return out
    for t in pus:
        if t != part.targets[0]:
            out.append(([Part(part.nodes, (t,), role=part.role)], f"on {t}"))
    if len(pus) < 2:
        return out
    span = _block_range(cm, part)
    if span is None:
        return out
    first, last = span
    best_pu = min(pus, key=lambda t: cm.seconds(part.nodes, t))
    # intra-layer: row tiles of the longest row-local run of blocks, across all PUs
    row_local = row_local_blocks(cm.graph)
    runs, start = [], None
    for b in range(first, last + 2):
        ok = b <= last and row_local[b]
        if ok and start is None:
            start = b
        elif not ok and start is not None:
            runs.append((start, b - 1))
            start = None
    if runs:
        a, z = max(runs, key=lambda r: sum(cm.blocks[b].flops for b in range(r[0], r[1] + 1)))
        before = [Part(region(cm, first, a - 1), (best_pu,), role="layer")] if a > first else []
        after = [Part(region(cm, z + 1, last), (best_pu,), role="layer")] if z < last else []
        over = ", ".join(t.pu for t in pus)
        nodes = region(cm, a, z)
        if tile_rows(cm, nodes) >= len(pus):
            fused = Part(nodes, tuple(pus), balance(cm, nodes, pus, node, node), role="local-tiles")
            out.append(([*before, fused, *after], f"intra-layer row split of blocks {a}-{z} (fused) over {over}"))
        # block by block: halos stay one block deep, at the price of a join (sync) per block
        per_block = []
        for b in range(a, z + 1):
            nodes_b = region(cm, b, b)
            if tile_rows(cm, nodes_b) < len(pus):
                break
            per_block.append(Part(nodes_b, tuple(pus), balance(cm, nodes_b, pus, node, node), role="local-tiles"))
        else:
            if z > a:
                out.append((before + per_block + after,
                            f"intra-layer row split of blocks {a}-{z} (block by block) over {over}"))
    # inter-layer: pipeline the part's blocks across the PUs
    if last > first:
        comp = [[cm.block_s(b, t) for b in range(first, last + 1)] for t in pus]
        src = pus.index(best_pu)
        dp = bottleneck_dp(comp, [cm.blocks[b].out_bytes for b in range(first, last + 1)], 0.0,
                           lambda u, v, nbytes: 0.0, src)
        if len(dp.stages) > 1:
            pieces = [Part(region(cm, first + i, first + j), (pus[d],), role="local-pipeline") for d, i, j in dp.stages]
            out.append((pieces, "inter-layer pipeline " + " -> ".join(pus[d].pu for d, _, _ in dp.stages)))
    return out


def refine(cm: CostModel, plan: Plan, objective: str) -> Plan:
    """HiDP's local level: re-split each part across its node's PUs, greedily, part by part."""
    parts = list(plan.parts)
    notes = []
    current = plan
    i = 0
    while i < len(parts):
        best_plan, best_parts, best_note = current, [parts[i]], None
        for pieces, note in _alternatives(cm, parts[i], objective)[1:]:
            trial = parts[:i] + pieces + parts[i + 1:]
            if not _fits(cm, trial):
                continue
            try:
                cand = evaluate(cm, trial, strategy=plan.strategy, objective=objective, mode=plan.mode)
            except ValueError:  # e.g. local tiles right after global tiles: not a valid plan
                continue
            if cand.score(objective) < best_plan.score(objective) - 1e-12:
                best_plan, best_parts, best_note = cand, pieces, note
        if best_note is not None:
            notes.append(f"{best_parts[0].targets[0].node}: {best_note}")
        parts = parts[:i] + best_parts + parts[i + 1:]
        current = best_plan
        i += len(best_parts)
    reason = plan.reason + ("; local level: " + "; ".join(notes) if notes else "; local level: default PUs kept")
    return evaluate(cm, parts, strategy=plan.strategy, objective=objective, mode=plan.mode, reason=reason)


def plan_hidp(cm: CostModel, objective: str = "latency", *, levels: Sequence[str] = ("global", "local"),
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


def _fmt(plan: Plan, objective: str) -> str:
    if objective == "latency":
        return f"{plan.latency_s * 1e3:.1f} ms"
    if objective == "energy":
        return f"{plan.energy_j * 1e3:.1f} mJ"
    return f"{plan.throughput_ips:.2f}/s"
