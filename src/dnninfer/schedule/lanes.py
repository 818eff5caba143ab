"""CPU executor: a stream plan run as parallel lanes, one thread per stream.

The CPU counterpart of Opara's multi-stream CUDA Graph (research/gpu_and_serving.md §1.3 step 8):
each lane executes its stream's operators in launch order; an event is a `threading.Event`
set after the producer and waited on before the consumer, exactly where the launch program puts
CUDA's record and wait. PyTorch CPU kernels release the GIL, so lanes overlap; the Python
dispatch between kernels does not, which is why tiny-operator graphs gain little.

``intra_threads`` sets `torch.set_num_threads` in every lane (lane 0 runs on the caller's
thread; the others live in a persistent pool created once). Intermediates are kept in one
environment list; a value read only by one lane is dropped right after its last reader there,
the rest at the end of the call (the safe choice across lanes, as Opara keeps them all).
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from dnninfer.graph import Graph
from dnninfer.schedule.dag import OpDAG
from dnninfer.schedule.ops import OpTable
from dnninfer.schedule.plan import StreamPlan
from dnninfer.schedule.program import RECORD, RUN, WAIT, LaunchProgram, build_program

__all__ = ["LaneExecutor"]

_RUN, _RECORD, _WAIT = 0, 1, 2


class _Aborted(Exception):
    """Raised in a lane woken up because another lane failed."""


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


class LaneExecutor:
    """Run ``graph`` under ``plan``: ``LaneExecutor(graph, plan)(*inputs)`` equals ``graph.gm(*inputs)``."""

    def __init__(self, graph: Graph, plan: StreamPlan, dag: OpDAG | None = None, *, intra_threads: int = 1,
                 free_early: bool = True) -> None:
        if intra_threads < 1:
            raise ValueError(f"intra_threads: expected >= 1, got {intra_threads}")
        dag = dag or OpDAG.from_graph(graph)
        self.plan = plan
        self.intra_threads = intra_threads
        self.table = OpTable(graph.gm)
        self.program: LaunchProgram = build_program(plan, dag, fork_join=True)
        self.num_lanes = self.program.num_streams
        frees = self._free_points(graph, plan) if free_early else {}
        slot = self.table.slot
        self._lanes: list[list[tuple[int, Any, int, tuple[int, ...]]]] = [[] for _ in range(self.num_lanes)]
        for ins in self.program.instrs:
            if ins.op == RUN:
                step = (_RUN, self.table.calls[ins.node], slot[ins.node], frees.get(ins.node, ()))
            elif ins.op == RECORD:
                step = (_RECORD, None, ins.event, ())
            elif ins.op == WAIT:
                step = (_WAIT, None, ins.event, ())
            else:  # pragma: no cover - build_program emits only these
                raise ValueError(ins.op)
            self._lanes[ins.stream].append(step)
        self._pool = (ThreadPoolExecutor(self.num_lanes - 1, thread_name_prefix="dnninfer-lane",
                                         initializer=_init_worker, initargs=(intra_threads,))
                      if self.num_lanes > 1 else None)

    def _free_points(self, graph: Graph, plan: StreamPlan) -> dict[str, tuple[int, ...]]:
        """node -> slots its lane may drop after running it (values all of whose readers are there)."""
        keep = set(self.table.output_names)
        readers: dict[str, list[str]] = {}
        for name in plan.order:
            for src in dict.fromkeys(graph.nodes[name].inputs):
                if src in plan.stream_of:
                    readers.setdefault(src, []).append(name)
        pos = {n: i for i, n in enumerate(plan.order)}
        out: dict[str, list[int]] = {}
        for src, rs in readers.items():
            if src in keep or len({plan.stream_of[r] for r in rs}) != 1:
                continue
            last = max(rs, key=pos.__getitem__)
            out.setdefault(last, []).append(self.table.slot[src])
        return {k: tuple(v) for k, v in out.items()}

    # -- running -----------------------------------------------------------------------------
    def _run_lane(self, lane: int, env: list[Any], events: list[threading.Event], state: dict[str, Any]) -> None:
        try:
            with torch.no_grad():
                for kind, call, arg, frees in self._lanes[lane]:
                    if kind == _RUN:
                        env[arg] = call(env)
                        for i in frees:
                            env[i] = None
                    elif kind == _RECORD:
                        events[arg].set()
                    else:
                        events[arg].wait()
                        if state["error"] is not None:
                            raise _Aborted
        except _Aborted:
            raise
        except BaseException as e:
            if state["error"] is None:
                state["error"] = e
            for ev in events:  # wake every lane blocked on us
                ev.set()
            raise

    def __call__(self, *inputs: Any) -> Any:
        env = self.table.new_env(inputs)
        events = [threading.Event() for _ in range(self.program.num_events)]
        state: dict[str, Any] = {"error": None}
        futures = [self._pool.submit(self._run_lane, s, env, events, state)  # type: ignore[union-attr]
                   for s in range(1, self.num_lanes)]
        previous = torch.get_num_threads()
        if previous != self.intra_threads:
            torch.set_num_threads(self.intra_threads)
        try:
            with contextlib.suppress(BaseException):  # recorded in state; raised below once all lanes stop
                self._run_lane(0, env, events, state)
            for f in futures:
                with contextlib.suppress(BaseException):
                    f.result()
        finally:
            if previous != self.intra_threads:
                torch.set_num_threads(previous)
        if state["error"] is not None:
            raise state["error"]
        return self.table.output(env)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> LaneExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort: idle pool threads would otherwise linger
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)

    def describe(self) -> dict[str, Any]:
        return {"lanes": self.num_lanes, "intra_threads": self.intra_threads, **self.program.counts()}

