"""`StreamPlan`: which stream each operator runs on and the order the host launches them in.

A plan is valid when the launch order is a linear extension of the DAG. Any node -> stream map
is then deadlock-free and correct once every cross-stream edge is guarded by an event (the
earliest unfinished operator in launch order can always run), so stream allocation is purely a
performance decision and `program.build_program` turns any plan into correct synchronisation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from dnninfer.errors import expected
from dnninfer.schedule.dag import OpDAG

__all__ = ["ALGOS", "ORDERS", "StreamPlan", "compact_streams", "make_plan"]


@dataclass(frozen=True)
class StreamPlan:
    """node -> stream, the host launch order, and the cross-stream edges that need events.

    Streams are numbered 0..num_streams-1 by first use in launch order, so stream 0 runs the
    first operator (it is the capture stream of the CUDA executor and the caller's lane on CPU).
    """

    algo: str
    order_name: str
    stream_of: Mapping[str, int]
    order: tuple[str, ...]
    cross_edges: tuple[tuple[str, str], ...]
    max_streams: int | None = None
    name: str = "dag"

    @property
    def num_streams(self) -> int:
        return max(self.stream_of.values(), default=-1) + 1

    @cached_property
    def streams(self) -> tuple[tuple[str, ...], ...]:
        """Per stream, its operators in launch order (what that stream executes, in sequence)."""
        out: list[list[str]] = [[] for _ in range(self.num_streams)]
        for n in self.order:
            out[self.stream_of[n]].append(n)
        return tuple(tuple(s) for s in out)

    def validate(self, dag: OpDAG) -> None:
        """Raise ValueError unless the order is a linear extension and every node has a stream."""
        if not dag.is_linear_extension(self.order):
            raise ValueError(f"plan {self.algo}/{self.order_name}: launch order is not a topological order")
        if set(self.stream_of) != set(dag.names):
            raise ValueError(f"plan {self.algo}/{self.order_name}: stream map does not cover the DAG")
        if self.max_streams is not None and self.num_streams > self.max_streams:
            raise ValueError(f"plan {self.algo}: {self.num_streams} streams exceed the cap {self.max_streams}")

    def summary(self) -> dict[str, Any]:
        return {"model": self.name, "algo": self.algo, "order": self.order_name, "streams": self.num_streams,
                "max_streams": self.max_streams, "nodes": len(self.order), "cross_edges": len(self.cross_edges),
                "ops_per_stream": [len(s) for s in self.streams]}

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "order_list": list(self.order), "stream_of": dict(self.stream_of),
                "cross_edge_list": [list(e) for e in self.cross_edges]}


def compact_streams(stream_of: Mapping[str, int], order: Sequence[str]) -> dict[str, int]:
    """Renumber streams 0.. by first appearance in ``order`` (dropping unused ids)."""
    new: dict[int, int] = {}
    for n in order:
        new.setdefault(stream_of[n], len(new))
    return {n: new[stream_of[n]] for n in order}


# -- registry -------------------------------------------------------------------------------------
AllocFn = Callable[[OpDAG, Sequence[str], int | None], dict[str, int]]
OrderFn = Callable[[OpDAG], list[str]]


def _alloc_table() -> dict[str, AllocFn]:
    from dnninfer.schedule import cpfirst, nimble, opara

    return {
        "opara": lambda dag, order, k: opara.opara_streams(dag, order, max_streams=k),
        "nimble": lambda dag, order, k: nimble.nimble_streams(dag, max_streams=k),
        "cpfirst": lambda dag, order, k: cpfirst.cpfirst_streams(dag, max_streams=k),
        "sequential": lambda dag, order, k: dict.fromkeys(dag.names, 0),
    }


def _order_table() -> dict[str, OrderFn]:
    from dnninfer.schedule import cpfirst, opara

    return {
        "opara": opara.opara_order,
        "topo": lambda dag: list(dag.names),
        "cp": cpfirst.critical_path_order,
    }


ALGOS = ("opara", "nimble", "cpfirst", "sequential")
ORDERS = ("opara", "topo", "cp")


def make_plan(
    dag: OpDAG,
    algo: str = "opara",
    order: str = "opara",
    *,
    max_streams: int | None = None,
    launch_order: Sequence[str] | None = None,
) -> StreamPlan:
    """Plan ``dag``: launch order first (Opara reorders the graph before allocating streams, so
    Alg. 1 walks the launch order), then streams, then the cross-stream edges.

    ``algo``: opara (Alg. 1), nimble (minimum chain decomposition), cpfirst (critical path on
    stream 0, the rest round robin), sequential (one stream). ``order``: opara (Alg. 2), topo
    (program order), cp (longest remaining path first). ``launch_order`` overrides ``order``.
    """
    if algo not in ALGOS:
        raise expected("--algo", f"one of {', '.join(ALGOS)}", algo)
    if order not in ORDERS:
        raise expected("--order", f"one of {', '.join(ORDERS)}", order)
    if max_streams is not None and max_streams < 1:
        raise expected("--max-streams", "a positive integer", max_streams)
    seq = list(launch_order) if launch_order is not None else _order_table()[order](dag)
    if not dag.is_linear_extension(seq):
        raise ValueError(f"launch order {order!r} is not a topological order of {dag.name}")
    raw = _alloc_table()[algo](dag, seq, max_streams)
    stream_of = compact_streams(raw, seq)
    cross = tuple((u, v) for u, v in dag.edges() if stream_of[u] != stream_of[v])
    plan = StreamPlan(algo=algo, order_name=order if launch_order is None else "custom", stream_of=stream_of,
                      order=tuple(seq), cross_edges=cross, max_streams=max_streams, name=dag.name)
    plan.validate(dag)
    return plan
