"""The report's core sections: the model zoo, and where one model's time and bytes go per layer.

These describe the shared foundation rather than a system, so `build_report` puts them first.
"""

from __future__ import annotations

from pathlib import Path

from dnninfer.report.html import figure_html, table_html
from dnninfer.report.section import ReportSection

PLOT_MODEL = "resnet18"


def zoo_section() -> tuple[ReportSection, dict]:
    from dnninfer import zoo
    from dnninfer.graph import capture

    rows = []
    for name in zoo.names():
        spec = zoo.get(name)
        g = capture(zoo.build_model(name), zoo.example_inputs(name), name=name)
        blocks = g.chain()
        rows.append({
            "model": name, "task": spec.task, "declared by": spec.origin,
            "input": " ".join(str(tuple(s.shape)) for s in spec.input_specs),
            "params": g.param_count, "GFLOPs": round(g.total_flops / 1e9, 4),
            "nodes": len(g.compute_nodes()), "chain blocks": len(blocks),
            "smallest inner cut (KB)": round(min((b.out_bytes for b in blocks[:-1]), default=0) / 1e3, 1),
            "captured via": g.method,
        })
    html = ("<p>Every model is captured once as a torch.fx DAG annotated per node with output shape, "
            "bytes, parameter bytes and FLOPs (2 x MACs for conv/linear/matmul). Parameter counts of "
            "the torchvision architectures equal torchvision's. Chain blocks are the cuts where the "
            "fewest tensors are live (articulation points for CNNs).</p>" + table_html(rows))
    return ReportSection("Model zoo", html), {"zoo": rows}


def layer_section(outdir: Path, quick: bool) -> tuple[ReportSection, dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dnninfer import zoo
    from dnninfer.cost import load_device, predict, profile
    from dnninfer.cost.predict import fit
    from dnninfer.graph import capture

    g = capture(zoo.build_model(PLOT_MODEL), zoo.example_inputs(PLOT_MODEL), name=PLOT_MODEL)
    measured = profile(g, warmup=1 if quick else 3, repeats=3 if quick else 15, threads=1)
    model = fit([(g.nodes[n], s) for n, s in measured.node_s.items()], graph=g)
    pred = {d: predict(g, load_device(d), model=model) for d in ("host", "rpi4", "jetson_nano")}
    nodes = g.compute_nodes()
    ms = [measured.node_s[n.name] * 1e3 for n in nodes]
    kb = [n.out_bytes / 1e3 for n in nodes]

    fig, (ax1, ax3) = plt.subplots(2, 1, figsize=(12, 7.5))
    x = range(len(nodes))
    ax1.bar(x, ms, color="#4878d0", label="measured latency (ms, this host, 1 thread)")
    ax1.set_ylabel("latency (ms)")
    ax1.set_xlabel(f"{PLOT_MODEL} compute nodes in execution order")
    ax2 = ax1.twinx()
    ax2.plot(x, kb, color="#ee854a", lw=1.2, label="output bytes (KB)")
    ax2.set_yscale("log")
    ax2.set_ylabel("output (KB, log)")
    ax1.set_title(f"{PLOT_MODEL}: per-layer latency and output size")
    h1, l1 = ax1.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax1.legend(h1 + h2, l1 + l2, loc="upper right", fontsize=8)
    host = [pred["host"][n.name] * 1e3 for n in nodes]
    ax3.scatter(ms, host, s=12, label="host: regression vs measured")
    for dev, color in (("rpi4", "#d65f5f"), ("jetson_nano", "#6acc64")):
        pu = load_device(dev).fastest_pu.name
        ax3.scatter(ms, [pred[dev][n.name] * 1e3 for n in nodes], s=8, color=color, label=f"{dev} {pu} (predicted)")
    lo, hi = max(min(ms), 1e-4), max(max(ms), 1e-3)
    ax3.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="y = x")
    ax3.set_xscale("log")
    ax3.set_yscale("log")
    ax3.set_xlabel("measured on this host (ms)")
    ax3.set_ylabel("predicted (ms)")
    ax3.legend(fontsize=8)
    fig.tight_layout()
    outdir.mkdir(parents=True, exist_ok=True)
    png = outdir / f"core_{PLOT_MODEL}_layers.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)

    totals = {"measured_sum_ms": sum(ms), "whole_model_ms": measured.whole_model_s * 1e3,
              **{f"predicted_{d}_ms": sum(p.values()) * 1e3 for d, p in pred.items()}}
    top_rows = sorted(({"node": n.name, "kind": n.kind, "measured_ms": round(t, 3),
                        "out_KB": round(n.out_bytes / 1e3, 1), "MFLOPs": round(n.flops / 1e6, 1)}
                       for n, t in zip(nodes, ms, strict=True)), key=lambda r: -r["measured_ms"])[:10]
    html = (f"<p>Per-node latency measured on this machine ({measured.repeats} repeats, median, 1 intra-op "
            "thread) with the output size of each node: where a partitioner can cut cheaply. The lower "
            "plot is the per-op-class regression (Neurosurgeon-style) against the measurement, and its "
            "predictions for two device profiles.</p>"
            + figure_html(png, f"{PLOT_MODEL}: per-layer latency and bytes", base=outdir)
            + table_html([{k: round(v, 2) for k, v in totals.items()}])
            + "<p>Slowest nodes:</p>" + table_html(top_rows))
    return ReportSection(f"Per-layer cost: {PLOT_MODEL}", html, [png]), {"layers": totals}


def core_sections(outdir: Path, quick: bool) -> list[ReportSection]:
    """The sections the foundation contributes to every report."""
    zoo_sec, _ = zoo_section()
    layer_sec, _ = layer_section(Path(outdir), quick)
    return [zoo_sec, layer_sec]
