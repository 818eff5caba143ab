"""The reputation table: each AP's smoothed, verified contribution, updated once per block.

For every AP m, u_m = (cycles claimed for m in the block's receipts) / capacity_cycles[m], clipped
to [0, 1]; APs without receipts get u_m = 0; then rho_m <- (1 - beta) rho_m + beta u_m
(`consensus.update_reputation`, rounded to `RHO_DIGITS`). Receipts are signed by gateways, so the
contribution counted is what gateways vouch for, not what an AP says about itself. The table
after a block is committed in the block header as `reputation_root`, so the stake every
validator uses for the next block's target is agreed on-chain.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from dnninfer.ledger.canonical import canonical_json, sha256_hex
from dnninfer.ledger.consensus import round_rho, update_reputation
from dnninfer.ledger.params import LedgerParams
from dnninfer.ledger.receipt import Receipt

Table = dict[str, float]


def initial_table(params: LedgerParams) -> Table:
    """The genesis reputations (`params.rho0`)."""
    return {ap: round_rho(params.rho0[ap]) for ap in params.aps}


def contributions(params: LedgerParams, receipts: Iterable[Receipt]) -> dict[str, float]:
    """u_m per AP: verified cycles / capacity, clipped to [0, 1] (exact int/int division)."""
    cycles = dict.fromkeys(params.aps, 0)
    for r in receipts:
        cycles[r.ap] += r.cycles
    return {ap: min(1.0, c / params.capacity_cycles[ap]) for ap, c in cycles.items()}


def apply_block(params: LedgerParams, table: Mapping[str, float], receipts: Iterable[Receipt]) -> Table:
    """The table after a block carrying `receipts` (a new dict; `table` is not changed)."""
    u = contributions(params, receipts)
    return {ap: update_reputation(table[ap], u[ap], params.beta) for ap in params.aps}


def table_root(table: Mapping[str, float]) -> str:
    """SHA-256 of the canonical table (sorted AP names, rho rounded): the block's `reputation_root`."""
    return sha256_hex(canonical_json({ap: round_rho(rho) for ap, rho in table.items()}))
