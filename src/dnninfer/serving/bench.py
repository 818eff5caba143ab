"""`dnninfer bench serving`: where a vision request's time goes, naive vs optimised, and the broker hop.

Measured for real, over HTTP on 127.0.0.1, against server subprocesses (so the load generator
does not share their GIL), for each image size class (small ~0.1 MP, medium ~1 MP, large ~12 MP):

* stage shares of end-to-end latency at low load (one request at a time): the server's
  ``X-Stage-Timings`` plus ``http`` = client-observed latency - server total (HTTP, sockets,
  client); ``preprocess_share`` is everything that is not the DNN (paper: up to 56%, medium);
* peak throughput under closed-loop load, naive vs optimised, rounds interleaved AB/BA; the
  paper's 2.25x is its optimised system over prior work;
* end-to-end throughput / model-only throughput (the model alone in this process, same threads,
  the pipeline's batch size and layout; paper: ~19.5% on large images, the "~80% impact");
* broker hop latency (p50/p99) between the detector and the per-crop classifier, in-process queue
  vs a real redis-server, inside the running two-DNN pipeline (low load) and as a raw
  put -> get micro-benchmark.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from dnninfer.bench.output import err_console, make_progress
from dnninfer.bench.registry import BenchArgs, register_system
from dnninfer.report.section import ReportSection
from dnninfer.serving.loadgen import LoadResult, closed_loop, make_client, open_loop, percentile, send_one
from dnninfer.serving.timing import DNN_STAGES, STAGES

PAPER = {
    "preprocess_share_medium": 0.56,
    "throughput_cut_large": 0.80,
    "e2e_over_model_only_large": 0.195,
    "speedup": 2.25,
    "sources": [
        "AbouElhamayed, Balle, Singh, Abdelfattah, 'Beyond Inference: Performance Analysis of DNN Server "
        "Overheads for Computer Vision', DAC 2024, arXiv 2403.12981, abstract: pre/post-processing and data "
        "movement up to 56% of end-to-end latency (medium image), ~80% impact on throughput (large image), "
        "2.25x better throughput than prior work",
        "19.5% of model-only throughput on large inputs: third-party write-up citing the paper (unverified, "
        "research notes gpu_and_serving.md §2.1)",
    ],
    "setting": "GPU server (Triton + TensorRT, RTX 4090 per third-party summaries), not a 2-core CPU",
}

SIZES = ("small", "medium", "large")
PIPES = ("naive", "optimized")
QUICK = {"lowload": 4, "peak_s": 1.5, "peak_requests": 60, "rounds": 1, "broker_requests": 5, "micro": 100,
         "images": 1, "model_repeats": 3, "concurrency": 8}
FULL = {"lowload": 30, "peak_s": 6.0, "peak_requests": 3000, "rounds": 4, "broker_requests": 40, "micro": 2000,
        "images": 3, "model_repeats": 8, "concurrency": 8, "open_loop_s": 8.0, "open_loop_load": 0.6}
#: --smoke (the test suite's run): the small images only, one short round of every phase, both brokers.
SMOKE = {"lowload": 2, "peak_s": 0.5, "peak_requests": 16, "rounds": 1, "broker_requests": 2, "micro": 20,
         "images": 1, "model_repeats": 2, "concurrency": 8, "sizes": ("small",)}
SHARE_STAGES = (*STAGES, "http")


def _add_arguments(p: Any) -> None:
    p.add_argument("--model", default="mobilenet_v2", help="zoo classifier served (default mobilenet_v2)")
    p.add_argument("--sizes", nargs="*", choices=list(SIZES), default=None, help="image size classes")
    p.add_argument("--max-batch", type=int, default=4)
    p.add_argument("--max-delay-ms", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=None, help="closed-loop workers for peak throughput")


def _run(coro: Any) -> LoadResult:
    return asyncio.run(coro)


def _url(base: str, model: str) -> str:
    return f"{base}/v1/models/{model}/infer"


def _shares(res: LoadResult) -> dict[str, Any]:
    """Median ms per stage (plus ``http``) and each one's share of their sum."""
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


class _ModelOnly:
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


@register_system("serving", description="Beyond Inference: vision-serving stage breakdown, naive vs optimised "
                 "pipeline, broker between two DNNs", report_section=lambda r, o: report_section(r, o),
                 add_arguments=_add_arguments)
