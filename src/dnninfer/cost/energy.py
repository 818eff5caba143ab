"""Energy of an inference from busy times, wall time and bytes sent (partitioning.md §5.5).

    E = Σ_pu [ P_act,pu · t_busy,pu + P_idle,pu · (T_wall − t_busy,pu) ]
      + Σ_dev P_board_idle,dev · T_wall
      + Σ_links energy_nj_per_bit · bits

`P_act` and `P_idle` are the PU's draw above board idle when busy and when idle (profiles.py), so
the board-idle term is charged once per device for the whole wall time, whether or not it works:
a plan that keeps a device waiting pays for its idle power. For big.LITTLE boards each cluster
is one PU with its own P_act (the sbc-bench increments, §5.5). Busy time must not exceed wall
time: a PU is either busy or idle at each instant.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dnninfer.cost.profiles import Cluster, DeviceProfile, LinkProfile

__all__ = ["EnergyBreakdown", "cluster_energy", "energy", "energy_breakdown", "link_energy"]

_TOL = 1e-12  # busy may exceed wall by float noise only


@dataclass(frozen=True)
class EnergyBreakdown:
    """Joules by part: per PU (busy and idle), per device's board idle, per link."""

    pu_active_j: dict[str, float] = field(default_factory=dict)
    pu_idle_j: dict[str, float] = field(default_factory=dict)
    board_idle_j: dict[str, float] = field(default_factory=dict)
    link_j: dict[str, float] = field(default_factory=dict)

    @property
    def compute_j(self) -> float:
        return sum(self.pu_active_j.values()) + sum(self.pu_idle_j.values()) + sum(self.board_idle_j.values())

    @property
    def transfer_j(self) -> float:
        return sum(self.link_j.values())

    @property
    def total_j(self) -> float:
        return self.compute_j + self.transfer_j

    def to_dict(self) -> dict[str, Any]:
        return {
            "pu_active_j": dict(self.pu_active_j),
            "pu_idle_j": dict(self.pu_idle_j),
            "board_idle_j": dict(self.board_idle_j),
            "link_j": dict(self.link_j),
            "total_j": self.total_j,
        }


def link_energy(link: LinkProfile, nbytes: float) -> float:
    """Joules to send `nbytes` over `link`: ``energy_nj_per_bit * 8 * nbytes * 1e-9``."""
    return link.energy_j(nbytes)


def energy_breakdown(
    device: DeviceProfile,
    busy_s: Mapping[str, float],
    wall_s: float,
    *,
    utilisation: Mapping[str, float] | None = None,
    prefix: str = "",
) -> EnergyBreakdown:
    """The §5.5 energy of one device over `wall_s`, PU by PU.

    `busy_s` maps PU names to busy seconds (PUs not named are idle throughout). `utilisation`
    optionally scales a PU's P_act by the fraction of its cores in use while busy (a linear
    approximation: one thread on a 4-core cluster draws about a quarter of the all-core increment,
    less the shared cluster overhead it ignores); the default 1.0 charges the full cluster, which
    is an upper bound for single-thread runs. `prefix` labels the parts (``"node/"``).
    """
    if wall_s < 0:
        raise ValueError(f"wall_s must be >= 0, got {wall_s}")
    known = {p.name for p in device.pus}
    for table, what in ((busy_s, "busy_s"), (utilisation or {}, "utilisation")):
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(f"{what}: PU(s) {unknown} not on device {device.name!r}; expected {sorted(known)}")
    active: dict[str, float] = {}
    idle: dict[str, float] = {}
    for pu in device.pus:
        busy = float(busy_s.get(pu.name, 0.0))
        if busy < 0:
            raise ValueError(f"busy_s[{pu.name!r}] must be >= 0, got {busy}")
        if busy > wall_s + _TOL:
            raise ValueError(f"busy_s[{pu.name!r}] = {busy} s exceeds wall_s = {wall_s} s")
        busy = min(busy, wall_s)
        share = 1.0 if utilisation is None else float(utilisation.get(pu.name, 1.0))
        if not 0.0 < share <= 1.0:
            raise ValueError(f"utilisation[{pu.name!r}] must be in (0, 1], got {share}")
        active[prefix + pu.name] = pu.p_active_w * share * busy
        idle[prefix + pu.name] = pu.p_idle_w * (wall_s - busy)
    board = {prefix.rstrip("/") or device.name: device.p_board_idle_w * wall_s}
    return EnergyBreakdown(active, idle, board, {})


def energy(device: DeviceProfile, busy_s: Mapping[str, float], wall_s: float) -> float:
    """Joules one device uses over `wall_s` with its PUs busy for `busy_s` (§5.5, no links)."""
    return energy_breakdown(device, busy_s, wall_s).total_j


def cluster_energy(
    cluster: Cluster,
    busy_s: Mapping[str, Mapping[str, float]],
    wall_s: float,
    transfers: Iterable[tuple[str, str, float]] = (),
    *,
    utilisation: Mapping[str, Mapping[str, float]] | None = None,
) -> EnergyBreakdown:
    """The §5.5 energy of a whole cluster: every node's device over `wall_s` plus every transfer.

    `busy_s` maps node -> PU -> busy seconds (nodes not named idle throughout); `transfers` are
    ``(src_node, dst_node, nbytes)`` and are charged at the link's energy per bit (same-node
    moves cost nothing). Parts are labelled ``node/pu`` and ``src->dst``.
    """
    unknown = sorted(set(busy_s) - set(cluster.node_names))
    if unknown:
        raise ValueError(f"busy_s: node(s) {unknown} not in cluster {cluster.name!r}")
    active: dict[str, float] = {}
    idle: dict[str, float] = {}
    board: dict[str, float] = {}
    for node in cluster.node_names:
        part = energy_breakdown(
            cluster.device(node), busy_s.get(node, {}), wall_s,
            utilisation=(utilisation or {}).get(node), prefix=f"{node}/",
        )
        active.update(part.pu_active_j)
        idle.update(part.pu_idle_j)
        board.update(part.board_idle_j)
    links: dict[str, float] = {}
    for src, dst, nbytes in transfers:
        if src == dst:
            continue
        label = f"{src}->{dst}"
        links[label] = links.get(label, 0.0) + link_energy(cluster.link(src, dst), nbytes)
    return EnergyBreakdown(active, idle, board, links)
