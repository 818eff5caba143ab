"""The broker between the two DNNs: exactly-once delivery (queue and a real redis-server), the
two-DNN pipeline over HTTP, and a Redis outage that leaves the rest of the server healthy."""

from __future__ import annotations

import asyncio
import random

import httpx
import numpy as np
import pytest

from dnninfer.serving.broker import BrokerUnavailable, CropMessage, QueueBroker, RedisBroker
from dnninfer.serving.images import jpeg_for, make_jpeg
from dnninfer.serving.metrics import parse_metrics
from dnninfer.serving.redis_server import RedisServer, free_port, redis_missing_reason
from dnninfer.serving.runner import ServerThread
from dnninfer.serving.server import ServeConfig, create_app
from dnninfer.serving.timing import TWO_STAGE_STAGES, parse_stage_header

MODEL = "mobilenet_v2"
needs_redis = pytest.mark.skipif(redis_missing_reason() is not None, reason=str(redis_missing_reason()))


@pytest.fixture(scope="module")
def redis_url():
    if redis_missing_reason():
        pytest.skip(redis_missing_reason())
    with RedisServer() as r:
        yield r.url


async def _exactly_once(broker, n: int = 300, consumers: int = 3, seed: int = 0) -> list[int]:
    """Two producers put ``n`` ids in random-sized chunks while ``consumers`` pull in batches."""
    await broker.connect()
    rng = random.Random(seed)
    px = np.zeros((4, 4, 3), np.uint8)
    got: list[int] = []
    done = asyncio.Event()

    async def produce(ids):
        i = 0
        while i < len(ids):
            k = rng.randint(1, 9)
            await broker.put_many("t", [CropMessage("r", j, px) for j in ids[i:i + k]])
            i += k
            await asyncio.sleep(0)

    async def consume():
        while not done.is_set():
            for m in await broker.get_many("t", 7, 0.05):
                got.append(m.index)
            if len(got) >= n:
                done.set()

    workers = [asyncio.create_task(consume()) for _ in range(consumers)]
    await asyncio.gather(produce(list(range(0, n, 2))), produce(list(range(1, n, 2))))
    await asyncio.wait_for(done.wait(), 30)
    await asyncio.gather(*workers)
    leftover = await broker.get_many("t", 10, 0.05)
    await broker.close()
    return got + [m.index for m in leftover]


def test_queue_broker_delivers_every_item_exactly_once():
    got = asyncio.run(_exactly_once(QueueBroker()))
    assert sorted(got) == list(range(300))


@needs_redis
@pytest.mark.parametrize("blmpop", [True, False], ids=["blmpop", "blpop+lpop"])
def test_redis_broker_delivers_every_item_exactly_once(redis_url, blmpop):
    broker = RedisBroker(redis_url)
    broker._blmpop = blmpop  # both consume paths: Redis >= 7 and the older fallback
    got = asyncio.run(_exactly_once(broker))
    assert sorted(got) == list(range(300))  # no loss, no duplicate


@needs_redis
def test_redis_broker_carries_pixels_exactly(redis_url):
    px = np.random.default_rng(1).integers(0, 256, (224, 224, 3), dtype=np.uint8)

    async def roundtrip():
        b = RedisBroker(redis_url)
        await b.put_many("px", [CropMessage("r", 0, px)])
        (m,) = await b.get_many("px", 1, 2.0)
        await b.close()
        return m

    m = asyncio.run(roundtrip())
    assert np.array_equal(m.pixels, px) and m.t_got >= m.t_put > 0


def test_unreachable_redis_is_a_clear_broker_error():
    port = free_port()

    async def put():
        await RedisBroker(f"redis://127.0.0.1:{port}/0").put_many("x", [CropMessage("r", 0, np.zeros((2, 2, 3),
                                                                                                    np.uint8))])

    with pytest.raises(BrokerUnavailable, match=f"cannot reach Redis at 127.0.0.1:{port}"):
        asyncio.run(put())


async def _burst(url: str, bodies: list[bytes]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=120) as client:
        return await asyncio.gather(*(client.post(url, content=b, headers={"content-type": "image/jpeg"})
                                      for b in bodies))


def _two_stage(broker: str, redis_url: str | None, bodies: list[bytes]) -> tuple[list[dict], dict, list[dict]]:
    cfg = ServeConfig(model=MODEL, broker=broker, redis_url=redis_url, max_batch=4, max_delay_ms=2, max_boxes=3)
    with ServerThread(create_app(cfg)) as srv:
        responses = asyncio.run(_burst(f"{srv.url}/v1/models/detect_classify/infer", bodies))
        assert [r.status_code for r in responses] == [200] * len(bodies), [r.text for r in responses]
        metrics = parse_metrics(httpx.get(f"{srv.url}/metrics").text)
    return [r.json() for r in responses], metrics, [parse_stage_header(r.headers["x-stage-timings"])
                                                   for r in responses]


