"""Measured device profiles: per-node latency of one model on every processing unit of a cluster.

Cited speed ratios (configs/devices) say how fast a board is on average; a measured profile says how
long each layer of *this* model took on *that* PU, the way Neurosurgeon and DADS profile their
devices before planning (partitioning.md §3.2). It is written by `dnninfer profile MODEL --cluster
testbed|ADDRESS` (each PU runs the graph node by node through Ray, as `cost.measure.profile` does
here) and read by `dnninfer partition ... --profile FILE`, whose cost model then uses these seconds
instead of ``host_s / speed``.

A profile belongs to one graph: `graph_key` must match the graph being planned, or it is refused.
Times are undilated seconds (the testbed divides by its dilation before they are written).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dnninfer.errors import UserError

__all__ = ["FORMAT", "ClusterProfile", "load_cluster_profile"]

FORMAT = "dnninfer-cluster-profile/1"


@dataclass(frozen=True)
class ClusterProfile:
    """Median seconds per compute node for each `node/pu` target, all lanes of the PU in use."""

    model: str
    graph_key: str
    cluster: str
    where: str  # "testbed" or the Ray address of real boards
    dilation: float  # the testbed's (1 on real boards); times below are already divided by it
    targets: dict[str, dict[str, float]]  # "node/pu" -> compute node -> seconds
    whole_model_s: dict[str, float] = field(default_factory=dict)  # "node/pu" -> the direct run
    env: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True), encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], shown: str = "profile") -> ClusterProfile:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise UserError(f"{shown}: expected a measured cluster profile ({FORMAT}), got format {got!r}")
        try:
            targets = {str(t): {str(n): float(s) for n, s in per.items()} for t, per in data["targets"].items()}
            out = cls(model=str(data["model"]), graph_key=str(data["graph_key"]), cluster=str(data["cluster"]),
                      where=str(data["where"]), dilation=float(data["dilation"]), targets=targets,
                      whole_model_s={str(k): float(v) for k, v in data.get("whole_model_s", {}).items()},
                      env=dict(data.get("env", {})))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise UserError(f"{shown}: malformed measured profile ({type(e).__name__}: {e})") from None
        bad = [(t, n, s) for t, per in out.targets.items() for n, s in per.items() if not (math.isfinite(s) and s > 0)]
        if bad:
            t, n, s = bad[0]
            raise UserError(f"{shown}: {t} node {n}: expected seconds > 0, got {s}")
        if not out.targets:
            raise UserError(f"{shown}: no targets measured")
        return out

    def check(self, graph: Any, cluster: Any) -> None:
        """Refuse a profile of another graph, or one missing a PU of the cluster being planned."""
        from dnninfer.cost.measure import graph_key

        key = graph_key(graph)
        if key != self.graph_key:
            raise UserError(f"profile of {self.model!r} (graph {self.graph_key}) does not match the graph being "
                            f"planned ({graph.name!r}, graph {key}): profile this model")
        names = {n.name for n in graph.compute_nodes()}
        for target, per in self.targets.items():
            if set(per) != names:
                raise UserError(f"profile target {target}: {len(names ^ set(per))} compute nodes differ from the graph")
        missing = [f"{n}/{pu.name}" for n in cluster.node_names for pu in cluster.device(n).pus
                   if f"{n}/{pu.name}" not in self.targets]
        if missing:
            raise UserError(f"profile (cluster {self.cluster!r}) has no measurement for {', '.join(missing)} "
                            f"of cluster {cluster.name!r}")


def load_cluster_profile(path: str | Path) -> ClusterProfile:
    """Read a measured profile; a missing or malformed file is a one-line UserError naming it."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"--profile {p}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"--profile {p}: cannot read a JSON profile ({e})") from None
    return ClusterProfile.from_dict(data, f"--profile {p}")
