"""Load generation with a real HTTP client (httpx, asyncio), bounded in requests and time.

* closed loop (``concurrency`` workers, each sends its next request when the last one is
  answered): peak throughput, like wrk or locust;
* open loop (requests *scheduled* at a fixed rate, constant or Poisson, whether or not earlier
  ones were answered): tail latency. Latency is measured from the scheduled send time, so a
  server that stalls is charged for the requests it delayed (no coordinated omission; research
  notes §5, "wrk2 is not packaged").

Both stop at ``requests`` or ``duration_s``, whichever comes first; a request still running at the
deadline is awaited (up to ``timeout_s``) so nothing is counted twice or lost.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dnninfer.serving.timing import HEADER, parse_stage_header

__all__ = ["LoadResult", "RequestRecord", "closed_loop", "make_client", "open_loop", "percentile", "run_load",
           "send_one"]


@dataclass
class RequestRecord:
    scheduled: float  # when it should have been sent (open loop) or was sent (closed loop)
    sent: float
    done: float
    status: int  # 0: no HTTP answer (connection error, timeout)
    stages_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    retry_after: str | None = None
    payload: dict[str, Any] | None = None

    @property
    def latency_s(self) -> float:
        return self.done - self.scheduled


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class LoadResult:
    mode: str
    url: str
    records: list[RequestRecord]
    started: float
    ended: float
    target: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> list[RequestRecord]:
        return [r for r in self.records if r.status == 200]

    @property
    def wall_s(self) -> float:
        return max(1e-9, self.ended - self.started)

    @property
    def throughput_rps(self) -> float:
        """Answered-with-200 requests per second over the run."""
        return len(self.ok) / self.wall_s

    def statuses(self) -> dict[str, int]:
        return {str(k): v for k, v in sorted(Counter(r.status for r in self.records).items())}

    def stage_medians_ms(self) -> dict[str, float]:
        names: dict[str, list[float]] = {}
        for r in self.ok:
            for k, v in r.stages_ms.items():
                names.setdefault(k, []).append(v)
        return {k: percentile(v, 50) for k, v in names.items()}

    def summary(self) -> dict[str, Any]:
        lat = [r.latency_s * 1e3 for r in self.ok]
        errors = [r for r in self.records if r.status != 200]
        return {
            "mode": self.mode, "url": self.url, **self.target,
            "sent": len(self.records), "ok": len(self.ok), "errors": len(errors), "statuses": self.statuses(),
            "wall_s": self.wall_s, "throughput_rps": self.throughput_rps,
            "latency_ms": {"p50": percentile(lat, 50), "p90": percentile(lat, 90), "p99": percentile(lat, 99),
                           "max": max(lat) if lat else math.nan, "mean": sum(lat) / len(lat) if lat else math.nan},
            "server_stage_median_ms": self.stage_medians_ms(),
            "first_errors": sorted({(r.status, r.error or "") for r in errors})[:5],
        }


def make_client(connections: int, timeout_s: float) -> Any:
    import httpx

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(limits=limits, timeout=timeout_s)


async def send_one(client: Any, url: str, body: bytes, content_type: str, scheduled: float,
               keep_payload: bool) -> RequestRecord:
    import httpx

    sent = time.perf_counter()
    try:
        r = await client.post(url, content=body, headers={"content-type": content_type})
        done = time.perf_counter()
        payload = None
        err = None
        if r.status_code != 200 or keep_payload:
            try:
                payload = r.json()
            except ValueError:
                payload = None
            if r.status_code != 200:
                err = (payload or {}).get("error") if isinstance(payload, dict) else r.text[:200]
        return RequestRecord(scheduled, sent, done, r.status_code, parse_stage_header(r.headers.get(HEADER)),
                             err, r.headers.get("retry-after"), payload if keep_payload else None)
    except httpx.HTTPError as e:
        return RequestRecord(scheduled, sent, time.perf_counter(), 0, error=f"{type(e).__name__}: {e}")


async def closed_loop(url: str, bodies: Sequence[bytes], *, concurrency: int = 4, requests: int = 100,
                      duration_s: float = 30.0, content_type: str = "image/jpeg", timeout_s: float = 60.0,
                      keep_payload: bool = False) -> LoadResult:
    """``concurrency`` workers send back-to-back until ``requests`` were sent or ``duration_s`` passed."""
    if concurrency < 1 or requests < 1 or duration_s <= 0:
        raise ValueError("closed loop: expected concurrency >= 1, requests >= 1, duration > 0")
    records: list[RequestRecord] = []
    counter = iter(range(requests))
    async with make_client(concurrency, timeout_s) as client:
        start = time.perf_counter()
        deadline = start + duration_s

        async def worker() -> None:
            for i in counter:
                if time.perf_counter() >= deadline:
                    return
                now = time.perf_counter()
                records.append(await send_one(client, url, bodies[i % len(bodies)], content_type, now, keep_payload))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        end = max((r.done for r in records), default=time.perf_counter())
    return LoadResult("closed", url, records, start, end, {"concurrency": concurrency})


async def open_loop(url: str, bodies: Sequence[bytes], *, rate: float, requests: int = 100,
                    duration_s: float = 30.0, poisson: bool = True, seed: int = 0,
                    content_type: str = "image/jpeg", timeout_s: float = 60.0, max_outstanding: int = 1024,
                    keep_payload: bool = False) -> LoadResult:
    """Send at ``rate`` requests/s (Poisson or constant gaps) regardless of answers."""
    if rate <= 0 or requests < 1 or duration_s <= 0:
        raise ValueError("open loop: expected rate > 0, requests >= 1, duration > 0")
    rng = random.Random(seed)
    tasks: list[asyncio.Task] = []
    dropped: list[RequestRecord] = []
    async with make_client(max_outstanding, timeout_s) as client:
        start = time.perf_counter()
        t = start
        for i in range(requests):
            t += rng.expovariate(rate) if poisson else 1.0 / rate
            if t - start > duration_s:
                break
            delay = t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if sum(1 for x in tasks if not x.done()) >= max_outstanding:  # client-side cap: record, don't send
                dropped.append(RequestRecord(t, t, time.perf_counter(), 0, error="client: too many outstanding"))
                continue
            tasks.append(asyncio.create_task(send_one(client, url, bodies[i % len(bodies)], content_type, t,
                                                  keep_payload)))
        records = list(await asyncio.gather(*tasks)) + dropped
        end = max((r.done for r in records), default=time.perf_counter())
    return LoadResult("open", url, records, start, end, {"rate": rate, "arrivals": "poisson" if poisson else
                                                         "constant"})


def run_load(url: str, bodies: Sequence[bytes], *, concurrency: int | None = None, rate: float | None = None,
             **kw: Any) -> LoadResult:
    """Synchronous entry: closed loop when ``rate`` is None, else open loop."""
    if rate is None:
        return asyncio.run(closed_loop(url, bodies, concurrency=concurrency or 4, **kw))
    kw.pop("concurrency", None)
    return asyncio.run(open_loop(url, bodies, rate=rate, **kw))
