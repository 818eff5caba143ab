"""Chain parameters: who may take part and the constants of reputation-as-stake PoW.

Everything a validator needs besides the gateway keys: the known gateways and APs, the base target
T_0, the stake weight kappa, the smoothing beta, each AP's capacity F_m * tau in cycles per slot
(the denominator of its contribution u_m), the initial reputations and the genesis time. The
genesis block commits to the hash of these parameters, so a ledger file whose stored parameters
were edited no longer connects to its own blocks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dnninfer.ledger.canonical import (
    canonical_json,
    check_id,
    check_int,
    check_number,
    exact_keys,
    parse_json,
    sha256_hex,
)
from dnninfer.ledger.consensus import MAX_TARGET, round_rho
from dnninfer.ledger.errors import LedgerError

_FIELDS = ("gateways", "aps", "t0", "kappa", "beta", "capacity_cycles", "slot_s", "rho0", "genesis_time_us",
           "chain_id")


def _ids(values: Any, what: str) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise LedgerError(f"{what}: expected a list of names, got {values!r}")
    out = tuple(sorted(check_id(v, what) for v in values))
    if not out:
        raise LedgerError(f"{what}: expected at least one name")
    if len(set(out)) != len(out):
        raise LedgerError(f"{what}: duplicate names in {list(out)}")
    return out


@dataclass(frozen=True, eq=True)
class LedgerParams:
    """Constants every validator must share bit for bit (see the module docstring).

    `capacity_cycles` and `rho0` may be given as one value for every AP or as a mapping AP -> value;
    they are stored as full mappings (capacities rounded to whole cycles). Names are stored sorted.
    """

    gateways: tuple[str, ...]
    aps: tuple[str, ...]
    t0: int
    kappa: float = 1.0
    beta: float = 0.1
    capacity_cycles: Mapping[str, int] | int = 10**9
    slot_s: float = 1.0
    rho0: Mapping[str, float] | float = 0.0
    genesis_time_us: int = 0
    chain_id: str = "b-dt"
    _digest: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "gateways", _ids(self.gateways, "params: field 'gateways'"))
        set_(self, "aps", _ids(self.aps, "params: field 'aps'"))
        check_int(self.t0, "params: field 't0'", 1, MAX_TARGET)
        set_(self, "kappa", check_number(self.kappa, "params: field 'kappa'", 0.0))
        set_(self, "beta", check_number(self.beta, "params: field 'beta'", 0.0, 1.0, lo_open=True))
        set_(self, "capacity_cycles", self._per_ap(self.capacity_cycles, "capacity_cycles", self._capacity))
        set_(self, "slot_s", check_number(self.slot_s, "params: field 'slot_s'", 0.0, lo_open=True))
        set_(self, "rho0", self._per_ap(self.rho0, "rho0", self._rho))
        check_int(self.genesis_time_us, "params: field 'genesis_time_us'")
        check_id(self.chain_id, "params: field 'chain_id'")
        set_(self, "_digest", sha256_hex(canonical_json(self.to_dict())))

    @staticmethod
    def _capacity(v: Any, what: str) -> int:
        if isinstance(v, float) and math.isfinite(v):  # F_m * tau computed in floats: whole cycles suffice
            v = round(v)
        return check_int(v, what, 1)

    @staticmethod
    def _rho(v: Any, what: str) -> float:
        return round_rho(check_number(v, what, 0.0))

    def _per_ap(self, value: Any, name: str, conv: Any) -> dict[str, Any]:
        what = f"params: field '{name}'"
        if not isinstance(value, Mapping):
            return {ap: conv(value, what) for ap in self.aps}
        if set(value) != set(self.aps):
            raise LedgerError(f"{what}: expected one entry per AP {list(self.aps)}, got {sorted(value)}")
        return {ap: conv(value[ap], f"{what}[{ap!r}]") for ap in self.aps}

    def __hash__(self) -> int:  # the mappings are unhashable; the canonical digest identifies the params
        return hash(self._digest)

    @property
    def digest(self) -> str:
        """SHA-256 of the canonical parameters (the genesis block's prev_hash)."""
        return self._digest

    def to_dict(self) -> dict[str, Any]:
        return {"gateways": list(self.gateways), "aps": list(self.aps), "t0": self.t0, "kappa": self.kappa,
                "beta": self.beta, "capacity_cycles": dict(self.capacity_cycles), "slot_s": self.slot_s,
                "rho0": dict(self.rho0), "genesis_time_us": self.genesis_time_us, "chain_id": self.chain_id}

    def to_json(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, d: Any) -> LedgerParams:
        exact_keys(d, set(_FIELDS), "params")
        return cls(**{f: d[f] for f in _FIELDS})

    @classmethod
    def from_json(cls, text: str | bytes) -> LedgerParams:
        return cls.from_dict(parse_json(text, "params"))
