"""The harness: interleaving, Timing statistics and thread pinning (no wall-clock asserts)."""

import itertools

import pytest
import torch

from dnninfer.bench import harness
from dnninfer.bench.harness import Timing, compare, measure, pinned_threads, ratios, round_orders
from dnninfer.errors import UserError


def _recorder(names):
    calls = []
    return calls, {n: (lambda n=n: calls.append(n)) for n in names}


def test_compare_runs_every_case_once_per_round():
    names = ["a", "b", "c"]
    calls, cases = _recorder(names)
    timings = compare(cases, warmup=0, repeats=12, seed=0, progress=False)
    rounds = [calls[i : i + 3] for i in range(0, len(calls), 3)]
    assert len(rounds) == 12
    assert all(sorted(r) == names for r in rounds)
    assert list(timings) == names
    assert all(t.n == 12 for t in timings.values())


def test_compare_orders_differ_across_rounds_and_are_seeded():
    names = ["a", "b", "c", "d"]
    calls, cases = _recorder(names)
    compare(cases, warmup=0, repeats=10, seed=3, progress=False)
    rounds = [tuple(calls[i : i + 4]) for i in range(0, len(calls), 4)]
    assert len(set(rounds)) > 1
    assert all(x != y for x, y in itertools.pairwise(rounds))  # never the same twice
    again, cases2 = _recorder(names)
    compare(cases2, warmup=0, repeats=10, seed=3, progress=False)
    assert again == calls
    other, cases3 = _recorder(names)
    compare(cases3, warmup=0, repeats=10, seed=4, progress=False)
    assert other != calls


def test_two_cases_alternate_abba():
    orders = round_orders(["a", "b"], 6, seed=0)
    assert all(x != y for x, y in itertools.pairwise(orders))


def test_compare_warms_up_before_timing():
    calls, cases = _recorder(["a", "b"])
    compare(cases, warmup=3, repeats=2, progress=False)
    assert calls[:6] == ["a", "b"] * 3
    assert len(calls) == 6 + 4


def test_measure_counts_warmup_and_repeats():
    calls = []
    t = measure(lambda: calls.append(1), warmup=2, repeats=7)
    assert len(calls) == 9
    assert t.n == 7 and len(t.samples) == 7


def test_measure_min_time_extends_repeats(monkeypatch):
    fake = iter(range(0, 10**12, 10**6))  # every perf_counter_ns call advances 1 ms
    monkeypatch.setattr(harness.time, "perf_counter_ns", lambda: next(fake))
    t = measure(lambda: None, warmup=0, repeats=3, min_time_s=0.01)
    assert t.n == 10
    assert t.median == pytest.approx(1e-3)


def test_timing_statistics_from_known_samples():
    t = Timing.from_samples([0.001, 0.002, 0.003, 0.004, 0.005])
    assert (t.median, t.p25, t.p75, t.n) == (0.003, 0.002, 0.004, 5)
    assert t.iqr == pytest.approx(0.002)
    d = t.to_dict("ms")
    assert d["median_ms"] == pytest.approx(3.0) and d["n"] == 5


def test_ratios_are_baseline_over_case():
    timings = {"slow": Timing.from_samples([2.0] * 5), "fast": Timing.from_samples([1.0] * 5)}
    r = ratios(timings, "slow", n_boot=50)
    assert set(r) == {"fast"}
    assert r["fast"].ratio == 2.0
    with pytest.raises(UserError, match="slow, fast"):
        ratios(timings, "nope")


def test_bad_counts_are_user_errors():
    with pytest.raises(UserError, match="repeats"):
        measure(lambda: None, repeats=0)
    with pytest.raises(UserError, match="cases"):
        compare({}, progress=False)


def test_pinned_threads_sets_and_restores():
    before = torch.get_num_threads()
    with pinned_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_pinned_threads_restores_after_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), pinned_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