@pytest.fixture(scope="module")
def bodies():
    return [make_jpeg(640, 480, seed=s) for s in range(8)]


@pytest.fixture(scope="module")
def via_queue(bodies):
    return _two_stage("queue", None, bodies)


def _check_every_crop_classified_once(outs, metrics, timings, broker, n):
    for out in outs:
        assert out["broker"] == broker and len(out["boxes"]) == 3
        for box in out["boxes"]:
            assert len(box["top_k"]) == 5 and box["broker_hop_ms"] >= 0
    crops = metrics[f'dnninfer_broker_hop_seconds_count{{broker="{broker}",direction="crop"}}']
    results = metrics[f'dnninfer_broker_hop_seconds_count{{broker="{broker}",direction="result"}}']
    assert crops == results == 3 * n  # every crop consumed once, every result returned once
    for t in timings:
        assert list(t) == [*TWO_STAGE_STAGES, "total"]
        assert sum(v for k, v in t.items() if k != "total") == pytest.approx(t["total"], abs=0.05)


def test_two_dnn_pipeline_through_the_queue(via_queue, bodies):
    _check_every_crop_classified_once(*via_queue, "queue", len(bodies))


@needs_redis
def test_two_dnn_pipeline_through_redis_matches_the_queue(redis_url, via_queue, bodies):
    outs, metrics, timings = _two_stage("redis", redis_url, bodies)
    _check_every_crop_classified_once(outs, metrics, timings, "redis", len(bodies))
    for a, b in zip(outs, via_queue[0], strict=True):  # same crops, same classes, whichever broker carried them
        for x, y in zip(a["boxes"], b["boxes"], strict=True):
            assert x["box"] == y["box"]
            assert [c["class"] for c in x["top_k"]] == [c["class"] for c in y["top_k"]]
            np.testing.assert_allclose([c["logit"] for c in x["top_k"]], [c["logit"] for c in y["top_k"]],
                                       atol=1e-4)


@needs_redis
def test_redis_going_down_is_a_clear_503_and_the_server_stays_healthy():
    redis = RedisServer().start()
    port = redis.port
    cfg = ServeConfig(model=MODEL, broker="redis", redis_url=redis.url, max_delay_ms=1)
    try:
        with ServerThread(create_app(cfg)) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
            body = jpeg_for("small")
            assert c.post("/v1/models/detect_classify/infer", content=body).status_code == 200
            redis.stop()
            r = c.post("/v1/models/detect_classify/infer", content=body)
            assert r.status_code == 503
            assert f"cannot reach Redis at 127.0.0.1:{port}" in r.json()["error"]
            health = c.get("/health")
            assert health.status_code == 200 and health.json()["status"] == "ok"
            assert health.json()["broker"]["ok"] is False and "Redis" in health.json()["broker"]["error"]
            assert c.post(f"/v1/models/{MODEL}/infer", content=body).status_code == 200  # no broker needed
            assert "dnninfer_broker_up{broker=\"redis\"} 0" in c.get("/metrics").text
    finally:
        redis.stop()


def test_server_starts_with_redis_unreachable_and_says_why():
    port = free_port()
    cfg = ServeConfig(model=MODEL, broker="redis", redis_url=f"redis://127.0.0.1:{port}/0")
    with ServerThread(create_app(cfg)) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        health = c.get("/health").json()
        assert health["status"] == "ok" and health["broker"]["ok"] is False
        r = c.post("/v1/models/detect_classify/infer", content=jpeg_for("small"))
        assert r.status_code == 503 and str(port) in r.json()["error"]
        assert c.post(f"/v1/models/{MODEL}/infer", content=jpeg_for("small")).status_code == 200


@needs_redis
def test_one_server_with_both_brokers_picks_by_query(redis_url):
    cfg = ServeConfig(model=MODEL, broker="queue,redis", redis_url=redis_url, max_delay_ms=1)
    body = jpeg_for("small")
    with ServerThread(create_app(cfg)) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        default = c.post("/v1/models/detect_classify/infer", content=body).json()
        redis = c.post("/v1/models/detect_classify/infer?broker=redis", content=body).json()
        assert default["broker"] == "queue" and redis["broker"] == "redis"
        assert [b["top_k"][0]["class"] for b in default["boxes"]] == [b["top_k"][0]["class"] for b in redis["boxes"]]
        r = c.post("/v1/models/detect_classify/infer?broker=kafka", content=body)
        assert r.status_code == 400 and "not configured" in r.json()["error"]
        assert set(c.get("/health").json()["brokers"]) == {"queue", "redis"}
