"""How good the simulator's latency is, on the only cluster we can run: host cores under Ray.

Every latency, energy and throughput figure of the HiDP bench is predicted by the cost model that
also chooses the plans, so it cannot vouch for itself. Here each strategy's latency plan is
deployed on the Ray runtime over a cluster of host cores (one actor per node) and timed; the
median wall time is set against the prediction, with and without Ray's own per-call cost (which
the simulator does not model: it predicts devices and links, not the runtime).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from dnninfer.graph import max_abs_diff

__all__ = ["host_check", "ray_overhead"]


def host_check(graphs: Mapping[str, Any], strategies: Sequence[str], *, repeats: int, profile_repeats: int,
               cluster: str = "local3") -> list[dict[str, Any]]:
    """Predicted vs measured latency of each strategy's latency plan for each model of ``graphs``
    (``name -> (model, inputs, graph, reference output)``), run on Ray over ``cluster``."""
    from dnninfer.bench.harness import measure
    from dnninfer.bench.output import make_progress
    from dnninfer.cost import load_cluster
    from dnninfer.partition.costmodel import CostModel
    from dnninfer.partition.execute import materialize
    from dnninfer.partition.strategies import STRATEGIES
    from dnninfer.runtime import RayRuntime

    nodes = load_cluster(cluster)
    out = []
    with RayRuntime(threads=1) as rt, make_progress() as bar:
        task = bar.add_task("hidp: host check on Ray", total=len(graphs) * len(strategies))
        for name, (_model, inputs, g, ref) in graphs.items():
            cm = CostModel.build(g, nodes, host="measure", repeats=profile_repeats)
            overhead = ray_overhead(rt, inputs, repeats)
            for strategy in strategies:
                p = STRATEGIES[strategy](cm, "latency")
                dep = materialize(p, cm)
                rt.deploy(dep.stages, dep.placement, dep.links)
                result = rt.run(dep.graph, inputs, source=dep.source)
                t = measure(lambda d=dep, x=inputs: rt.run(d.graph, x, source=d.source), warmup=1, repeats=repeats)
                measured = t.median
                out.append({"model": name, "strategy": strategy, "mode": p.mode, "stages": len(dep.stages),
                            "predicted_ms": p.latency_s * 1e3, "measured_ms": measured * 1e3,
                            "iqr_ms": t.iqr * 1e3, "rel_error": abs(measured - p.latency_s) / measured,
                            "ray_call_ms": overhead * 1e3,
                            "rel_error_with_ray_call": abs(measured - p.latency_s - overhead) / measured,
                            "max_abs_err": max_abs_diff(result.output, ref)})
                bar.advance(task)
    return out


class _Touch(torch.nn.Module):
    """A stage that reads the whole input and returns a few numbers: one Ray call, no model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().mean(dim=tuple(range(1, x.dim())))


def ray_overhead(rt: Any, inputs: Sequence[Any], repeats: int) -> float:
    """Median seconds of a one-stage Ray call that moves this model's input: the runtime's own cost."""
    from dnninfer.bench.harness import measure
    from dnninfer.graph import capture

    g = capture(_Touch(), inputs[:1], name="touch")
    stages = g.split({n.name: 0 for n in g.compute_nodes()})
    rt.deploy(stages, ["n1/cpu"], None)
    return measure(lambda: rt.run(g, inputs[:1], source="n1/cpu"), warmup=1, repeats=repeats).median
