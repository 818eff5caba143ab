"""DPRA over the testbed: each slot's split of one gateway executed across a kernel-shaped link whose
rate follows the Rayleigh channel slot by slot (`dnninfer dpra simulate ... --testbed`).

The controller decides in simulated time (`bdt.dpra.simulate`); this hook makes one gateway's
decisions physical on a running testbed of at least two devices (the first is the gateway, the
second its AP; `testbed up local2`):
* the gateway's link (tbf, both ends, and the AP's side too) is set to the slot's channel rate
  ``r_g(t)`` divided by the dilation D;
* the gateway's PU runs under a CPU quota of ``f_g / REFERENCE_HZ`` host cores and the AP's PU
  under ``f_inf[g](t) / REFERENCE_HZ``, both divided by D (a workload's cycles are its measured host
  seconds times REFERENCE_HZ, so a quota of f/REFERENCE_HZ host cores runs it at f Hz);
* the split's two stages run on those PUs (the input made on the gateway; the output stays at the AP,
  as the controller assumes; at s = L nothing leaves the gateway), weights rebuilt on each node.
The measured slot latency (divided by D) is reported beside the controller's
``T_g = W_low/f_g + d[s]/r_g + W_top/f_inf``, and beside that model plus the runtime costs the
testbed calibrated at `up` (per call, per message, the emulated RTT/2 per message), which the
controller does not know. The other gateways stay simulated; mining is not executed on the AP.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import numpy as np

from dnninfer.bdt.dpra import REFERENCE_HZ, DPRAConfig, SlotDecision, SlotState, simulate
from dnninfer.bdt.run import GraphWorkload
from dnninfer.errors import UserError

__all__ = ["TestbedSlots", "run_on_testbed"]

#: real seconds a slot's request may take before the testbed counts it as failed (a deep fade at
#: the 8 kbit/s floor of tbf is the slowest case)
SLOT_TIMEOUT_S = 300.0


class TestbedSlots:
    """The `on_slot` hook of `dpra.simulate` that executes gateway `gateway`'s split on the testbed."""

    def __init__(self, gwl: GraphWorkload, cfg: DPRAConfig, gateway: int, source: Any, *, state: Any = None,
                 log: Callable[[str], None] | None = None) -> None:
        from dnninfer.testbed.core import CPU_BUDGET, MAX_PU_SHARE, TestbedState
        from dnninfer.testbed.runtime import TestbedRuntime

        self.state = state or TestbedState.load()
        if self.state.boards or len(self.state.nodes) < 2:
            raise UserError("dpra --testbed: needs a testbed of at least two devices (gateway, AP): "
                            "`dnninfer testbed up local2`")
        self.gwl, self.cfg, self.g, self.source = gwl, cfg, gateway, source
        self.d = self.state.dilation
        gw, ap = self.state.nodes[0], self.state.nodes[1]
        self.gw_t, self.ap_t = f"{gw.name}/{next(iter(gw.pus))}", f"{ap.name}/{next(iter(ap.pus))}"
        self.gw_cores = float(cfg.f_gw[gateway]) / REFERENCE_HZ
        ap_max = float(cfg.F[cfg.ap_of[gateway]]) / REFERENCE_HZ
        need = max(self.gw_cores / MAX_PU_SHARE, ap_max / MAX_PU_SHARE, (self.gw_cores + ap_max) / CPU_BUDGET)
        if need > self.d:
            raise UserError(f"dpra --testbed: the gateway ({self.gw_cores:.3g} host cores) and its AP (up to "
                            f"{ap_max:.3g}) need dilation >= {need:.2g}, the testbed runs at {self.d:g} "
                            f"(`dnninfer testbed up {self.state.cluster} --dilation {np.ceil(need * 10) / 10:g}`)")
        self.rt = TestbedRuntime(self.state)
        self.say = log or (lambda msg: None)
        self.rows: list[dict[str, Any]] = []
        self._deployed: int | None = None
        self._stages: dict[int, list[Any]] = {}
        import torch

        with torch.no_grad():
            self.reference = gwl.graph(*gwl.graph.example_inputs)

    def _set(self, rate_bps: float, f_inf_hz: float, offload: bool) -> None:
        from dnninfer.testbed import net, procs

        for node in self.state.nodes[:2]:
            net.set_rate(net.NodeNet(node.index, node.name, 0), rate_bps / 1e6 / self.d)
        shares = {self.gw_t: min(1.0, max(0.01, self.gw_cores / self.d))}
        if offload:  # the quota's smallest share is 1% of a core (1 ms of a 100 ms period)
            shares[self.ap_t] = min(1.0, max(0.01, f_inf_hz / REFERENCE_HZ / self.d))
        procs.make_cpu_groups(shares)

    def _deploy(self, s: int) -> None:
        """Deploy split `s` (unless it is deployed) and warm it up: a deployment's first calls start
        threads and fill caches, and every deployment rebuilds its stage modules."""
        if self._deployed == s:
            return
        g, L = self.gwl.graph, self.gwl.workload.L
        if s not in self._stages:
            self._stages[s] = g.split(self.gwl.assignment(s))
        stages = self._stages[s]
        placement = {st.index: self.gw_t if st.index == 0 else self.ap_t for st in stages}
        self.rt.deploy(g, stages, placement, self.gw_t, self.source, sink_target=self.gw_t if s >= L else self.ap_t)
        self._deployed = s
        self.rt.run(timeout_s=SLOT_TIMEOUT_S)

    def __call__(self, t: int, dec: SlotDecision, state: SlotState) -> None:
        from dnninfer.graph import max_abs_diff
        from dnninfer.runtime.ray_runtime import NodeFailure
        from dnninfer.testbed import net

        g, wl = self.g, self.gwl.workload
        s, rate, f_inf = int(dec.s[g]), float(state.rates[g]), float(dec.f_inf[g])
        self._set(rate, f_inf, s < wl.L)
        try:
            self._deploy(s)
            run = self.rt.run(timeout_s=SLOT_TIMEOUT_S)
        except NodeFailure as e:
            raise UserError(f"dpra --testbed: slot {t} (split {s}, {rate / 1e6:.3g} Mbit/s): {e}") from None
        gw = self.state.node(self.gw_t.split("/")[0])
        kernel = net.tbf_rate_mbps(net.NodeNet(gw.index, gw.name, 0))  # read back: what the kernel enforced
        cal = self.state.calibration
        messages = 1 if s < wl.L else 0
        calls = len(self._stages[s]) + 1  # the stages and the gather
        rtt_half = self.state.link(self.gw_t.split("/")[0], self.ap_t.split("/")[0])[1] / 2e3
        runtime_s = calls * cal.get("call_s", 0.0) + messages * (cal.get("hop_s", 0.0) + rtt_half)
        pred = float(dec.latency[g])
        row = {"slot": t, "split": s, "offload": s < wl.L, "rate_mbps": rate / 1e6,
               "kernel_rate_mbps": None if kernel is None else kernel * self.d, "f_inf_ghz": f_inf / 1e9,
               "predicted_s": pred, "predicted_with_runtime_s": pred + runtime_s, "measured_s": run.latency_s,
               "error": abs(run.latency_s - pred) / run.latency_s,
               "error_with_runtime": abs(run.latency_s - pred - runtime_s) / run.latency_s,
               "max_abs_error": max_abs_diff(run.output, self.reference)}
        self.rows.append(row)
        self.say(f"slot {t}: split {s}/{wl.L} at {rate / 1e6:.1f} Mbit/s: controller {pred * 1e3:.1f} ms, "
                 f"measured {run.latency_s * 1e3:.1f} ms")

    def close(self) -> None:
        """Give every PU its configured quota and every device its configured rate back."""
        from dnninfer.testbed import procs

        try:
            self.rt.shutdown()
        finally:
            try:
                self.state.apply_rates(None)
            finally:
                for target, q in self.state.quotas.items():
                    procs.make_cpu_groups({target: q["quota_us"] / q["period_us"]})


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Controller vs measured slot latency over the executed slots."""
    def med(key: str, sel: list[dict[str, Any]]) -> float | None:
        return statistics.median(r[key] for r in sel) if sel else None

    off = [r for r in rows if r["offload"]]
    return {"slots": len(rows), "offloaded_slots": len(off),
            "mean_predicted_s": statistics.fmean(r["predicted_s"] for r in rows),
            "mean_measured_s": statistics.fmean(r["measured_s"] for r in rows),
            "slot_error_median": med("error", rows), "slot_error_median_offloaded": med("error", off),
            "slot_error_median_with_runtime": med("error_with_runtime", rows),
            "rate_mbps_range": [min(r["rate_mbps"] for r in rows), max(r["rate_mbps"] for r in rows)],
            "max_abs_error": max(r["max_abs_error"] for r in rows)}


def run_on_testbed(model: str, *, slots: int, method: str = "dpra", cfg: DPRAConfig | None = None, segments: int = 6,
                   gateway: int | None = None, seed: int = 0, host: str = "measure",
                   log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Simulate `method` on `model`'s workload with one gateway's splits executed on the testbed.

    `gateway` defaults to the one whose splits offload most often in the same (deterministic) run."""
    from dnninfer import zoo
    from dnninfer.bdt.run import block_seconds, config_for, graph_workload
    from dnninfer.graph import capture
    from dnninfer.testbed.core import NOTE
    from dnninfer.testbed.runtime import ModelSource

    zoo.get(model)
    graph = capture(zoo.build_model(model, seed=seed), zoo.example_inputs(model, seed=seed), name=model)
    gwl = graph_workload(graph, block_seconds(graph, host), segments)
    cfg = cfg or config_for(gwl.workload, seed)
    if gateway is None:
        dry = simulate(gwl.workload, cfg, slots, method)
        gateway = int(np.argmax((dry.s < gwl.workload.L).sum(axis=0)))
    if not 0 <= gateway < cfg.gateways:
        raise UserError(f"--gateway {gateway}: expected 0..{cfg.gateways - 1}")
    hook = TestbedSlots(gwl, cfg, gateway, ModelSource(model, seed), log=log)
    try:
        result = simulate(gwl.workload, cfg, slots, method, on_slot=hook)
    finally:
        hook.close()
    return {"model": model, "method": method, "slots": slots, "gateway": gateway, "cluster": hook.state.cluster,
            "dilation": hook.d, "workload": gwl.workload.name, "avg_latency_s": result.avg_latency,
            "summary": summarise(hook.rows), "rows": hook.rows,
            "note": f"{NOTE}; the controller's model has no RTT and no per-call costs: "
                    "predicted_with_runtime adds those calibrated at `testbed up`"}
