"""`dnninfer bench runtime`: what running a model as split stages costs over running it whole.

Not a paper's system but the floor under every partitioner: the in-process runtime should add
almost nothing, and the Ray runtime's per-hop cost (actor call + object store) is what a plan's
predicted latency must include. Stages are an equal-FLOPs 3-way chain split (2-way in --smoke); no link emulation,
so the ratios are pure runtime overhead on this machine.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils import _pytree as pytree

from dnninfer.bench.harness import compare, pinned_threads
from dnninfer.bench.registry import BenchArgs, register_system
from dnninfer.bench.stats import median

QUICK_MODELS = ("digits_cnn", "resnet18")
FULL_MODELS = ("digits_cnn", "resnet18", "mobilenet_v2", "googlenet")
#: --smoke: the smallest model in 2 stages (one inter-actor hop, one actor fewer to start), 2 timed rounds
#: after 1 warm-up; every runtime and the error check still run
SMOKE = {"models": ("digits_cnn",), "stages": 2, "repeats": 2, "warmup": 1}


def _max_err(a: Any, b: Any) -> float:
    return max((x - y).abs().max().item() for x, y in zip(pytree.tree_leaves(a), pytree.tree_leaves(b), strict=True))


@register_system("runtime", description="split-model runtime overhead: whole vs in-process stages vs Ray actors")
def bench_runtime(args: BenchArgs) -> dict[str, Any]:
    from dnninfer import zoo
    from dnninfer.graph import capture, equal_flops_chain
    from dnninfer.runtime import RayRuntime, run_inprocess

    models = QUICK_MODELS if args.quick else FULL_MODELS
    repeats, warmup = (8, 2) if args.quick else (25, 5)
    n_stages = 3
    if args.smoke:
        models, n_stages, repeats, warmup = SMOKE["models"], SMOKE["stages"], SMOKE["repeats"], SMOKE["warmup"]
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
            err = max(_max_err(run_inprocess(g, stages, inputs, placement=placement).output, ref),
                      _max_err(rt.run(g, inputs).output, ref))
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
