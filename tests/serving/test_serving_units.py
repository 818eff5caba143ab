"""Pieces without a server: images, preprocessing, stage clock, metrics, batcher, codec."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from dnninfer.serving import preprocess as pp
from dnninfer.serving.batcher import DynamicBatcher, Overloaded
from dnninfer.serving.broker import CropMessage, ResultMessage, decode, encode
from dnninfer.serving.images import SIZES, jpeg_for, make_jpeg
from dnninfer.serving.metrics import Counter, Histogram, Registry, parse_metrics
from dnninfer.serving.timing import StageClock, format_stage_header, parse_stage_header


def test_images_are_seeded_and_sized():
    a, b, c = make_jpeg(320, 240, seed=1), make_jpeg(320, 240, seed=1), make_jpeg(320, 240, seed=2)
    assert a == b and a != c
    assert a[:2] == b"\xff\xd8"
    w, h = SIZES["medium"]
    assert 0.8e6 <= w * h <= 1.3e6 and 0.08e6 <= SIZES["small"][0] * SIZES["small"][1] <= 0.12e6
    assert 11e6 <= SIZES["large"][0] * SIZES["large"][1] <= 13e6
    # photo-like, not noise and not flat: between 0.5 and 4 bits per pixel at quality 90
    bpp = len(jpeg_for("small")) * 8 / (SIZES["small"][0] * SIZES["small"][1])
    assert 0.5 < bpp < 4


def test_fast_decode_is_dct_scaled_but_keeps_the_target():
    body = make_jpeg(1600, 1200, seed=3)
    arr = pp.fast_decode(body)
    assert min(arr.shape[:2]) >= pp.RESIZE and arr.shape[0] < 1200  # decoded smaller than the original
    x = pp.fast_preprocess(body).tensor
    assert x.shape == (224, 224, 3) and x.dtype == np.float32
    y = pp.naive_preprocess(body)
    assert y.shape == (3, 224, 224)
    # same geometry, different filters: close on average, not identical
    assert np.abs(x.transpose(2, 0, 1) - y).mean() < 0.1


@pytest.mark.parametrize("decoder", [pp.naive_decode, pp.fast_decode])
@pytest.mark.parametrize("case", ["empty", "png", "truncated", "garbage"])
def test_decoders_reject_bad_bytes_with_image_error(decoder, case):
    good = jpeg_for("small")
    body = {"empty": b"", "png": b"\x89PNG\r\n\x1a\n" + good[2:], "truncated": good[: len(good) // 2],
            "garbage": b"\xff\xd8" + bytes(range(256)) * 8}[case]
    with pytest.raises(pp.ImageError) as e:
        decoder(body)
    assert e.value.status == 400 and str(e.value)


def test_pixel_limit_is_413():
    with pytest.raises(pp.ImageError) as e:
        pp.fast_decode(jpeg_for("small"), max_pixels=1000)
    assert e.value.status == 413


def test_stage_clock_tiles_the_request():
    clock = StageClock(start=10.0)
    clock.mark("receive", 10.001)
    clock.split({"queue": 0.002, "decode": 0.003, "resize": 0.1}, now=10.010)  # resize absorbs the rest
    clock.mark("serialise", 10.012)
    assert clock.stages["resize"] == pytest.approx(0.004)
    assert sum(clock.stages.values()) == pytest.approx(clock.total) == pytest.approx(0.012)
    parsed = parse_stage_header(format_stage_header(clock.stages, clock.total))
    assert parsed["total"] == pytest.approx(12.0) and parsed["decode"] == pytest.approx(3.0)


def test_metrics_render_prometheus_text():
    r = Registry()
    h = r.add(Histogram("lat_seconds", "latency", ["stage"], buckets=(0.01, 0.1)))
    c = r.add(Counter("req_total", "requests", ["code"]))
    h.observe(0.05, stage="decode")
    h.observe(0.5, stage="decode")
    c.inc(code="200")
    text = r.render()
    assert "# TYPE lat_seconds histogram" in text
    m = parse_metrics(text)
    assert m['lat_seconds_bucket{stage="decode",le="0.01"}'] == 0
    assert m['lat_seconds_bucket{stage="decode",le="0.1"}'] == 1
    assert m['lat_seconds_bucket{stage="decode",le="+Inf"}'] == 2
    assert m['lat_seconds_count{stage="decode"}'] == 2 and m['req_total{code="200"}'] == 1


def _identity_batcher(pool, **kw):
    sizes = []

    def forward(xs):
        sizes.append(len(xs))
        return list(xs)

    return DynamicBatcher(forward, lambda out: [x * 10 for x in out], executor=pool, **kw), sizes


def test_batcher_groups_concurrent_requests_and_routes_results():
    async def scenario():
        with ThreadPoolExecutor(1) as pool:
            b, sizes = _identity_batcher(pool, max_batch=4, max_delay_s=0.05, max_queue=100)
            b.start()
            results = await asyncio.gather(*(b.submit(i) for i in range(10)))
            await b.stop()
            return results, sizes

    results, sizes = asyncio.run(scenario())
    assert [r.value for r in results] == [i * 10 for i in range(10)]  # each caller gets its own row
    assert max(sizes) == 4 and sum(sizes) == 10 and len(sizes) == 3  # 4 + 4 + 2
    assert all(r.batch_size in (2, 4) and r.queue_s >= 0 for r in results)


def test_batcher_max_batch_one_never_batches():
    async def scenario():
        with ThreadPoolExecutor(1) as pool:
            b, sizes = _identity_batcher(pool, max_batch=1, max_delay_s=0.05, max_queue=100)
            b.start()
            await asyncio.gather(*(b.submit(i) for i in range(5)))
            await b.stop()
            return sizes

    assert asyncio.run(scenario()) == [1] * 5


def test_batcher_queue_bound_raises_overloaded():
    async def scenario():
        with ThreadPoolExecutor(1) as pool:
            b, _ = _identity_batcher(pool, max_batch=1, max_delay_s=0.2, max_queue=2)
            b.start()
            tasks = [asyncio.create_task(b.submit(i)) for i in range(2)]
            await asyncio.sleep(0)  # both queued, the first waits max_delay
            with pytest.raises(Overloaded) as e:
                await b.submit(99)
            assert e.value.retry_after_s > 0
            done = await asyncio.gather(*tasks)
            await b.stop()
            return done

    assert [r.value for r in asyncio.run(scenario())] == [0, 10]


def test_broker_codec_roundtrip_is_exact():
    px = np.random.default_rng(0).integers(0, 256, (50, 40, 3), dtype=np.uint8)
    m = decode(encode(CropMessage("abc", 3, px, t_put=1.5)))
    assert isinstance(m, CropMessage) and m.rid == "abc" and m.index == 3 and m.t_put == 1.5
    assert np.array_equal(m.pixels, px)
    r = decode(encode(ResultMessage("abc", 3, [{"class": 1}], 0.1, 0.2, 0.3, t_put=2.0, extra={"batch_size": 2})))
    assert isinstance(r, ResultMessage) and r.topk == [{"class": 1}] and r.extra == {"batch_size": 2}
