"""The formulas the ledger and the DPRA controller must agree on (partitioning.md §2.3, §6.2 [R]).

Reputation is an AP's smoothed, verified contribution to inference; it acts as stake that raises
its proof-of-work target (an easier puzzle):

    rho <- (1 - beta) * rho + beta * u                        (u: verified work / capacity in a slot)
    T_m  = min(2^256 - 1, floor(T_0 * (1 + kappa * rho_m)))   (kappa = 0: pure PoW)
    P(one hash succeeds) = T_m / 2^256;  block rate = hash_rate * T_m / 2^256
    work(block) = 2^256 // (T_m + 1)                           (fork choice: most cumulative work)

Everything integer where validators must agree bit for bit (targets, work); rho is a float that
is rounded to `RHO_DIGITS` decimals whenever it is stored or hashed, so replay is exact.
"""

from __future__ import annotations

import math
from fractions import Fraction

MAX_TARGET = 2**256 - 1
HASH_SPACE = 2**256
RHO_DIGITS = 12


def round_rho(rho: float) -> float:
    """The canonical stored value of a reputation (what every replica hashes)."""
    return round(float(rho), RHO_DIGITS)


def update_reputation(rho: float, u: float, beta: float) -> float:
    """Exponential smoothing of verified contribution: rho' = (1 - beta) rho + beta u."""
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"beta must be in (0, 1], got {beta}")
    return round_rho((1.0 - beta) * rho + beta * u)


def stake_target(t0: int, kappa: float, rho: float) -> int:
    """PoW target of a miner with reputation `rho`: higher reputation, larger target, easier block."""
    if t0 <= 0 or t0 > MAX_TARGET:
        raise ValueError(f"t0 must be in 1..2^256-1, got {t0}")
    if kappa < 0 or rho < 0:
        raise ValueError(f"kappa and rho must be >= 0, got {kappa}, {rho}")
    scale = 1 + Fraction(float(kappa)) * Fraction(round_rho(rho))  # exact: floats are dyadic rationals
    return min(MAX_TARGET, math.floor(t0 * scale))


def success_probability(target: int) -> float:
    """Chance that one hash is below `target`."""
    return target / HASH_SPACE


def block_rate(hash_rate: float, target: int) -> float:
    """Blocks per second a miner finds with `hash_rate` hashes/s (a Poisson process)."""
    return hash_rate * success_probability(target)


def block_work(target: int) -> int:
    """Expected hashes behind a block with this target: its weight in the fork choice."""
    return HASH_SPACE // (target + 1)


def target_for_expected_hashes(n: float) -> int:
    """The target that makes one block cost `n` hashes on average (for tests and configs)."""
    if n < 1:
        raise ValueError(f"expected hashes must be >= 1, got {n}")
    return min(MAX_TARGET, int(HASH_SPACE / n))
