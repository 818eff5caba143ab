"""GPU executor: a stream plan captured into ONE CUDA Graph with fork/join (Opara's GraphCapturer).

The launch program (program.py: run / record / wait per stream, built and tested in pure Python)
is interpreted against a small backend interface; `CudaBackend` maps it onto ``torch.cuda``
(streams, events, ``torch.cuda.graph``), `FakeCudaBackend` onto CPU tensors with CUDA's event
and capture rules checked, so everything but the CUDA calls themselves is exercised on a CPU box.

Recipe (research/gpu_and_serving.md §1.2 point 5-6, §1.3 step 6):

1. copy the model to the device; allocate static input buffers;
2. warm up ``warmup`` times with the multi-stream program outside capture (cuDNN autotuning,
   lazy inits), joined into and out of the caller's stream, then synchronise;
3. capture: ``torch.cuda.graph(g, stream=s0)``; the program forks every side stream from s0
   through an event and joins them all back into s0 before capture ends (else CUDA reports
   "unjoined work");
4. every intermediate stays referenced until capture ends. Freeing one early would hand its
   block to another allocation on the producer's stream while a consumer stream still reads it
   (Opara keeps them all too; the cost is a higher peak memory than a one-stream graph);
5. a call copies the new inputs into the static buffers, replays the graph on the caller's
   stream, and returns the static outputs cloned (``copy_outputs=True``) or, with
   ``copy_outputs=False``, the static output tensors themselves: ALIASED, overwritten by the next
   call.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils import _pytree as pytree

from dnninfer.graph import Graph
from dnninfer.schedule.dag import OpDAG
from dnninfer.schedule.ops import OpTable
from dnninfer.schedule.plan import StreamPlan
from dnninfer.schedule.program import RECORD, RUN, WAIT, Instr, LaunchProgram, build_program, happens_before_violations

__all__ = ["CudaBackend", "CudaStreamGraph", "FakeCudaBackend", "cuda_node_profile"]


class CudaBackend:
    """The thin layer over ``torch.cuda``."""

    def __init__(self, device: str | torch.device = "cuda") -> None:
        self.device = torch.device(device)

    def to_device(self, x: Any) -> Any:
        return x.to(self.device)

    def new_stream(self) -> Any:
        return torch.cuda.Stream(device=self.device)

    def new_event(self) -> Any:
        return torch.cuda.Event()

    def current_stream(self) -> Any:
        return torch.cuda.current_stream(self.device)

    def record(self, event: Any, stream: Any) -> None:
        event.record(stream)

    def wait(self, stream: Any, event: Any) -> None:
        stream.wait_event(event)

    def wait_stream(self, stream: Any, other: Any) -> None:
        stream.wait_stream(other)

    def launch(self, stream: Any, name: str, thunk: Callable[[], Any]) -> Any:
        with torch.cuda.stream(stream):
            return thunk()

    def capture(self, fn: Callable[[], Any], stream: Any) -> tuple[Any, Any]:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=stream):
            out = fn()
        return g, out

    def replay(self, graph: Any) -> None:
        graph.replay()

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)


class CudaStreamGraph:
    """``CudaStreamGraph(graph, plan)(*inputs)`` equals ``graph.gm(*inputs)``, run as one CUDA Graph
    whose kernels are spread over ``plan.num_streams`` streams (see module docstring)."""

    def __init__(
        self,
        graph: Graph,
        plan: StreamPlan,
        dag: OpDAG | None = None,
        *,
        backend: Any = None,
        warmup: int = 3,
        copy_outputs: bool = True,
        inputs: Sequence[torch.Tensor] | None = None,
    ) -> None:
        self.backend = backend if backend is not None else CudaBackend()
        dag = dag or OpDAG.from_graph(graph)
        self.plan = plan
        self.program: LaunchProgram = build_program(plan, dag, fork_join=True)
        self.copy_outputs = copy_outputs
        gm = copy.deepcopy(graph.gm)
        self.table = OpTable(self.backend.to_device(gm))
        self.streams = [self.backend.new_stream() for _ in range(self.program.num_streams)]
        self.events = [self.backend.new_event() for _ in range(self.program.num_events)]
        example = inputs if inputs is not None else graph.example_inputs
        self.static_inputs = [self.backend.to_device(x).clone() for x in example]
        with torch.no_grad():
            for _ in range(warmup):
                self.run_streams(*self.static_inputs)
            self.backend.synchronize()
            self.graph, self.static_output = self.backend.capture(
                lambda: self._program(self.static_inputs), self.streams[0])
            self.backend.synchronize()

    def _program(self, inputs: Sequence[Any]) -> Any:
        """Issue the launch program once; every intermediate lives until it returns."""
        env = self.table.new_env(inputs)
        calls, slot, backend = self.table.calls, self.table.slot, self.backend
        for ins in self.program.instrs:
            stream = self.streams[ins.stream]
            if ins.op == RUN:
                call = calls[ins.node]
                env[slot[ins.node]] = backend.launch(stream, ins.node, lambda c=call: c(env))
            elif ins.op == RECORD:
                backend.record(self.events[ins.event], stream)
            elif ins.op == WAIT:
                backend.wait(stream, self.events[ins.event])
        return self.table.output(env)

    def run_streams(self, *inputs: Any) -> Any:
        """The multi-stream program without a graph, ordered after and before the caller's stream."""
        current = self.backend.current_stream()
        self.backend.wait_stream(self.streams[0], current)
        out = self._program(inputs)
        self.backend.wait_stream(current, self.streams[0])
        return out

    def __call__(self, *inputs: Any) -> Any:
        if len(inputs) != len(self.static_inputs):
            raise ValueError(f"expected {len(self.static_inputs)} inputs, got {len(inputs)}")
        for dst, src in zip(self.static_inputs, inputs, strict=True):
            dst.copy_(src)  # a CUDA Graph reads the addresses it was captured with
        self.backend.replay(self.graph)
        if self.copy_outputs:
            return pytree.tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, self.static_output)
        return self.static_output

    def describe(self) -> dict[str, Any]:
        return {"streams": self.program.num_streams, **self.program.counts()}


