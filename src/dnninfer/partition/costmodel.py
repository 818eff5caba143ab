"""What every planner scores with: seconds of graph nodes on a processing unit, link times, memory.

One cost model for every strategy, so HiDP and its baselines differ only in the choices they make
(partitioning.md §5.4). Per-node host seconds come from a measured profile of this machine (one
thread, `cost.measure.profile`) or, for fast tests, from a FLOPs/bytes estimate; a PU's time is
``host_s / (speed * op_speed[kind] * amdahl(lanes))`` (cost/profiles.py), or, where a measured
profile of the cluster is given (cost/measured.py), the seconds measured on that PU itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from dnninfer.cost.measured import ClusterProfile
from dnninfer.cost.profiles import Cluster, DeviceProfile, LinkProfile
from dnninfer.errors import UserError
from dnninfer.graph import Block, Graph

HostEstimate = Literal["measure", "flops"]

# The FLOPs estimate (tests, dry runs): a host core at ~20 GFLOP/s and ~4 GB/s of output traffic,
# plus a fixed per-op dispatch cost. Measured profiles replace it for every reported figure.
_FLOPS_PER_S = 20e9
_BYTES_PER_S = 4e9
_DISPATCH_S = 3e-6
# Splitting one piece of work across the PUs of one board costs a dispatch and a join per extra
# PU (thread wake-up, cache refill); Pipe-it's motivation is that this dominates small layers.
SYNC_S = 2e-4


@dataclass(frozen=True, order=True)
class Target:
    """Where a stage runs: one PU of one cluster node, with a number of its lanes (cores)."""

    node: str
    pu: str
    lanes: int = 1

    def __str__(self) -> str:
        return f"{self.node}/{self.pu}"


def flops_estimate(graph: Graph) -> dict[str, float]:
    """Host seconds per compute node from FLOPs and output bytes (no measurement)."""
    return {n.name: n.flops / _FLOPS_PER_S + n.out_bytes / _BYTES_PER_S + _DISPATCH_S for n in graph.compute_nodes()}


class CostModel:
    """Predicted seconds and bytes for one graph on one cluster, with inputs arriving at `source`."""

    def __init__(self, graph: Graph, cluster: Cluster, host_s: Mapping[str, float], *,
                 source: str | None = None, sync_s: float = SYNC_S, call_s: float = 0.0,
                 hop_s: float = 0.0, measured: ClusterProfile | None = None) -> None:
        missing = [n.name for n in graph.compute_nodes() if n.name not in host_s]
        if missing:
            raise ValueError(f"host_s: {len(missing)} compute nodes have no time, e.g. {missing[:3]}")
        self.graph, self.cluster, self.host_s, self.sync_s = graph, cluster, dict(host_s), sync_s
        # runtime costs a real deployment adds, fitted on a testbed's calibration probes (0: none):
        # per stage dispatched (an actor call) and per message between nodes (object location + pull)
        self.call_s, self.hop_s = call_s, hop_s
        self.source = source or cluster.node_names[0]
        if self.source not in cluster.node_names:
            raise UserError(f"source node {self.source!r}: expected one of {', '.join(cluster.node_names)}")
        self.devices: dict[str, DeviceProfile] = cluster.devices()
        if measured is not None:
            measured.check(graph, cluster)
        # measured seconds per "node/pu" (all lanes), replacing host_s / speed where present
        self.measured = measured
        self._measured: dict[str, dict[str, float]] = measured.targets if measured is not None else {}
        self._kind = {n.name: n.kind for n in graph.compute_nodes()}
        self._block_cache: dict[tuple[int, Target], float] = {}
        self._memo: dict[Any, Any] = {}

    @classmethod
    def build(cls, graph: Graph, cluster: Cluster, *, host: HostEstimate = "measure", source: str | None = None,
              repeats: int = 10, sync_s: float = SYNC_S, call_s: float = 0.0, hop_s: float = 0.0,
              measured: ClusterProfile | None = None) -> CostModel:
        """Cost model with measured (cached) one-thread host times, or the FLOPs estimate."""
        if host == "flops":
            host_s = flops_estimate(graph)
        elif host == "measure":
            from dnninfer.cost.measure import profile

            host_s = dict(profile(graph, threads=1, repeats=repeats, warmup=2).node_s)
        else:
            raise UserError(f"host estimate {host!r}: expected 'measure' or 'flops'")
        return cls(graph, cluster, host_s, source=source, sync_s=sync_s, call_s=call_s, hop_s=hop_s,
                   measured=measured)

    def memo(self, key: Any, compute: Callable[[], Any]) -> Any:
        """Compute once per cost model (plans of baselines that HiDP also seeds its search with)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def with_cluster(self, cluster: Cluster, source: str | None = None) -> CostModel:
        """Same graph and host times on another cluster (a bandwidth sweep, a node lost)."""
        return CostModel(self.graph, cluster, self.host_s, source=source or self.source, sync_s=self.sync_s,
                         call_s=self.call_s, hop_s=self.hop_s, measured=self.measured)

    # -- compute ---------------------------------------------------------------------------------
    @property
    def nodes(self) -> list[str]:
        return self.cluster.node_names

    def targets(self, node: str) -> list[Target]:
        """Every PU of a node, each with all its lanes."""
        return [Target(node, p.name, p.lanes) for p in self.devices[node].pus]

    def default_target(self, node: str) -> Target:
        """What a stock framework uses on this node: its highest-throughput PU, all lanes."""
        pu = self.devices[node].default_pu
        return Target(node, pu.name, pu.lanes)

    def rate(self, target: Target, kind: str) -> float:
        """Throughput relative to one host core; from a measured profile, the whole model's ratio."""
        pu = self.devices[target.node].pu(target.pu)
        measured = self._measured.get(f"{target.node}/{target.pu}")
        if measured is not None:
            ratio = sum(self.host_s.values()) / sum(measured.values())
            return ratio * pu.scaling(target.lanes) / pu.scaling()
        return pu.rate(kind, target.lanes)

    def seconds(self, names: Iterable[str], target: Target, fraction: Mapping[str, float] | None = None) -> float:
        """Predicted seconds of graph nodes on a target (each scaled by `fraction` of its rows if given).

        A measured profile was taken with all of the PU's lanes; fewer lanes scale it by Amdahl."""
        pu = self.devices[target.node].pu(target.pu)
        scale = pu.scaling(target.lanes)
        measured = self._measured.get(f"{target.node}/{target.pu}")
        total = 0.0
        if measured is not None:
            slower = pu.scaling() / scale
            for n in names:
                total += (1.0 if fraction is None else fraction.get(n, 1.0)) * measured[n] * slower
            return total
        for n in names:
            f = 1.0 if fraction is None else fraction.get(n, 1.0)
            total += f * self.host_s[n] / (pu.speed_for(self._kind[n]) * scale)
        return total

    @cached_property
    def blocks(self) -> list[Block]:
        return self.graph.chain()

    def block_s(self, index: int, target: Target) -> float:
        key = (index, target)
        if key not in self._block_cache:
            self._block_cache[key] = self.seconds(self.blocks[index].nodes, target)
        return self._block_cache[key]

    # -- links -----------------------------------------------------------------------------------
    def link(self, a: str, b: str) -> LinkProfile | None:
        return None if a == b else self.cluster.link(a, b)

    def transfer_s(self, a: str, b: str, nbytes: float) -> float:
        """Seconds from send to arrival: RTT/2 + serialisation; 0 within a node (shared memory)."""
        link = self.link(a, b)
        return 0.0 if link is None or nbytes <= 0 else link.transfer_s(nbytes)

    def serial_s(self, a: str, b: str, nbytes: float) -> float:
        """Seconds the sender's radio is busy: the part of a transfer that limits throughput."""
        link = self.link(a, b)
        return 0.0 if link is None or nbytes <= 0 else nbytes * 8 / (link.bandwidth_mbps * 1e6)

    @property
    def input_bytes(self) -> int:
        return sum(self.graph.nodes[n].out_bytes for n in self.graph.input_names)

    @property
    def output_bytes(self) -> int:
        return self.graph.nodes[self.graph.output_node.name].out_bytes

    # -- memory ----------------------------------------------------------------------------------
    def need_bytes(self, names: Iterable[str]) -> int:
        """Memory a stage needs: its weights plus twice its largest activation (in and out buffers)."""
        names = list(names)
        weights = sum(self.graph.nodes[n].param_bytes for n in names)
        act = max((self.graph.nodes[n].out_bytes for n in names), default=0)
        return weights + 2 * act

    def cap_bytes(self, node: str) -> int:
        return self.devices[node].memory_mb * 2**20

    def fits(self, node: str, names: Iterable[str]) -> bool:
        return self.need_bytes(names) <= self.cap_bytes(node)
