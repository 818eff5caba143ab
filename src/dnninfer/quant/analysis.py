"""Accuracy at matched non-zeros, with paired-seed statistics.

**Matched non-zeros (closest width pair).** For each width ``w`` of method B (e.g. binary), take the
width ``w'`` of method A (e.g. signed binary) whose mean nnz (non-zero weights in the quantised
layers, mean over seeds) is closest to B's at ``w`` in log ratio; the pair counts as matched when
the ratio ``nnz_A / nnz_B`` lies within ``[1/tol, tol]`` (tol = 1.5 by default). No interpolation:
both sides of a pair are real trained models. The headline pair is the matched pair with the ratio
closest to 1; ``a_uses_fewer_nnz`` says whether A got no more non-zeros than B there.

**Paired seeds.** Seed ``s`` fixes the data split, the initialisation and the batch order for every
method, so per seed ``d_s = acc_A(w', s) - acc_B(w, s)`` is a paired difference. We report its mean,
a seeded percentile-bootstrap 95 % CI of the mean, wins/losses/ties and the two-sided exact sign
test (ties dropped).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["by_method_width", "headline_pair", "matched_pairs", "paired_stats", "sign_test_p"]


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact binomial sign test of wins vs losses (p = 0.5), ties already dropped."""
    n = wins + losses
    if n == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(wins, n, 0.5).pvalue)


def paired_stats(diffs: Sequence[float], *, n_boot: int = 10000, confidence: float = 0.95,
                 seed: int = 0) -> dict[str, Any]:
    """Mean paired difference, bootstrap CI of the mean, wins/losses/ties and sign-test p-value."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.size == 0:
        return {"n": 0, "mean_diff": None, "ci_lo": None, "ci_hi": None, "wins": 0, "losses": 0, "ties": 0,
                "sign_test_p": None}
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.percentile(boot, [100 * alpha, 100 * (1 - alpha)])
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    return {"n": int(d.size), "mean_diff": float(d.mean()), "std_diff": float(d.std(ddof=1)) if d.size > 1 else 0.0,
            "ci_lo": float(lo), "ci_hi": float(hi), "wins": wins, "losses": losses, "ties": int(d.size - wins - losses),
            "sign_test_p": sign_test_p(wins, losses)}


def by_method_width(runs: Iterable[Mapping[str, Any]]) -> dict[tuple[str, float], dict[int, Mapping[str, Any]]]:
    """``{(method, width): {seed: run}}``."""
    out: dict[tuple[str, float], dict[int, Mapping[str, Any]]] = defaultdict(dict)
    for r in runs:
        out[(r["method"], float(r["width"]))][int(r["seed"])] = r
    return dict(out)


def _mean(xs: Iterable[float]) -> float:
    return statistics.fmean(list(xs))


def matched_pairs(runs: Sequence[Mapping[str, Any]], a: str = "signed", b: str = "binary", *, tol: float = 1.5,
                  seed: int = 0) -> list[dict[str, Any]]:
    """One record per width of ``b``: its closest-nnz width of ``a``, both mean accuracies and the
    paired-seed statistics of ``acc_a - acc_b`` (see the module docstring)."""
    groups = by_method_width(runs)
    widths_a = sorted(w for m, w in groups if m == a)
    widths_b = sorted(w for m, w in groups if m == b)
    if not widths_a:
        return []
    nnz = {k: _mean(r["nnz"] for r in v.values()) for k, v in groups.items()}
    pairs = []
    for wb in widths_b:
        wa = min(widths_a, key=lambda w: (abs(math.log(nnz[(a, w)] / nnz[(b, wb)])), w))
        ga, gb = groups[(a, wa)], groups[(b, wb)]
        seeds = sorted(set(ga) & set(gb))
        acc_a = [ga[s]["accuracy"] for s in seeds]
        acc_b = [gb[s]["accuracy"] for s in seeds]
        ratio = nnz[(a, wa)] / nnz[(b, wb)]
        pairs.append({
            "a": a, "b": b, "width_a": wa, "width_b": wb, "nnz_a": nnz[(a, wa)], "nnz_b": nnz[(b, wb)],
            "nnz_ratio": ratio, "matched": 1 / tol <= ratio <= tol, "a_uses_fewer_nnz": ratio <= 1.0,
            "acc_a": _mean(acc_a) if seeds else None, "acc_b": _mean(acc_b) if seeds else None,
            "acc_a_std": statistics.stdev(acc_a) if len(seeds) > 1 else 0.0,
            "acc_b_std": statistics.stdev(acc_b) if len(seeds) > 1 else 0.0,
            **paired_stats([x - y for x, y in zip(acc_a, acc_b, strict=True)], seed=seed),
        })
    return pairs


def headline_pair(pairs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The matched pair whose nnz ratio is closest to 1 (ties: the smaller width of ``b``)."""
    matched = [p for p in pairs if p["matched"] and p["n"]]
    if not matched:
        return None
    return min(matched, key=lambda p: (abs(math.log(p["nnz_ratio"])), p["width_b"]))
