"""The shared consensus formulas: targets grow with reputation, kappa = 0 is pure PoW, work inverts target."""

from __future__ import annotations

import pytest

from dnninfer.ledger.consensus import (
    MAX_TARGET,
    block_work,
    stake_target,
    success_probability,
    target_for_expected_hashes,
    update_reputation,
)


def test_reputation_raises_the_target_and_kappa_zero_is_pure_pow():
    t0 = target_for_expected_hashes(4096)
    assert stake_target(t0, 0.0, 0.9) == t0
    assert stake_target(t0, 2.0, 0.0) == t0
    assert stake_target(t0, 2.0, 0.5) == 2 * t0
    assert stake_target(t0, 1.0, 0.2) < stake_target(t0, 1.0, 0.4)
    assert stake_target(MAX_TARGET // 2, 10.0, 1.0) == MAX_TARGET


def test_work_is_expected_hashes():
    t = target_for_expected_hashes(1000)
    assert block_work(t) == pytest.approx(1000, abs=1)
    assert 1 / success_probability(t) == pytest.approx(1000, rel=1e-9)


def test_reputation_smoothing_is_exact_and_bounded():
    rho = 0.0
    for _ in range(200):
        rho = update_reputation(rho, 0.8, 0.1)
    assert rho == pytest.approx(0.8, abs=1e-6)
    assert update_reputation(0.3, 0.3, 0.5) == 0.3
    with pytest.raises(ValueError):
        update_reputation(0.1, 0.1, 0.0)