def bench_serving(args: BenchArgs) -> dict[str, Any]:
    from dnninfer.serving.images import jpeg_for
    from dnninfer.serving.redis_server import RedisServer, redis_missing_reason
    from dnninfer.serving.runner import ServerProcess

    cfg = dict(SMOKE if args.smoke else QUICK if args.quick else FULL)
    model = args.get("model") or "mobilenet_v2"
    default_sizes = cfg.pop("sizes", SIZES)
    sizes = tuple(args.get("sizes") or default_sizes)
    max_batch = int(args.get("max_batch") or 4)
    max_delay = float(args.get("max_delay_ms") if args.get("max_delay_ms") is not None else 5.0)
    conc = int(args.get("concurrency") or cfg["concurrency"])
    console = err_console
    common = [model, "--threads", "1", "--seed", str(args.seed), "--max-queue", str(max(64, 4 * conc))]
    opt_args = ["--pipeline", "optimized", "--max-batch", str(max_batch), "--max-delay-ms", str(max_delay),
                "--decode-workers", "2"]
    redis_reason = redis_missing_reason()
    redis = None
    servers: dict[str, ServerProcess] = {}
    errors = 0
    rows: list[dict[str, Any]] = []
    try:
        t0 = time.perf_counter()
        if redis_reason is None:
            try:
                redis = RedisServer().start()
            except RuntimeError as e:
                redis_reason = str(e)
        servers["naive"] = ServerProcess([*common, "--pipeline", "naive", "--broker", "none"]).launch()
        # one optimised server carries both brokers, so the broker is the only difference between them
        brokers = ["--broker", "queue"] if redis is None else ["--broker", "queue,redis", "--redis-url", redis.url]
        servers["optimized"] = ServerProcess([*common, *opt_args, *brokers]).launch()
        images = {s: [jpeg_for(s, seed=args.seed + i) for i in range(cfg["images"])] for s in sizes}
        for s in servers.values():
            s.wait()
        console.print(f"serving: servers up, images ready in {time.perf_counter() - t0:.1f} s", style="dim")
        # the model alone, measured while the servers sit idle (never while they start)
        model_only = _ModelOnly(model, max_batch, args.seed)
        measured: dict[tuple[str, str], dict[str, Any]] = {}
        with make_progress() as bar:
            task = bar.add_task("serving: load", total=len(sizes) * (1 + cfg["rounds"]))
            for size in sizes:
                got, errs = _measure_size(servers, model, images[size], cfg, conc, model_only, args.seed,
                                          lambda: bar.advance(task))
                errors += errs
                for pipe in PIPES:
                    measured[(size, pipe)] = got[pipe]

        console.print(f"serving: load phases done at {time.perf_counter() - t0:.1f} s", style="dim")
        broker_bodies = images.get("medium") or next(iter(images.values()))
        broker_rows, broker_hops = _broker_part(servers, redis, cfg, broker_bodies)
        errors += sum(r["errors"] for r in broker_rows)
        console.print(f"serving: broker phase done at {time.perf_counter() - t0:.1f} s", style="dim")
    finally:
        for s in servers.values():
            s.stop()
        if redis is not None:
            redis.stop()

    for (size, pipe), m in measured.items():
        rows.append({
            "kind": "pipeline", "size": size, "pipeline": pipe, "model": model,
            "body_bytes": len(images[size][0]),
            "latency_p50_ms": m["latency_p50_ms"], "latency_p90_ms": m["latency_p90_ms"],
            "server_total_p50_ms": m["server_total_p50_ms"],
            "preprocess_share": m["preprocess_share"],
            **{f"ms_{k}": v for k, v in m["stage_ms"].items()},
            **{f"share_{k}": v for k, v in m["stage_share"].items()},
            "throughput_rps": m["throughput_rps"], "throughput_rounds": m["throughput_rounds"],
            "model_only_ips": m["model_only_ips"], "e2e_over_model_only": m["e2e_over_model_only"],
            "loadavg_1m": m["loadavg_1m"],
            "statuses": m["statuses"], "concurrency": conc, "mean_batch_at_peak": m["mean_batch_at_peak"],
            **({f"open_loop_{k}": v for k, v in m["open_loop"].items()} if "open_loop" in m else {}),
        })
    rows += broker_rows

    def per_size(key: str, pipe: str) -> dict[str, float]:
        return {s: measured[(s, pipe)][key] for s in sizes}

    thr = {s: {p: measured[(s, p)]["throughput_rps"] for p in PIPES} for s in sizes}
    ours: dict[str, Any] = {
        "preprocess_share": per_size("preprocess_share", "naive"),
        "preprocess_share_optimized": per_size("preprocess_share", "optimized"),
        "throughput_rps": thr,
        "speedup": {s: thr[s]["optimized"] / thr[s]["naive"] for s in sizes},
        "speedup_large": thr["large"]["optimized"] / thr["large"]["naive"] if "large" in thr else None,
        "e2e_over_model_only": {p: per_size("e2e_over_model_only", p) for p in PIPES},
        "model_only_ips": {p: statistics.median(measured[(s, p)]["model_only_ips"] for s in sizes) for p in PIPES},
        "broker_hop_ms": broker_hops["pipeline"],
        "broker_hop_ms_raw": broker_hops["raw"],
        "errors": errors,
        "model": model, "max_batch": max_batch, "max_delay_ms": max_delay, "concurrency": conc,
    }
    if all("open_loop" in measured[(s, p)] for s in sizes for p in PIPES):
        ours["open_loop_p99_ms"] = {s: {p: measured[(s, p)]["open_loop"]["p99_ms"] for p in PIPES} for s in sizes}
    if redis_reason:
        ours["redis_skipped"] = redis_reason
    result = {"paper": PAPER, "ours": ours, "rows": rows,
              "config": {**cfg, "model": model, "sizes": list(sizes), "threads": 1,
                         "images": {s: {"bytes": len(images[s][0])} for s in sizes},
                         "note": "server subprocesses and the load generator share this host's cores"}}
    if args.out:
        plots(result, Path(args.out))
    return result


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


