"""Message brokers between the two DNNs: an in-process asyncio queue and Redis lists.

The paper names the broker between DNNs that run at different rates as one of the overheads
"beyond inference" and gains throughput from an in-memory one (research notes §2.1, §2.2).
Both brokers here have the same interface and the same at-most-once-per-pop semantics, so every
message put is delivered to exactly one ``get_many`` caller:

* ``QueueBroker``: one ``asyncio.Queue`` per topic; messages stay Python objects (no copy, no
  serialisation): the cheapest possible hop, but only inside one process.
* ``RedisBroker``: ``RPUSH`` to produce, ``BLPOP`` (then ``LPOP count``) to consume, on a real
  ``redis-server``; messages are serialised to bytes (``encode``/``decode``), so producer and
  consumer could live in different processes or hosts.

Each message is stamped with ``t_put`` right before it is serialised and ``t_got`` right after it
is decoded, so ``t_got - t_put`` is the whole hop (serialise, transfer, queueing, deserialise).
Both stamps are ``time.perf_counter()`` (CLOCK_MONOTONIC on Linux: comparable across processes of
one host).
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import numpy as np

__all__ = [
    "Broker",
    "BrokerUnavailable",
    "CropMessage",
    "QueueBroker",
    "RedisBroker",
    "ResultMessage",
    "decode",
    "encode",
    "make_broker",
]


class BrokerUnavailable(Exception):
    """The broker cannot be reached; the server answers 503 for the pipeline that needs it."""


@dataclass
class CropMessage:
    """Detector -> classifier: one crop (uint8 HWC pixels) of request ``rid``."""

    rid: str
    index: int
    pixels: np.ndarray
    t_put: float = 0.0
    t_got: float = 0.0


@dataclass
class ResultMessage:
    """Classifier -> front end: the crop's classes and where its time went (seconds)."""

    rid: str
    index: int
    topk: list[dict[str, Any]]
    hop_s: float
    queue_s: float
    infer_s: float
    t_put: float = 0.0
    t_got: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


_HEAD = struct.Struct("!cI")


def encode(msg: CropMessage | ResultMessage) -> bytes:
    """Tag byte, JSON metadata length, JSON metadata, raw payload (crop pixels)."""
    if isinstance(msg, CropMessage):
        px = np.ascontiguousarray(msg.pixels, dtype=np.uint8)
        meta = {"rid": msg.rid, "index": msg.index, "t_put": msg.t_put, "shape": list(px.shape)}
        m = json.dumps(meta, separators=(",", ":")).encode()
        return _HEAD.pack(b"C", len(m)) + m + px.tobytes()
    meta = {"rid": msg.rid, "index": msg.index, "topk": msg.topk, "hop_s": msg.hop_s, "queue_s": msg.queue_s,
            "infer_s": msg.infer_s, "t_put": msg.t_put, "extra": msg.extra}
    m = json.dumps(meta, separators=(",", ":")).encode()
    return _HEAD.pack(b"R", len(m)) + m


def decode(data: bytes) -> CropMessage | ResultMessage:
    tag, n = _HEAD.unpack_from(data)
    meta = json.loads(data[_HEAD.size:_HEAD.size + n])
    if tag == b"C":
        px = np.frombuffer(data, dtype=np.uint8, offset=_HEAD.size + n).reshape(meta["shape"])
        return CropMessage(meta["rid"], meta["index"], px, meta["t_put"])
    if tag == b"R":
        return ResultMessage(meta["rid"], meta["index"], meta["topk"], meta["hop_s"], meta["queue_s"],
                             meta["infer_s"], meta["t_put"], extra=meta.get("extra", {}))
    raise ValueError(f"broker message: unknown tag {tag!r}")


class Broker(ABC):
    """Interface: ``put_many(topic, msgs)``, ``get_many(topic, max_n, timeout_s)``."""

    kind = "broker"

    async def connect(self) -> None:
        """Check the broker is reachable (raise ``BrokerUnavailable`` if not); in-process: always."""
        return None

    @abstractmethod
    async def put_many(self, topic: str, msgs: list[Any]) -> None:
        """Append messages to a topic, in order."""

    @abstractmethod
    async def get_many(self, topic: str, max_n: int, timeout_s: float) -> list[Any]:
        """Up to ``max_n`` messages; waits at most ``timeout_s`` for the first, not for the rest."""

    async def close(self) -> None:
        """Release connections; nothing to release by default."""
        return None

    async def health(self) -> dict[str, Any]:
        return {"kind": self.kind, "ok": True}


