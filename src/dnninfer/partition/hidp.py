"""HiDP (Taufique et al., DATE'25): hierarchical partitioning, across nodes then across each node's PUs.

Global level (partitioning.md §1.2, §6.1 step 3): a design-space exploration over partitioning
modes x node subsets x split points, every candidate scored by the same simulator (plan.py):

* single node: the whole model on one node (all-local, all-offload and their kin);
* layer-wise: the chain DP over all nodes (sum of compute and hops for latency, PipeEdge's
  bottleneck for throughput), with per-block costs from each node's default PU and, when the
  local level is on, from the rate the node reaches with all its PUs;
* layer-wise on the DAG: the DADS min-cut between the source and each other node;
* spatial and hybrid: row tiles of the conv prefix (up to several cut points) over node subsets
  of size >= 2, gathered on a tail node that runs the rest (spatial when the prefix is the whole
  row-local part, hybrid otherwise);
* the baselines' own plans, so the search space contains every rival.

Local level (§6.1 step 4): each part placed on a node is re-split across that node's processing
units, whichever the cost model prefers: the single best PU, an intra-layer split (row tiles of
the part's row-local blocks across all PUs, one sync per tile), or an inter-layer pipeline across
PUs (bottleneck DP over the part's blocks). A spatial tile on a node becomes tiles on each PU.
The global candidates are refined best-first and the best refined plan wins; because the unrefined
candidates stay in the pool, HiDP is never worse than a candidate it saw under the cost model.

Fleet scale (issue 22). The search never enumerates node subsets, so its cost grows polynomially
with the number of nodes, by one code path at every size:

* nodes are grouped into interchangeable types (partition/fleet.py); a subset is a multiset of
  types (how many of each), and only one node of each type is tried where one node is chosen
  (single-node plans, DAG cuts, servers of the baselines);
* the chain DPs run over (block, multiset of types, last type) with dominance and bound pruning
  (partition/multiset_dp.py), keeping at most `multiset_dp.BEAM` labels per state: exact while
  no state has more non-dominated labels than that (every cluster of up to 9 nodes), polynomial
  always;
* the spatial and hybrid modes search node multisets per cut point: seeds (the fastest nodes,
  with and without the source), then a steepest-descent walk (add, drop or swap one node of a
  type), then every remaining multiset, smallest first, until the space is done or `EFFORT`
  multisets per cut have been scored. Multisets larger than the tensor has rows are never tried
  (the tiler keeps the fastest nodes anyway). On small clusters the space is done before the cap
  (every multiset is scored: the plan equals a brute-force search over the same space);
* every piece of a score is memoised (tiles per stripe, part seconds, transfers:
  partition/tilecache.py), and the simulator runs without building graphs.

Anytime: with `time_budget` (seconds) the clock bounds the search instead of the effort cap. The
single-node, layer-wise (the DPs' default pass), DAG-cut and baseline candidates are always
scored; the spatial search runs its default effort while the clock permits and then sweeps on,
one multiset per cut point in turn, and a DP whose beam dropped labels is re-run exactly, until
the budget is spent or the space is done. It returns the best plan so far; the plan's `search`
record (and its reason) says how far the search got.

Ablations: `levels=("global",)` (no local level: every node runs its default PU) and
`levels=("local",)` (no global level: the whole model on the best single node, split across its PUs).
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from dnninfer.errors import UserError
from dnninfer.partition.chain_dp import bottleneck_dp
from dnninfer.partition.common import feasible_nodes, single
from dnninfer.partition.costmodel import CostModel
from dnninfer.partition.fleet import Fleet, fleet
from dnninfer.partition.layerwise import chain_dp, default_pu_dp, dp_parts
from dnninfer.partition.plan import Part, Plan, evaluate
from dnninfer.partition.spatial import balance, cut_candidates, region, row_local_prefix, spatial_parts, tile_rows

REFINE_TOP = 6  # global candidates refined by the local level, best first
EFFORT = 256  # node multisets scored per spatial cut point when no time budget is given
SEED_SIZES = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)  # subset sizes the spatial search starts from
WALK_STARTS = 3  # best seeds the steepest-descent walk starts from


@dataclass
class Search:
    """How far the search got: what `Plan.search` reports."""

    budget_s: float | None
    effort: int
    started: float = field(default_factory=time.perf_counter)
    types: int = 0
    nodes: int = 0
    candidates: int = 0
    spatial_scored: int = 0
    spatial_space: int = 0
    dp_complete: bool = True
    stopped_by: str | None = None

    @property
    def deadline(self) -> float | None:
        return None if self.budget_s is None else self.started + self.budget_s

    def out_of_time(self) -> bool:
        if self.budget_s is not None and time.perf_counter() > self.started + self.budget_s:
            self.stopped_by = "time budget"
            return True
        return False

    def summary(self) -> dict[str, Any]:
        complete = self.dp_complete and self.spatial_scored >= self.spatial_space
        return {"nodes": self.nodes, "types": self.types, "candidates": self.candidates,
                "spatial_multisets_scored": self.spatial_scored, "spatial_multisets": self.spatial_space,
                "chain_dp_complete": self.dp_complete, "complete": complete,
                "stopped_by": None if complete else (self.stopped_by or "effort cap"),
                "budget_s": self.budget_s, "effort": self.effort,
                "search_s": round(time.perf_counter() - self.started, 6)}

    def note(self) -> str:
        s = self.summary()
        how = "complete" if s["complete"] else f"stopped by the {s['stopped_by']}"
        return (f"searched {s['nodes']} nodes as {s['types']} types: {s['candidates']} candidates, "
                f"{s['spatial_multisets_scored']}/{s['spatial_multisets']} spatial node multisets ({how})")


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
    from dnninfer.partition.tilecache import costs

    c = costs(cm)
    return all(c.fits(t.node, p.nodes) for p in parts for t in p.targets)


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


# -- global level --------------------------------------------------------------------------------


def _global_candidates(cm: CostModel, objective: str, local: bool, search: Search) -> list[tuple[Plan, bool]]:
    """(plan, refine-it-regardless) pairs: every mode, the spatial ones searched over node multisets."""
    from dnninfer.partition.tiles import row_local_blocks

    fl = fleet(cm)
    search.types, search.nodes = len(fl), len(cm.nodes)
    out: list[tuple[Plan, bool]] = []
    dp_objective = "throughput" if objective == "throughput" else "latency"
    # single node: one of each type
    whole = set(feasible_nodes(cm))
    for n in fl.reps:
        if n not in whole:
            continue
        for t in (cm.targets(n) if local else [cm.default_target(n)]):
            out.append((single(cm, t, strategy="hidp", objective=objective, reason=f"whole model on {t}"), False))
    # layer-wise chain DP over types, default PUs and (local) all-PU rates
    costs: list[tuple[str, Callable[[int, str], float]]] = [
        ("default PUs", lambda b, n: cm.block_s(b, cm.default_target(n)))]
    if local:
        row_local = row_local_blocks(cm.graph)
        costs.append(("all PUs", _local_block_s(cm, dp_objective, row_local)))
    for label, cost in costs:
        try:
            if label == "default PUs" and search.budget_s is None:
                dp = default_pu_dp(cm, dp_objective)  # shared with PipeEdge's plan
            else:
                dp = cm.memo(("hidp-dp", label, dp_objective, search.budget_s),
                             lambda c=cost: chain_dp(cm, cm.nodes, c, objective=dp_objective, deadline=search.deadline))
        except UserError:
            continue
        if dp is None:
            search.dp_complete = False
            continue
        search.dp_complete &= dp.complete and dp.exact
        parts = dp_parts(cm, cm.nodes, dp, cm.default_target)
        if not _fits(cm, parts):
            continue
        used = " -> ".join(cm.nodes[d] for d, _, _ in dp.stages)
        out.append((evaluate(cm, parts, strategy="hidp", objective=objective, mode="layer",
                             reason=f"{dp_objective} chain DP on {label}: {used}"), label == "all PUs"))
    # DAG cut (one server of each type)
    if len(cm.nodes) > 1:
        from dnninfer.partition.dads import plan_dads

        try:
            p = cm.memo(("plan", "dads", objective), lambda: plan_dads(cm, objective))
            out.append((evaluate(cm, p.parts, strategy="hidp", objective=objective, mode="layer",
                                 reason="DAG min-cut " + p.reason), False))
        except UserError:
            pass
    # the rivals' own plans
    for p in _baselines(cm, objective):
        if not _fits(cm, p.parts):
            continue
        out.append((evaluate(cm, p.parts, strategy="hidp", objective=objective, mode=p.mode,
                             reason=f"{p.strategy}'s plan: {p.reason}"), False))
    search.candidates += len(out)
    # spatial and hybrid: node multisets per cut point (each scored plan counts as a candidate)
    out += [(p, False) for p in _spatial(cm, objective, fl, search)]
    return out


Multiset = tuple[int, ...]


def _spatial(cm: CostModel, objective: str, fl: Fleet, search: Search) -> list[Plan]:
    """The best spatial/hybrid plans found per cut point (at most `REFINE_TOP` each).

    Every cut point gets its seeds, walk and sweep up to `EFFORT` multisets (the clock permitting);
    with a time budget the sweeps then go on, one multiset per cut point in turn, until the budget
    is spent or every space is done: a budget that covers the default effort only adds to it."""
    if len(cm.nodes) < 2:
        return []
    prefix = row_local_prefix(cm)
    rate = {n: cm.rate(cm.default_target(n), "conv") for n in cm.nodes}
    cuts = []
    for last in cut_candidates(cm):
        kmax = min(tile_rows(cm, region(cm, 0, last)), len(cm.nodes))
        cut = _CutSearch(cm, objective, fl, search, last, "spatial" if last == prefix - 1 else "hybrid", rate, kmax)
        search.spatial_space += _count_multisets(fl.counts, 2, kmax)
        cut.explore()
        cuts.append(cut)
    if search.budget_s is not None:
        for cut in cuts:
            cut.limit = None
        live = list(cuts)
        while live and not search.out_of_time():
            live = [cut for cut in live if cut.sweep_one()]
    return [p for cut in cuts for p in cut.best_plans()]


class _CutSearch:
    """Node multisets for one cut point: seeds, a steepest-descent walk, then a sweep, all through
    one memo (a multiset is scored once), stopped at `limit` multisets or by the time budget."""

    def __init__(self, cm: CostModel, objective: str, fl: Fleet, search: Search, last: int, mode: str,
                 rate: dict[str, float], kmax: int) -> None:
        self.cm, self.objective, self.fl, self.search = cm, objective, fl, search
        self.last, self.mode, self.rate, self.kmax = last, mode, rate, kmax
        self.limit: int | None = search.effort
        self.scores: dict[Multiset, float] = {}
        self.kept: list[tuple[float, int, Plan]] = []  # a max-heap (negated) of the best plans
        self.tick = 0
        self.sweep = _multisets(fl.counts, 2, kmax)

    # scoring ----------------------------------------------------------------------------------
    def stopped(self) -> bool:
        if self.limit is not None and len(self.scores) >= self.limit:
            return True
        return self.search.out_of_time()

    def score(self, m: Multiset) -> float | None:
        """The best score of the multiset over its tails (None: the search is stopped)."""
        if m in self.scores:
            return self.scores[m]
        if self.stopped():
            return None
        cm = self.cm
        subset = self.fl.materialise(m)
        targets = [cm.default_target(n) for n in subset]
        tails = list(dict.fromkeys([max(subset, key=lambda n: self.rate[n]), cm.source]))
        best = math.inf
        made = cm.memo(("hidp", "spatial-parts"), dict)  # shares are balanced once for every objective
        for tail in tails:
            key = (self.last, tuple(targets), tail)
            parts = made.get(key)
            if parts is None:
                parts = made[key] = spatial_parts(cm, self.last, targets, cm.default_target(tail))
            if not _fits(cm, parts):
                continue
            p = evaluate(cm, parts, strategy="hidp", objective=self.objective, mode=self.mode,
                         reason=f"{self.mode}: rows of blocks 0-{self.last} over {', '.join(subset)}, "
                                f"tail on {tail}")
            self.search.candidates += 1
            s = p.score(self.objective)
            best = min(best, s)
            self.tick += 1
            item = (-s, -self.tick, p)  # ties: the earlier plan stays
            if len(self.kept) < REFINE_TOP:
                heapq.heappush(self.kept, item)
            elif item > self.kept[0]:
                heapq.heapreplace(self.kept, item)
        self.scores[m] = best
        self.search.spatial_scored += 1
        return best

    def best_plans(self) -> list[Plan]:
        return [p for _, _, p in sorted(self.kept, reverse=True)]

    # phases -----------------------------------------------------------------------------------
    def explore(self) -> None:
        """Seeds, walks from the best of them, then the sweep, until stopped."""
        seeds = self.seeds(self.kmax)
        scored = [(s, m) for m in seeds if (s := self.score(m)) is not None]
        for _, m in sorted(scored)[:WALK_STARTS]:
            self.walk(m, self.kmax)
        while self.sweep_one():
            pass

    def sweep_one(self) -> bool:
        """Score the next multiset of the sweep not scored yet; False when done or stopped."""
        for m in self.sweep:
            if m in self.scores:
                continue
            if self.score(m) is None:  # stopped: keep it for a later turn
                self.sweep = itertools.chain([m], self.sweep)
                return False
            return True
        return False

    def seeds(self, kmax: int) -> list[Multiset]:
        """The k fastest nodes, and the source with the k-1 fastest others, for k in SEED_SIZES."""
        cm, fl = self.cm, self.fl
        fastest = sorted(cm.nodes, key=lambda n: -self.rate[n])  # stable: cluster order on ties
        others = [n for n in fastest if n != cm.source]
        out: list[Multiset] = []
        for k in SEED_SIZES:
            if k > kmax:
                break
            for chosen in (fastest[:k], [cm.source, *others[:k - 1]]):
                m = [0] * len(fl)
                for n in chosen:
                    m[fl.type_of[n]] += 1
                out.append(tuple(m))
        return list(dict.fromkeys(out))

    def walk(self, m: Multiset, kmax: int) -> None:
        """Steepest descent: move to the best neighbour (one node of a type added, dropped or swapped
        for one of another type) while it scores better."""
        here = self.scores.get(m)
        while here is not None:
            best, step = here, None
            for n in _neighbours(m, self.fl.counts, kmax):
                s = self.score(n)
                if s is None:
                    return
                if s < best - 1e-12 * max(1.0, abs(best)):
                    best, step = s, n
            if step is None:
                return
            m, here = step, best


def _neighbours(m: Multiset, counts: Sequence[int], kmax: int) -> Iterator[Multiset]:
    size = sum(m)
    for t in range(len(m)):
        if m[t] < counts[t] and size < kmax:
            yield (*m[:t], m[t] + 1, *m[t + 1:])
        if m[t] > 0 and size > 2:
            yield (*m[:t], m[t] - 1, *m[t + 1:])
    for a, b in itertools.permutations(range(len(m)), 2):
        if m[a] > 0 and m[b] < counts[b]:
            n = list(m)
            n[a] -= 1
            n[b] += 1
            yield tuple(n)


def _multisets(counts: Sequence[int], low: int, high: int) -> Iterator[Multiset]:
    """Every multiset with ``low <= size <= high`` (at most counts[t] of type t), smallest first,
    then in lexicographic order of the counts."""
    def rec(t: int, left: int) -> Iterator[tuple[int, ...]]:
        if t == len(counts):
            if left == 0:
                yield ()
            return
        room = sum(counts[t + 1:])
        for k in range(min(counts[t], left), max(0, left - room) - 1, -1):
            for rest in rec(t + 1, left - k):
                yield (k, *rest)

    for size in range(low, high + 1):
        yield from rec(0, size)


def _count_multisets(counts: Sequence[int], low: int, high: int) -> int:
    """How many multisets `_multisets` yields (a polynomial count, not an enumeration)."""
    ways = [1] + [0] * high
    for c in counts:
        nxt = [0] * (high + 1)
        for size, w in enumerate(ways):
            if w:
                for k in range(0, min(c, high - size) + 1):
                    nxt[size + k] += w
        ways = nxt
    return sum(ways[low:high + 1])


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
        if len(part.targets) < len(flat) <= tile_rows(cm, part.nodes):
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
              strategy: str | None = None, time_budget: float | None = None, effort: int = EFFORT) -> Plan:
    """The best plan HiDP finds for `objective`; `levels` selects the ablations.

    `time_budget` (seconds): anytime mode, the search runs until the budget is spent (or its space
    is done) instead of stopping at `effort` multisets per spatial cut point."""
    levels = tuple(levels)
    if not set(levels) <= {"global", "local"} or not levels:
        raise UserError(f"levels {levels}: expected a non-empty subset of ('global', 'local')")
    if time_budget is not None and not (math.isfinite(time_budget) and time_budget > 0):
        raise UserError(f"time budget: expected a number of seconds > 0, got {time_budget!r}")
    use_local = "local" in levels
    name = strategy or ("hidp" if len(levels) == 2 else f"hidp-{levels[0]}-only")
    search = Search(time_budget, effort)
    if "global" in levels:
        pool = _global_candidates(cm, objective, use_local, search)
    else:
        whole = set(feasible_nodes(cm))
        pool = [(single(cm, cm.default_target(n), strategy=name, objective=objective,
                        reason=f"whole model on {n}"), True) for n in fleet(cm).reps if n in whole]
        search.candidates = len(pool)
    return choose(cm, pool, objective, name, use_local, search)


def choose(cm: CostModel, pool: list[tuple[Plan, bool]], objective: str, name: str, use_local: bool,
           search: Search) -> Plan:
    """The winner of a candidate pool: the local level refines the best `REFINE_TOP` candidates
    (and those marked to refine regardless), and the best plan of all wins."""
    if not pool:
        raise UserError("hidp: no feasible plan: the model fits no node's memory")
    pool = _distinct(pool)
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
    plan = evaluate(cm, winner.parts, strategy=name, objective=objective, mode=winner.mode,
                    reason=f"{why}; {search.note()}. {winner.reason}")
    plan.search = search.summary()
    return plan


def _distinct(pool: list[tuple[Plan, bool]]) -> list[tuple[Plan, bool]]:
    """One entry per distinct plan (the same parts found by two modes count once; forced wins)."""
    seen: dict[tuple[Part, ...], int] = {}
    out: list[tuple[Plan, bool]] = []
    for p, force in pool:
        at = seen.get(p.parts)
        if at is None:
            seen[p.parts] = len(out)
            out.append((p, force))
        elif force and not out[at][1]:
            out[at] = (out[at][0], True)
    return out


def _fmt(plan: Plan, objective: str) -> str:
    if objective == "latency":
        return f"{plan.latency_s * 1e3:.1f} ms"
    if objective == "energy":
        return f"{plan.energy_j * 1e3:.1f} mJ"
    return f"{plan.throughput_ips:.2f}/s"
