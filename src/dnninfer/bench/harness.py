"""Timing: warm-up, repeats, interleaved comparisons, pinned threads.

Timing lives here and nowhere else, so every system measures the same way. On a noisy 2-core box
the main enemy is drift (a neighbour starts a job half-way through), which ``compare`` defeats by
running one call of every case per round, in a fresh random order each round: drift then lands on
all cases alike and their ratio survives it.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dnninfer.bench.output import make_progress
from dnninfer.bench.stats import RatioCI, ratio_ci, summarize
from dnninfer.env import pinned_threads
from dnninfer.errors import expected

__all__ = ["Timing", "compare", "measure", "pinned_threads", "ratios", "round_orders"]

_NS = 1e-9
_MAX_SAMPLES = 1_000_000  # guards min_time_s against a function that takes nanoseconds


@dataclass(frozen=True)
class Timing:
    """Wall-clock samples of one case, in seconds, with their order statistics.

    ``samples`` keep their measurement order (round order in ``compare``), so paired analyses
    remain possible.
    """

    samples: tuple[float, ...]
    median: float
    p25: float
    p75: float
    iqr: float
    p90: float
    mean: float
    n: int

    @classmethod
    def from_samples(cls, samples: tuple[float, ...] | list[float]) -> Timing:
        s = summarize(samples)
        return cls(tuple(float(x) for x in samples), s.median, s.p25, s.p75, s.iqr, s.p90, s.mean, s.n)

    def to_dict(self, unit: str = "ms", *, samples: bool = False) -> dict[str, float | int | list[float]]:
        """Row-ready figures with the unit in the key (``median_ms``), samples optional."""
        scale = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}.get(unit)
        if scale is None:
            raise expected("unit", "one of s, ms, us, ns", unit)
        out: dict[str, float | int | list[float]] = {
            f"{k}_{unit}": getattr(self, k) * scale for k in ("median", "p25", "p75", "iqr", "p90", "mean")
        }
        out["n"] = self.n
        if samples:
            out[f"samples_{unit}"] = [x * scale for x in self.samples]
        return out


def _check_counts(warmup: int, repeats: int) -> None:
    if warmup < 0:
        raise expected("warmup", "an integer >= 0", warmup)
    if repeats < 1:
        raise expected("repeats", "an integer >= 1", repeats)


def _time_once(fn: Callable[[], object]) -> int:
    start = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - start


def measure(
    fn: Callable[[], object],
    *,
    warmup: int = 5,
    repeats: int = 20,
    min_time_s: float | None = None,
) -> Timing:
    """Time ``fn()`` after ``warmup`` untimed calls: at least ``repeats`` samples, and, if
    ``min_time_s`` is given, keep going until the timed calls add up to that long.

    Use it for a single case; to compare cases use ``compare`` (interleaved).
    """
    _check_counts(warmup, repeats)
    for _ in range(warmup):
        fn()
    gc.collect()
    samples: list[int] = []
    total = 0
    min_ns = 0 if min_time_s is None else int(min_time_s * 1e9)
    while len(samples) < repeats or (total < min_ns and len(samples) < _MAX_SAMPLES):
        dt = _time_once(fn)
        samples.append(dt)
        total += dt
    return Timing.from_samples([s * _NS for s in samples])


def round_orders(names: list[str], rounds: int, seed: int = 0) -> list[list[str]]:
    """One shuffled order of ``names`` per round (randomized blocks), seeded.

    A round never repeats the previous round's order (it is reversed instead), so two cases run
    as AB BA AB BA ..., the balanced design, and more cases still see every position.
    """
    rng = random.Random(seed)
    orders: list[list[str]] = []
    for _ in range(rounds):
        order = list(names)
        rng.shuffle(order)
        if orders and len(order) > 1 and order == orders[-1]:
            order.reverse()
        orders.append(order)
    return orders


def compare(
    cases: Mapping[str, Callable[[], object]],
    *,
    warmup: int = 5,
    repeats: int = 20,
    seed: int = 0,
    progress: bool = True,
    description: str = "timing",
) -> dict[str, Timing]:
    """Time several cases against each other, interleaved so that drift hits all of them.

    Warm-up runs the cases round-robin; then each of ``repeats`` rounds calls every case once in
    that round's shuffled order (see ``round_orders``). Returns timings in the order of ``cases``;
    take ratios from these with ``ratios``, never across separate runs.
    """
    if not cases:
        raise expected("cases", "at least one case to time", dict(cases))
    _check_counts(warmup, repeats)
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    gc.collect()
    samples: dict[str, list[float]] = {name: [] for name in names}
    with make_progress(progress) as bar:
        task = bar.add_task(description, total=repeats * len(names))
        for order in round_orders(names, repeats, seed):
            for name in order:
                samples[name].append(_time_once(cases[name]) * _NS)
                bar.advance(task)
    return {name: Timing.from_samples(samples[name]) for name in names}


def ratios(
    timings: Mapping[str, Timing],
    baseline: str,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, RatioCI]:
    """Speedup of every case over ``baseline``: ``median(baseline) / median(case)``, with a
    bootstrap CI. Above 1 means the case is faster than the baseline."""
    if baseline not in timings:
        raise expected("baseline", f"one of {', '.join(timings)}", baseline)
    base = timings[baseline].samples
    return {
        name: ratio_ci(base, t.samples, names=(baseline, name), n_boot=n_boot, confidence=confidence, seed=seed)
        for name, t in timings.items()
        if name != baseline
    }
