"""Dynamic batching: a bounded queue that hands the model a batch of at most ``max_batch``
requests, waiting at most ``max_delay`` after the oldest one arrived (Triton's
``max_queue_delay_microseconds`` semantics, research notes §2.2 "dynamic batching").

The forward pass runs on an executor thread (PyTorch releases the GIL), so the event loop keeps
receiving, decoding and answering while the model computes; requests that arrive during a batch
form the next one and do not wait any longer once their oldest member has waited ``max_delay``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

__all__ = ["BatchResult", "DynamicBatcher", "Overloaded"]


class Overloaded(Exception):
    """The queue is full; the caller answers 503 with ``Retry-After``."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class BatchResult:
    """One request's share of a batch: its output row and where its time went (seconds)."""

    value: Any
    queue_s: float  # enqueue -> batch starts on the model
    infer_s: float  # the batch's forward pass
    post_s: float  # the batch's post-processing (in the inference thread)
    batch_size: int
    done: float  # perf_counter when post-processing ended


@dataclass
class _Item:
    x: Any
    enqueued: float
    future: asyncio.Future


class DynamicBatcher:
    """Collects single inputs into batches for ``forward(list_of_inputs) -> outputs`` and
    ``post(outputs) -> list_of_per_item_values``, both run on ``executor``."""

    def __init__(self, forward: Callable[[Sequence[Any]], Any], post: Callable[[Any], Sequence[Any]], *,
                 executor: Executor, max_batch: int = 4, max_delay_s: float = 0.005, max_queue: int = 64,
                 name: str = "model", on_batch: Callable[[int], None] | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch: expected >= 1, got {max_batch}")
        if max_delay_s < 0:
            raise ValueError(f"max_delay: expected >= 0, got {max_delay_s}")
        self.forward, self.post, self.executor = forward, post, executor
        self.max_batch, self.max_delay_s, self.max_queue, self.name = max_batch, max_delay_s, max_queue, name
        self._on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._busy = False
        self._service_s = 0.02  # EWMA of per-item service time, for Retry-After
        self.batches = 0
        self.items = 0

    @property
    def depth(self) -> int:
        """Requests waiting (not yet on the model)."""
        return len(self._queue)

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        while self._queue or self._busy:
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def retry_after_s(self) -> float:
        return (len(self._queue) + self.max_batch) * self._service_s

    async def submit(self, x: Any) -> BatchResult:
        if self._task is None or self._wakeup is None:
            raise RuntimeError(f"batcher {self.name} is not running")
        if len(self._queue) >= self.max_queue:
            raise Overloaded(f"{self.name}: queue full ({self.max_queue} waiting)", self.retry_after_s())
        fut = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(x, time.perf_counter(), fut))
        self._wakeup.set()
        return await fut

    async def _next_batch(self) -> list[_Item]:
        assert self._wakeup is not None
        while not self._queue:
            self._wakeup.clear()
            await self._wakeup.wait()
        deadline = self._queue[0].enqueued + self.max_delay_s
        while len(self._queue) < self.max_batch:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except TimeoutError:
                break
        n = min(self.max_batch, len(self._queue))
        return [self._queue.popleft() for _ in range(n)]

    def _run_batch(self, xs: list[Any]) -> tuple[Sequence[Any], float, float, float, float]:
        t0 = time.perf_counter()
        out = self.forward(xs)
        t1 = time.perf_counter()
        values = self.post(out)
        t2 = time.perf_counter()
        return values, t0, t1, t2, t2

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            self._busy = True
            try:
                values, t0, t1, t2, done = await loop.run_in_executor(self.executor, self._run_batch,
                                                                      [it.x for it in batch])
            except Exception as e:  # a failed batch fails its requests, not the batcher
                for it in batch:
                    if not it.future.done():
                        it.future.set_exception(e)
                continue
            finally:
                self._busy = False
            n = len(batch)
            self.batches += 1
            self.items += n
            self._service_s = 0.8 * self._service_s + 0.2 * (t2 - t0) / n
            if self._on_batch is not None:
                self._on_batch(n)
            for it, v in zip(batch, values, strict=True):
                if not it.future.done():  # the request may have been cancelled (client gone)
                    it.future.set_result(BatchResult(v, t0 - it.enqueued, t1 - t0, t2 - t1, n, done))
