"""Chain DP (latency sum and PipeEdge bottleneck) against brute force, plus hand-computed cases."""

from __future__ import annotations

import math
import random
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnninfer.errors import UserError
from dnninfer.partition import chain_dp as cdp


def _random_chain(seed: int) -> dict:
    """A random problem: L <= 8 blocks, D <= 3 devices, some inf compute, memory caps on some."""
    rng = random.Random(seed)
    n_blk, n_dev = rng.randint(1, 8), rng.randint(1, 3)
    comp = [
        [
            math.inf if rng.random() < 0.08 else rng.choice([0.0, rng.uniform(0, 1), rng.uniform(0, 0.1)])
            for _ in range(n_blk)
        ]
        for _ in range(n_dev)
    ]
    out_bytes = [rng.choice([0, rng.randint(1, 10**6)]) for _ in range(n_blk)]
    bw = [[rng.uniform(1e5, 1e8) for _ in range(n_dev)] for _ in range(n_dev)]
    rtt = rng.choice([0.0, 0.001, 0.05])

    def comm(u: int, v: int, n: float) -> float:
        assert u != v
        return rtt + n / bw[u][v]

    kw: dict = {}
    if rng.random() < 0.5:
        weights = [rng.randint(1, 100) for _ in range(n_blk)]

        def need(i: int, j: int) -> float:
            return sum(weights[i : j + 1]) + max(out_bytes[i : j + 1]) / 10**4

        total = sum(weights)
        kw = {
            "need": need,
            "cap": [None if rng.random() < 0.3 else rng.uniform(0.2, 1.2) * total for _ in range(n_dev)],
        }
    if rng.random() < 0.3:
        kw["max_devices"] = rng.randint(1, n_dev)
    return {
        "comp": comp,
        "out_bytes": out_bytes,
        "in_bytes": rng.randint(0, 10**6),
        "comm": comm,
        "source": rng.randrange(n_dev),
        **kw,
    }


def _check_plan(plan: cdp.ChainPlan, case: dict, combine: str) -> None:
    n_dev, n_blk = len(case["comp"]), len(case["comp"][0])
    nxt = 0
    for _d, a, b in plan.stages:
        assert a == nxt and b >= a
        nxt = b + 1
    assert nxt == n_blk
    devs = plan.devices
    assert len(set(devs)) == len(devs) and all(0 <= d < n_dev for d in devs)
    if case.get("max_devices"):
        assert len(devs) <= case["max_devices"]
    if "need" in case:
        for d, a, b in plan.stages:
            assert case["cap"][d] is None or case["need"](a, b) <= case["cap"][d]
    args = (case["comp"], case["out_bytes"], case["in_bytes"], case["comm"], case["source"])
    assert cdp.evaluate(plan.stages, *args, combine=combine) == plan.cost_s


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_dps_equal_brute_force(seed: int) -> None:
    case = _random_chain(seed)
    for dp, combine in ((cdp.latency_dp, "sum"), (cdp.bottleneck_dp, "max")):
        try:
            ref = cdp.brute_force(**case, combine=combine)
        except UserError:
            with pytest.raises(UserError):
                dp(**case)
            continue
        got = dp(**case)
        assert got.cost_s == pytest.approx(ref.cost_s, rel=1e-9, abs=1e-12)
        _check_plan(got, case, combine)
        _check_plan(ref, case, combine)


def _mbps(u: int, v: int, n: float) -> float:
    return n / 1e6


def test_offload_everything_is_best() -> None:
    comp = [[1.0, 1.0, 1.0], [0.1, 0.1, 0.1]]  # source 0 slow, device 1 fast
    args = (comp, [1000, 1000, 1000], 1000, _mbps, 0)
    plan = cdp.latency_dp(*args)
    assert plan.stages == ((1, 0, 2),)
    assert plan.cost_s == pytest.approx(0.001 + 0.3 + 0.001)
    assert plan == cdp.brute_force(*args, combine="sum")


def test_all_local_when_link_is_slow() -> None:
    comp = [[1.0, 1.0, 1.0], [0.1, 0.1, 0.1]]
    plan = cdp.latency_dp(comp, [1000, 1000, 1000], 1000, lambda u, v, n: n / 10, 0)
    assert plan.stages == ((0, 0, 2),) and plan.cost_s == 3.0
    bott = cdp.bottleneck_dp(comp, [1000, 1000, 1000], 1000, lambda u, v, n: n / 10, 0)
    assert bott.stages == ((0, 0, 2),) and bott.cost_s == 3.0


