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
  put -> get micro-benchmark;
* GPU-side serving (``gpu_preprocess_share``, ``gpu_speedup_large``): never measured here, read from
  the latest GPU check recorded in docs/results/gpu/ with its machine and date (``gpu_source``,
  ``gpu_note``), null when none is.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from dnninfer.bench.output import err_console, make_progress
from dnninfer.bench.registry import BenchArgs, register_system
from dnninfer.serving.phases import PIPES, ModelOnly, broker_part, measure_size
from dnninfer.serving.report import CLAIMS, plots, report_section

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
QUICK = {"lowload": 4, "peak_s": 1.5, "peak_requests": 60, "rounds": 1, "broker_requests": 5, "micro": 100,
         "images": 1, "model_repeats": 3, "concurrency": 8}
FULL = {"lowload": 30, "peak_s": 6.0, "peak_requests": 3000, "rounds": 4, "broker_requests": 40, "micro": 2000,
        "images": 3, "model_repeats": 8, "concurrency": 8, "open_loop_s": 8.0, "open_loop_load": 0.6}
#: --smoke (the test suite's run): the small images only, one short round of every phase, both brokers.
SMOKE = {"lowload": 2, "peak_s": 0.5, "peak_requests": 16, "rounds": 1, "broker_requests": 2, "micro": 20,
         "images": 1, "model_repeats": 2, "concurrency": 8, "sizes": ("small",)}


def _add_arguments(p: Any) -> None:
    p.add_argument("--model", default="mobilenet_v2", help="zoo classifier served (default mobilenet_v2)")
    p.add_argument("--sizes", nargs="*", choices=list(SIZES), default=None, help="image size classes")
    p.add_argument("--max-batch", type=int, default=4)
    p.add_argument("--max-delay-ms", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=None, help="closed-loop workers for peak throughput")


@register_system("serving", description="Beyond Inference: vision-serving stage breakdown, naive vs optimised "
                 "pipeline, broker between two DNNs", report_section=report_section,
                 add_arguments=_add_arguments, headline=CLAIMS[0])
def bench_serving(args: BenchArgs) -> dict[str, Any]:
    from dnninfer.schedule.gpu_results import recorded_part
    from dnninfer.serving.images import jpeg_for
    from dnninfer.serving.redis_server import RedisServer, redis_missing_reason
    from dnninfer.serving.runner import ServerProcess

    cfg = dict(args.pick(FULL, QUICK, SMOKE))
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
        model_only = ModelOnly(model, max_batch, args.seed)
        measured: dict[tuple[str, str], dict[str, Any]] = {}
        with make_progress() as bar:
            task = bar.add_task("serving: load", total=len(sizes) * (1 + cfg["rounds"]))
            for size in sizes:
                got, errs = measure_size(servers, model, images[size], cfg, conc, model_only, args.seed,
                                          lambda: bar.advance(task))
                errors += errs
                for pipe in PIPES:
                    measured[(size, pipe)] = got[pipe]

        console.print(f"serving: load phases done at {time.perf_counter() - t0:.1f} s", style="dim")
        broker_bodies = images.get("medium") or next(iter(images.values()))
        broker_rows, broker_hops = broker_part(servers, redis, cfg, broker_bodies)
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
    # GPU-side serving is measured only by the GPU check (serving/gpu.py): its recorded figures, labelled
    ours.update(recorded_part("serving", ("gpu_preprocess_share", "gpu_speedup_large", "gpu_speedup",
                                          "gpu_throughput_rps")))
    result = {"paper": PAPER, "ours": ours, "rows": rows,
              "config": {**cfg, "model": model, "sizes": list(sizes), "threads": 1,
                         "images": {s: {"bytes": len(images[s][0])} for s in sizes},
                         "note": "server subprocesses and the load generator share this host's cores"}}
    if args.out:
        plots(result, Path(args.out))
    return result
