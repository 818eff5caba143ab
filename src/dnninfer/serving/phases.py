"""The measurement phases of the serving study, against running servers: the low-load stage
breakdown, closed-loop peak throughput with the model alone as its ceiling, open-loop tail
latency, and the broker hop between the two DNNs.

Every comparison is interleaved (AB/BA, round by round), because the servers, the load generator
and the model-only runs share this host's cores: numbers taken back to back drift alike, numbers
taken minutes apart do not.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from dnninfer.serving.loadgen import LoadResult, closed_loop, make_client, open_loop, percentile, send_one
from dnninfer.serving.timing import DNN_STAGES, STAGES

__all__ = ["PIPES", "SHARE_STAGES", "ModelOnly", "broker_part", "infer_url", "measure_size",
           "stage_shares"]

PIPES = ("naive", "optimized")
#: the server's stages plus ``http``: client-observed latency minus the server's own total
SHARE_STAGES = (*STAGES, "http")


def infer_url(base: str, model: str) -> str:
    return f"{base}/v1/models/{model}/infer"


def stage_shares(res: LoadResult) -> dict[str, Any]:
    """Median ms per stage (plus ``http``) and each one's share of their sum; what is not the DNN
    is the paper's pre/post-processing and data movement."""
    ok = res.ok
    med: dict[str, float] = {}
    for s in STAGES:
        med[s] = percentile([r.stages_ms.get(s, 0.0) for r in ok], 50)
    med["http"] = max(0.0, percentile([r.latency_s * 1e3 - r.stages_ms.get("total", 0.0) for r in ok], 50))
    total = sum(med.values())
    shares = {s: (v / total if total > 0 else 0.0) for s, v in med.items()}
    dnn = sum(shares[s] for s in shares if s in DNN_STAGES)
    lat = [r.latency_s * 1e3 for r in ok]
    return {"stage_ms": med, "stage_share": shares, "preprocess_share": 1.0 - dnn,
            "latency_p50_ms": percentile(lat, 50), "latency_p90_ms": percentile(lat, 90),
            "server_total_p50_ms": percentile([r.stages_ms.get("total", 0.0) for r in ok], 50)}


class ModelOnly:
    """Images/s of the classifier alone in this process, 1 thread: naive = NCHW batch 1, optimised =
    channels-last batch ``max_batch`` (the server's batch at saturation). Measured in every load
    round, interleaved, so the e2e / model-only ratio compares numbers taken minutes apart at most
    on this shared host, never across the whole run."""

    def __init__(self, model_name: str, max_batch: int, seed: int) -> None:
        import numpy as np

        from dnninfer import zoo
        from dnninfer.serving.models import ModelRunner

        self.max_batch = max_batch
        self.naive = ModelRunner(zoo.build_model(model_name, seed=seed), layout="chw")
        self.opt = ModelRunner(zoo.build_model(model_name, seed=seed), layout="hwc", channels_last=True)
        self.chw = [np.zeros((3, 224, 224), np.float32)]
        self.hwc = [np.zeros((224, 224, 3), np.float32)] * max_batch

    def measure(self, repeats: int) -> dict[str, float]:
        from dnninfer.bench.harness import compare, pinned_threads

        with pinned_threads(1):
            t = compare({"naive": lambda: self.naive(self.chw), "optimized": lambda: self.opt(self.hwc)}, warmup=1,
                        repeats=repeats, progress=False, description="serving: model only")
        return {"naive": 1.0 / t["naive"].median, "optimized": self.max_batch / t["optimized"].median}


def _batch_counts(base: str, model: str) -> tuple[float, float]:
    """(sum, count) of the server's batch-size histogram for ``model``."""
    import httpx

    from dnninfer.serving.metrics import parse_metrics

    m = parse_metrics(httpx.get(f"{base}/metrics", timeout=10).text)
    return (m.get(f'dnninfer_batch_size_sum{{model="{model}"}}', 0.0),
            m.get(f'dnninfer_batch_size_count{{model="{model}"}}', 0.0))


async def _micro_hops(broker: Any, n: int) -> list[float]:
    """Raw hop: put one crop-sized message, get it back, ``n`` times (ms)."""
    import numpy as np

    from dnninfer.serving.broker import CropMessage

    px = np.zeros((224, 224, 3), np.uint8)
    hops = []
    await broker.connect()
    for i in range(n):
        await broker.put_many("bench", [CropMessage("r", i, px)])
        got = await broker.get_many("bench", 1, 5.0)
        hops.append((got[0].t_got - got[0].t_put) * 1e3)
    await broker.close()
    return hops


def _hop_stats(values: list[float]) -> dict[str, float]:
    return {"p50": percentile(values, 50), "p99": percentile(values, 99), "n": len(values)}


async def _lowload(urls: dict[str, str], bodies: list[bytes], n: int, warmup: int = 2) -> dict[str, LoadResult]:
    """One request at a time, alternating between the pipelines (ABBA...), so drift on this shared
    host lands on both alike."""
    from contextlib import AsyncExitStack

    records: dict[str, list[Any]] = {p: [] for p in urls}
    async with AsyncExitStack() as stack:
        clients = {p: await stack.enter_async_context(make_client(1, 120.0)) for p in urls}
        start = time.perf_counter()
        for i in range(warmup + n):
            order = list(urls) if i % 2 == 0 else list(urls)[::-1]
            for p in order:
                rec = await send_one(clients[p], urls[p], bodies[i % len(bodies)], "image/jpeg", time.perf_counter(),
                                     False)
                if i >= warmup:
                    records[p].append(rec)
        end = time.perf_counter()
    return {p: LoadResult("closed", urls[p], records[p], start, end, {"concurrency": 1}) for p in urls}


