"""Matched-nnz pairing and paired-seed statistics, checked on hand-made runs."""

from __future__ import annotations

import pytest

from dnninfer.quant.analysis import headline_pair, matched_pairs, paired_stats, sign_test_p


def _runs():
    runs = []
    for seed in range(8):
        for w, nnz in ((0.5, 576), (1.0, 1280)):
            runs.append({"method": "binary", "width": w, "seed": seed, "nnz": nnz, "accuracy": 0.6 + 0.01 * seed})
        for w, nnz in ((1.0, 450), (1.5, 700), (3.0, 2000)):
            runs.append({"method": "signed", "width": w, "seed": seed, "nnz": nnz + seed,
                         "accuracy": 0.8 + 0.01 * seed - (0.1 if w == 1.0 else 0.0)})
    return runs


def test_closest_width_pair_in_log_nnz():
    pairs = {p["width_b"]: p for p in matched_pairs(_runs(), "signed", "binary")}
    assert pairs[0.5]["width_a"] == 1.5  # log(703.5/576)=0.20 < log(576/453.5)=0.24
    # 1280 vs 703.5 (ratio 0.55) or 2003.5 (1.57): the latter is closer, but outside 1.5x
    assert pairs[1.0]["width_a"] == 3.0 and pairs[1.0]["matched"] is False
    head = headline_pair(list(pairs.values()))
    assert head["width_b"] == 0.5 and head["width_a"] == 1.5


def test_unmatched_pairs_are_flagged():
    assert matched_pairs(_runs(), "signed", "binary", tol=1.3)[0]["matched"]  # 1.22x
    assert not matched_pairs(_runs(), "signed", "binary", tol=1.2)[0]["matched"]


def test_paired_stats_on_constant_difference():
    p = matched_pairs(_runs(), "signed", "binary")[0]
    assert p["n"] == 8 and p["wins"] == 8 and p["losses"] == 0
    assert p["mean_diff"] == pytest.approx(0.2) and p["ci_lo"] == pytest.approx(0.2)
    assert p["sign_test_p"] == pytest.approx(2 / 256)


def test_sign_test_and_bootstrap_negative_control():
    s = paired_stats([0.01, -0.01, 0.02, -0.02, 0.0, 0.01, -0.01, 0.0])
    assert s["ties"] == 2 and s["wins"] == s["losses"] == 3 and s["sign_test_p"] == 1.0
    assert s["ci_lo"] < 0 < s["ci_hi"]
    assert sign_test_p(0, 0) == 1.0
