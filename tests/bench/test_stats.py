"""Statistics on arrays whose answers are known by hand."""

import numpy as np
import pytest

from dnninfer.bench import stats
from dnninfer.errors import UserError


def test_median_and_iqr_exact_on_known_array():
    x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    assert stats.median(x) == 5.0
    assert stats.iqr(x) == (3.0, 7.0)


def test_summarize_matches_numpy_linear_percentiles():
    x = np.arange(1, 101, dtype=float)  # 1..100
    s = stats.summarize(x)
    assert (s.n, s.median, s.mean, s.min, s.max) == (100, 50.5, 50.5, 1.0, 100.0)
    assert (s.p25, s.p75, s.iqr) == (25.75, 75.25, 49.5)
    assert (s.p90, s.p95) == (pytest.approx(90.1), pytest.approx(95.05))


def test_median_ignores_one_huge_outlier_while_mean_does_not():
    s = stats.summarize([1.0, 1.0, 1.0, 1.0, 1000.0])
    assert s.median == 1.0
    assert s.mean > 100  # negative control: the mean is dragged


def test_empty_samples_is_a_user_error():
    with pytest.raises(UserError, match="at least one value"):
        stats.median([])


def _deterministic_pair():
    den = np.linspace(1.0, 2.0, 51)  # median 1.5
    return 2.0 * den, den  # median ratio exactly 2


def test_bootstrap_ci_contains_true_ratio():
    num, den = _deterministic_pair()
    lo, hi = stats.bootstrap_ratio_ci(num, den, seed=0)
    assert lo < 2.0 < hi
    assert hi - lo < 1.0  # an informative interval, not (0, inf)


def test_bootstrap_ci_is_reproducible_with_same_seed_and_varies_with_seed():
    num, den = _deterministic_pair()
    a = stats.bootstrap_ratio_ci(num, den, seed=7, n_boot=500)
    b = stats.bootstrap_ratio_ci(num, den, seed=7, n_boot=500)
    c = stats.bootstrap_ratio_ci(num, den, seed=8, n_boot=500)
    assert a == b
    assert a != c


def test_bootstrap_ci_excludes_one_when_cases_clearly_differ():
    rng = np.random.default_rng(0)
    fast = 1.0 + 0.05 * rng.random(40)
    slow = 1.5 + 0.05 * rng.random(40)
    lo, hi = stats.bootstrap_ratio_ci(slow, fast, seed=0)
    assert lo > 1.0 and hi < 2.0


def test_pairwise_ratios_cover_every_pair_once():
    samples = {"a": [2.0, 2.0, 2.0], "b": [1.0, 1.0, 1.0], "c": [4.0, 4.0, 4.0]}
    got = {(r.numerator, r.denominator): r.ratio for r in stats.pairwise_ratios(samples, n_boot=50)}
    assert got == {("a", "b"): 2.0, ("a", "c"): 0.5, ("b", "c"): 0.25}


def test_ratio_ci_of_constant_samples_is_degenerate_at_the_ratio():
    r = stats.ratio_ci([3.0] * 5, [1.5] * 5, names=("x", "y"), n_boot=100)
    assert (r.ratio, r.lo, r.hi) == (2.0, 2.0, 2.0)
    assert r.to_dict()["numerator"] == "x"
