"""Plan every strategy for one cost model and execute each plan on the testbed, predicted beside
measured. Runs in the driver process (`dnninfer testbed run`), which must not have imported Ray."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from dnninfer.errors import UserError
from dnninfer.testbed import net

if TYPE_CHECKING:
    from dnninfer.testbed.core import TestbedState

__all__ = ["measured_energy_j", "run_cases"]


def measured_energy_j(cm: Any, placement: dict[int, str], compute_s: dict[int, float], latency_s: float,
                      link_j: float) -> float:
    """Energy from measured busy time x cited power: each stage's compute seconds times its PU's
    active power, plus board idle power over the measured latency for every node used, plus the
    plan's link energy (bytes x the link's nJ/bit; bytes are the plan's, not counted on the wire)."""
    busy = 0.0
    nodes = set()
    for label, seconds in compute_s.items():
        node, pu = placement[label].split("/", 1)
        nodes.add(node)
        busy += seconds * cm.cluster.device(node).pu(pu).p_active_w
    idle = sum(cm.cluster.device(n).p_board_idle_w for n in nodes) * latency_s
    return busy + idle + link_j


def run_cases(models: Sequence[str], strategies: Sequence[str], *, bandwidths: Sequence[float | None] = (None,),
              requests: int = 3, stream: int = 0, objective: str = "latency", host: str = "measure", seed: int = 0,
              plan_from: Sequence[str] = ("cited",), log: Callable[[str], None] | None = None,
              state: TestbedState | None = None) -> list[dict[str, Any]]:
    """One row per (model, bandwidth, planning profile, strategy): predicted and measured latency and
    energy, the output's max error against the whole model, and where the plan ran.

    `plan_from`: "cited" plans from the device YAMLs' speed ratios; "measured" first profiles the
    model on every PU of the testbed (`testbed.profile`) and plans from those seconds, which is how
    per-op-kind speeds (a GPU's) that a quota cannot emulate are kept out of the predictions.
    `state`: where to run (default: the testbed that is up; `TestbedState.for_boards` for real boards)."""
    from dnninfer import zoo
    from dnninfer.graph import capture
    from dnninfer.partition.costmodel import CostModel
    from dnninfer.partition.replan import with_bandwidth
    from dnninfer.partition.strategies import STRATEGIES
    from dnninfer.partition.strategies import plan as make_plan
    from dnninfer.testbed.core import TestbedState
    from dnninfer.testbed.runtime import ModelSource, TestbedRuntime

    bad = [p for p in plan_from if p not in ("cited", "measured")]
    if bad or not plan_from:
        raise UserError(f"--plan-from: expected cited and/or measured, got {bad[0] if bad else 'nothing'!r}")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise UserError(f"--strategy: expected names from {', '.join(STRATEGIES)}, got {unknown[0]!r}")
    state = state if state is not None else TestbedState.load()
    if state.boards and any(bw is not None for bw in bandwidths):
        raise UserError("--bandwidth-mbps: real boards run over their real links; it sets emulated links only")
    base = state.load_cluster()
    rt = TestbedRuntime(state)
    rows: list[dict[str, Any]] = []
    say = log or (lambda msg: None)
    try:
        for name in models:
            zoo.get(name)
            model = zoo.build_model(name, seed=seed)
            inputs = zoo.example_inputs(name, seed=seed)
            graph = capture(model, inputs, name=name)
            with torch.no_grad():
                ref = model(*inputs)
            # host times measured once per model; the runtime's own costs fitted on the calibration
            # probes at `up` (0 without them)
            cost_models = {}
            for how in plan_from:
                prof = None
                if how == "measured":
                    from dnninfer.testbed.profile import profile_cluster

                    prof = profile_cluster(ModelSource(name, seed), runtime=rt, log=say)
                cost_models[how] = CostModel.build(graph, base, host=host, call_s=state.calibration.get("call_s", 0.0),
                                              hop_s=state.calibration.get("hop_s", 0.0), measured=prof)
            for bw in bandwidths:
                cluster = base if bw is None else with_bandwidth(base, bw)
                state.apply_rates(bw)  # the kernel's rates follow the case's bandwidth
                rate = bw if bw is not None else None if state.pairs else state.nodes[0].rate_mbps
                # one execution per distinct plan: strategies (and profiles) that agree read the same measurement
                executed: dict[Any, tuple[str, dict[str, Any]]] = {}
                cms = {how: cost_models[how].with_cluster(cluster) for how in plan_from}  # plans memoised per model
                for how, strategy in itertools.product(plan_from, strategies):
                    cm = cms[how]
                    p = make_plan(cm, strategy, objective)
                    key = tuple((part.nodes, part.targets, part.shares) for part in p.parts)
                    if key not in executed:
                        executed[key] = (f"{strategy} ({how})", _execute_or_record(rt, cm, p, name, seed, ref,
                                                                                   requests, stream, say))
                    first, m = executed[key]
                    lat = m["measured_latency_s"]
                    rows.append({
                        "model": name, "cluster": state.cluster, "bandwidth_mbps": rate, "strategy": strategy,
                        "planned_from": how, "objective": objective, "predicted_latency_s": p.latency_s,
                        "pred_error": None if lat is None else abs(lat - p.latency_s) / lat,
                        "predicted_energy_j": p.energy_j, "predicted_throughput_ips": p.throughput_ips, **m,
                        "same_plan_as": None if first == f"{strategy} ({how})" else first,
                    })
                    say(f"{name} {rate or 'per-pair'} Mbit/s {strategy} ({how}): predicted {p.latency_s * 1e3:.1f} ms, "
                        + (f"measured {lat * 1e3:.1f} ms" if lat is not None else f"FAILED: {m['error']}"))
    finally:
        try:
            rt.shutdown()
        finally:
            state.apply_rates(None)
    return rows


