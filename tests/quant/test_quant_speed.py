"""Kernel timing rows (quant/speed.py): synthetic weights have PLUM's layout and the asked density;
every kernel is checked against the reference before its time is trusted."""

from __future__ import annotations

import numpy as np

from dnninfer.quant import speed
from dnninfer.quant.speed import KERNEL_CASES, synthetic_weights, time_shape


def test_synthetic_weights_follow_each_methods_pattern():
    rng = np.random.default_rng(0)
    n, k, density = 64, 512, 0.3
    binary = synthetic_weights(n, k, "binary", density, rng)
    ternary = synthetic_weights(n, k, "ternary", density, rng)
    signed = synthetic_weights(n, k, "signed", density, rng)
    assert set(np.unique(binary)) == {-1.0, 1.0}
    assert set(np.unique(ternary)) == {-1.0, 0.0, 1.0}
    # signed: first half of the filters {0, +1}, the rest {0, -1}; never both signs in a filter
    assert set(np.unique(signed[: n // 2])) == {0.0, 1.0} and set(np.unique(signed[n // 2:])) == {-1.0, 0.0}
    for w in (ternary, signed):
        assert abs(float((w != 0).mean()) - density) < 0.02


def _shape(seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    n, k = 16, 96
    w = {m: synthetic_weights(n, k, m, 0.4, rng) for m in ("binary", "ternary", "signed")}
    w["fp32"] = rng.standard_normal((n, k)).astype(np.float32)
    return rng.standard_normal((3, k)).astype(np.float32), w


def test_time_shape_checks_every_kernel_and_gives_every_figure():
    x, w = _shape()
    row = time_shape("3x96x16", "synthetic", x, w, warmup=0, repeats=3, seed=0)
    assert row["max_rel_err"] < 1e-5
    assert (row["M"], row["K"], row["N"]) == (3, 96, 16)
    assert abs(row["density_signed"] - float((w["signed"] != 0).mean())) < 1e-12
    for name in KERNEL_CASES:
        assert row[f"{name}_ms"] > 0
    for key in ("vs_binary", "vs_ternary", "vs_best_binary", "vs_dense_pm1", "vs_fp32_blas"):
        lo, hi = row[f"speedup_{key}_ci"]
        assert lo <= row[f"speedup_{key}"] <= hi
    assert row["best_binary_kernel"] in ("dense_pm1", "binary_2pos")


def test_time_shape_error_check_catches_a_wrong_result(monkeypatch):
    """Negative control: with a reference that is off by 0.5, the reported error shows it."""
    x, w = _shape(1)
    real = speed.reference_gemm
    monkeypatch.setattr(speed, "reference_gemm", lambda a, b: real(a, b) + 0.5)
    row = time_shape("3x96x16", "synthetic", x, w, warmup=0, repeats=1, seed=0)
    assert row["max_rel_err"] > 1e-2