def cuda_node_profile(graph: Graph, *, repeats: int = 10, warmup: int = 3, device: str = "cuda") -> dict[str, float]:
    """Median GPU seconds per compute node (CUDA events around each op, one stream), for Alg. 2."""
    gm = copy.deepcopy(graph.gm).to(device)
    table = OpTable(gm)
    inputs = [x.to(device) for x in graph.example_inputs]
    names = list(table.calls)
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.no_grad():
        for r in range(warmup + repeats):
            env = table.new_env(inputs)
            marks = []
            for n in names:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                env[table.slot[n]] = table.calls[n](env)
                end.record()
                marks.append((n, start, end))
            torch.cuda.synchronize()
            if r >= warmup:
                for n, start, end in marks:
                    times[n].append(start.elapsed_time(end) * 1e-3)
    return {n: max(statistics.median(ts), 1e-9) for n, ts in times.items()}


# -- a CPU stand-in for tests -----------------------------------------------------------------------
@dataclass(frozen=True)
class _FakeStream:
    id: int


@dataclass(frozen=True)
class _FakeEvent:
    id: int


class _FakeGraph:
    def __init__(self, fn: Callable[[], Any], out: Any) -> None:
        self.fn, self.out = fn, out

    def replay(self) -> None:
        """What a replay does to memory: the captured work runs again and writes the SAME output
        buffers (it reads the static inputs, whatever the caller copied into them)."""
        new = self.fn()
        for dst, src in zip(pytree.tree_leaves(self.out), pytree.tree_leaves(new), strict=True):
            if isinstance(dst, torch.Tensor):
                dst.copy_(src)


class FakeCudaBackend:
    """Runs the executor on CPU while enforcing what CUDA would: work issued during capture on a
    stream not forked from the capture stream is an error (it would silently run outside the
    graph), and capture must end with every forked stream joined ("unjoined work"). Every call
    is traced as `Instr`s, so tests can check happens-before on what the executor actually did."""

    def __init__(self) -> None:
        self.trace: list[Instr] = []
        self._streams = 0
        self._events = 0
        self._current = self.new_stream()
        self._capturing: set[int] | None = None
        self._captured_events: set[int] = set()
        self.captures = 0
        self.capture_spans: list[tuple[int, int]] = []  # trace[start:end] of each capture

    def to_device(self, x: Any) -> Any:
        return x

    def new_stream(self) -> _FakeStream:
        self._streams += 1
        return _FakeStream(self._streams - 1)

    def new_event(self) -> _FakeEvent:
        self._events += 1
        return _FakeEvent(self._events - 1)

    def current_stream(self) -> _FakeStream:
        return self._current

    def record(self, event: _FakeEvent, stream: _FakeStream) -> None:
        self._check(stream, "record")
        if self._capturing is not None:
            self._captured_events.add(event.id)
        self.trace.append(Instr(RECORD, stream.id, event=event.id))

    def wait(self, stream: _FakeStream, event: _FakeEvent) -> None:
        if self._capturing is not None and event.id in self._captured_events:
            self._capturing.add(stream.id)  # joining the capture, as cudaStreamWaitEvent does
        self.trace.append(Instr(WAIT, stream.id, event=event.id))

    def wait_stream(self, stream: _FakeStream, other: _FakeStream) -> None:
        ev = self.new_event()
        self.record(ev, other)
        self.wait(stream, ev)

    def launch(self, stream: _FakeStream, name: str, thunk: Callable[[], Any]) -> Any:
        self._check(stream, f"launch of {name}")
        self.trace.append(Instr(RUN, stream.id, node=name))
        return thunk()

    def _check(self, stream: _FakeStream, what: str) -> None:
        if self._capturing is not None and stream.id not in self._capturing:
            raise RuntimeError(f"{what} on stream {stream.id} during capture: stream not forked from the "
                               "capture stream, the work would run outside the graph")

    @contextmanager
    def _capture_on(self, stream: _FakeStream) -> Any:
        previous = self._current
        self._capturing, self._captured_events, self._current = {stream.id}, set(), stream
        start = len(self.trace)
        try:
            yield
            segment = self.trace[start:]
            self.capture_spans.append((start, len(self.trace)))
            unjoined = happens_before_violations(segment, [], num_streams=self._streams, final_stream=stream.id)
            if unjoined:
                raise RuntimeError(f"capture ended with unjoined work: {unjoined[:3]}")
        finally:
            self._capturing, self._current = None, previous

    def capture(self, fn: Callable[[], Any], stream: _FakeStream) -> tuple[_FakeGraph, Any]:
        with self._capture_on(stream):
            out = fn()
        self.captures += 1
        return _FakeGraph(fn, out), out

    def replay(self, graph: _FakeGraph) -> None:
        mark = len(self.trace)
        graph.replay()
        del self.trace[mark:]  # a replay issues no host calls

    def synchronize(self) -> None:
        return None
