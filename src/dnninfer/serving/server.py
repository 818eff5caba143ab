"""The HTTP server: FastAPI + uvicorn, one pipeline per server, per-stage timings on every answer.

Endpoints

* ``POST /v1/models/{name}/infer``: raw JPEG bytes (``image/jpeg`` or ``application/octet-stream``)
  or a ``multipart/form-data`` upload. ``name`` is the classifier (top-k classes), ``detector``
  (boxes) or ``detect_classify`` (boxes, each classified by the second DNN behind the broker;
  ``?broker=redis`` picks one of several configured brokers, default the first).
  The answer carries ``X-Stage-Timings`` and ``Server-Timing`` headers (milliseconds per stage).
* ``GET /health``: liveness, pipeline, in-flight count, broker state (200 while serving, even when
  the broker is down: the classifier does not need it).
* ``GET /metrics``: Prometheus text: per-stage latency histograms, queue depth, batch sizes,
  accepted / completed / rejected counters, broker hops.
* ``GET /v1/models``: what this server serves.

Pipelines (research notes §2.3 item 4)

* ``naive``: what a first server computes: the whole image decoded at full resolution, the whole
  image resized, normalised to NCHW, a batch-1 forward pass per request.
* ``optimized``: DCT-scaled decode with simplejpeg, a resize of only the centre box, a dynamic
  batcher (max batch, max delay) in front of the model, channels-last tensors built without a
  copy, ``torch.inference_mode``.

Both pipelines share everything that is not the pipeline, so the comparison isolates it: decode
runs on the decode pool (``decode_workers`` threads) and the model on one inference thread, never
on the event loop (``/health`` answers in milliseconds under load); the JPEG header is read before
any decode (413 over the pixel limit, the same 400 reasons for broken files); EXIF orientation is
applied.

Reliability (``_Gate``, an ASGI middleware in front of the app): an inference request is admitted
or refused with 503 + ``Retry-After`` (over ``max_queue`` in flight, or draining) when its headers
arrive, before its body is read; a body not complete within ``read_timeout_s`` is a 408 that frees
the slot (``transport.TimedH11Protocol`` does the same for headers); a client that hangs up is
counted as 499; every error, 404/405/422 included, is ``{"error": ..., "status": ...}``. Shutdown
(``transport.DrainingServer``) marks the service draining first, so every answer from then on says
``Connection: close``, answers what was received, refuses new connections, then stops the
batchers and the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from dnninfer.errors import UserError, expected
from dnninfer.serving import preprocess as pp
from dnninfer.serving.batcher import BatchResult, DynamicBatcher, Overloaded
from dnninfer.serving.body import BodyTimeout, HTTPError, read_body
from dnninfer.serving.broker import Broker, BrokerUnavailable, CropMessage, ResultMessage, make_broker
from dnninfer.serving.metrics import CONTENT_TYPE, Counter, Gauge, Histogram, Registry
from dnninfer.serving.timing import (
    HEADER,
    STAGES,
    TWO_STAGE_STAGES,
    StageClock,
    format_server_timing,
    format_stage_header,
)

__all__ = ["DETECTOR", "PIPELINES", "TWO_STAGE", "ServeConfig", "Service", "create_app"]

log = logging.getLogger("dnninfer.serving")

PIPELINES = ("naive", "optimized")
DETECTOR = "detector"
TWO_STAGE = "detect_classify"
CROPS, RESULTS = "crops", "results"
ARRIVAL_KEY = "dnninfer.t_arrival"
INFER_PATH = re.compile(r"^/v1/models/([^/]+)/infer/?$")
ENDPOINTS = "POST /v1/models/{name}/infer, GET /health, GET /metrics, GET /v1/models"


@dataclass
class ServeConfig:
    """Everything a server is started with (``dnninfer serve`` flags map 1:1)."""

    model: str = "mobilenet_v2"
    pipeline: str = "optimized"
    max_batch: int = 4
    max_delay_ms: float = 5.0
    max_queue: int = 64
    max_body_bytes: int = 32 * 2**20
    max_pixels: int = pp.DEFAULT_MAX_PIXELS
    decode_workers: int = 2
    threads: int = 1
    channels_last: bool = True
    topk: int = 5
    seed: int = 0
    broker: str = "queue"
    redis_url: str | None = None
    max_boxes: int = 3
    crop_size: int = 224
    pipeline_timeout_s: float = 30.0
    drain_timeout_s: float = 30.0
    read_timeout_s: float = 10.0  # request headers, and then the body, must arrive within this

    def validate(self, *, user_model: bool = False) -> ServeConfig:
        """Check every option; `user_model`: ``model`` names a module the caller brings (any
        URL-safe name), not a zoo entry."""
        from dnninfer import zoo

        if user_model:
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.model) or self.model in (DETECTOR, TWO_STAGE):
                raise expected("model name", f"1-64 of A-Z a-z 0-9 _ . - (not {DETECTOR} or {TWO_STAGE})",
                               self.model)
        else:
            spec = zoo.get(self.model)  # unknown name -> UserError listing the zoo
            if spec.task != "image-classification":
                raise expected("model", "an image-classification zoo model (e.g. mobilenet_v2, resnet18)",
                               f"{self.model} ({spec.task})")
        if self.pipeline not in PIPELINES:
            raise expected("pipeline", " or ".join(PIPELINES), self.pipeline)
        kinds = self.brokers
        if self.broker != "none" and (not kinds or any(k not in ("queue", "redis") for k in kinds)
                                      or len(set(kinds)) != len(kinds)):
            raise expected("broker", "none, queue, redis or a list such as queue,redis", self.broker)
        if "redis" in kinds and not self.redis_url:
            raise UserError("broker redis: expected --redis-url redis://HOST:PORT (or --start-redis)")
        checks = {"max_batch": (self.max_batch, 1), "max_queue": (self.max_queue, 1),
                  "max_body_bytes": (self.max_body_bytes, 1), "decode_workers": (self.decode_workers, 1),
                  "threads": (self.threads, 1), "topk": (self.topk, 1), "max_boxes": (self.max_boxes, 1),
                  "crop_size": (self.crop_size, 16), "max_pixels": (self.max_pixels, 1)}
        for name, (value, low) in checks.items():
            if value < low:
                raise expected(name.replace("_", "-"), f"an integer >= {low}", value)
        if self.max_delay_ms < 0:
            raise expected("max-delay-ms", "a number >= 0", self.max_delay_ms)
        if not self.read_timeout_s > 0:
            raise expected("read-timeout", "seconds > 0", self.read_timeout_s)
        return self

    @property
    def naive(self) -> bool:
        return self.pipeline == "naive"

    @property
    def brokers(self) -> list[str]:
        """Configured broker kinds, first = default for ``detect_classify``."""
        if self.broker == "none":
            return []
        return [k.strip() for k in self.broker.split(",") if k.strip()]


# -- the work each endpoint does ------------------------------------------------------------------
def _prepare(body: bytes, naive: bool, max_pixels: int, geometry: str, keep_image: bool) -> pp.Prepared:
    """decode -> resize -> normalise with per-stage times; ``geometry`` is ``crop`` (classifier:
    shorter side 256, centre 224) or ``squash`` (detector: the whole image to 224 x 224)."""
    t0 = time.perf_counter()
    header = pp.read_header(body, max_pixels)  # both pipelines: 413 / 400 before any pixel is decoded
    img = pp.naive_decode(body, max_pixels) if naive else pp.fast_decode(body, max_pixels=max_pixels, header=header)
    size = header.size
    t1 = time.perf_counter()
    if geometry == "squash":
        small = pp.squash(img)
    elif naive:
        small = np.asarray(pp.naive_resize(img))
    else:
        small = pp.fast_resize(img)
    t2 = time.perf_counter()
    x = pp.normalise_chw(small) if naive else pp.normalise_hwc(small)
    t3 = time.perf_counter()
    return pp.Prepared(x, t1 - t0, t2 - t1, t3 - t2, t0, img if keep_image else None, size)


def _crops(image: Any, boxes: list[Any], size: int) -> list[np.ndarray]:
    """Each box cut from the decoded image and resized to ``size`` x ``size`` (uint8 HWC)."""
    from PIL import Image

    pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
    w, h = pil.size
    return [np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR, box=b.pixels(w, h))) for b in boxes]


@dataclass
class _Pending:
    """A two-stage request waiting for its crops' classes."""

    n: int
    future: asyncio.Future
    broker: str
    results: dict[int, ResultMessage] = field(default_factory=dict)


