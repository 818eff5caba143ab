"""Faults on the testbed: during a bounded stream of requests, one non-source device loses its link
(`ip link set ... down`) or its raylet (killed by PID); the driver re-plans over the devices left
and re-runs the request that failed. Reported: requests lost (must be 0), and the recovery time
from the fault to the first answer after it. Runs in a fresh driver process (`dnninfer testbed fault`)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import torch

from dnninfer.errors import UserError

FAULTS = ("link", "raylet")


def raylet_pid(ip: str) -> int:
    """PID of the raylet the testbed started for the device at `ip` (only among its own processes)."""
    from dnninfer.testbed import procs

    for pid in procs.tracked():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"raylet") and f"--node_ip_address={ip}".encode() in cmd:
            return pid
    raise UserError(f"testbed: no raylet of ours runs for {ip}")


def inject(state: Any, node: str, fault: str) -> None:
    from dnninfer.testbed import net

    if fault == "link":
        net.set_link(state.netnode(node), up=False)
    elif fault == "raylet":
        os.kill(raylet_pid(state.node(node).ip), signal.SIGKILL)
    else:
        raise UserError(f"--fault: expected one of {', '.join(FAULTS)}, got {fault!r}")


def fault_run(model: str, *, fault: str = "link", strategy: str = "uniform", requests: int = 8,
              at: int | None = None, timeout_s: float = 20.0, seed: int = 0, host: str = "flops") -> dict[str, Any]:
    """Serve `requests` requests one after another; inject `fault` on a non-source device of the plan
    before request `at` (default: a third of the way); on a failure re-plan without that device."""
    from dnninfer import zoo
    from dnninfer.graph import capture, max_abs_diff
    from dnninfer.partition.costmodel import CostModel
    from dnninfer.partition.execute import materialize
    from dnninfer.partition.replan import without_node
    from dnninfer.partition.strategies import plan as make_plan
    from dnninfer.runtime.ray_runtime import NodeFailure
    from dnninfer.testbed.core import TestbedState
    from dnninfer.testbed.runtime import ModelSource, TestbedRuntime

    if fault not in FAULTS:
        raise UserError(f"--fault: expected one of {', '.join(FAULTS)}, got {fault!r}")
    state = TestbedState.load()
    m = zoo.build_model(model, seed=seed)
    x = zoo.example_inputs(model, seed=seed)
    graph = capture(m, x, name=model)
    with torch.no_grad():
        ref = m(*x)
    cal = state.calibration
    cm = CostModel.build(graph, state.load_cluster(), host=host, call_s=cal.get("call_s", 0.0),
                         hop_s=cal.get("hop_s", 0.0))
    p = make_plan(cm, strategy)
    victims = [n for n in p.nodes_used if n != cm.source]
    if not victims:
        raise UserError(f"testbed fault: the {strategy} plan of {model} uses only the source {cm.source}; "
                        "pick a strategy that spreads (e.g. uniform)")
    victim = victims[-1]
    at = requests // 3 if at is None else at
    rt = TestbedRuntime(state)
    events: list[dict[str, Any]] = []
    answered, retried, t_fault, t_back, err = 0, 0, None, None, 0.0
    try:
        dep = materialize(p, cm)
        rt.deploy(dep.graph, dep.stages, dep.placement, dep.source, ModelSource(model, seed))
        for i in range(requests):
            if i == at:
                inject(state, victim, fault)
                t_fault = time.perf_counter()
                events.append({"request": i, "event": f"{fault} of {victim} down"})
            for _attempt in range(len(cm.nodes) + 1):
                try:
                    r = rt.run(timeout_s=timeout_s)
                    break
                except NodeFailure as e:
                    lost = e.node or victim
                    retried += 1
                    events.append({"request": i, "event": f"failed: {e}; re-planning without {lost}"})
                    cm = cm.with_cluster(without_node(cm.cluster, lost))
                    p = make_plan(cm, strategy)
                    dep = materialize(p, cm)
                    rt.forget(lost)
                    rt.deploy(dep.graph, dep.stages, dep.placement, dep.source, ModelSource(model, seed))
            else:
                raise UserError(f"testbed fault: request {i} failed on every re-plan")
            answered += 1
            err = max(err, max_abs_diff(r.output, ref))
            if t_fault is not None and t_back is None:
                t_back = time.perf_counter()
    finally:
        rt.shutdown()
    return {"model": model, "strategy": strategy, "fault": fault, "node": victim, "requests": requests,
            "answered": answered, "lost": requests - answered, "retried": retried,
            "recovery_s": None if t_back is None or t_fault is None else (t_back - t_fault) / state.dilation,
            "nodes_after": cm.nodes, "max_abs_error": err, "events": events, "dilation": state.dilation,
            "note": "recovery time includes the failure-detection timeout "
                    f"({timeout_s:g} s real, divided by the dilation like every time)"}
