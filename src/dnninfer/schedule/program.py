"""From a `StreamPlan` to a launch program: which op on which stream, which event is recorded
and waited where, in host issue order. Pure Python, so the synchronisation logic is tested
without a GPU (the CUDA and CPU executors only interpret this program).

Semantics follow CUDA's: a stream runs its instructions in order; ``record(e)`` on stream s marks
the point after everything issued to s so far; ``wait(e)`` on stream t makes t's later work wait
for the *latest record of e issued before the wait* (a wait issued before any record is a no-op,
the classic silent bug, which the checker reports).

Redundant waits are pruned with vector clocks (as Nimble prunes syncs): stream t skips waiting
for producer u on stream s when it already synchronised with s at or after u, directly or
through a third stream.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dnninfer.schedule.dag import OpDAG
from dnninfer.schedule.plan import StreamPlan

__all__ = ["FakeResult", "FakeStreamExecutor", "Instr", "LaunchProgram", "build_program", "happens_before_violations"]

RUN, RECORD, WAIT = "run", "record", "wait"


@dataclass(frozen=True)
class Instr:
    """One host call: run ``node`` on ``stream``, or record / wait ``event`` on ``stream``."""

    op: str
    stream: int
    node: str | None = None
    event: int | None = None

    def __str__(self) -> str:
        what = self.node if self.op == RUN else f"e{self.event}"
        return f"s{self.stream}:{self.op}({what})"


@dataclass(frozen=True)
class LaunchProgram:
    """The host's launch sequence for one inference.

    With ``fork_join`` the program starts by recording ``fork_event`` on stream 0 and making
    every other stream wait for it, and ends with every other stream recording an event that
    stream 0 waits for: the shape CUDA Graph capture requires (side streams must be forked from
    and joined back into the capture stream, or capture fails with "unjoined work").
    """

    instrs: tuple[Instr, ...]
    num_streams: int
    num_events: int
    fork_join: bool
    event_source: dict[int, str] = field(default_factory=dict)  # event -> node it follows (node events only)

    def per_stream(self) -> list[list[Instr]]:
        out: list[list[Instr]] = [[] for _ in range(self.num_streams)]
        for ins in self.instrs:
            out[ins.stream].append(ins)
        return out

    def counts(self) -> dict[str, int]:
        ops = [i.op for i in self.instrs]
        return {"runs": ops.count(RUN), "records": ops.count(RECORD), "waits": ops.count(WAIT),
                "events": self.num_events, "streams": self.num_streams}

    def lines(self) -> list[str]:
        return [str(i) for i in self.instrs]


def build_program(plan: StreamPlan, dag: OpDAG, *, fork_join: bool = True, prune: bool = True) -> LaunchProgram:
    """Turn ``plan`` into a launch program that satisfies every edge of ``dag``.

    Pass 1 walks the launch order with one vector clock per stream and decides which cross-stream
    edges need a wait (each stream waits once per producer stream, for the latest producer it
    needs, unless it already knows that producer has run); pass 2 emits instructions, recording
    an event right after each producer somebody waits for.
    """
    plan.validate(dag)
    S = plan.num_streams
    stream_of = plan.stream_of
    tick: dict[str, int] = {}  # node -> 1-based position on its stream
    clock = [[0] * S for _ in range(S)]  # clock[s][t]: ops of t known complete at s's current point
    after: dict[str, list[int]] = {}  # node -> its stream's clock right after it ran
    waits: dict[str, list[str]] = {}  # node -> producers (on other streams) to wait for first
    for v in plan.order:
        s = stream_of[v]
        latest: dict[int, str] = {}
        for u in dag.preds[v]:
            t = stream_of[u]
            if t != s and (t not in latest or tick[u] > tick[latest[t]]):
                latest[t] = u
        need = []
        for t, u in sorted(latest.items()):
            if prune and clock[s][t] >= tick[u]:
                continue  # already ordered after u (directly or transitively)
            need.append(u)
            clock[s] = [max(a, b) for a, b in zip(clock[s], after[u], strict=True)]
        waits[v] = need
        clock[s][s] += 1
        tick[v] = clock[s][s]
        after[v] = list(clock[s])
    recorded = {u for need in waits.values() for u in need}

    instrs: list[Instr] = []
    event_of: dict[str, int] = {}
    event_source: dict[int, str] = {}
    n_events = 0
    if fork_join and S > 1:
        fork = n_events
        n_events += 1
        instrs.append(Instr(RECORD, 0, event=fork))
        instrs += [Instr(WAIT, s, event=fork) for s in range(1, S)]
    for v in plan.order:
        s = stream_of[v]
        instrs += [Instr(WAIT, s, event=event_of[u]) for u in waits[v]]
        instrs.append(Instr(RUN, s, node=v))
        if v in recorded:
            event_of[v] = n_events
            event_source[n_events] = v
            n_events += 1
            instrs.append(Instr(RECORD, s, event=event_of[v]))
    if fork_join and S > 1:
        joins = []
        for s in range(1, S):
            instrs.append(Instr(RECORD, s, event=n_events))
            joins.append(n_events)
            n_events += 1
        instrs += [Instr(WAIT, 0, event=e) for e in joins]
    return LaunchProgram(tuple(instrs), S, n_events, fork_join, event_source)


def happens_before_violations(
    program: LaunchProgram | Sequence[Instr],
    edges: Iterable[tuple[str, str]],
    *,
    num_streams: int | None = None,
    final_stream: int | None = None,
) -> list[tuple[str, str]]:
    """Edges (u, v) for which the program does NOT guarantee that u finishes before v starts.

    Independent of how the program was built: one vector clock per stream, advanced in host
    issue order; a wait binds to the latest record of its event issued before it (none: no-op).
    With ``final_stream``, also reports ``(u, "<end>")`` for every op not ordered before the end
    of that stream (the join the CUDA executor and the CPU caller rely on).
    """
    instrs = list(program.instrs if isinstance(program, LaunchProgram) else program)
    S = num_streams or (program.num_streams if isinstance(program, LaunchProgram)
                        else 1 + max((i.stream for i in instrs), default=0))
    vc = [[0] * S for _ in range(S)]
    recorded: dict[int, list[int]] = {}
    at: dict[str, tuple[int, int]] = {}  # node -> (stream, tick)
    seen: dict[str, list[int]] = {}  # node -> its stream's clock just before it ran
    for ins in instrs:
        s = ins.stream
        if ins.op == RUN:
            seen[ins.node] = list(vc[s])  # type: ignore[index]
            vc[s][s] += 1
            at[ins.node] = (s, vc[s][s])  # type: ignore[index]
        elif ins.op == RECORD:
            recorded[ins.event] = list(vc[s])  # type: ignore[index]
        elif ins.op == WAIT and ins.event in recorded:
            vc[s] = [max(a, b) for a, b in zip(vc[s], recorded[ins.event], strict=True)]
    bad = []
    for u, v in edges:
        if u not in at or v not in seen:
            bad.append((u, v))
            continue
        su, tu = at[u]
        if seen[v][su] < tu:
            bad.append((u, v))
    if final_stream is not None:
        bad += [(u, "<end>") for u, (su, tu) in at.items() if vc[final_stream][su] < tu]
    return bad


@dataclass
class FakeResult:
    order: list[str]  # nodes in the order the fake device ran them
    violations: list[tuple[str, str]]  # (pred, node) where node started before pred finished


class FakeStreamExecutor:
    """A simulated device: streams are FIFO queues, events follow CUDA semantics, and the device
    interleaves streams adversarially (it prefers to start an op whose inputs are not done yet)
    or at random. Every started op is checked against the DAG's edges (happens-before)."""

    def __init__(self, dag: OpDAG, *, seed: int = 0, adversarial: bool = True) -> None:
        self.dag = dag
        self.rng = random.Random(seed)
        self.adversarial = adversarial

    def run(self, program: LaunchProgram, execute: Callable[[str], Any] | None = None) -> FakeResult:
        # host side: bind each wait to the latest record of its event issued before it
        queues: list[list[tuple[Instr, int | None, int]]] = [[] for _ in range(program.num_streams)]
        last_record: dict[int, int] = {}
        for k, ins in enumerate(program.instrs):
            bound = last_record.get(ins.event) if ins.op == WAIT else None  # type: ignore[arg-type]
            if ins.op == RECORD:
                last_record[ins.event] = k  # type: ignore[index]
            queues[ins.stream].append((ins, bound, k))
        done_records: set[int] = set()
        finished: set[str] = set()
        heads = [0] * program.num_streams
        order: list[str] = []
        violations: list[tuple[str, str]] = []
        while True:
            ready = []
            for s, q in enumerate(queues):
                if heads[s] >= len(q):
                    continue
                ins, bound, _ = q[heads[s]]
                if ins.op == WAIT and bound is not None and bound not in done_records:
                    continue
                ready.append(s)
            if not ready:
                break
            racy = [s for s in ready if queues[s][heads[s]][0].op == RUN
                    and any(u not in finished for u in self.dag.preds[queues[s][heads[s]][0].node])]
            s = self.rng.choice(racy if self.adversarial and racy else ready)
            ins, _, k = queues[s][heads[s]]
            heads[s] += 1
            if ins.op == RUN:
                node = ins.node
                violations += [(u, node) for u in self.dag.preds[node] if u not in finished]  # type: ignore[index]
                if execute is not None:
                    execute(node)  # type: ignore[arg-type]
                finished.add(node)  # type: ignore[arg-type]
                order.append(node)  # type: ignore[arg-type]
            elif ins.op == RECORD:
                done_records.add(k)
        stuck = [s for s, q in enumerate(queues) if heads[s] < len(q)]
        if stuck:
            raise RuntimeError(f"fake device deadlocked: streams {stuck} wait on events never recorded")
        return FakeResult(order, violations)
