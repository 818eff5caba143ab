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
import time
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

__all__ = ["CudaBackend", "CudaStreamGraph", "FakeCudaBackend", "cuda_node_profile", "whole_model_graph"]


class CudaBackend:
    """The thin layer over ``torch.cuda``. Beyond the executor's streams, events and capture it
    carries what the GPU bench and the GPU check time and measure with (timing events, peak
    memory, an L2-flush buffer, ``torch.compile``), so one code path runs on a GPU and, through
    `FakeCudaBackend`, on CPU. Every call here exists in torch 2.11."""

    fake = False

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

    def sync_stream(self, stream: Any) -> None:
        stream.synchronize()

    def keep_alive(self, tensor: torch.Tensor, stream: Any) -> None:
        """``tensor`` (allocated on another stream) is used on ``stream``: the caching allocator
        must not reuse its block until ``stream``'s work on it is done."""
        tensor.record_stream(stream)

    def timer_event(self) -> Any:
        return torch.cuda.Event(enable_timing=True)

    def reset_peak_memory(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_mb(self) -> float | None:
        return torch.cuda.max_memory_allocated(self.device) / 2**20

    def empty(self, nbytes: int) -> torch.Tensor:
        return torch.empty(max(nbytes // 4, 1), dtype=torch.float32, device=self.device)

    def compile(self, model: Any) -> Any:
        return torch.compile(model, mode="reduce-overhead")

    def describe(self) -> dict[str, Any]:
        p = torch.cuda.get_device_properties(self.device)
        return {"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_gib": round(p.total_memory / 2**30, 1),
                "multiprocessors": p.multi_processor_count, "count": torch.cuda.device_count(),
                "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                "tf32_conv": torch.backends.cudnn.allow_tf32, "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}


def whole_model_graph(model: Any, inputs: Sequence[torch.Tensor], backend: Any = None,
                      warmup: int = 3) -> Callable[..., Any]:
    """PyTorch's standard whole-model CUDA Graph on one stream (Opara's baseline): warm up on a
    side stream, capture one forward, then each call copies its inputs into the static buffers and
    replays. Returns the static outputs (aliased: the next call overwrites them)."""
    backend = backend if backend is not None else CudaBackend()
    static = [x.clone() for x in inputs]
    side, current = backend.new_stream(), backend.current_stream()
    backend.wait_stream(side, current)
    for _ in range(warmup):
        backend.launch(side, "model", lambda: model(*static))
    backend.wait_stream(current, side)
    backend.synchronize()
    graph, out = backend.capture(lambda: backend.launch(side, "model", lambda: model(*static)), side)
    backend.synchronize()

    def run(*new: torch.Tensor) -> Any:
        for dst, src in zip(static, new, strict=True):
            dst.copy_(src)
        backend.replay(graph)
        return out

    return run


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


def cuda_node_profile(graph: Graph, *, repeats: int = 10, warmup: int = 3, device: str = "cuda",
                      backend: Any = None, inputs: Sequence[torch.Tensor] | None = None) -> dict[str, float]:
    """Median GPU seconds per compute node (CUDA events around each op, one stream), for Alg. 2."""
    backend = backend if backend is not None else CudaBackend(device)
    gm = backend.to_device(copy.deepcopy(graph.gm))
    table = OpTable(gm)
    inputs = [backend.to_device(x) for x in (inputs if inputs is not None else graph.example_inputs)]
    names = list(table.calls)
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.no_grad():
        for r in range(warmup + repeats):
            env = table.new_env(inputs)
            marks = []
            for n in names:
                start, end = backend.timer_event(), backend.timer_event()
                start.record()
                env[table.slot[n]] = table.calls[n](env)
                end.record()
                marks.append((n, start, end))
            backend.synchronize()
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


class _FakeTimer:
    """A timing event on the host clock (the fake backend's work is synchronous)."""

    def __init__(self) -> None:
        self.t = 0.0

    def record(self, stream: Any = None) -> None:
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        return None

    def elapsed_time(self, end: _FakeTimer) -> float:
        return (end.t - self.t) * 1e3


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

    fake = True
    device = torch.device("cpu")

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

    # what the GPU bench and the GPU check need besides the executor: CPU stand-ins
    def sync_stream(self, stream: _FakeStream) -> None:
        return None

    def keep_alive(self, tensor: torch.Tensor, stream: _FakeStream) -> None:
        return None

    def timer_event(self) -> _FakeTimer:
        return _FakeTimer()

    def reset_peak_memory(self) -> None:
        return None

    def peak_memory_mb(self) -> float | None:
        return None  # not measured on CPU

    def empty(self, nbytes: int) -> torch.Tensor:
        return torch.empty(max(min(nbytes, 1 << 20) // 4, 1), dtype=torch.float32)

    def compile(self, model: Any) -> Any:
        """No Inductor here (20-40 s a model on CPU): the model itself behind a call, so the
        bench's compile path (timing, errors, equality) still runs."""
        return lambda *xs: model(*xs)

    def describe(self) -> dict[str, Any]:
        return {"name": "fake CUDA backend (CPU)", "capability": None, "memory_gib": None, "multiprocessors": None,
                "count": 0, "cuda": None, "cudnn": None, "tf32_conv": None, "tf32_matmul": None}
