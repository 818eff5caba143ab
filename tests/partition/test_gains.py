"""HiDP's gains over its rivals: the paper's averages, computed by hand on two cases."""

from __future__ import annotations

import pytest

from dnninfer.partition.gains import aggregate, reduction

BASELINES = ["a", "b"]


def _rows(values: dict[tuple[int, str], dict[str, float]]) -> list[dict]:
    """``(case, objective) -> {strategy: value}`` as bench rows."""
    return [{"model": "m", "cluster": "c", "bandwidth_mbps": case, "objective": objective, "strategy": s,
             "value": v} for (case, objective), by in values.items() for s, v in by.items()]


def _case(latency: dict[str, float]) -> dict[str, dict[str, float]]:
    ablations = {"hidp-global-only": latency["hidp"], "hidp-local-only": latency["hidp"]}
    return {"latency": {**latency, **ablations}, "energy": {**latency, **ablations},
            "throughput": {k: 1 / v for k, v in {**latency, **ablations}.items()}}


def _values(*cases: dict[str, float]) -> dict[tuple[int, str], dict[str, float]]:
    return {(i, obj): by for i, c in enumerate(cases) for obj, by in _case(c).items()}


def test_reduction_saves_time_and_gains_throughput():
    assert reduction(6.0, 10.0, "latency") == pytest.approx(0.4)
    assert reduction(1.5, 1.0, "throughput") == pytest.approx(0.5)


def test_means_over_cases_against_the_best_and_over_rivals():
    # case 0: hidp 5 vs a 10, b 8; case 1: hidp 4 vs a 4, b 16
    ours = aggregate(_rows(_values({"hidp": 5, "a": 10, "b": 8}, {"hidp": 4, "a": 4, "b": 16})), BASELINES)
    assert ours["latency_reduction_vs_best_baseline"] == pytest.approx((1 - 5 / 8 + 0) / 2)
    assert ours["vs_a"]["latency_reduction"] == pytest.approx((0.5 + 0) / 2)
    assert ours["vs_b"]["latency_reduction"] == pytest.approx((1 - 5 / 8 + 0.75) / 2)
    assert ours["latency_reduction_mean_over_baselines"] == pytest.approx((0.25 + (1 - 5 / 8 + 0.75) / 2) / 2)
    assert ours["throughput_gain_vs_best_baseline"] == pytest.approx((8 / 5 - 1 + 0) / 2)
    assert ours["vs_hidp_local_only"]["latency_reduction"] == 0.0
    assert ours["hidp_never_worse"] and ours["hidp_never_worse_all_objectives"]


def test_a_case_where_a_rival_wins_is_reported():  # negative control for hidp_never_worse
    ours = aggregate(_rows(_values({"hidp": 5, "a": 4, "b": 8})), BASELINES)
    assert not ours["hidp_never_worse"] and not ours["hidp_never_worse_all_objectives"]
    assert ours["latency_reduction_vs_best_baseline"] == pytest.approx(1 - 5 / 4)