def _execute_or_record(rt: Any, cm: Any, p: Any, name: str, seed: int, ref: Any, requests: int, stream: int,
                       say: Any) -> dict[str, Any]:
    """`_execute`, except that a plan whose requests or stream fail or time out becomes a row with
    its `error` (and no measurements) instead of ending the run: the plans already measured are kept.
    The PU actors are restarted so that the failed plan's queued stages cannot delay the next."""
    from dnninfer.runtime.ray_runtime import NodeFailure

    try:
        return _execute(rt, cm, p, name, seed, ref, requests, stream)
    except NodeFailure as e:
        say(f"{name}: plan failed, actors restarted: {e}")
        rt.reset()
        return {"error": str(e), "measured_latency_s": None, "measured_energy_j": None,
                "measured_throughput_ips": None, "max_abs_error": None, "weights_shipped_bytes": None}


def _execute(rt: Any, cm: Any, p: Any, name: str, seed: int, ref: Any, requests: int, stream: int) -> dict[str, Any]:
    """Deploy one plan, warm it up, time `requests` requests (and a stream), check the outputs."""
    from dnninfer.graph import max_abs_diff
    from dnninfer.partition.execute import materialize
    from dnninfer.runtime.ray_runtime import NodeFailure
    from dnninfer.testbed.runtime import ModelSource

    dep = materialize(p, cm)
    info = rt.deploy(dep.graph, dep.stages, dep.placement, dep.source, ModelSource(name, seed))
    for _ in range(2):  # warm-up: first calls start threads and fill caches
        rt.run()
    wire = None if rt.state.boards else [n.index for n in rt.state.nodes]
    before = net.sent_bytes(wire) if wire else 0
    runs = [rt.run() for _ in range(requests)]
    sent = (net.sent_bytes(wire) - before) / requests if wire else None
    mid = sorted(runs, key=lambda r: r.latency_s)[len(runs) // 2]
    throughput, stream_error = None, None
    if stream:
        try:
            throughput = rt.stream(stream)
        except NodeFailure as e:  # the latency requests above stand; the stream's queued stages go
            stream_error = str(e)
            rt.reset()
    return {
        "targets": info["targets"], "stages": len(dep.stages),
        "measured_latency_s": statistics.median(r.latency_s for r in runs),
        "latencies_s": [r.latency_s for r in runs],
        "measured_energy_j": measured_energy_j(cm, dep.placement, mid.compute_s, mid.latency_s,
                                               p.energy.get("link_j", 0.0)),
        "measured_throughput_ips": throughput, "stream_error": stream_error,
        "max_abs_error": max(max_abs_diff(r.output, ref) for r in runs),
        "weights_shipped_bytes": info["weights_shipped_bytes"],
        "predicted_bytes": p.bytes_sent,
        "measured_wire_bytes": sent,  # per request, counted by the kernel (Ray's control traffic included)
    }
