"""Per-node latency of a captured graph on THIS machine, measured once and cached.

Why per node: partitioners cost every candidate cut from per-node (per-layer) times, as
Neurosurgeon and DADS do (partitioning.md §3.2, §6.1 step 2: "measure per-block latency once,
threads fixed"). The whole graph is run node by node by a `torch.fx.Interpreter` subclass that
times each compute node with `time.perf_counter_ns`; arguments are fetched before the clock
starts, so a node's time is its own call (including the Python dispatch a real run pays too).
The whole model is also timed directly (`graph.gm`), interleaved with the node-by-node runs, so
the two can be compared: `total_s` (sum of node medians) exceeds `whole_model_s` by the
interpreter's overhead.

Results are cached as JSON, keyed by the graph's structure, the input shapes, the torch version,
the thread count, the repeat count and the CPU model, so a second call on the same machine costs
nothing. Timings are never asserted in tests (CONVENTIONS.md "Timing").
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import fx

from dnninfer.env import capture_env, cpu_model, pinned_threads
from dnninfer.graph import Graph
from dnninfer.graph.core import COMPUTE_OPS

__all__ = ["LatencyProfile", "cache_path", "check_format", "default_cache_dir", "graph_key", "profile"]

log = logging.getLogger(__name__)

CACHE_ENV = "DNNINFER_CACHE_DIR"
FORMAT_VERSION = 1
_MIN_S = 1e-9  # a node never reports 0 s: the clock ticks in ns and every call takes longer


def check_format(data: Mapping[str, Any], what: str, version: int) -> None:
    """Refuse a stored record of another format version (a missing version is read as `version`):
    an old cache or model file is rebuilt rather than misread."""
    found = data.get("version", version)
    if found != version:
        raise ValueError(f"{what} format {found}: expected {version}")


@dataclass(frozen=True)
class LatencyProfile:
    """Median seconds per compute node (and for the whole model) on one machine and thread count."""

    graph_key: str
    threads: int
    node_s: dict[str, float]
    total_s: float  # sum of node medians (node-by-node run)
    whole_model_s: float  # median of direct runs of graph.gm
    repeats: int
    env: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyProfile:
        check_format(data, "latency profile", FORMAT_VERSION)
        return cls(
            graph_key=str(data["graph_key"]),
            threads=int(data["threads"]),
            node_s={str(k): float(v) for k, v in data["node_s"].items()},
            total_s=float(data["total_s"]),
            whole_model_s=float(data["whole_model_s"]),
            repeats=int(data["repeats"]),
            env=dict(data.get("env", {})),
        )


def _cpu_model() -> str:
    return cpu_model() or platform.machine() or "unknown"


def _env(threads: int) -> dict[str, Any]:
    env = capture_env()
    keys = ("torch", "python", "cpu_model", "cpu_count", "loadavg", "timestamp")
    return {**{k: env.get(k) for k in keys}, "cpu_model": _cpu_model(), "threads": threads}


def graph_key(graph: Graph) -> str:
    """A hash of what determines the work: node names, targets, kinds, shapes, dtypes, FLOPs,
    parameter bytes, and the example inputs' shapes and dtypes. Weights' values do not matter."""
    h = hashlib.sha256()
    for info in graph.nodes.values():
        h.update(repr((info.name, info.op, info.target, info.kind, info.inputs, info.shape,
                       info.dtype, info.flops, info.param_bytes)).encode())
    for x in graph.example_inputs:
        if isinstance(x, torch.Tensor):
            h.update(repr(("input", tuple(x.shape), str(x.dtype))).encode())
        else:
            h.update(repr(("input", type(x).__name__, x)).encode())
    return h.hexdigest()[:24]


def default_cache_dir() -> Path:
    """``$DNNINFER_CACHE_DIR`` or ``~/.cache/dnninfer/profiles``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "dnninfer" / "profiles"


def cache_path(graph: Graph, *, threads: int, repeats: int, cache_dir: str | Path | None = None) -> Path:
    """Where `profile` keeps the result for this graph on this machine."""
    key = json.dumps([FORMAT_VERSION, graph_key(graph), torch.__version__, threads, repeats, _cpu_model()])
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / f"{digest}.json"


class _NodeTimer(fx.Interpreter):
    """Runs the graph node by node, appending each compute node's wall time (ns) to `times`."""

    def __init__(self, gm: fx.GraphModule, times: dict[str, list[int]]) -> None:
        super().__init__(gm)
        self.times = times

    def run_node(self, n: fx.Node) -> Any:
        if n.op not in COMPUTE_OPS:
            return super().run_node(n)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        fn = getattr(self, n.op)
        t0 = time.perf_counter_ns()
        out = fn(n.target, args, kwargs)
        self.times[n.name].append(time.perf_counter_ns() - t0)
        return out


def _measure(graph: Graph, *, warmup: int, repeats: int) -> tuple[dict[str, float], float]:
    """(median seconds per compute node, median seconds of the whole model)."""
    names = [n.name for n in graph.compute_nodes()]
    inputs = graph.example_inputs
    scratch: dict[str, list[int]] = {n: [] for n in names}
    for _ in range(warmup):
        _NodeTimer(graph.gm, scratch).run(*inputs)
        graph.gm(*inputs)
    times: dict[str, list[int]] = {n: [] for n in names}
    whole: list[int] = []
    for _ in range(repeats):  # interleaved, so drift hits both views alike
        _NodeTimer(graph.gm, times).run(*inputs)
        t0 = time.perf_counter_ns()
        graph.gm(*inputs)
        whole.append(time.perf_counter_ns() - t0)
    node_s = {n: max(statistics.median(times[n]) * 1e-9, _MIN_S) for n in names}
    return node_s, max(statistics.median(whole) * 1e-9, _MIN_S)


def profile(
    graph: Graph,
    *,
    warmup: int = 3,
    repeats: int = 10,
    threads: int = 1,
    cache: bool = True,
    cache_dir: str | Path | None = None,
) -> LatencyProfile:
    """Measure (or load from cache) per-node and whole-model median latency on this machine.

    `threads` pins `torch.set_num_threads` for the measurement and is restored afterwards; one
    thread is the default because one intra-op thread per emulated node is what the runtime runs
    (partitioning.md §5.1). A cache hit returns the stored numbers without running anything.
    """
    if warmup < 0 or repeats < 1 or threads < 1:
        raise ValueError(f"expected warmup >= 0, repeats >= 1, threads >= 1; got {warmup}, {repeats}, {threads}")
    path = cache_path(graph, threads=threads, repeats=repeats, cache_dir=cache_dir)
    if cache and path.exists():
        try:
            return LatencyProfile.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("ignoring unreadable latency cache %s (%s); measuring again", path, e)

    with pinned_threads(threads), torch.no_grad():
        node_s, whole_s = _measure(graph, warmup=warmup, repeats=repeats)

    result = LatencyProfile(
        graph_key=graph_key(graph),
        threads=threads,
        node_s=node_s,
        total_s=sum(node_s.values()),
        whole_model_s=whole_s,
        repeats=repeats,
        env=_env(threads),
    )
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(result.to_dict(), indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    return result
