"""What both runtimes share: placement checks, link emulation and the run record."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch.utils import _pytree as pytree

from dnninfer.errors import UserError
from dnninfer.graph import Graph, Stage

EMULATION_NOTE = "links emulated: delay = RTT/2 + bytes*8/bandwidth (sleep), not a real network"
#: Longest single emulated hop: the emulation sleeps for real, so a link of 1e-300 Mbit/s (valid
#: as a number) would otherwise hang the run, or overflow time.sleep.
MAX_EMULATED_DELAY_S = 3600.0


class Link(Protocol):
    """Anything that says how long `nbytes` take to cross it (cost.LinkProfile is one)."""

    def transfer_s(self, nbytes: int) -> float: ...


@dataclass(frozen=True)
class SimpleLink:
    """A link given by bandwidth and RTT, for callers without a cluster config."""

    bandwidth_mbps: float
    rtt_ms: float = 0.0

    def __post_init__(self) -> None:
        # written so that nan fails too: `nan <= 0` is False, and a nan delay would sleep forever
        ok_bw = math.isfinite(self.bandwidth_mbps) and self.bandwidth_mbps > 0
        ok_rtt = math.isfinite(self.rtt_ms) and self.rtt_ms >= 0
        if not (ok_bw and ok_rtt):
            raise UserError(f"link: expected a finite bandwidth > 0 and a finite rtt >= 0, "
                            f"got {self.bandwidth_mbps}, {self.rtt_ms}")

    def transfer_s(self, nbytes: int) -> float:
        return self.rtt_ms / 2e3 + nbytes * 8 / (self.bandwidth_mbps * 1e6)


class SameNode:
    """PUs of one board share memory: moving a tensor between them costs no link time and is
    not a network transfer (`local`: the runtimes do not record it)."""

    local = True

    def transfer_s(self, nbytes: int) -> float:
        return 0.0


Links = Mapping[tuple[str, str], Link] | Link | None


def emulated_delay(link: Link, src: str, dst: str, nbytes: int, *, sleeping: bool = True) -> float:
    """Seconds one hop takes; a UserError when the link makes it absurd: not finite, or (when the
    emulation sleeps for real) over `MAX_EMULATED_DELAY_S`."""
    delay = link.transfer_s(nbytes)
    limit = MAX_EMULATED_DELAY_S if sleeping else math.inf
    if not (math.isfinite(delay) and 0 <= delay <= limit):
        raise UserError(f"link {src!r}->{dst!r}: emulating {nbytes} bytes would take {delay:.3g} s, expected at "
                        f"most {MAX_EMULATED_DELAY_S:g} s; give the link more bandwidth or less RTT")
    return delay


def link_between(links: Links, a: str, b: str) -> Link | None:
    """The link from node a to b (symmetric); None for the same node or no emulation."""
    if a == b or links is None:
        return None
    if hasattr(links, "transfer_s"):
        return links  # one link for every pair
    found = links.get((a, b)) or links.get((b, a))
    if found is None:
        raise UserError(f"links: no link between nodes {a!r} and {b!r}")
    return found


def compact(values: Any) -> Any:
    """Values as they should cross a link: a tensor that views a larger storage (a tile's row
    slice, a narrowed halo) is copied out, because pickling a view sends its whole base. Measured
    on the testbed: each CoEdge tile shipped the full 602 KB input instead of its 13-19 KB rows."""
    def own(v: Any) -> Any:
        if isinstance(v, torch.Tensor) and v.untyped_storage().nbytes() > v.numel() * v.element_size():
            return v.clone(memory_format=torch.contiguous_format)
        return v

    return pytree.tree_map(own, values)


def tensor_bytes(values: Any) -> int:
    return sum(t.numel() * t.element_size() for t in pytree.tree_leaves(values) if isinstance(t, torch.Tensor))


def check_placement(stages: Sequence[Stage], placement: Mapping[int, str] | Sequence[str]) -> dict[int, str]:
    """Stage label -> node name; a sequence is read in stage order."""
    if not isinstance(placement, Mapping):
        if len(placement) != len(stages):
            raise UserError(f"placement: expected {len(stages)} node names (one per stage), got {len(placement)}")
        placement = {st.index: node for st, node in zip(stages, placement, strict=True)}
    missing = [st.index for st in stages if st.index not in placement]
    if missing:
        raise UserError(f"placement: stages {missing} have no node")
    return dict(placement)


@dataclass(frozen=True)
class Transfer:
    src: str
    dst: str
    nbytes: int
    delay_s: float


@dataclass
class RunResult:
    """One inference through a split model: the output and where the time went."""

    output: Any
    wall_s: float
    compute_s: dict[int, float] = field(default_factory=dict)  # stage label -> seconds
    transfers: list[Transfer] = field(default_factory=list)
    emulated: bool = False

    @property
    def bytes_sent(self) -> int:
        return sum(t.nbytes for t in self.transfers)

    @property
    def transfer_s(self) -> float:
        return sum(t.delay_s for t in self.transfers)

    def summary(self) -> dict[str, Any]:
        return {
            "wall_s": self.wall_s,
            "compute_s": {str(k): v for k, v in self.compute_s.items()},
            "transfer_s": self.transfer_s,
            "bytes_sent": self.bytes_sent,
            "transfers": [t.__dict__ for t in self.transfers],
            "note": EMULATION_NOTE if self.emulated else "no link emulation",
        }


def producers(graph: Graph, stages: Sequence[Stage], placement: Mapping[int, str], source: str) -> dict[str, str]:
    """Value name -> node that holds it: model inputs at `source`, stage outputs at their node."""
    where = {name: source for name in graph.input_names}
    for st in stages:
        for out in st.outputs:
            where[out] = placement[st.index]
    return where
