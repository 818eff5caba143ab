"""Latency prediction: a per-op-kind linear model on this host, scaled to any device's PU.

The regression (Neurosurgeon's per-layer-type predictors, partitioning.md §3.2 and §6.1 step 2):

    t_host(node) = a_k * FLOPs + b_k * (in_bytes + out_bytes) + c_k        k = node.kind

* FLOPs and bytes come from graph capture (`NodeInfo.flops`, `out_bytes`; `in_bytes` is the sum
  of the `out_bytes` of the node's data inputs, weights excluded). `a_k` is seconds per FLOP
  (compute-bound ops), `b_k` seconds per byte moved (memory-bound ops), `c_k` the fixed cost of a
  call (dispatch, kernel launch).
* Fitted by non-negative least squares (`scipy.optimize.nnls`) so no coefficient can make a
  bigger layer predict faster, and predictions are never negative. Columns are scaled to unit
  max before the solve (FLOPs reach 1e10, the constant is 1) and the coefficients unscaled after.
* Kinds with fewer than `min_samples` (3) samples use a global model fitted on all samples.
  Unweighted least squares fits absolute seconds, so large layers dominate: the relative error
  on micro-second ops is larger, which matters little for a partition's total.

A device's PU runs a node in ``t_host / (pu.speed * pu.op_speed.get(kind, 1))``: the speed ratios
in configs/devices are single-lane throughput relative to one host core (profiles.py).

A model fitted on several zoo graphs' profiles (`fit_from_graphs`) can be saved as JSON and
loaded again, so a calibration measured once serves every later plan on this host.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy.optimize import nnls

from dnninfer.cost.measure import LatencyProfile, check_format, profile
from dnninfer.cost.profiles import DeviceProfile
from dnninfer.graph import Graph, NodeInfo

__all__ = [
    "Coeffs",
    "LatencyModel",
    "Sample",
    "fit",
    "fit_from_graphs",
    "input_bytes",
    "predict",
    "predict_host",
    "samples_from_profile",
]

FORMAT_VERSION = 1
MIN_SAMPLES = 3


class Sample(NamedTuple):
    """One measured node: its static facts, the bytes it reads, and its seconds on the host."""

    node: NodeInfo
    in_bytes: int
    seconds: float


@dataclass(frozen=True)
class Coeffs:
    """``seconds = a * flops + b * bytes + c`` with a, b, c >= 0; `n` samples were fitted."""

    a: float
    b: float
    c: float
    n: int = 0

    def __call__(self, flops: float, nbytes: float) -> float:
        return self.a * flops + self.b * nbytes + self.c

    def to_dict(self) -> dict[str, float]:
        return {"a": self.a, "b": self.b, "c": self.c, "n": self.n}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Coeffs:
        return cls(float(d["a"]), float(d["b"]), float(d["c"]), int(d.get("n", 0)))


def input_bytes(graph: Graph, node: NodeInfo) -> int:
    """Bytes a node reads from other nodes' outputs (weights, i.e. get_attr inputs, excluded)."""
    return sum(graph.nodes[i].out_bytes for i in node.inputs if graph.nodes[i].op != "get_attr")