class QueueBroker(Broker):
    """In-process ``asyncio.Queue`` per topic (objects are passed by reference)."""

    kind = "queue"

    def __init__(self) -> None:
        self._queues: dict[str, asyncio.Queue] = {}

    def _q(self, topic: str) -> asyncio.Queue:
        return self._queues.setdefault(topic, asyncio.Queue())

    async def put_many(self, topic: str, msgs: list[Any]) -> None:
        q = self._q(topic)
        now = time.perf_counter()
        for m in msgs:
            m.t_put = now
            q.put_nowait(m)

    async def get_many(self, topic: str, max_n: int, timeout_s: float) -> list[Any]:
        q = self._q(topic)
        try:
            first = await asyncio.wait_for(q.get(), timeout_s)
        except TimeoutError:
            return []
        out = [first]
        while len(out) < max_n and not q.empty():
            out.append(q.get_nowait())
        now = time.perf_counter()
        for m in out:
            m.t_got = now
        return out

    def depth(self, topic: str) -> int:
        return self._q(topic).qsize()


class RedisBroker(Broker):
    """Redis lists on a real ``redis-server``: ``RPUSH`` to produce; ``BLMPOP ... COUNT n`` to consume
    up to n messages in one blocking round trip (Redis >= 7), else ``BLPOP`` then ``LPOP count``."""

    kind = "redis"

    def __init__(self, url: str, prefix: str | None = None, connect_timeout_s: float = 1.0) -> None:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.url = url
        u = urlparse(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 6379
        self.prefix = prefix or f"dnninfer:{uuid.uuid4().hex[:10]}"
        # fail fast: no retries with back-off (redis-py's default would hide an outage for seconds)
        # crops are ~150 KB: read replies in 256 KB chunks, not redis-py's default 32 KB
        self._r = redis.Redis.from_url(url, socket_connect_timeout=connect_timeout_s, socket_timeout=30.0,
                                       retry=Retry(NoBackoff(), 0), health_check_interval=0,
                                       socket_read_size=256 * 1024)
        self._keys: set[str] = set()
        self._blmpop: bool | None = None  # known after connect()

    def _key(self, topic: str) -> str:
        key = f"{self.prefix}:{topic}"
        self._keys.add(key)
        return key

    def _unavailable(self, e: Exception) -> BrokerUnavailable:
        return BrokerUnavailable(f"cannot reach Redis at {self.host}:{self.port} ({type(e).__name__}: {e}); "
                                 f"start redis-server there or serve with --broker queue")

    async def connect(self) -> None:
        import redis.exceptions as rexc

        try:
            await self._r.ping()
            if self._blmpop is None:
                version = (await self._r.info("server")).get("redis_version", "0")
                self._blmpop = int(str(version).split(".")[0]) >= 7
        except (rexc.ConnectionError, rexc.TimeoutError, OSError) as e:
            raise self._unavailable(e) from None

    async def put_many(self, topic: str, msgs: list[Any]) -> None:
        import redis.exceptions as rexc

        now = time.perf_counter()
        for m in msgs:
            m.t_put = now
        try:
            await self._r.rpush(self._key(topic), *[encode(m) for m in msgs])
        except (rexc.ConnectionError, rexc.TimeoutError, OSError) as e:
            raise self._unavailable(e) from None

    async def get_many(self, topic: str, max_n: int, timeout_s: float) -> list[Any]:
        import redis.exceptions as rexc

        key = self._key(topic)
        timeout = max(timeout_s, 0.01)
        try:
            if self._blmpop is None:
                await self.connect()
            if self._blmpop:
                got = await self._r.blmpop(timeout, 1, key, direction="LEFT", count=max_n)
                raw = list(got[1]) if got else []
            else:
                first = await self._r.blpop([key], timeout=timeout)
                if first is None:
                    return []
                raw = [first[1]]
                if max_n > 1:
                    raw += await self._r.lpop(key, max_n - 1) or []
        except (rexc.ConnectionError, rexc.TimeoutError, OSError) as e:
            raise self._unavailable(e) from None
        out = [decode(b) for b in raw]
        now = time.perf_counter()
        for m in out:
            m.t_got = now
        return out

    async def depth(self, topic: str) -> int:
        return int(await self._r.llen(self._key(topic)))

    async def health(self) -> dict[str, Any]:
        try:
            await asyncio.wait_for(self.connect(), 2.0)
        except (BrokerUnavailable, TimeoutError) as e:
            return {"kind": self.kind, "ok": False, "url": self.url, "error": str(e) or "timed out"}
        return {"kind": self.kind, "ok": True, "url": self.url}

    async def close(self) -> None:
        try:
            if self._keys:
                await asyncio.wait_for(self._r.delete(*self._keys), 1.0)
        except Exception:  # best effort: the server may be gone already
            pass
        await self._r.aclose()


def make_broker(kind: str, redis_url: str | None = None) -> Broker:
    from dnninfer.errors import UserError, expected

    if kind == "queue":
        return QueueBroker()
    if kind == "redis":
        if not redis_url:
            raise UserError("--broker redis needs --redis-url redis://HOST:PORT (or --start-redis)")
        return RedisBroker(redis_url)
    raise expected("broker", "queue or redis", kind)