def test_bottleneck_split_beats_latency_split_in_throughput() -> None:
    """Two equal devices, 0.5 s per hop: one request is fastest all local (4 s), but a 2+2
    pipeline finishes one request every 2 s (latency 5 s)."""
    comp = [[1.0] * 4, [1.0] * 4]
    args = (comp, [1, 1, 1, 1], 1, lambda u, v, n: 0.5, 0)
    lat = cdp.latency_dp(*args)
    bott = cdp.bottleneck_dp(*args)
    assert lat.stages == ((0, 0, 3),) and lat.cost_s == 4.0
    assert bott.stages == ((0, 0, 1), (1, 2, 3)) and bott.cost_s == 2.0
    assert cdp.evaluate(lat.stages, *args, combine="max") == 4.0  # throughput 1/4 < 1/2
    assert cdp.evaluate(bott.stages, *args, combine="sum") == 5.0  # worse single-request latency


def test_memory_forces_a_split_and_caps_hold() -> None:
    comp = [[1.0] * 4, [1.5] * 4]  # all on 1: 6.5 s; 2 blocks on 0 (its cap), 2 on 1: 5.5 s
    need = lambda i, j: 10.0 * (j - i + 1)  # noqa: E731
    args = (comp, [1, 1, 1, 1], 1, lambda u, v, n: 0.25, 0)
    plan = cdp.latency_dp(*args, need=need, cap=[25.0, None])
    assert plan.stages == ((0, 0, 1), (1, 2, 3)) and plan.cost_s == 5.5
    assert plan == cdp.brute_force(*args, combine="sum", need=need, cap=[25.0, None])


def test_infeasible_memory_raises() -> None:
    comp = [[1.0] * 3, [1.0] * 3]
    need = lambda i, j: 100.0 * (j - i + 1)  # noqa: E731
    for dp in (cdp.latency_dp, cdp.bottleneck_dp):
        with pytest.raises(UserError, match=r"no plan fits: .*100 bytes .*50 bytes"):
            dp(comp, [1, 1, 1], 1, _mbps, 0, need=need, cap=[40.0, 50.0])
    # every block fits somewhere, but 3 blocks need 3 distinct devices
    with pytest.raises(UserError, match="no plan fits"):
        cdp.latency_dp(comp, [1, 1, 1], 1, _mbps, 0, need=need, cap=[100.0, 100.0])
    with pytest.raises(UserError, match="no plan fits"):
        cdp.brute_force(comp, [1, 1, 1], 1, _mbps, 0, combine="max", need=need, cap=[40.0, 50.0])


def test_inf_compute_everywhere_raises() -> None:
    with pytest.raises(UserError, match="block 1 is not allowed"):
        cdp.latency_dp([[1.0, math.inf], [1.0, math.inf]], [1, 1], 1, _mbps, 0)


def test_ties_prefer_fewer_stages_then_lower_device() -> None:
    zero = [[0.0] * 5 for _ in range(3)]
    for dp in (cdp.latency_dp, cdp.bottleneck_dp):
        assert dp(zero, [0] * 5, 0, lambda u, v, n: 0.0, 2).stages == ((0, 0, 4),)


def test_max_devices_limits_stages() -> None:
    comp = [[1.0] * 4, [1.0] * 4]
    plan = cdp.bottleneck_dp(comp, [1, 1, 1, 1], 1, lambda u, v, n: 0.5, 0, max_devices=1)
    assert plan.stages == ((0, 0, 3),)


def test_evaluate_rejects_bad_plans() -> None:
    args = ([[1.0] * 3, [1.0] * 3], [1, 1, 1], 1, _mbps, 0)
    for bad in [(), ((0, 0, 1),), ((0, 0, 0), (1, 2, 2)), ((0, 0, 0), (0, 1, 2)), ((2, 0, 2),)]:
        with pytest.raises(UserError):
            cdp.evaluate(bad, *args, combine="sum")


def test_sixty_blocks_five_devices_is_fast() -> None:
    rng = np.random.default_rng(1)
    n_dev, n_blk = 5, 60
    comp = rng.uniform(0.001, 0.05, (n_dev, n_blk))
    out_bytes = rng.uniform(1e4, 1e6, n_blk)
    bw = rng.uniform(1e6, 1e8, (n_dev, n_dev))
    weights = rng.uniform(1e5, 1e6, n_blk)
    cum = np.concatenate([[0.0], np.cumsum(weights)])
    need = lambda i, j: cum[j + 1] - cum[i]  # noqa: E731
    cap = [cum[-1] / 3, None, cum[-1] / 4, cum[-1] / 2, cum[-1] / 5]
    for dp in (cdp.latency_dp, cdp.bottleneck_dp):
        t0 = time.perf_counter()
        plan = dp(comp, out_bytes, 1e6, lambda u, v, n: 0.001 + n / bw[u, v], 0, need=need, cap=cap)
        assert time.perf_counter() - t0 < 2.0
        assert all(cap[d] is None or need(a, b) <= cap[d] for d, a, b in plan.stages)
