"""Overload (bounded queue, 503 + Retry-After, nothing accepted is lost) and graceful shutdown."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from dnninfer.serving.images import jpeg_for
from dnninfer.serving.loadgen import closed_loop
from dnninfer.serving.metrics import parse_metrics
from dnninfer.serving.runner import ServerThread
from dnninfer.serving.server import ServeConfig, create_app

MODEL = "mobilenet_v2"


async def _burst(url: str, body: bytes, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        return await asyncio.gather(*(client.post(url, content=body, headers={"content-type": "image/jpeg"})
                                      for _ in range(n)))


def test_overload_answers_503_with_retry_after_and_completes_every_accepted_request():
    cfg = ServeConfig(model=MODEL, max_queue=3, max_batch=1, max_delay_ms=0, decode_workers=1)
    n = 24
    with ServerThread(create_app(cfg)) as srv:
        url = f"{srv.url}/v1/models/{MODEL}/infer"
        responses = asyncio.run(_burst(url, jpeg_for("medium"), n))
        codes = [r.status_code for r in responses]
        assert set(codes) <= {200, 503}, codes
        ok, rejected = codes.count(200), codes.count(503)
        assert ok >= 1 and rejected >= 1, codes  # negative control: the burst really overloaded it
        for r in responses:
            if r.status_code == 503:
                assert int(r.headers["retry-after"]) >= 1
                assert "overloaded" in r.json()["error"]
            else:
                assert r.json()["top_k"]
        health = httpx.get(f"{srv.url}/health").json()
        m = parse_metrics(httpx.get(f"{srv.url}/metrics").text)
    # every admitted request was answered with its result, and the server's books agree with the client's
    assert health["accepted"] == health["completed"] == ok
    assert health["rejected"] == rejected and health["inflight"] == 0
    assert m[f'dnninfer_requests_accepted_total{{model="{MODEL}"}}'] == ok
    assert m[f'dnninfer_requests_rejected_total{{model="{MODEL}",reason="overload"}}'] == rejected


def test_load_within_capacity_has_no_rejections():
    cfg = ServeConfig(model=MODEL, max_queue=16, max_batch=4, max_delay_ms=2)
    with ServerThread(create_app(cfg)) as srv:
        res = asyncio.run(closed_loop(f"{srv.url}/v1/models/{MODEL}/infer", [jpeg_for("small")], concurrency=4,
                                      requests=16, duration_s=60))
    assert res.statuses() == {"200": 16}


def test_graceful_shutdown_drains_in_flight_requests():
    cfg = ServeConfig(model=MODEL, max_queue=32, max_batch=1, max_delay_ms=0, decode_workers=1)
    n = 6
    srv = ServerThread(create_app(cfg)).start()
    service = srv.app.state.service
    url = f"{srv.url}/v1/models/{MODEL}/infer"
    out: dict[str, list] = {}
    client = threading.Thread(target=lambda: out.setdefault("r", asyncio.run(_burst(url, jpeg_for("medium"), n))))
    client.start()
    deadline = time.monotonic() + 60
    while service.accepted < n and time.monotonic() < deadline:  # all admitted, most still running
        time.sleep(0.002)
    assert service.accepted == n
    in_flight_at_stop = service.inflight
    srv.stop()  # uvicorn stops listening, waits for the in-flight responses, then drains the service
    client.join(120)
    assert in_flight_at_stop >= 1  # negative control: there was something to drain
    assert [r.status_code for r in out["r"]] == [200] * n
    assert service.completed == n and service.inflight == 0 and not service.started
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{srv.url}/health", timeout=2)
