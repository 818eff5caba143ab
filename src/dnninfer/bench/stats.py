"""Robust summaries of timing samples.

Timings on a shared 2-core box are skewed by neighbours, so we report the median and the
inter-quartile range rather than mean and standard deviation, and we state speedups as a ratio
of medians with a bootstrap confidence interval, so a reader can tell a real gain from noise.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dnninfer.errors import expected

__all__ = [
    "RatioCI",
    "Samples",
    "Summary",
    "bootstrap_ratio_ci",
    "iqr",
    "median",
    "pairwise_ratios",
    "percentile",
    "ratio_ci",
    "summarize",
]


Samples = Sequence[float] | np.ndarray
"""One set of measurements (seconds, usually)."""


class _Record:
    """A frozen dataclass of results; ``to_dict`` is what bench JSON stores."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


def _as_array(samples: Samples, name: str = "samples") -> np.ndarray:
    arr = np.asarray(samples, dtype=np.float64).ravel()
    if arr.size == 0:
        raise expected(name, "at least one value", "an empty sequence")
    return arr


def median(samples: Samples) -> float:
    """Median: the centre that a few slow outliers cannot drag."""
    return float(np.median(_as_array(samples)))


def percentile(samples: Samples, q: float) -> float:
    """The q-th percentile (0..100), linear interpolation as in ``numpy.percentile``."""
    return float(np.percentile(_as_array(samples), q))


def iqr(samples: Samples) -> tuple[float, float]:
    """(p25, p75): the spread of the middle half, our noise bar."""
    p25, p75 = np.percentile(_as_array(samples), [25, 75])
    return float(p25), float(p75)


@dataclass(frozen=True)
class Summary(_Record):
    """Order statistics of one sample set."""

    n: int
    mean: float
    median: float
    p25: float
    p75: float
    iqr: float
    p90: float
    p95: float
    min: float
    max: float


def summarize(samples: Samples) -> Summary:
    """All the statistics a bench row reports, computed once."""
    arr = _as_array(samples)
    p25, p50, p75, p90, p95 = np.percentile(arr, [25, 50, 75, 90, 95])
    return Summary(
        n=int(arr.size),
        mean=float(arr.mean()),
        median=float(p50),
        p25=float(p25),
        p75=float(p75),
        iqr=float(p75 - p25),
        p90=float(p90),
        p95=float(p95),
        min=float(arr.min()),
        max=float(arr.max()),
    )


@dataclass(frozen=True)
class RatioCI(_Record):
    """``median(numerator) / median(denominator)`` with a bootstrap confidence interval."""

    numerator: str
    denominator: str
    ratio: float
    lo: float
    hi: float
    confidence: float


def bootstrap_ratio_ci(
    numerator: Samples,
    denominator: Samples,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap CI of ``median(numerator) / median(denominator)``.

    The two sample sets are resampled independently (a ratio of medians has no closed-form
    variance). A seeded ``numpy.random.Generator`` makes the interval reproducible.
    """
    if not 0.0 < confidence < 1.0:
        raise expected("confidence", "a value in (0, 1)", confidence)
    if n_boot < 1:
        raise expected("n_boot", "an integer >= 1", n_boot)
    num = _as_array(numerator, "numerator")
    den = _as_array(denominator, "denominator")
    rng = np.random.default_rng(seed)
    med_num = np.median(num[rng.integers(0, num.size, size=(n_boot, num.size))], axis=1)
    med_den = np.median(den[rng.integers(0, den.size, size=(n_boot, den.size))], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = med_num / med_den
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.nanpercentile(boot, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(lo), float(hi)


def ratio_ci(
    numerator: Samples,
    denominator: Samples,
    *,
    names: tuple[str, str] = ("numerator", "denominator"),
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> RatioCI:
    """Point ratio of medians plus its bootstrap interval, as one record."""
    num_med, den_med = median(numerator), median(denominator)
    ratio = num_med / den_med if den_med != 0 else float("inf")
    lo, hi = bootstrap_ratio_ci(numerator, denominator, n_boot=n_boot, confidence=confidence, seed=seed)
    return RatioCI(names[0], names[1], ratio, lo, hi, confidence)


def pairwise_ratios(
    samples: Mapping[str, Samples],
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[RatioCI]:
    """Ratio of medians for every pair (a, b), a listed before b: ``median(a) / median(b)``.

    Ratios come from samples taken in the same run, never from numbers of different runs.
    """
    return [
        ratio_ci(samples[a], samples[b], names=(a, b), n_boot=n_boot, confidence=confidence, seed=seed)
        for a, b in itertools.combinations(samples, 2)
    ]