class Service:
    """Models, pools, batchers, broker, counters and metrics of one server."""

    def __init__(self, cfg: ServeConfig, classifier: Any = None) -> None:
        """`classifier`: a user's module (a `models.UserClassifier`) served as ``cfg.model``
        instead of the zoo model of that name."""
        self.cfg = cfg.validate(user_model=classifier is not None)
        self.user_classifier = classifier
        self.models = [cfg.model, DETECTOR] + ([TWO_STAGE] if cfg.brokers else [])
        self.inflight = 0
        self.accepted = 0
        self.completed = 0
        self.rejected = 0
        self.draining = False
        self.started = False
        self.brokers: dict[str, Broker] = {}
        self.broker_errors: dict[str, str | None] = {}
        self._pending: dict[str, _Pending] = {}
        self._tasks: list[asyncio.Task] = []
        self._batchers: dict[str, DynamicBatcher] = {}
        self._idle: asyncio.Event | None = None
        self.infer_pool: ThreadPoolExecutor | None = None
        self.decode_pool: ThreadPoolExecutor | None = None
        self._prev_threads = 0
        self._init_metrics()

    # -- metrics --------------------------------------------------------------------------------
    def _init_metrics(self) -> None:
        r = self.registry = Registry()
        self.m_requests = r.add(Counter("dnninfer_requests_total", "Answered requests by model and status code",
                                        ["model", "code"]))
        self.m_accepted = r.add(Counter("dnninfer_requests_accepted_total", "Requests admitted past the bounded "
                                        "queue", ["model"]))
        self.m_completed = r.add(Counter("dnninfer_requests_completed_total", "Admitted requests answered (any "
                                         "status)", ["model"]))
        self.m_rejected = r.add(Counter("dnninfer_requests_rejected_total", "Requests refused with 503",
                                        ["model", "reason"]))
        self.m_total = r.add(Histogram("dnninfer_request_seconds", "Server-side end-to-end latency",
                                       ["model", "pipeline"]))
        self.m_stage = r.add(Histogram("dnninfer_stage_seconds", "Latency per request stage",
                                       ["model", "pipeline", "stage"]))
        self.m_batch = r.add(Histogram("dnninfer_batch_size", "Batch sizes run by the model", ["model"],
                                       buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)))
        self.m_hop = r.add(Histogram("dnninfer_broker_hop_seconds", "Broker hop latency (put -> get)",
                                     ["broker", "direction"]))
        r.add(Gauge("dnninfer_queue_depth", "Requests waiting for a batch, per model",
                    lambda: [({"model": k}, b.depth) for k, b in self._batchers.items()], ["model"]))
        r.add(Gauge("dnninfer_inflight_requests", "Admitted requests not yet answered",
                    lambda: [({}, self.inflight)]))
        r.add(Gauge("dnninfer_broker_up", "1 when the broker answered its last operation",
                    lambda: [({"broker": k}, 0 if e else 1) for k, e in self.broker_errors.items()], ["broker"]))

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        import torch

        from dnninfer import zoo
        from dnninfer.serving.models import ModelRunner, build_detector, decode_boxes, topk_rows

        cfg = self.cfg
        self._prev_threads = torch.get_num_threads()
        torch.set_num_threads(cfg.threads)
        self._idle = asyncio.Event()
        self._idle.set()
        self.infer_pool = ThreadPoolExecutor(1, thread_name_prefix="dnninfer-infer")
        self.decode_pool = ThreadPoolExecutor(cfg.decode_workers, thread_name_prefix="dnninfer-decode")
        cl = cfg.channels_last and not cfg.naive
        layout = "chw" if cfg.naive else "hwc"
        classifier = self.user_classifier or zoo.build_model(cfg.model, seed=cfg.seed)
        self.classifier = ModelRunner(classifier, layout=layout, channels_last=cl)
        self.crop_classifier = ModelRunner(classifier, layout="hwc", channels_last=cl)
        self.detector = ModelRunner(build_detector(cfg.seed), layout=layout, channels_last=cl)
        k, nb = cfg.topk, cfg.max_boxes
        self._post: dict[str, Callable[[Any], list[Any]]] = {
            cfg.model: lambda out: topk_rows(out, k),
            DETECTOR: lambda out: decode_boxes(out, nb),
        }
        self._runner = {cfg.model: self.classifier, DETECTOR: self.detector}
        example = np.zeros((3, 224, 224) if cfg.naive else (224, 224, 3), np.float32)
        sizes = (1,) if cfg.naive else tuple(sorted({1, cfg.max_batch}))
        for runner in (self.classifier, self.detector):
            runner.warmup(example, sizes)
        if not cfg.naive:
            delay = cfg.max_delay_ms / 1e3
            for name, runner in self._runner.items():
                b = DynamicBatcher(runner, self._post[name], executor=self.infer_pool, max_batch=cfg.max_batch,
                                   max_delay_s=delay, max_queue=cfg.max_queue, name=name,
                                   on_batch=lambda n, m=name: self.m_batch.observe(n, model=m))
                b.start()
                self._batchers[name] = b
        loop = asyncio.get_running_loop()
        for kind in cfg.brokers:
            broker = self.brokers[kind] = make_broker(kind, cfg.redis_url)
            self.broker_errors[kind] = None
            try:
                await broker.connect()
            except BrokerUnavailable as e:  # serve the rest; /health says why detect_classify fails
                self.broker_errors[kind] = str(e)
                log.warning("broker unavailable at start: %s", e)
            self._tasks += [loop.create_task(self._classifier_stage(kind), name=f"classifier-stage-{kind}"),
                            loop.create_task(self._results_listener(kind), name=f"results-listener-{kind}")]
        self.started = True

    def begin_drain(self) -> None:
        """From now on refuse new inference requests (503) and close every connection after its
        answer. Only sets a flag: called from a signal handler and from uvicorn's shutdown."""
        self.draining = True

    async def stop(self) -> None:
        """Stop admitting, wait for in-flight requests (up to ``drain_timeout_s``), then release."""
        self.begin_drain()
        if self._idle is not None and self.inflight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.cfg.drain_timeout_s)
        for b in self._batchers.values():
            await b.stop()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for broker in self.brokers.values():
            with contextlib.suppress(Exception):
                await broker.close()
        for pool in (self.decode_pool, self.infer_pool):
            if pool is not None:
                pool.shutdown(wait=True)
        if self._prev_threads:
            import torch

            torch.set_num_threads(self._prev_threads)  # in-thread servers (tests) share the process
        self.started = False

    # -- admission and answers ------------------------------------------------------------------
    def retry_after(self) -> int:
        per_item = min((b._service_s for b in self._batchers.values()), default=0.05)
        return max(1, math.ceil(self.inflight * per_item))

    def model_label(self, name: str) -> str:
        return name if name in self.models else "unknown"

    def refusal(self, model: str) -> HTTPError | None:
        """Why a new inference request is not admitted now (draining, or ``max_queue`` in flight)."""
        if self.draining:
            self.m_rejected.inc(model=model, reason="shutdown")
            return HTTPError(503, "server is shutting down; retry on another server or later", {"Retry-After": "1"})
        if self.inflight >= self.cfg.max_queue:
            self.rejected += 1
            self.m_rejected.inc(model=model, reason="overload")
            return HTTPError(503, f"overloaded: {self.inflight} requests in flight (limit --max-queue "
                                  f"{self.cfg.max_queue}); retry later", {"Retry-After": str(self.retry_after())})
        return None

    async def gate(self, name: str, scope: dict, exchange: _Exchange, app: Any) -> None:
        """Admit (or refuse) an inference request as soon as its headers are in, run it, count its
        answer: the bound on in-flight work holds whatever the pipeline does before it yields."""
        model = self.model_label(name)
        refused = self.refusal(model)
        if refused is not None:
            await exchange.discard_body(self.cfg.max_body_bytes)  # the client reads its 503, not a reset
            await exchange.respond(refused.status, refused.message, refused.headers)
            self.record(model, exchange.status or refused.status)
            return
        self._admit(model)
        try:
            await app(scope, exchange.receive, exchange.send)
        finally:
            exchange.close()
            self._release(model)
            self.record(model, exchange.status or 500)

    def record(self, model: str, status: int) -> None:
        self.m_requests.inc(model=model, code=str(status))

    async def handle(self, name: str, request: Request) -> Response:
        """One admitted inference request (``gate`` admitted it and counts its answer)."""
        clock = StageClock(start=request.scope.get(ARRIVAL_KEY, time.perf_counter()))
        model = self.model_label(name)
        try:
            try:
                body = await read_body(request, self.cfg.max_body_bytes)
            except ClientDisconnect:  # nobody to answer; not a server error
                return Response(status_code=499)
            clock.mark("receive")
            if name not in self.models:
                raise HTTPError(404, f"unknown model {name!r}: this server serves {', '.join(self.models)}")
        except HTTPError as e:
            return self._error(model, e.status, e.message, e.headers)
        try:
            if name == DETECTOR:
                payload = await self._detect(body, clock)
                stages = STAGES
            elif name == TWO_STAGE:
                payload = await self._detect_classify(body, clock, request.query_params.get("broker"))
                stages = TWO_STAGE_STAGES
            else:
                payload = await self._classify(body, clock)
                stages = STAGES
        except pp.ImageError as e:
            return self._error(model, e.status, str(e))
        except HTTPError as e:
            return self._error(model, e.status, e.message, e.headers)
        except Overloaded as e:
            return self._error(model, 503, str(e), {"Retry-After": str(max(1, math.ceil(e.retry_after_s)))})
        except BrokerUnavailable as e:
            return self._error(model, 503, f"broker unavailable: {e}")
        except Exception as e:  # a bug, but one request's bug must not stop the server
            log.exception("request to %s failed", name)
            return self._error(model, 500, f"internal error: {type(e).__name__}: {e}")
        data = json.dumps(payload, separators=(",", ":")).encode()
        clock.mark("serialise")
        ordered = {s: clock.stages.get(s, 0.0) for s in stages}
        total = clock.total
        for s, v in ordered.items():
            self.m_stage.observe(v, model=model, pipeline=self.cfg.pipeline, stage=s)
        self.m_total.observe(total, model=model, pipeline=self.cfg.pipeline)
        headers = {HEADER: format_stage_header(ordered, total),
                   "Server-Timing": format_server_timing(ordered, total)}
        if "batch_size" in payload:
            headers["X-Batch-Size"] = str(payload["batch_size"])
        return Response(data, media_type="application/json", headers=headers)

    def _admit(self, model: str) -> None:
        self.inflight += 1
        self.accepted += 1
        self.m_accepted.inc(model=model)
        if self._idle is not None:
            self._idle.clear()

    def _release(self, model: str) -> None:
        self.inflight -= 1
        self.completed += 1
        self.m_completed.inc(model=model)
        if self.inflight == 0 and self._idle is not None:
            self._idle.set()

    def _error(self, model: str, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        return error_response(status, message, headers)

    # -- pipeline steps ---------------------------------------------------------------------------
    async def _pre(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a CPU step on the decode pool (both pipelines: the event loop only does I/O)."""
        return await asyncio.get_running_loop().run_in_executor(self.decode_pool, fn, *args)

    async def _infer(self, model: str, x: np.ndarray) -> BatchResult:
        if self.cfg.naive:  # batch 1 on the inference thread, no batcher
            submitted = time.perf_counter()
            runner, post = self._runner[model], self._post[model]

            def run() -> BatchResult:
                t0 = time.perf_counter()
                out = runner([x])
                t1 = time.perf_counter()
                value = post(out)[0]
                t2 = time.perf_counter()
                return BatchResult(value, t0 - submitted, t1 - t0, t2 - t1, 1, t2)

            res = await asyncio.get_running_loop().run_in_executor(self.infer_pool, run)
            self.m_batch.observe(1, model=model)
            return res
        return await self._batchers[model].submit(x)

    async def _prepared(self, body: bytes, clock: StageClock, geometry: str, keep: bool = False) -> pp.Prepared:
        prep = await self._pre(_prepare, body, self.cfg.naive, self.cfg.max_pixels, geometry, keep)
        wait = prep.started - clock._last
        clock.split({"queue": wait, "decode": prep.decode_s, "resize": prep.resize_s, "normalise": prep.normalise_s})
        return prep

    async def _classify(self, body: bytes, clock: StageClock) -> dict[str, Any]:
        prep = await self._prepared(body, clock, "crop")
        res = await self._infer(self.cfg.model, prep.tensor)
        clock.split({"queue": res.queue_s, "infer": res.infer_s, "post": 0.0})
        w, h = prep.size
        return {"model": self.cfg.model, "pipeline": self.cfg.pipeline, "image": {"width": w, "height": h},
                "batch_size": res.batch_size, "top_k": res.value}

    async def _detect(self, body: bytes, clock: StageClock) -> dict[str, Any]:
        prep = await self._prepared(body, clock, "squash")
        res = await self._infer(DETECTOR, prep.tensor)
        clock.split({"queue": res.queue_s, "infer": res.infer_s, "post": 0.0})
        w, h = prep.size
        return {"model": DETECTOR, "pipeline": self.cfg.pipeline, "image": {"width": w, "height": h},
                "batch_size": res.batch_size, "boxes": [b.to_dict(w, h) for b in res.value]}

    async def _detect_classify(self, body: bytes, clock: StageClock, kind: str | None) -> dict[str, Any]:
        kind = kind or next(iter(self.brokers), None)
        if kind not in self.brokers:
            raise HTTPError(400, f"broker {kind!r} is not configured on this server (it has: "
                                 f"{', '.join(self.brokers) or 'none'}; serve with --broker queue,redis)")
        broker = self.brokers[kind]
        prep = await self._prepared(body, clock, "squash", keep=True)
        det = await self._infer(DETECTOR, prep.tensor)
        clock.split({"queue": det.queue_s, "infer": det.infer_s, "crop": 0.0})
        boxes = det.value
        crops = await self._pre(_crops, prep.image, boxes, self.cfg.crop_size)
        clock.mark("crop")
        results: dict[int, ResultMessage] = {}
        if boxes:
            rid = uuid.uuid4().hex
            pending = _Pending(len(boxes), asyncio.get_running_loop().create_future(), kind)
            self._pending[rid] = pending
            try:
                t_put = time.perf_counter()
                try:
                    await broker.put_many(CROPS, [CropMessage(rid, i, c) for i, c in enumerate(crops)])
                except BrokerUnavailable as e:
                    self.broker_errors[kind] = str(e)
                    raise
                put_s = time.perf_counter() - t_put
                self.broker_errors[kind] = None
                try:
                    results = await asyncio.wait_for(pending.future, self.cfg.pipeline_timeout_s)
                except TimeoutError:
                    raise HTTPError(504, f"the classifier stage did not answer within "
                                         f"{self.cfg.pipeline_timeout_s:g} s (broker {kind}: "
                                         f"{self.broker_errors.get(kind) or 'up'})") from None
            finally:
                self._pending.pop(rid, None)
            last = max(results.values(), key=lambda m: m.t_got)
            clock.split({"broker": put_s + last.hop_s + (last.t_got - last.t_put), "classify": 0.0})
        else:
            clock.split({"broker": 0.0, "classify": 0.0})
        w, h = prep.size
        out = []
        for i, b in enumerate(boxes):
            d = b.to_dict(w, h)
            r = results[i]
            d.update({"top_k": r.topk, "broker_hop_ms": r.hop_s * 1e3, "return_hop_ms": (r.t_got - r.t_put) * 1e3,
                      "classifier_batch": r.extra.get("batch_size", 1)})
            out.append(d)
        clock.mark("post")
        return {"model": TWO_STAGE, "pipeline": self.cfg.pipeline, "broker": kind,
                "classifier": self.cfg.model, "image": {"width": w, "height": h}, "boxes": out}

    # -- the second DNN behind the broker --------------------------------------------------------------
    def _classify_crops(self, msgs: list[CropMessage]) -> tuple[list[list[dict[str, Any]]], float, float]:
        from dnninfer.serving.models import topk_rows

        t0 = time.perf_counter()
        logits = self.crop_classifier([pp.normalise_hwc(m.pixels) for m in msgs])
        t1 = time.perf_counter()
        return topk_rows(logits, self.cfg.topk), t0, t1

    async def _classifier_stage(self, kind: str) -> None:
        """Consume crops (up to ``max_batch`` per pull: the broker is the second DNN's queue),
        classify them as one batch, publish the results."""
        broker = self.brokers[kind]
        n = 1 if self.cfg.naive else self.cfg.max_batch
        loop = asyncio.get_running_loop()
        while True:
            try:
                msgs = await broker.get_many(CROPS, n, 0.5)
                if not msgs:
                    continue
                for m in msgs:
                    self.m_hop.observe(m.t_got - m.t_put, broker=kind, direction="crop")
                rows, t0, t1 = await loop.run_in_executor(self.infer_pool, self._classify_crops, msgs)
                self.m_batch.observe(len(msgs), model=f"{self.cfg.model}@crops")
                out = [ResultMessage(m.rid, m.index, r, m.t_got - m.t_put, t0 - m.t_got, t1 - t0,
                                     extra={"batch_size": len(msgs)}) for m, r in zip(msgs, rows, strict=True)]
                await broker.put_many(RESULTS, out)
            except BrokerUnavailable as e:  # (CancelledError is no Exception: it still ends the task)
                await self._broker_down(kind, e)
            except Exception:
                log.exception("classifier stage failed on a batch")
                await asyncio.sleep(0.05)

    async def _results_listener(self, kind: str) -> None:
        broker = self.brokers[kind]
        while True:
            try:
                msgs = await broker.get_many(RESULTS, 256, 0.5)
            except BrokerUnavailable as e:
                await self._broker_down(kind, e)
                continue
            for m in msgs:
                self.m_hop.observe(m.t_got - m.t_put, broker=kind, direction="result")
                p = self._pending.get(m.rid)
                if p is None or p.future.done():
                    continue
                p.results[m.index] = m
                if len(p.results) == p.n:
                    p.future.set_result(p.results)

    async def _broker_down(self, kind: str, e: Exception) -> None:
        """Record why `kind` is down (for /health), fail the requests waiting on it, back off a little."""
        self.broker_errors[kind] = str(e)
        for p in self._pending.values():
            if p.broker == kind and not p.future.done():
                p.future.set_exception(BrokerUnavailable(str(e)))
        await asyncio.sleep(0.2)

    # -- status -------------------------------------------------------------------------------------
    async def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": "draining" if self.draining else "ok", "pipeline": self.cfg.pipeline,
                               "models": self.models, "inflight": self.inflight, "accepted": self.accepted,
                               "completed": self.completed, "rejected": self.rejected,
                               "queue_depth": {k: b.depth for k, b in self._batchers.items()}}
        if self.brokers:
            out["brokers"] = {}
            for kind, broker in self.brokers.items():
                b = await broker.health()
                self.broker_errors[kind] = None if b["ok"] else b.get("error")
                out["brokers"][kind] = b
            out["broker"] = next(iter(out["brokers"].values()))  # the default one
        return out

    def describe(self) -> dict[str, Any]:
        return {"models": self.models, "config": asdict(self.cfg)}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The project's error body, for every error this server answers."""
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(k == b"transfer-encoding" or (k == b"content-length" and v.strip() not in (b"", b"0"))
               for k, v in headers)


class _Exchange:
    """One HTTP exchange as the gate sees it: a deadline on the body, ``Connection: close`` when
    draining or when the body was not read to its end, the status sent, and whether the client
    hung up before its answer (counted as 499, not as the 200 nobody received)."""

    def __init__(self, scope: dict, receive: Any, send: Any, read_timeout_s: float,
                 draining: Callable[[], bool]) -> None:
        self._receive, self._send, self._draining = receive, send, draining
        self.read_timeout_s = read_timeout_s
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.time() + read_timeout_s
        self.body_complete = not _has_body(scope["headers"])
        self.status: int | None = None
        self.hung_up = False
        self._watch: asyncio.Task | None = None

    async def receive(self) -> dict:
        if self._watch is not None:  # the body was read; a later receive only waits for a disconnect
            return await self._receive()
        try:
            async with asyncio.timeout(max(0.0, self.deadline - self.loop.time())):
                msg = await self._receive()
        except TimeoutError:
            raise BodyTimeout(self.read_timeout_s) from None
        if msg["type"] == "http.disconnect":
            self.hung_up = True
        elif not msg.get("more_body", False):
            self.body_complete = True
            self._watch = self.loop.create_task(self._watch_disconnect())
        return msg

    async def _watch_disconnect(self) -> None:
        msg = await self._receive()  # uvicorn answers it when the connection is lost (or the answer sent)
        if msg["type"] == "http.disconnect" and self.status is None:
            self.hung_up = True

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.status = 499 if self.hung_up else message["status"]
            if self._draining() or not self.body_complete:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await self._send(message)

    async def discard_body(self, limit: int) -> None:
        """Read and drop the body (up to ``limit`` bytes and the deadline) before an early answer."""
        seen = 0
        with contextlib.suppress(BodyTimeout):
            while not self.body_complete and not self.hung_up and seen <= limit:
                seen += len((await self.receive()).get("body", b""))

    async def respond(self, status: int, message: str, headers: dict[str, str]) -> None:
        body = json.dumps({"error": message, "status": status}, separators=(",", ":")).encode()
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        await self.send({"type": "http.response.start", "status": status, "headers": raw})
        await self.send({"type": "http.response.body", "body": body})

    def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()


class _Gate:
    """Pure ASGI middleware in front of the app: stamps arrival, admits inference requests before
    their body is read (``Service.gate``) and wraps every exchange in an ``_Exchange``."""

    def __init__(self, app: Any, service: Service) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[ARRIVAL_KEY] = time.perf_counter()
        svc = self.service
        exchange = _Exchange(scope, receive, send, svc.cfg.read_timeout_s, lambda: svc.draining)
        match = INFER_PATH.match(scope["path"])
        if match is None or scope["method"] != "POST":
            try:
                await self.app(scope, exchange.receive, exchange.send)
            finally:
                exchange.close()
            return
        await svc.gate(match.group(1), scope, exchange, self.app)


def create_app(cfg: ServeConfig | None = None, service: Service | None = None, classifier: Any = None) -> FastAPI:
    """The FastAPI app; its lifespan starts and drains the ``Service`` (serving `classifier`, a
    `models.UserClassifier`, under ``cfg.model`` when given)."""
    service = service or Service(cfg or ServeConfig(), classifier)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="dnninfer serving", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service
    app.add_middleware(_Gate, service=service)

    @app.post("/v1/models/{name}/infer")
    async def infer(name: str, request: Request) -> Any:
        return await service.handle(name, request)

    @app.get("/health")
    async def health() -> Any:
        return JSONResponse(await service.health(), status_code=503 if service.draining else 200)

    @app.get("/metrics")
    async def metrics() -> Any:
        return Response(service.registry.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models() -> Any:
        return service.describe()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Any:
        where = f"{request.method} {request.url.path}"
        if exc.status_code == 404:
            message = f"no endpoint {where}: this server has {ENDPOINTS}"
        elif exc.status_code == 405:
            allow = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow") or "another method"
            message = f"method {request.method} is not allowed on {request.url.path}: use {allow} ({ENDPOINTS})"
        else:
            message = str(exc.detail)
        return error_response(exc.status_code, message, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Any:
        parts = ["/".join(str(x) for x in e.get("loc", ())) + ": " + str(e.get("msg", "")) for e in exc.errors()]
        return error_response(422, f"invalid request to {request.url.path}: {'; '.join(parts) or 'unreadable'}")

    @app.exception_handler(Exception)
    async def _unhandled(_request: Request, exc: Exception) -> Any:
        log.exception("unhandled error")
        return error_response(500, f"internal error: {type(exc).__name__}")

    return app
