"""Calibration at `testbed up`: each PU's real speed (a fixed probe) and each link's real rate (a
bulk transfer), both undilated, beside what the cluster YAML configures."""

from __future__ import annotations

import statistics
import time
from typing import Any

from dnninfer.testbed.core import TestbedState

PROBE_REPEATS = 3
CHAIN_SHORT, CHAIN_LONG = 2, 12
HOP_BYTES = 4096  # over the inline limit: goes through the object store, as activations do
BLOB_SMALL, BLOB_LARGE = 64 << 10, 1 << 20


def calibrate(state: TestbedState) -> dict[str, Any]:
    """PU speed in host cores (probe's CPU seconds on the host / its wall seconds on the PU x
    dilation) and link rate in
    Mbit/s (extra bytes / extra time of a large over a small node-to-node transfer, x dilation)."""
    import ray

    from dnninfer.env import pinned_threads
    from dnninfer.testbed.runtime import TestbedRuntime, probe_seconds

    rt = TestbedRuntime(state)
    d = state.dilation
    with pinned_threads(1):
        host = probe_seconds(PROBE_REPEATS, cpu_time=True)
    pus = {}
    for n in state.nodes:
        for pu, speed in n.pus.items():
            target = f"{n.name}/{pu}"
            t = ray.get(rt.actor(target).probe.remote(PROBE_REPEATS), timeout=300)
            measured = host / t * d
            pus[target] = {"configured": round(speed, 4), "measured": round(measured, 4),
                           "error": round(abs(measured - speed) / speed, 4)}
    links = {}
    if len(state.nodes) > 1:
        for i, n in enumerate(state.nodes):
            dst = state.nodes[(i + 1) % len(state.nodes)]
            a = rt.actor(f"{n.name}/{next(iter(n.pus))}")
            b = rt.actor(f"{dst.name}/{next(iter(dst.pus))}")
            times = {}
            for size in (BLOB_SMALL, BLOB_LARGE):
                samples = []
                for _ in range(2):
                    blob = a.blob.remote(size)
                    ray.wait([blob], fetch_local=False)
                    t0 = time.perf_counter()
                    ray.get(b.fetch.remote(blob), timeout=300)
                    samples.append(time.perf_counter() - t0)
                times[size] = statistics.median(samples)
            rate = (BLOB_LARGE - BLOB_SMALL) * 8 / max(1e-9, times[BLOB_LARGE] - times[BLOB_SMALL]) / 1e6 * d
            configured = state.link(n.name, dst.name)[0]
            if configured <= 0:  # a pair without a link: no plan uses it
                continue
            links[f"{n.name}->{dst.name}"] = {"configured_mbps": configured, "measured_mbps": round(rate, 2),
                                              "error": round(abs(rate - configured) / configured, 4)}
    call_s, hop_s = _call_costs(rt, state)
    return {"host_probe_s": host, "pus": pus, "links": links, "call_s": call_s, "hop_s": hop_s,
            "pu_speed_error": max((p["error"] for p in pus.values()), default=None),
            "link_rate_error": max((x["error"] for x in links.values()), default=None)}


def _chain_s(actors: list[Any], length: int, nbytes: int) -> float:
    """Median seconds of a chain of `length` echo calls, passing an object around `actors`."""
    import ray

    samples = []
    for _ in range(3):
        x = actors[0].blob.remote(nbytes)
        ray.wait([x], fetch_local=False)
        t0 = time.perf_counter()
        for i in range(length):
            x = actors[(i + 1) % len(actors)].echo.remote(x)
        ray.get(actors[0].fetch.remote(x))
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def _call_costs(rt: Any, state: TestbedState) -> tuple[float, float]:
    """What the runtime adds that the simulator does not see, undilated: seconds per stage call (a
    chain of calls on one PU: slope over chain length) and per message between nodes (a chain that
    alternates nodes, less one call and the bytes' time on the link)."""
    d = state.dilation
    first = state.nodes[0]
    a = rt.actor(f"{first.name}/{next(iter(first.pus))}")
    slope = (_chain_s([a], CHAIN_LONG, HOP_BYTES) - _chain_s([a], CHAIN_SHORT, HOP_BYTES)) / (CHAIN_LONG - CHAIN_SHORT)
    call_s = max(0.0, slope / d)
    if len(state.nodes) < 2:
        return call_s, 0.0
    second = state.nodes[1]
    b = rt.actor(f"{second.name}/{next(iter(second.pus))}")
    slope = (_chain_s([a, b], CHAIN_LONG, HOP_BYTES) - _chain_s([a, b], CHAIN_SHORT, HOP_BYTES)) / (
        CHAIN_LONG - CHAIN_SHORT)
    wire = HOP_BYTES * 8 / (max(1e-9, state.link(first.name, second.name)[0]) * 1e6)  # undilated
    return call_s, max(0.0, slope / d - call_s - wire)
