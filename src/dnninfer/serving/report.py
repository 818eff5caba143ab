"""The serving report section: paper-vs-ours lines, the stage-share and throughput plots, the tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dnninfer.bench.claims import Claim, lookup
from dnninfer.bench.figures import Figures
from dnninfer.report.section import ReportSection, Table, build_section
from dnninfer.serving.phases import SHARE_STAGES
from dnninfer.serving.timing import DNN_STAGES

SETTING = ("the paper measured a GPU server (Triton, TensorRT), where the DNN is far faster than on this 2-core "
           "CPU, so its non-DNN shares are larger; compare directions, not magnitudes")


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _hop(result: dict[str, Any], broker: str) -> str:
    h = lookup(result, f"broker_hop_ms.{broker}")
    return "skipped" if not h else f"{h['p50']:.3f} / {h['p99']:.3f}"


CLAIMS = (
    Claim("non-DNN share of end-to-end latency, medium image (naive)", "up to 56% (GPU server)",
          "preprocess_share.medium", fmt=".1%",
          note="the DNN is far faster on the paper's GPU than here, so the non-DNN share there is larger"),
    Claim("non-DNN share, small / large image (naive)",
          ours=lambda r: " / ".join(_pct(lookup(r, f"preprocess_share.{s}")) for s in ("small", "large")),
          note="decode, resize, normalise, queue, serialise and HTTP over the whole request, at low load"),
    Claim("end-to-end / model-only throughput, large image (naive)", "19.5% (third-party summary, unverified)",
          "e2e_over_model_only.naive.large", fmt=".1%",
          note="model alone at the pipeline's batch and layout, same thread count, measured in the same rounds"),
    Claim("end-to-end / model-only throughput, large image (optimised)", ours="e2e_over_model_only.optimized.large",
          fmt=".1%"),
    Claim("optimised / naive peak throughput, large image", "2.25x (over prior work)", "speedup_large",
          target=2.25, fmt="x",
          note="ours: our optimised pipeline over our naive one, closed loop, rounds interleaved; the paper's is "
               "its system over prior work on a GPU"),
    Claim("broker hop p50 / p99 ms, in-process queue", ours=lambda r: _hop(r, "queue"),
          note="detector -> per-crop classifier, inside the running two-DNN pipeline"),
    Claim("broker hop p50 / p99 ms, Redis", ours=lambda r: _hop(r, "redis"),
          note=lambda r: lookup(r, "redis_skipped") or "a real redis-server on 127.0.0.1"),
    Claim("failed requests", "0", "errors", target=0, better="lower"),
    Claim("GPU: GPU-decode / CPU-decode peak throughput, large image", "2.25x (over prior work)", "gpu_speedup_large",
          target=2.25, fmt="x", note=lambda r: str(lookup(r, "gpu_note") or "")),
    Claim("GPU: non-DNN share, GPU-decode pipeline, medium image", "up to 56% (GPU server)",
          "gpu_preprocess_share.medium", fmt=".1%", note=lambda r: str(lookup(r, "gpu_note") or "")),
)

COLOURS = {"receive": "#8c564b", "decode": "#d62728", "resize": "#ff7f0e", "normalise": "#bcbd22",
           "queue": "#9467bd", "infer": "#1f77b4", "post": "#17becf", "serialise": "#7f7f7f", "http": "#c7c7c7"}


def _pipeline_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in result["rows"] if r.get("kind") == "pipeline"]


def plots(result: dict[str, Any], outdir: Path) -> Figures:
    """Stacked stage shares per size and pipeline; peak throughput naive vs optimised."""
    figs = Figures(outdir)
    rows = _pipeline_rows(result)
    if not rows:
        return figs
    labels = [f"{r['size']}\n{r['pipeline']}" for r in rows]
    with figs.plot("serving_stage_shares.png", "Stage shares of end-to-end latency at low load, per image size "
                   "and pipeline.", figsize=(9, 4.8)) as (_, ax):
        bottom = [0.0] * len(rows)
        # everything beyond inference stacks from the bottom, the DNN on top: the bar height below the
        # blue part is the non-DNN share, comparable with the paper's line
        order = [s for s in SHARE_STAGES if s not in DNN_STAGES] + [s for s in SHARE_STAGES if s in DNN_STAGES]
        for stage in order:
            vals = [100 * r.get(f"share_{stage}", 0.0) for r in rows]
            ax.bar(labels, vals, bottom=bottom, label=stage, color=COLOURS.get(stage), edgecolor="white",
                   linewidth=0.4)
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        paper = 100 * result["paper"]["preprocess_share_medium"]
        ax.axhline(paper, color="black", linestyle="--", linewidth=0.8)
        ax.text(-0.4, paper + 1, f"paper: non-DNN share up to {paper:.0f}% (medium, GPU)", ha="left", fontsize=8)
        ax.set(ylabel="share of end-to-end latency at low load (%)", ylim=(0, 100),
               title=f"Where a request's time goes ({result['ours'].get('model', '')}, 1 thread, 2-core CPU)")
        ax.legend(ncol=1, fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")

    sizes = list(dict.fromkeys(r["size"] for r in rows))
    pipes = list(dict.fromkeys(r["pipeline"] for r in rows))
    with figs.plot("serving_throughput.png", "Peak throughput under closed-loop load; dashed: the model alone at "
                   "that pipeline's batch size (the ceiling).", figsize=(7, 4)) as (_, ax):
        width = 0.38
        cell = {(r["size"], r["pipeline"]): r for r in rows}
        for i, pipe in enumerate(pipes):
            vals = [cell[(s, pipe)]["throughput_rps"] if (s, pipe) in cell else 0.0 for s in sizes]
            ax.bar([j + (i - 0.5) * width for j in range(len(sizes))], vals, width, label=pipe)
        for i, pipe in enumerate(pipes):
            for j, s in enumerate(sizes):
                if mo := (cell.get((s, pipe)) or {}).get("model_only_ips"):
                    x = j + (i - 0.5) * width
                    ax.hlines(mo, x - width / 2, x + width / 2, colors="black", linestyles="dashed", linewidth=1,
                              label="model only" if i == 0 and j == 0 else None)
        ax.set_xticks(range(len(sizes)), sizes)
        top = max([r["throughput_rps"] for r in rows] + [r.get("model_only_ips") or 0 for r in rows])
        ax.set(ylabel="peak throughput (requests/s)", title="Closed-loop peak throughput, naive vs optimised",
               ylim=(0, 1.3 * top))
        ax.legend(loc="upper center", ncol=3, fontsize=8)
    return figs


def report_section(result: dict[str, Any], outdir: Path) -> ReportSection:
    cols = ["size", "pipeline", "body_bytes", "latency_p50_ms", "preprocess_share", "ms_decode", "ms_resize",
            "ms_queue", "ms_infer", "ms_http", "throughput_rps", "model_only_ips", "e2e_over_model_only"]
    parts: list[Any] = [
        plots(result, outdir),
        Table(_pipeline_rows(result), "Per size and pipeline", cols),
        Table([r for r in result["rows"] if r.get("kind") == "broker"], "Broker between the two DNNs"),
    ]
    return build_section("Beyond Inference: vision serving overheads", result, outdir, claims=CLAIMS, parts=parts,
                         intro="Measured over HTTP on 127.0.0.1 against server subprocesses on a 2-core CPU (the "
                               f"load generator shares the cores); {SETTING}.")
