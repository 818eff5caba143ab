"""Mining statistics: hashes to success are geometric with mean 2^256 / T, and stake speeds mining."""

from __future__ import annotations

import math
import random

from dnninfer.ledger.chain import Ledger
from dnninfer.ledger.consensus import HASH_SPACE, target_for_expected_hashes
from dnninfer.ledger.miner import mine_block
from dnninfer.ledger.params import LedgerParams
from dnninfer.ledger.receipt import Keyring

Z99 = 2.5758  # two-sided 99%


def _ledger(expected: float, kappa: float = 3.0) -> Ledger:
    params = LedgerParams(gateways=["gw0"], aps=["low", "high"], t0=target_for_expected_hashes(expected),
                          kappa=kappa, rho0={"low": 0.0, "high": 1.0})
    return Ledger(params, Keyring.derive(["gw0"]))


def _hashes(ledger: Ledger, miner: str, trials: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [mine_block(ledger, miner, [], rng=rng).hashes for _ in range(trials)]


def test_mean_hashes_matches_two_to_the_256_over_target():
    lg = _ledger(256)
    target = lg.target_for("low")
    p = target / HASH_SPACE
    mean_expected = 1 / p
    assert mean_expected == lg.expected_hashes("low") and abs(mean_expected - 256) < 1e-6
    n = 300
    xs = _hashes(lg, "low", n, seed=2024)
    mean = sum(xs) / n
    se = math.sqrt(1 - p) / p / math.sqrt(n)  # geometric: sd = sqrt(1 - p) / p
    assert abs(mean - mean_expected) < Z99 * se, (mean, mean_expected, se)
    # the shape too: about 1 - 1/e of the trials finish within the mean
    within = sum(x <= mean_expected for x in xs) / n
    assert abs(within - (1 - (1 - p) ** 256)) < Z99 * math.sqrt(0.25 / n)


def test_simulated_seconds_are_hashes_over_hash_rate():
    lg = _ledger(256)
    m = mine_block(lg, "low", [], seed=7, hash_rate=2e5)
    assert m.seconds == m.hashes / 2e5 and m.block.pow_ok()
    assert mine_block(lg, "low", [], seed=7) == mine_block(lg, "low", [], seed=7)  # seeded: reproducible


def test_higher_reputation_mines_faster():
    lg = _ledger(1024, kappa=3.0)  # rho = 1, kappa = 3: target x4, a quarter of the hashes
    assert lg.target_for("high") == 4 * lg.target_for("low")
    n = 200
    low = _hashes(lg, "low", n, seed=1)
    high = _hashes(lg, "high", n, seed=2)
    m_low, m_high = sum(low) / n, sum(high) / n
    se = math.sqrt(lg.expected_hashes("low") ** 2 / n + lg.expected_hashes("high") ** 2 / n)
    assert (m_low - m_high) / se > 2.33, (m_low, m_high)  # one-sided 99%
    assert 2.5 < m_low / m_high < 6.0


def test_kappa_zero_gives_no_advantage():
    lg = _ledger(512, kappa=0.0)
    assert lg.target_for("high") == lg.target_for("low") == lg.params.t0