def _measure_size(servers: dict[str, Any], model: str, bodies: list[bytes], cfg: dict[str, Any], conc: int,
                  model_only: _ModelOnly, seed: int, advance: Any) -> tuple[dict[str, dict[str, Any]], int]:
    """Low-load breakdown, then ``rounds`` of (closed-loop peak per pipeline, AB/BA, and the model
    alone), then optional open-loop tail latency at one offered load for both."""
    import os

    urls = {p: _url(servers[p].url, model) for p in PIPES}
    errors = 0
    low = asyncio.run(_lowload(urls, bodies, cfg["lowload"]))
    out: dict[str, dict[str, Any]] = {p: {"low": low[p], **_shares(low[p]), "throughput_rounds": [],
                                          "batches": [], "statuses": {}, "model_only_rounds": []} for p in PIPES}
    errors += sum(len(r.records) - len(r.ok) for r in low.values())
    advance()
    for rnd in range(cfg["rounds"]):
        for pipe in PIPES if rnd % 2 == 0 else PIPES[::-1]:
            m = out[pipe]
            before = _batch_counts(servers[pipe].url, model)
            res = _run(closed_loop(urls[pipe], bodies, concurrency=conc, requests=cfg["peak_requests"],
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
            res = _run(open_loop(urls[pipe], bodies, rate=rate, requests=cfg["peak_requests"],
                                 duration_s=cfg["open_loop_s"], seed=seed))
            errors += len(res.records) - len(res.ok)
            lat = [r.latency_s * 1e3 for r in res.ok]
            out[pipe]["open_loop"] = {"rate_rps": rate, "sent": len(res.records), "p50_ms": percentile(lat, 50),
                                      "p99_ms": percentile(lat, 99)}
    return out, errors


def _broker_part(servers: dict[str, Any], redis: Any, cfg: dict[str, Any],
                 bodies: list[bytes]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Two-DNN pipeline at low load through each broker, plus the raw put -> get hop."""
    from dnninfer.serving.broker import QueueBroker, RedisBroker

    rows = []
    hops: dict[str, Any] = {"pipeline": {}, "raw": {}}
    kinds = ["queue"] + (["redis"] if redis is not None else [])
    for kind in kinds:
        url = _url(servers["optimized"].url, "detect_classify") + f"?broker={kind}"
        _run(closed_loop(url, bodies, concurrency=1, requests=2, duration_s=30))
        res = _run(closed_loop(url, bodies, concurrency=1, requests=cfg["broker_requests"], duration_s=60,
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


# -- plots and report -------------------------------------------------------------------------------
COLOURS = {"receive": "#8c564b", "decode": "#d62728", "resize": "#ff7f0e", "normalise": "#bcbd22",
           "queue": "#9467bd", "infer": "#1f77b4", "post": "#17becf", "serialise": "#7f7f7f", "http": "#c7c7c7"}


def plots(result: dict[str, Any], outdir: Path) -> list[Path]:
    """Stacked stage shares per size and pipeline; peak throughput naive vs optimised."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    rows = [r for r in result["rows"] if r.get("kind") == "pipeline"]
    if not rows:
        return []
    labels = [f"{r['size']}\n{r['pipeline']}" for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4.8))
    bottom = [0.0] * len(rows)
    # everything beyond inference stacks from the bottom, the DNN on top: the bar height below the
    # blue part is the non-DNN share, comparable with the paper's line
    order = [s for s in SHARE_STAGES if s not in DNN_STAGES] + [s for s in SHARE_STAGES if s in DNN_STAGES]
    for stage in order:
        vals = [100 * r.get(f"share_{stage}", 0.0) for r in rows]
        ax.bar(labels, vals, bottom=bottom, label=stage, color=COLOURS.get(stage), edgecolor="white", linewidth=0.4)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    paper = 100 * result["paper"]["preprocess_share_medium"]
    ax.axhline(paper, color="black", linestyle="--", linewidth=0.8)
    ax.text(-0.4, paper + 1, f"paper: non-DNN share up to {paper:.0f}% (medium, GPU)", ha="left", fontsize=8)
    ax.set_ylabel("share of end-to-end latency at low load (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Where a request's time goes ({result['ours'].get('model', '')}, 1 thread, 2-core CPU)")
    ax.legend(ncol=1, fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    shares = outdir / "serving_stage_shares.png"
    fig.savefig(shares, dpi=110)
    plt.close(fig)

    sizes = list(dict.fromkeys(r["size"] for r in rows))
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.38
    for i, pipe in enumerate(PIPES):
        vals = [next((r["throughput_rps"] for r in rows if r["size"] == s and r["pipeline"] == pipe), 0.0)
                for s in sizes]
        ax.bar([j + (i - 0.5) * width for j in range(len(sizes))], vals, width, label=pipe)
    for i, pipe in enumerate(PIPES):  # the model alone at that pipeline's batch size: the ceiling
        for j, s in enumerate(sizes):
            mo = next((r["model_only_ips"] for r in rows if r["size"] == s and r["pipeline"] == pipe), None)
            if mo:
                x = j + (i - 0.5) * width
                ax.hlines(mo, x - width / 2, x + width / 2, colors="black", linestyles="dashed", linewidth=1,
                          label="model only" if i == 0 and j == 0 else None)
    ax.set_xticks(range(len(sizes)), sizes)
    ax.set_ylabel("peak throughput (requests/s)")
    ax.set_title("Closed-loop peak throughput, naive vs optimised")
    top = max([r["throughput_rps"] for r in rows] + [r.get("model_only_ips") or 0 for r in rows])
    ax.set_ylim(0, 1.3 * top)
    ax.legend(loc="upper center", ncol=3, fontsize=8)
    fig.tight_layout()
    thr = outdir / "serving_throughput.png"
    fig.savefig(thr, dpi=110)
    plt.close(fig)
    return [shares, thr]


def report_section(result: dict[str, Any], outdir: Path) -> ReportSection:
    from dnninfer.report.html import figure_html, table_html

    images = plots(result, outdir)
    ours, paper = result["ours"], result["paper"]
    e2e = ours["e2e_over_model_only"]
    head = [
        {"figure": "non-DNN share of latency, medium (naive)", "paper": paper["preprocess_share_medium"],
         "ours": ours["preprocess_share"].get("medium")},
        {"figure": "non-DNN share, small / large (naive)", "paper": "",
         "ours": f"{ours['preprocess_share'].get('small', float('nan')):.2f} / "
                 f"{ours['preprocess_share'].get('large', float('nan')):.2f}"},
        {"figure": "e2e / model-only throughput, large (naive)", "paper": paper["e2e_over_model_only_large"],
         "ours": e2e["naive"].get("large")},
        {"figure": "e2e / model-only throughput, large (optimised)", "paper": "",
         "ours": e2e["optimized"].get("large")},
        {"figure": "optimised / naive throughput, large", "paper": paper["speedup"], "ours": ours["speedup_large"]},
        {"figure": "broker hop p50 / p99 ms, queue", "paper": "",
         "ours": _fmt_hop(ours["broker_hop_ms"].get("queue"))},
        {"figure": "broker hop p50 / p99 ms, Redis", "paper": "",
         "ours": _fmt_hop(ours["broker_hop_ms"].get("redis"))},
        {"figure": "errors", "paper": "", "ours": ours["errors"]},
    ]
    parts = [
        "<p>Measured over HTTP on 127.0.0.1 against server subprocesses on a 2-core CPU (the load generator "
        "shares the cores). The paper measured a GPU server (Triton, TensorRT), where the DNN is far faster than "
        "here, so its non-DNN shares are larger; compare directions, not magnitudes.</p>",
        table_html(head, ["figure", "paper", "ours"]),
    ]
    captions = ["Stage shares of end-to-end latency at low load, per image size and pipeline.",
                "Peak throughput under closed-loop load."]
    parts += [figure_html(p, c, base=outdir) for p, c in zip(images, captions, strict=False)]
    cols = ["size", "pipeline", "body_bytes", "latency_p50_ms", "preprocess_share", "ms_decode", "ms_resize",
            "ms_queue", "ms_infer", "ms_http", "throughput_rps", "model_only_ips", "e2e_over_model_only"]
    parts += ["<h3>Per size and pipeline</h3>",
              table_html([r for r in result["rows"] if r.get("kind") == "pipeline"], cols),
              "<h3>Broker between the two DNNs</h3>",
              table_html([r for r in result["rows"] if r.get("kind") == "broker"])]
    return ReportSection(title="Beyond Inference: vision serving overheads", html="\n".join(parts), images=images)


def _fmt_hop(h: dict[str, float] | None) -> str:
    return "skipped" if not h else f"{h['p50']:.3f} / {h['p99']:.3f}"
