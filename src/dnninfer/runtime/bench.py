"""`dnninfer bench runtime`: what running a model as split stages costs over running it whole.

Not a paper's system but the floor under every partitioner: the in-process runtime should add
almost nothing, and the Ray runtime's per-hop cost (actor call + object store) is what a plan's
predicted latency must include. Stages are an equal-FLOPs 3-way chain split (2-way in --smoke); no link emulation,
so the ratios are pure runtime overhead on this machine.
"""

from __future__ import annotations

from typing import Any

import torch

from dnninfer.bench.harness import compare
from dnninfer.bench.registry import BenchArgs, register_system
from dnninfer.bench.stats import median
from dnninfer.env import pinned_threads
from dnninfer.graph import max_abs_diff
from dnninfer.runtime.report import CLAIMS, report_section

FULL = {"models": ("digits_cnn", "resnet18", "mobilenet_v2", "googlenet"), "stages": 3, "repeats": 25, "warmup": 5}
QUICK = {"models": ("digits_cnn", "resnet18"), "stages": 3, "repeats": 8, "warmup": 2}
#: --smoke: the smallest model in 2 stages (one inter-actor hop, one actor fewer to start), 2 timed rounds
#: after 1 warm-up; every runtime and the error check still run
SMOKE = {"models": ("digits_cnn",), "stages": 2, "repeats": 2, "warmup": 1}


@register_system("runtime", description="split-model runtime overhead: whole vs in-process stages vs Ray actors",
                 report_section=report_section, headline=CLAIMS[0])
def bench_runtime(args: BenchArgs) -> dict[str, Any]:
    from dnninfer import zoo
    from dnninfer.graph import capture, equal_flops_chain
    from dnninfer.runtime import RayRuntime, run_inprocess

    cfg = args.pick(FULL, QUICK, SMOKE)
    models, n_stages, repeats, warmup = cfg["models"], cfg["stages"], cfg["repeats"], cfg["warmup"]
    rows = []
    with pinned_threads(1), torch.no_grad(), RayRuntime(threads=1) as rt:
        for name in models:
            model = zoo.build_model(name, seed=args.seed)
            inputs = zoo.example_inputs(name, seed=args.seed)
            g = capture(model, inputs, name=name)
            stages = g.split(equal_flops_chain(g, n_stages))
            placement = [f"n{i}" for i in range(len(stages))]
            rt.deploy(stages, placement)
            ref = model(*inputs)
            # one call over both outputs: a NaN in either stays NaN (Python's max() could drop it)
            err = max_abs_diff((run_inprocess(g, stages, inputs, placement=placement).output,
                                rt.run(g, inputs).output), (ref, ref))
            t = compare({
                "whole": lambda m=model, x=inputs: m(*x),
                "inprocess": lambda g=g, s=stages, x=inputs, p=placement: run_inprocess(g, s, x, placement=p),
                "ray": lambda g=g, x=inputs: rt.run(g, x),
            }, warmup=warmup, repeats=repeats, seed=args.seed, description=name)
            whole = t["whole"].median
            rows.append({
                "model": name, "stages": len(stages), "max_abs_err": err,
                "whole_ms": whole * 1e3, "inprocess_ms": t["inprocess"].median * 1e3,
                "ray_ms": t["ray"].median * 1e3,
                "inprocess_over_whole": t["inprocess"].median / whole,
                "ray_over_whole": t["ray"].median / whole,
                "ray_overhead_ms": (t["ray"].median - whole) * 1e3,
                "iqr_whole_ms": t["whole"].iqr * 1e3, "iqr_ray_ms": t["ray"].iqr * 1e3,
            })
    return {
        "paper": {"note": "foundation runtime: no paper figure; overheads bound every partitioner's gain"},
        "ours": {
            "models": len(rows),
            "max_abs_err": max(r["max_abs_err"] for r in rows),
            "median_inprocess_over_whole": median([r["inprocess_over_whole"] for r in rows]),
            "median_ray_over_whole": median([r["ray_over_whole"] for r in rows]),
            "median_ray_overhead_ms": median([r["ray_overhead_ms"] for r in rows]),
        },
        "rows": rows,
    }