def measure_size(servers: dict[str, Any], model: str, bodies: list[bytes], cfg: dict[str, Any], conc: int,
                 model_only: ModelOnly, seed: int,
                 advance: Callable[[], Any]) -> tuple[dict[str, dict[str, Any]], int]:
    """Low-load breakdown, then ``rounds`` of (closed-loop peak per pipeline, AB/BA, and the model
    alone), then optional open-loop tail latency at one offered load for both; and the count of
    failed requests."""
    urls = {p: infer_url(servers[p].url, model) for p in PIPES}
    errors = 0
    low = asyncio.run(_lowload(urls, bodies, cfg["lowload"]))
    out: dict[str, dict[str, Any]] = {p: {"low": low[p], **stage_shares(low[p]), "throughput_rounds": [],
                                          "batches": [], "statuses": {}, "model_only_rounds": []} for p in PIPES}
    errors += sum(len(r.records) - len(r.ok) for r in low.values())
    advance()
    for rnd in range(cfg["rounds"]):
        for pipe in PIPES if rnd % 2 == 0 else PIPES[::-1]:
            m = out[pipe]
            before = _batch_counts(servers[pipe].url, model)
            res = asyncio.run(closed_loop(urls[pipe], bodies, concurrency=conc, requests=cfg["peak_requests"],
                                          duration_s=cfg["peak_s"]))
            after = _batch_counts(servers[pipe].url, model)
            if after[1] > before[1]:
                m["batches"].append((after[0] - before[0]) / (after[1] - before[1]))
            errors += len(res.records) - len(res.ok)
            m["throughput_rounds"].append(res.throughput_rps)
            for k, v in res.statuses().items():
                m["statuses"][k] = m["statuses"].get(k, 0) + v
        ips = model_only.measure(cfg["model_repeats"])
        for pipe in PIPES:
            out[pipe]["model_only_rounds"].append(ips[pipe])
        advance()
    for pipe in PIPES:
        m = out[pipe]
        m["throughput_rps"] = statistics.median(m["throughput_rounds"])
        m["model_only_ips"] = statistics.median(m["model_only_rounds"])
        # per round, then the median: each ratio pairs numbers taken back to back
        m["e2e_over_model_only"] = statistics.median(
            t / i for t, i in zip(m["throughput_rounds"], m["model_only_rounds"], strict=True))
        m["mean_batch_at_peak"] = statistics.fmean(m["batches"]) if m["batches"] else None
        m["loadavg_1m"] = os.getloadavg()[0]
    if cfg.get("open_loop_s"):  # tail latency at one offered load, below the naive peak
        rate = cfg["open_loop_load"] * out["naive"]["throughput_rps"]
        for pipe in PIPES:
            res = asyncio.run(open_loop(urls[pipe], bodies, rate=rate, requests=cfg["peak_requests"],
                                        duration_s=cfg["open_loop_s"], seed=seed))
            errors += len(res.records) - len(res.ok)
            lat = [r.latency_s * 1e3 for r in res.ok]
            out[pipe]["open_loop"] = {"rate_rps": rate, "sent": len(res.records), "p50_ms": percentile(lat, 50),
                                      "p99_ms": percentile(lat, 99)}
    return out, errors


def broker_part(servers: dict[str, Any], redis: Any, cfg: dict[str, Any],
                bodies: list[bytes]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Two-DNN pipeline at low load through each broker, plus the raw put -> get hop: the hop inside
    the pipeline includes the server's event loop, the raw one only the broker."""
    from dnninfer.serving.broker import QueueBroker, RedisBroker

    rows = []
    hops: dict[str, Any] = {"pipeline": {}, "raw": {}}
    kinds = ["queue"] + (["redis"] if redis is not None else [])
    for kind in kinds:
        url = infer_url(servers["optimized"].url, "detect_classify") + f"?broker={kind}"
        asyncio.run(closed_loop(url, bodies, concurrency=1, requests=2, duration_s=30))
        res = asyncio.run(closed_loop(url, bodies, concurrency=1, requests=cfg["broker_requests"], duration_s=60,
                                      keep_payload=True))
        fwd = [b["broker_hop_ms"] for r in res.ok for b in (r.payload or {}).get("boxes", [])]
        back = [b["return_hop_ms"] for r in res.ok for b in (r.payload or {}).get("boxes", [])]
        broker_stage = [r.stages_ms.get("broker", 0.0) for r in res.ok]
        lat = [r.latency_s * 1e3 for r in res.ok]
        crops = sum(len((r.payload or {}).get("boxes", [])) for r in res.ok)
        raw = asyncio.run(_micro_hops(QueueBroker() if kind == "queue" else RedisBroker(redis.url), cfg["micro"]))
        hops["pipeline"][kind] = _hop_stats(fwd)
        hops["raw"][kind] = _hop_stats(raw)
        rows.append({"kind": "broker", "broker": kind, "requests": len(res.records), "crops": crops,
                     "errors": len(res.records) - len(res.ok),
                     "hop_p50_ms": percentile(fwd, 50), "hop_p99_ms": percentile(fwd, 99),
                     "return_hop_p50_ms": percentile(back, 50), "broker_stage_p50_ms": percentile(broker_stage, 50),
                     "latency_p50_ms": percentile(lat, 50),
                     "broker_share": (percentile(broker_stage, 50) / percentile(lat, 50)) if lat else None,
                     "raw_hop_p50_ms": percentile(raw, 50), "raw_hop_p99_ms": percentile(raw, 99)})
    if redis is None:
        hops["pipeline"]["redis"] = None
        hops["raw"]["redis"] = None
    return rows, hops
