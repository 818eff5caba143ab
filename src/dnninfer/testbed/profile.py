"""`dnninfer profile MODEL --cluster testbed|HOST:PORT`: per-node latency measured on every PU of a
running cluster, through Ray, written as a measured profile (`cost.measured.ClusterProfile`).

The same code runs on the testbed (each PU one thread under its cgroup quota; times divided by the
dilation) and on real boards joined to a Ray cluster by hand (each PU with all its lanes). Each node
rebuilds the model from its source and captures it itself; a node whose graph, torch or dnninfer
differs from the driver's is refused, naming it. PUs of different nodes are measured at the same
time, the PUs of one node one after another (on a board they would share its memory and caches).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dnninfer.cost.measured import ClusterProfile
from dnninfer.errors import UserError
from dnninfer.testbed.core import TestbedState
from dnninfer.testbed.runtime import ModelSource, TestbedRuntime, task_error_line

__all__ = ["profile_cluster"]


def profile_cluster(source: ModelSource, state: TestbedState | None = None, *, warmup: int = 2, repeats: int = 5,
                    runtime: TestbedRuntime | None = None,
                    log: Callable[[str], None] | None = None) -> ClusterProfile:
    """Measure `source`'s per-node seconds on every PU of the cluster; undilated seconds."""
    import dnninfer
    from dnninfer.cost.measure import graph_key
    from dnninfer.env import capture_env

    rt = runtime or TestbedRuntime(state)  # joins the cluster: Ray must not be imported before it
    state = rt.state
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

    loaded, graph = source.capture()
    key = graph_key(graph)
    say = log or (lambda msg: None)
    rounds: list[list[str]] = []
    for n in state.nodes:
        for i, pu in enumerate(n.pus):
            if i == len(rounds):
                rounds.append([])
            rounds[i].append(f"{n.name}/{pu}")
    answers = []
    targets: list[str] = []
    try:
        for targets in rounds:
            say(f"profiling {loaded.name} on {', '.join(targets)}")
            answers += ray.get([rt.actor(t).profile.remote(source, warmup, repeats) for t in targets], timeout=3600)
    except RayTaskError as e:
        raise UserError(task_error_line(e)) from None
    except (RayActorError, GetTimeoutError) as e:  # a worker that died or never answered: name where
        raise UserError(f"profiling on {', '.join(targets)} failed ({type(e).__name__}): "
                        f"{str(e).strip().splitlines()[0] if str(e).strip() else 'no answer'}") from None
    finally:
        if runtime is None:
            rt.shutdown()
    import torch

    for a in answers:
        if (a["torch"], a["dnninfer"]) != (torch.__version__, dnninfer.__version__):
            raise UserError(f"node {a['target']}: torch {a['torch']} / dnninfer {a['dnninfer']}, the driver has "
                            f"{torch.__version__} / {dnninfer.__version__}")
        if a["graph_key"] != key:
            raise UserError(f"node {a['target']}: built another graph of {loaded.name!r} ({a['graph_key']}, the "
                            f"driver's is {key}): a different model source on that node")
    d = state.dilation
    env = {k: v for k, v in capture_env().items() if k in ("torch", "python", "loadavg", "timestamp")}
    return ClusterProfile(
        model=loaded.name, graph_key=key, cluster=state.cluster, where="real boards " + state.address
        if state.boards else "testbed", dilation=d,
        targets={a["target"]: {n: s / d for n, s in a["node_s"].items()} for a in answers},
        whole_model_s={a["target"]: a["whole_model_s"] / d for a in answers},
        env={**env, "warmup": warmup, "repeats": repeats, "note": "undilated seconds; " + (
            "measured on real boards" if state.boards else "each PU one thread under its cgroup quota")})


def resolve_cluster(where: str, config: str | None) -> TestbedState:
    """`testbed` (the running testbed) or a Ray address of real boards with their cluster YAML."""
    if where == "testbed":
        if config is not None:
            raise UserError("--config: only with --cluster HOST:PORT (a testbed knows its cluster)")
        return TestbedState.load()
    if config is None:
        raise UserError(f"--cluster {where}: real boards need --config CLUSTER (the YAML naming their nodes and PUs)")
    return TestbedState.for_boards(where, config)


def summary_rows(profile: ClusterProfile, cluster: Any, host_whole_s: float) -> list[dict[str, Any]]:
    """Per PU: measured whole-model seconds and the speed it implies (the host's one-thread
    whole-model time over the PU's), beside the cited speed."""
    rows = []
    for target, per in profile.targets.items():
        node, pu = target.split("/", 1)
        p = cluster.device(node).pu(pu)
        total = sum(per.values())
        rows.append({"target": target, "measured_ms": round(total * 1e3, 3),
                     "whole_model_ms": round(profile.whole_model_s.get(target, 0.0) * 1e3, 3),
                     "measured_speed": round(host_whole_s / profile.whole_model_s.get(target, total), 4),
                     "cited_speed": round(p.rate("conv"), 4)})
    return rows
