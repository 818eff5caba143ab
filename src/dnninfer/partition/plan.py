"""A partition plan and the one simulator that scores every plan the same way.

A plan is an ordered list of `Part`s covering the graph's compute nodes. A part runs whole on one
target (layer-wise: a node's PU), or is split into row stripes across several targets (spatial:
CoEdge/MoDNN/DeepThings tiles, partition/tiles.py), across nodes (global level) or across the PUs
of one node (HiDP's local level). Pipelining across PUs is simply consecutive parts on different
PUs of the same node.

`evaluate` turns parts into stages and list-schedules them (partitioning.md §5.3 "sim mode"):
a target computes one stage at a time, a node's radio sends one message at a time (Wi-Fi is one
shared medium at the sender), a message arrives RTT/2 + bytes/bandwidth after it is sent, and the
output returns to the source. Latency is one request end to end; throughput is the pipelined
steady state, 1 / the busiest resource (a PU's compute or a radio's sending time); energy is the
§5.5 model over the nodes the plan uses, for one request.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from dnninfer.cost.energy import energy_breakdown
from dnninfer.errors import UserError
from dnninfer.partition.costmodel import CostModel, Target

Objective = Literal["latency", "energy", "throughput"]
OBJECTIVES: tuple[str, ...] = ("latency", "energy", "throughput")
SOURCE = -1  # producer id of the model inputs (they live on the source node)
JOIN = -1  # `SimStage.tile` of the stage that joins one tiled part's rows before the next splits them


@dataclass(frozen=True)
class Part:
    """Graph nodes (original names, topological order) and where they run.

    One target: the part runs whole there. Several: row stripes, tile t on targets[t] with
    `shares[t]` of the rows (the nodes must form a row-local region, partition/tiles.py).
    """

    nodes: tuple[str, ...]
    targets: tuple[Target, ...]
    shares: tuple[float, ...] = ()
    role: str = "layer"  # layer | spatial | local-tiles | local-pipeline: why it exists, for the breakdown

    def __post_init__(self) -> None:
        if not self.nodes or not self.targets:
            raise ValueError("a part needs nodes and at least one target")
        if len(self.targets) > 1 and len(self.shares) != len(self.targets):
            raise ValueError(f"a tiled part needs one share per target, got {len(self.shares)} for {len(self.targets)}")

    @property
    def tiled(self) -> bool:
        return len(self.targets) > 1


@dataclass
class SimStage:
    sid: int
    part: int
    tile: int | None
    target: Target
    compute_s: float
    inputs: dict[int, float] = field(default_factory=dict)  # producer sid (or SOURCE) -> bytes
    start_s: float = 0.0
    finish_s: float = 0.0


@dataclass
class Plan:
    """A scored plan: what runs where, its predicted latency/energy/throughput and why."""

    strategy: str
    objective: str
    mode: str
    parts: tuple[Part, ...]
    source: str
    latency_s: float
    energy_j: float
    throughput_ips: float
    bytes_sent: int
    stages: list[dict[str, Any]]
    energy: dict[str, Any]
    bottleneck: str
    reason: str = ""
    model: str = ""
    cluster: str = ""
    search: dict[str, Any] = field(default_factory=dict)  # how far a planner's search got (HiDP; not saved)

    def score(self, objective: str | None = None) -> float:
        """Lower is better for every objective (throughput is negated)."""
        obj = objective or self.objective
        if obj == "latency":
            return self.latency_s
        if obj == "energy":
            return self.energy_j
        if obj == "throughput":
            return -self.throughput_ips
        raise UserError(f"objective {obj!r}: expected one of {', '.join(OBJECTIVES)}")

    @property
    def targets(self) -> list[Target]:
        return list(dict.fromkeys(t for p in self.parts for t in p.targets))

    @property
    def nodes_used(self) -> list[str]:
        return list(dict.fromkeys(t.node for t in self.targets))

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy, "objective": self.objective, "mode": self.mode,
            "model": self.model, "cluster": self.cluster, "source": self.source,
            "latency_ms": self.latency_s * 1e3, "energy_mj": self.energy_j * 1e3,
            "throughput_ips": self.throughput_ips, "bytes_sent": self.bytes_sent,
            "bottleneck": self.bottleneck, "reason": self.reason,
            "nodes_used": self.nodes_used,
            "parts": [{"role": p.role, "nodes": len(p.nodes), "first": p.nodes[0], "last": p.nodes[-1],
                       "targets": [str(t) for t in p.targets], "lanes": [t.lanes for t in p.targets],
                       "shares": [round(s, 4) for s in p.shares]} for p in self.parts],
            "stages": self.stages, "energy": self.energy,
        }


# -- stages from parts ---------------------------------------------------------------------------


def _check_cover(cm: CostModel, parts: Sequence[Part]) -> dict[str, int]:
    owner: dict[str, int] = {}
    for i, p in enumerate(parts):
        for n in p.nodes:
            if n in owner:
                raise ValueError(f"node {n!r} is in parts {owner[n]} and {i}")
            owner[n] = i
    compute = cm.memo(("plan", "compute names"), lambda: [n.name for n in cm.graph.compute_nodes()])
    missing = [n for n in compute if n not in owner]
    if missing:
        raise ValueError(f"{len(missing)} compute nodes are in no part, e.g. {missing[:3]}")
    return owner


def build_stages(cm: CostModel, parts: Sequence[Part]) -> tuple[list[SimStage], dict[int, float]]:
    """Stages with predicted compute and incoming bytes; plus bytes each stage returns to the source."""
    from dnninfer.partition.tilecache import costs, tile_cost

    c = costs(cm)
    g = cm.graph
    owner = _check_cover(cm, parts)
    stages: list[SimStage] = []
    part_sids: list[list[int]] = []
    tile_info: dict[int, Any] = {}
    for i, p in enumerate(parts):
        sids = []
        if p.tiled:
            tc = tile_cost(g, p.nodes, p.shares)
            tile_info[i] = tc
            for t, target in enumerate(p.targets):
                secs = c.tile_seconds(p.nodes, target, tc.node_fraction[t]) + cm.sync_s
                stages.append(SimStage(len(stages), i, t, target, secs))
                sids.append(len(stages) - 1)
        else:
            stages.append(SimStage(len(stages), i, None, p.targets[0], c.part_seconds(p.nodes, p.targets[0])))
            sids.append(len(stages) - 1)
        part_sids.append(sids)

    def senders(value: str) -> list[tuple[int, float]]:
        """(producer sid, fraction of the value's bytes it holds)."""
        info = g.nodes[value]
        if info.op == "placeholder":
            return [(SOURCE, 1.0)]
        q = owner[value]
        if not parts[q].tiled:
            return [(part_sids[q][0], 1.0)]
        rows = tile_info[q].rows
        total = sum(hi - lo for lo, hi in rows)
        return [(sid, (hi - lo) / total) for sid, (lo, hi) in zip(part_sids[q], rows, strict=True)]

    for i, p in enumerate(parts):
        entries = _entries(cm, p.nodes)
        if not entries:
            continue
        if p.tiled:
            tc = tile_info[i]
            entry_total = sum(g.nodes[v].out_bytes for v in entries) or 1
            for v in entries:
                share = g.nodes[v].out_bytes / entry_total
                sources = senders(v)
                if len(sources) > 1:  # tiles feeding tiles: join the rows on this part's first target
                    join = SimStage(len(stages), i, JOIN, p.targets[0], 0.0,
                                    {src: g.nodes[v].out_bytes * frac for src, frac in sources})
                    stages.append(join)
                    sources = [(join.sid, 1.0)]
                for t, sid in enumerate(part_sids[i]):
                    for src, frac in sources:
                        stages[sid].inputs[src] = stages[sid].inputs.get(src, 0.0) + tc.in_bytes[t] * share * frac
        else:
            sid = part_sids[i][0]
            for v in entries:
                for src, frac in senders(v):
                    stages[sid].inputs[src] = stages[sid].inputs.get(src, 0.0) + g.nodes[v].out_bytes * frac
    returns: dict[int, float] = defaultdict(float)
    for v in (n.name for n in g.output_node.all_input_nodes):
        for src, frac in senders(v):
            returns[src] += g.nodes[v].out_bytes * frac
    return stages, dict(returns)


def _entries(cm: CostModel, nodes: tuple[str, ...]) -> list[str]:
    """Values a part reads from outside itself, first use first (memoised per part)."""

    def compute() -> list[str]:
        g = cm.graph
        members = set(nodes)
        return list(dict.fromkeys(src for n in nodes for src in g.nodes[n].inputs
                                  if src not in members and g.nodes[src].op != "get_attr"))

    cache = cm.memo(("plan", "entries"), dict)
    got = cache.get(nodes)
    if got is None:
        got = cache[nodes] = compute()
    return got


def _order(stages: Sequence[SimStage]) -> list[int]:
    """Stage ids in topological order, the smallest ready id first (networkx's lexicographical
    topological sort, without building a graph for every candidate plan)."""
    users: dict[int, list[int]] = defaultdict(list)
    waiting = {}
    for s in stages:
        deps = {src for src in s.inputs if src != SOURCE}
        waiting[s.sid] = len(deps)
        for src in deps:
            users[src].append(s.sid)
    ready = [sid for sid, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    out = []
    while ready:
        sid = heapq.heappop(ready)
        out.append(sid)
        for u in users[sid]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(out) != len(stages):
        raise ValueError("plan: parts depend on each other in a cycle")
    return out


#: simulations kept per cost model (planners score the same parts for several objectives and
#: strategies; HiDP re-scores every baseline's plan)
_MAX_SIMS = 20_000


def evaluate(cm: CostModel, parts: Sequence[Part], *, strategy: str, objective: str = "latency",
             mode: str = "layer", reason: str = "") -> Plan:
    """Simulate one request through the plan and score it (see the module docstring).

    The simulation depends on the parts alone, so it is memoised per cost model and parts; each
    call gets its own copy of the stage rows and the energy breakdown."""
    if objective not in OBJECTIVES:
        raise UserError(f"objective {objective!r}: expected one of {', '.join(OBJECTIVES)}")
    parts = tuple(parts)
    sims = cm.memo(("plan", "simulations"), dict)
    sim = sims.get(parts)
    if sim is None:
        if len(sims) >= _MAX_SIMS:
            sims.clear()
        sim = sims[parts] = _simulate(cm, parts)
    latency, energy, period, bytes_sent, rows, bottleneck = sim
    return Plan(
        strategy=strategy, objective=objective, mode=mode, parts=parts, source=cm.source,
        latency_s=latency, energy_j=energy["total_j"], throughput_ips=1.0 / period if period > 0 else float("inf"),
        bytes_sent=bytes_sent, stages=[dict(r) for r in rows],
        energy={k: dict(v) if isinstance(v, dict) else v for k, v in energy.items()}, bottleneck=bottleneck,
        reason=reason, model=cm.graph.name, cluster=cm.cluster.name,
    )


def _simulate(cm: CostModel, parts: tuple[Part, ...]) -> tuple[float, dict[str, Any], float, int,
                                                              list[dict[str, Any]], str]:
    """List-schedule one request: (latency, energy breakdown, period, bytes sent, stage rows, bottleneck)."""
    from dnninfer.partition.tilecache import costs

    c = costs(cm)
    stages, returns = build_stages(cm, parts)
    src_node = cm.source
    pu_free: dict[tuple[str, str], float] = defaultdict(float)
    radio_free: dict[str, float] = defaultdict(float)
    radio_busy: dict[str, float] = defaultdict(float)
    pu_busy: dict[tuple[str, str], float] = defaultdict(float)
    transfers: list[tuple[str, str, float]] = []
    rows: list[dict[str, Any]] = []

    def send(a: str, b: str, ready: float, nbytes: float) -> float:
        if a == b or nbytes <= 0:
            return ready
        start = max(ready, radio_free[a])
        ser = c.serial_s(a, b, nbytes)
        radio_free[a] = start + ser
        radio_busy[a] += ser
        transfers.append((a, b, nbytes))
        return start + c.transfer_s(a, b, nbytes) + cm.hop_s

    # One message per (producer, destination node): the PUs of a node share what it receives.
    batch: dict[tuple[int, str], float] = defaultdict(float)
    for st in stages:
        for src, nbytes in st.inputs.items():
            batch[(src, st.target.node)] += nbytes
    arrived: dict[tuple[int, str], float] = {}
    for sid in _order(stages):
        st = stages[sid]
        ready, wait_in = 0.0, 0.0
        for src in st.inputs:
            a = src_node if src == SOURCE else stages[src].target.node
            t0 = 0.0 if src == SOURCE else stages[src].finish_s
            key = (src, st.target.node)
            if key not in arrived:
                arrived[key] = send(a, st.target.node, t0, batch[key])
            arrive = arrived[key]
            wait_in = max(wait_in, arrive - t0)
            ready = max(ready, arrive)
        key = (st.target.node, st.target.pu)
        st.start_s = max(ready, pu_free[key])
        st.finish_s = st.start_s + st.compute_s + cm.call_s
        pu_free[key] = st.finish_s
        pu_busy[key] += st.compute_s
        p = parts[st.part]
        rows.append({
            "stage": sid, "part": st.part, "role": p.role, "target": str(st.target), "lanes": st.target.lanes,
            "tile": "join" if st.tile == JOIN else st.tile, "nodes": 0 if st.tile == JOIN else len(p.nodes),
            "first": p.nodes[0], "last": p.nodes[-1],
            "in_bytes": int(sum(st.inputs.values())), "transfer_ms": wait_in * 1e3,
            "compute_ms": st.compute_s * 1e3, "start_ms": st.start_s * 1e3, "finish_ms": st.finish_s * 1e3,
        })
    latency = max((s.finish_s for s in stages if s.target.node == src_node), default=0.0)
    for src, nbytes in returns.items():
        a = src_node if src == SOURCE else stages[src].target.node
        t0 = 0.0 if src == SOURCE else stages[src].finish_s
        latency = max(latency, send(a, src_node, t0, nbytes))
    latency += cm.call_s  # the output is gathered on the source by one more call

    busiest = max(pu_busy.items(), key=lambda kv: kv[1])
    radio = max(radio_busy.items(), key=lambda kv: kv[1], default=("", 0.0))
    if radio[1] > busiest[1]:
        bottleneck, period = f"radio of {radio[0]}", radio[1]
    else:
        bottleneck, period = f"compute on {busiest[0][0]}/{busiest[0][1]}", busiest[1]
    energy = _energy(cm, stages, latency, transfers)
    return latency, energy, period, int(sum(t[2] for t in transfers)), rows, bottleneck


def _energy(cm: CostModel, stages: Sequence[SimStage], wall: float,
            transfers: Sequence[tuple[str, str, float]]) -> dict[str, Any]:
    """§5.5 energy of one request over the nodes the plan uses (the source always counts)."""
    busy: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    util: dict[str, dict[str, float]] = defaultdict(dict)
    for s in stages:
        busy[s.target.node][s.target.pu] += s.compute_s
        pu = cm.devices[s.target.node].pu(s.target.pu)
        util[s.target.node][s.target.pu] = max(util[s.target.node].get(s.target.pu, 0.0), s.target.lanes / pu.lanes)
    per_node: dict[str, float] = {}
    compute = 0.0
    for node in dict.fromkeys([cm.source, *busy]):
        part = energy_breakdown(cm.devices[node], {k: min(v, wall) for k, v in busy[node].items()}, wall,
                                utilisation=util[node] or None, prefix=f"{node}/")
        per_node[node] = part.total_j
        compute += part.total_j
    link = sum(cm.link(a, b).energy_j(n) for a, b, n in transfers)
    return {"total_j": compute + link, "compute_j": compute, "link_j": link, "per_node_j": per_node}


def chain_parts(cm: CostModel, stages: Sequence[tuple[Target, int, int]], role: str = "layer") -> tuple[Part, ...]:
    """Parts for a layer-wise plan given as (target, first block, last block) over `cm.blocks`."""
    blocks = cm.blocks
    return tuple(Part(tuple(n for b in blocks[i:j + 1] for n in b.nodes), (t,), role=role) for t, i, j in stages)