@dataclass(frozen=True)
class LatencyModel:
    """Per-kind coefficients plus the global fallback; predicts host seconds for a node."""

    per_kind: dict[str, Coeffs]
    fallback: Coeffs
    min_samples: int = MIN_SAMPLES
    meta: dict[str, Any] = field(default_factory=dict)

    def coeffs(self, kind: str) -> Coeffs:
        """The coefficients used for `kind` (the global ones if the kind had too few samples)."""
        return self.per_kind.get(kind, self.fallback)

    def predict_node(self, node: NodeInfo, in_bytes: int) -> float:
        """Predicted seconds of `node` on the host (one thread, as measured)."""
        return max(self.coeffs(node.kind)(node.flops, in_bytes + node.out_bytes), 0.0)

    def predict_graph(self, graph: Graph) -> dict[str, float]:
        """Host seconds for every compute node of `graph`."""
        return {n.name: self.predict_node(n, input_bytes(graph, n)) for n in graph.compute_nodes()}

    # -- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "min_samples": self.min_samples,
            "per_kind": {k: c.to_dict() for k, c in sorted(self.per_kind.items())},
            "fallback": self.fallback.to_dict(),
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyModel:
        check_format(data, "latency model", FORMAT_VERSION)
        return cls(
            per_kind={k: Coeffs.from_dict(v) for k, v in data["per_kind"].items()},
            fallback=Coeffs.from_dict(data["fallback"]),
            min_samples=int(data.get("min_samples", MIN_SAMPLES)),
            meta=dict(data.get("meta", {})),
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> LatencyModel:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _nnls_fit(x: np.ndarray, y: np.ndarray) -> Coeffs:
    """NNLS on column-scaled features [flops, bytes, 1]; coefficients returned in natural units."""
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    coef, _ = nnls(x / scale, y)
    coef = coef / scale
    return Coeffs(float(coef[0]), float(coef[1]), float(coef[2]), n=len(y))


def _as_sample(s: Sample | Sequence[Any], graph: Graph | None) -> Sample:
    if isinstance(s, Sample):
        return s
    if len(s) == 3:
        return Sample(s[0], int(s[1]), float(s[2]))
    if len(s) == 2:  # (NodeInfo, seconds): bytes read from `graph`, else unknown (0)
        return Sample(s[0], input_bytes(graph, s[0]) if graph is not None else 0, float(s[1]))
    raise ValueError(f"sample: expected (NodeInfo, seconds) or (NodeInfo, in_bytes, seconds), got {s!r}")


def fit(
    samples: Iterable[Sample | tuple[NodeInfo, float] | tuple[NodeInfo, int, float]],
    *,
    graph: Graph | None = None,
    min_samples: int = MIN_SAMPLES,
    meta: Mapping[str, Any] | None = None,
) -> LatencyModel:
    """Fit ``t = a*flops + b*(in_bytes+out_bytes) + c`` per op kind by NNLS (module docstring).

    Samples are `Sample`s, ``(NodeInfo, in_bytes, seconds)`` or ``(NodeInfo, seconds)`` pairs;
    for pairs the bytes read are taken from `graph` (the graph the nodes belong to) or counted
    as 0 when no graph is given. `samples_from_profile` builds full samples from a measurement.
    """
    rows = [_as_sample(s, graph) for s in samples]
    if not rows:
        raise ValueError("fit: expected at least one sample, got none")
    if any(r.seconds < 0 for r in rows):
        raise ValueError("fit: sample seconds must be >= 0")
    x = np.array([[r.node.flops, r.in_bytes + r.node.out_bytes, 1.0] for r in rows], dtype=np.float64)
    y = np.array([r.seconds for r in rows], dtype=np.float64)
    kinds = np.array([r.node.kind for r in rows])
    fallback = _nnls_fit(x, y)
    per_kind = {}
    for kind in sorted(set(kinds.tolist())):
        mask = kinds == kind
        if mask.sum() >= min_samples:
            per_kind[kind] = _nnls_fit(x[mask], y[mask])
    return LatencyModel(per_kind, fallback, min_samples, dict(meta or {}))


def samples_from_profile(graph: Graph, prof: LatencyProfile) -> list[Sample]:
    """Pair each compute node of `graph` with its measured median seconds."""
    return [Sample(n, input_bytes(graph, n), prof.node_s[n.name])
            for n in graph.compute_nodes() if n.name in prof.node_s]


def fit_from_graphs(graphs: Iterable[Graph], **profile_kwargs: Any) -> LatencyModel:
    """Profile each graph on this host (cached, see `measure.profile`) and fit one model to all."""
    samples: list[Sample] = []
    names: list[str] = []
    threads = profile_kwargs.get("threads", 1)
    env: dict[str, Any] = {}
    for g in graphs:
        prof = profile(g, **profile_kwargs)
        samples += samples_from_profile(g, prof)
        names.append(g.name)
        env = prof.env
    meta = {"graphs": names, "threads": threads, "cpu_model": env.get("cpu_model"), "torch": env.get("torch")}
    return fit(samples, meta=meta)


def predict_host(graph: Graph, model: LatencyModel | None = None, **profile_kwargs: Any) -> dict[str, float]:
    """Host seconds per compute node: the model's prediction, or this graph's measured profile
    when no model is given (measured once, then cached)."""
    if model is not None:
        return model.predict_graph(graph)
    return dict(profile(graph, **profile_kwargs).node_s)


def predict(
    graph: Graph,
    device: DeviceProfile,
    pu: str | None = None,
    model: LatencyModel | None = None,
) -> dict[str, float]:
    """Predicted seconds per compute node on one PU of `device` (its fastest PU by default).

    ``t = t_host / (pu.speed * pu.op_speed.get(kind, 1.0))`` where t_host comes from `model`, or
    from measuring this graph on the host when `model` is None.
    """
    unit = device.pu(pu)
    host = predict_host(graph, model)
    return {name: host[name] / unit.speed_for(graph.nodes[name].kind) for name in host}
