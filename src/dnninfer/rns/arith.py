"""Residue number system (RNS) arithmetic: moduli sets, forward/reverse conversion, signed CRT and
redundant moduli (RRNS) with error detection and correction.

Why: Mirage (Demirkiran et al., ISCA 2024, arXiv 2311.17323) composes a high-precision integer dot
product from several low-precision *modular* dot products, each computed by an analog photonic
channel, and reconstructs the result with the Chinese remainder theorem (CRT). Research note
``research/cbnet_and_rns.md`` §2.3 and §2.6.

Conventions (standard RNS, e.g. Omondi & Premkumar, "Residue Number Systems", 2007):

* moduli ``m_1..m_n`` pairwise co-prime, dynamic range ``M = prod(m_i)``;
* signed values live in ``[-(M-1)//2, (M-1)//2]`` (even ``M``: ``[-M/2+1, M/2-1]`` is used, the
  value ``M/2`` is never produced by a dot product that respects the overflow rule);
* CRT: ``X = |sum_i r_i * M_i * |M_i^-1|_{m_i}|_M`` with ``M_i = M / m_i``;
* RRNS: ``n`` information moduli plus ``k`` redundant ones, each redundant modulus larger than every
  information modulus, so any ``n`` moduli span the legitimate range and the code has minimum
  distance ``k + 1``: up to ``k`` residue errors are detected and up to ``k // 2`` corrected (the
  subset-reconstruction decoder of the Lightmatter patent US 2022/0229634 and of Demirkiran et al.,
  Nature Communications 2024, s41467-024-49324-8).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from functools import cached_property

import torch

from dnninfer.errors import UserError

__all__ = [
    "MODULI_FAMILIES",
    "ModuliSet",
    "RRNSResult",
    "crt",
    "from_residues",
    "rrns_decode",
    "special_moduli",
    "to_residues",
]

#: The {2^k - 1, 2^k, 2^k + 1} family (cheap converters); k = 5, 6, 7 (research note §2.3).
MODULI_FAMILIES: dict[int, tuple[int, int, int]] = {k: (2**k - 1, 2**k, 2**k + 1) for k in (4, 5, 6, 7, 8)}
#: Default redundant moduli per family: primes larger than the family's largest modulus.
DEFAULT_REDUNDANT: dict[int, tuple[int, ...]] = {
    4: (19, 23, 29), 5: (37, 41, 43), 6: (67, 71, 73), 7: (131, 137, 139), 8: (263, 269, 271),
}
#: CRT sums sum_i r_i * c_i (< sum(m_i) * M) must stay inside int64.
_MAX_CRT_SUM = 2**63


def special_moduli(k: int) -> tuple[int, int, int]:
    """The three-moduli set ``{2^k - 1, 2^k, 2^k + 1}`` (pairwise co-prime for every k >= 1)."""
    if k < 2:
        raise UserError(f"moduli family k: expected an integer >= 2, got {k}")
    return (2**k - 1, 2**k, 2**k + 1)


@dataclass(frozen=True)
class ModuliSet:
    """``n`` information moduli plus optional redundant moduli.

    Construction checks everything a user can get wrong (a ``UserError`` names the offending pair or
    value): each modulus >= 2, all pairwise co-prime, redundant moduli larger than every information
    modulus, dynamic range within int64 headroom.
    """

    moduli: tuple[int, ...]
    redundant: tuple[int, ...] = ()
    _coeffs: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        mods = tuple(int(m) for m in self.moduli)
        red = tuple(int(m) for m in self.redundant)
        object.__setattr__(self, "moduli", mods)
        object.__setattr__(self, "redundant", red)
        if len(mods) < 1:
            raise UserError("moduli: expected at least one modulus, got none")
        for m in mods + red:
            if m < 2:
                raise UserError(f"moduli: expected integers >= 2, got {m}")
        everything = mods + red
        for a, b in itertools.combinations(everything, 2):
            if math.gcd(a, b) != 1:
                raise UserError(f"moduli {list(everything)}: expected pairwise co-prime moduli, got {a} and {b} "
                                f"(gcd {math.gcd(a, b)})")
        if red and min(red) <= max(mods):
            raise UserError(f"redundant moduli {list(red)}: expected each to exceed the largest information modulus "
                            f"{max(mods)} (so any {len(mods)} moduli cover the legitimate range)")
        if sum(everything) * math.prod(everything) >= _MAX_CRT_SUM:
            raise UserError(f"moduli {list(everything)}: dynamic range {math.prod(everything)} is too large for "
                            "exact int64 CRT (sum of moduli x range must stay below 2^63); use fewer or smaller moduli")

    # -- ranges ------------------------------------------------------------------------------------
    @property
    def all_moduli(self) -> tuple[int, ...]:
        return self.moduli + self.redundant

    @property
    def n(self) -> int:
        return len(self.moduli)

    @property
    def k(self) -> int:
        """Number of redundant moduli."""
        return len(self.redundant)

    @property
    def M(self) -> int:
        """Legitimate dynamic range: product of the information moduli."""
        return math.prod(self.moduli)

    @property
    def M_all(self) -> int:
        return math.prod(self.all_moduli)

    @property
    def max_signed(self) -> int:
        """Largest magnitude of a signed value the information moduli represent."""
        return (self.M - 1) // 2

    @property
    def bits(self) -> float:
        """log2 of the legitimate range (the precision the moduli buy)."""
        return math.log2(self.M)

    @property
    def channel_bits(self) -> int:
        """Converter bits per channel: ceil(log2(max modulus)) over every modulus, redundant included."""
        return max(math.ceil(math.log2(m)) for m in self.all_moduli)

    @property
    def correctable(self) -> int:
        return self.k // 2

    # -- CRT coefficients (cached per subset of moduli) ---------------------------------------------
    def coefficients(self, subset: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
        """``(M_S, c_i)`` for the moduli at indices ``subset`` of ``all_moduli``:
        ``c_i = M_i * |M_i^-1|_{m_i} mod M_S`` (CRT, research note §2.3)."""
        hit = self._coeffs.get(subset)
        if hit is None:
            mods = [self.all_moduli[i] for i in subset]
            big = math.prod(mods)
            coeffs = tuple((big // m) * pow(big // m, -1, m) % big for m in mods)
            hit = (big, coeffs)
            self._coeffs[subset] = hit
        return hit

    @cached_property
    def moduli_tensor(self) -> torch.Tensor:
        return torch.tensor(self.all_moduli, dtype=torch.int64)


def to_residues(x: torch.Tensor, ms: ModuliSet) -> torch.Tensor:
    """Forward conversion: integer tensor -> residues, shape ``(n + k, *x.shape)``, each in ``[0, m)``.

    Negative values map to ``x mod m`` (Python/torch ``remainder`` semantics), so the CRT of the
    residues is ``x mod M`` and the signed mapping recovers ``x``.
    """
    x = x.to(torch.int64)
    mods = ms.moduli_tensor.view(-1, *([1] * x.dim()))
    return torch.remainder(x.unsqueeze(0), mods)


def _compute_dtype(ms: ModuliSet, subset: tuple[int, ...]) -> torch.dtype:
    """Cheapest dtype in which ``sum_i r_i * c_i`` over ``subset`` is exact (every term < m_i * M_S)."""
    big, _ = ms.coefficients(subset)
    bound = sum(ms.all_moduli[i] for i in subset) * big
    if bound < 2**24:
        return torch.float32
    if bound < 2**53:
        return torch.float64
    return torch.int64


def _crt(residues: torch.Tensor, ms: ModuliSet, subset: tuple[int, ...]) -> torch.Tensor:
    """CRT in the cheapest exact dtype (float32 for the 5-bit family: all intermediate values are
    integers below 2^24); result in ``[0, M_S)``, in that dtype."""
    big, coeffs = ms.coefficients(subset)
    dtype = _compute_dtype(ms, subset)
    acc = residues[subset[0]].to(dtype) * coeffs[0]
    for i, c in zip(subset[1:], coeffs[1:], strict=True):
        acc += residues[i].to(dtype) * c
    return torch.remainder(acc, big)


def crt(residues: torch.Tensor, ms: ModuliSet, subset: tuple[int, ...] | None = None) -> torch.Tensor:
    """Unsigned reconstruction ``X in [0, M_S)`` from ``residues[subset]`` (default: every modulus), int64."""
    subset = tuple(range(len(ms.all_moduli))) if subset is None else tuple(subset)
    return _crt(residues, ms, subset).to(torch.int64)


def _signed(x: torch.Tensor, big: int) -> torch.Tensor:
    return torch.where(x > (big - 1) // 2, x - big, x)


def from_residues(residues: torch.Tensor, ms: ModuliSet) -> torch.Tensor:
    """Reverse conversion with the signed mapping, using the information moduli only (int64)."""
    return _signed(crt(residues, ms, tuple(range(ms.n))), ms.M)


@dataclass
class RRNSResult:
    """Decoded signed values and what the decoder saw (counts over every element)."""

    values: torch.Tensor
    detected: int  # elements whose full reconstruction fell outside the legitimate range
    corrected: int  # of those, recovered by a subset reconstruction
    uncorrectable: int  # detected but not recovered (erased to ``fill``)


def rrns_decode(residues: torch.Tensor, ms: ModuliSet, fill: int = 0, correct: bool = True) -> RRNSResult:
    """Decode residues of ``n + k`` moduli; detect and correct residue errors.

    ``values`` come back in the cheapest exact dtype (see ``_crt``); ``correct=False`` erases every
    detected element instead of correcting it (detection-only policy: with ``k = 2`` a double error
    can be mis-corrected to a wrong legitimate value, never mis-detected).

    1. Reconstruct from all moduli; a value within ``±max_signed`` is accepted (no detectable error).
    2. Otherwise try every subset that drops ``e = 1 .. k//2`` moduli (smallest ``e`` first): with
       minimum distance ``k + 1``, exactly the subset that drops the erroneous residues lands in the
       legitimate range, so the first such subset gives the corrected value.
    3. Elements still unresolved (more than ``k//2`` errors) are erased to ``fill``: a zero partial
       sum is a far smaller error than the garbage a wrong residue produces.

    Without redundant moduli this is plain signed CRT (no detection possible).
    """
    lim = ms.max_signed
    everyone = tuple(range(len(ms.all_moduli)))
    if ms.k == 0:
        return RRNSResult(_signed(_crt(residues, ms, everyone), ms.M), 0, 0, 0)
    full = _signed(_crt(residues, ms, everyone), ms.M_all)
    bad = full.abs() > lim
    n_bad = int(bad.sum())
    if n_bad == 0:
        return RRNSResult(full, 0, 0, 0)
    values = torch.where(bad, torch.full_like(full, fill), full)
    idx = bad.nonzero(as_tuple=True)
    sub_res = residues[(slice(None), *idx)]  # (n + k, n_bad)
    unresolved = torch.ones(n_bad, dtype=torch.bool)
    fixed = torch.zeros(n_bad, dtype=full.dtype)
    for e in range(1, ms.correctable + 1 if correct else 1):
        for dropped in itertools.combinations(everyone, e):
            keep = tuple(i for i in everyone if i not in dropped)
            big, _ = ms.coefficients(keep)
            cand = _signed(_crt(sub_res, ms, keep), big).to(full.dtype)
            ok = unresolved & (cand.abs() <= lim)
            fixed = torch.where(ok, cand, fixed)
            unresolved &= ~ok
            if not unresolved.any():
                break
        if not unresolved.any():
            break
    fixed = torch.where(unresolved, torch.full_like(fixed, fill), fixed)
    values[idx] = fixed
    n_unres = int(unresolved.sum())
    return RRNSResult(values, n_bad, n_bad - n_unres, n_unres)
