"""GEMM numerics of one emulated core: FP32, BFP-exact, BFP + RNS (Mirage), fixed-point analog, FP8.

Every training GEMM (forward, grad-input, grad-weight) of an ``RNSLinear`` / ``RNSConv2d`` goes
through :func:`emu_matmul`, so all five numerics share one code path for tiling and accumulation:

* ``bfp``   — BFP mantissas (b bits, shared exponent per block of h along the reduction dim), exact
  integer tile products, FP32 accumulation of the rescaled tile results (research note §2.8 steps
  1-3). The reference the RNS mode must equal bit for bit when noiseless.
* ``rns``   — the same BFP tiles; each tile product is computed as ``n`` modular dot products
  ``|r_a . r_b|_m`` (one per modulus: the photonic MDPU outputs), optionally corrupted by analog
  readout noise (Gaussian on the detected phase, ``sigma`` in residue steps, rounded to the nearest
  residue by the ADC — §2.6; the error ``round(sigma z)`` is drawn exactly by inverse CDF from one
  uniform per readout), then CRT-decoded (signed; RRNS detection/correction when redundant moduli are
  given) in a fused numba kernel (``kernels.py``), and accumulated exactly like ``bfp``.
* ``fixed_analog`` — a conventional analog core: the same b-bit DAC inputs and an exact analog dot
  product, read by a ``adc_bits`` ADC over a fixed full-scale range (worst case ``h * qmax^2``, what a
  real converter has) or a per-GEMM calibrated range; optional noise in ADC steps (§2.8 step 6).
* ``fp8``   — HFP8-style fake quantisation (Sun et al., NeurIPS 2019; Micikevicius et al. 2022):
  E4M3 for weights/activations, E5M2 for gradients, per-tensor scaling, FP32 GEMM.
* ``fp32``  — plain ``a @ b``.

Exactness: integer tile products are computed in float32, exact while every partial sum is below
2^24 (checked when the numerics are built: ``h * qmax^2`` for BFP, ``h * (m - 1)^2`` per modulus).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch

from dnninfer.errors import UserError
from dnninfer.rns.arith import DEFAULT_REDUNDANT, ModuliSet
from dnninfer.rns.bfp import bfp_tiles, qmax
from dnninfer.rns.kernels import CandidateTable, decode_tiles

__all__ = ["MODES", "Numerics", "NumericsStats", "emu_matmul", "fp8_fake_quant"]

MODES = ("fp32", "bfp", "rns", "fixed_analog", "fp8")
_F32_EXACT = 2**24
FP8_MAX = {"e4m3": 448.0, "e5m2": 57344.0}


@dataclass
class NumericsStats:
    """Counters over every emulated GEMM (reset with ``reset()``)."""

    gemms: int = 0
    tile_outputs: int = 0  # integer tile results produced (T * M * N summed over GEMMs)
    residues: int = 0  # residue readouts (tile_outputs * number of moduli)
    residue_errors: int = 0  # readouts that noise moved to a wrong residue
    detected: int = 0  # tile outputs flagged by the RRNS check
    corrected: int = 0
    uncorrectable: int = 0  # detected and erased (set to 0)
    adc_clipped: int = 0  # fixed-point ADC outputs at the rails

    def reset(self) -> None:
        for k in asdict(self):
            setattr(self, k, 0)

    def to_dict(self) -> dict[str, float]:
        d: dict[str, float] = dict(asdict(self))
        d["residue_error_rate"] = self.residue_errors / self.residues if self.residues else 0.0
        return d


@dataclass
class Numerics:
    """How one core computes a GEMM. Validated on construction (``UserError`` on a bad option).

    ``redundant`` is either a tuple of moduli or an int count (then the family default: primes just
    above the largest information modulus, see ``arith.DEFAULT_REDUNDANT``).
    """

    mode: str = "rns"
    moduli: tuple[int, ...] = (31, 32, 33)
    redundant: tuple[int, ...] | int = ()
    bits: int = 6
    block: int = 16
    sigma: float = 0.0
    adc_bits: int = 6
    adc_range: str = "worst"
    rrns: str = "correct"
    seed: int = 0
    stats: NumericsStats = field(default_factory=NumericsStats, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"mode: expected one of {', '.join(MODES)}, got {self.mode!r}")
        if not (isinstance(self.bits, int) and 2 <= self.bits <= 12):
            raise UserError(f"mantissa bits: expected an integer in 2..12, got {self.bits!r}")
        if not (isinstance(self.block, int) and self.block >= 1):
            raise UserError(f"block size: expected an integer >= 1, got {self.block!r}")
        if not self.sigma >= 0:
            raise UserError(f"sigma: expected a number >= 0 (noise in residue steps), got {self.sigma!r}")
        if self.rrns not in ("correct", "detect"):
            raise UserError(f"rrns policy: expected 'correct' or 'detect', got {self.rrns!r}")
        if self.adc_range not in ("worst", "calibrated"):
            raise UserError(f"adc_range: expected 'worst' or 'calibrated', got {self.adc_range!r}")
        if not (isinstance(self.adc_bits, int) and 2 <= self.adc_bits <= 24):
            raise UserError(f"adc bits: expected an integer in 2..24, got {self.adc_bits!r}")
        if isinstance(self.redundant, int):
            if self.redundant < 0:
                raise UserError(f"redundant moduli: expected a count >= 0, got {self.redundant}")
            self.redundant = self._default_redundant(self.redundant)
        self.moduli = tuple(int(m) for m in self.moduli)
        self.redundant = tuple(int(m) for m in self.redundant)
        self.ms = ModuliSet(self.moduli, self.redundant)
        self._mods = torch.tensor(self.ms.all_moduli, dtype=torch.float32).view(-1, 1, 1, 1)
        self._table = CandidateTable(self.ms, correct=self.rrns == "correct")
        self._gen = torch.Generator().manual_seed(self.seed)
        worst = self.block * qmax(self.bits) ** 2
        if self.mode in ("bfp", "rns", "fixed_analog") and worst >= _F32_EXACT:
            raise UserError(f"block {self.block} x {self.bits}-bit mantissas: tile sums up to {worst} exceed 2^24 "
                            "(float32 exact-integer limit); use a smaller block or fewer bits")
        if self.mode == "rns":
            if worst > self.ms.max_signed:
                raise UserError(
                    f"moduli {list(self.moduli)} (range ±{self.ms.max_signed}): a {self.block}-long dot product of "
                    f"{self.bits}-bit mantissas reaches ±{worst} and would overflow; expected "
                    f"block * (2^(bits-1) - 1)^2 <= (M - 1)/2 — use larger moduli, a smaller block or fewer bits")
            big = max(self.ms.all_moduli)
            if self.block * (big - 1) ** 2 >= _F32_EXACT:
                raise UserError(f"block {self.block} with modulus {big}: residue dot products exceed 2^24")

    def _default_redundant(self, count: int) -> tuple[int, ...]:
        if count == 0:
            return ()
        for k, family in ((k, (2**k - 1, 2**k, 2**k + 1)) for k in DEFAULT_REDUNDANT):
            if tuple(sorted(self.moduli)) == family and count <= len(DEFAULT_REDUNDANT[k]):
                return DEFAULT_REDUNDANT[k][:count]
        raise UserError(f"redundant moduli: no default {count} redundant moduli for {list(self.moduli)}; "
                        "give them explicitly (co-prime, each larger than every information modulus)")

    def __deepcopy__(self, memo: dict) -> Numerics:
        new = copy.copy(self)
        new.stats = NumericsStats(**asdict(self.stats))
        new._gen = torch.Generator()
        new._gen.set_state(self._gen.get_state())
        return new

    def reseed(self, seed: int) -> None:
        self.seed = seed
        self._gen = torch.Generator().manual_seed(seed)

    def describe(self) -> dict[str, object]:
        """Options as plain data (what a run used)."""
        out: dict[str, object] = {"mode": self.mode}
        if self.mode in ("bfp", "rns", "fixed_analog"):
            out.update(bits=self.bits, block=self.block)
        if self.mode == "rns":
            out.update(moduli=list(self.moduli), redundant=list(self.redundant), sigma=self.sigma,
                       range_bits=round(self.ms.bits, 2), channel_bits=self.ms.channel_bits)
            if self.redundant:
                out["rrns"] = self.rrns
        if self.mode == "fixed_analog":
            out.update(adc_bits=self.adc_bits, adc_range=self.adc_range, sigma=self.sigma)
        return out

    def randn(self, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=self._gen)


def fp8_fake_quant(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """Round ``x`` to FP8 (``e4m3`` or ``e5m2``) with one per-tensor scale mapping max|x| to the
    format's largest finite value (Micikevicius et al. 2022, per-tensor scaling), back in float32."""
    dtype = torch.float8_e4m3fn if fmt == "e4m3" else torch.float8_e5m2
    amax = x.abs().max()
    if not torch.isfinite(amax) or amax == 0:
        return x.clone()
    scale = FP8_MAX[fmt] / amax
    return (x * scale).to(dtype).to(torch.float32) / scale


def _tile_products_rns(qa: torch.Tensor, qb: torch.Tensor, num: Numerics) -> torch.Tensor:
    """Integer tile products via one modular dot product per modulus (the photonic MDPU outputs
    ``|r_a . r_b|_m``), analog readout noise, then CRT / RRNS decode (fused kernel)."""
    stats = num.stats
    ra = torch.remainder(qa.unsqueeze(0), num._mods)  # (n, T, M, h): forward conversion
    rb = torch.remainder(qb.unsqueeze(0), num._mods)  # (n, T, h, N)
    raw = torch.matmul(ra, rb)  # (n, T, M, N) exact integer sums < 2^24, reduced mod m in the kernel
    uniform = torch.rand(raw.shape, generator=num._gen) if num.sigma > 0 else None
    p, counters = decode_tiles(raw, num._table, num.sigma, uniform)
    stats.residues += raw.numel()
    stats.residue_errors += int(counters[0])
    stats.detected += int(counters[1])
    stats.corrected += int(counters[2])
    stats.uncorrectable += int(counters[3])
    return p


def _tile_products_fixed(qa: torch.Tensor, qb: torch.Tensor, num: Numerics) -> torch.Tensor:
    """Exact analog dot product read by a b-bit signed ADC over a fixed or calibrated range."""
    p = torch.matmul(qa, qb)
    levels = 2 ** (num.adc_bits - 1) - 1
    worst = float(num.block * qmax(num.bits) ** 2)
    full_scale = worst if num.adc_range == "worst" else (float(p.abs().max()) or 1.0)
    step = full_scale / levels
    y = p / step
    if num.sigma > 0:
        y = y + num.sigma * num.randn(y.shape)
    y = torch.round(y)
    num.stats.adc_clipped += int((y.abs() >= levels).sum())
    return y.clamp_(-levels, levels) * step


def emu_matmul(a: torch.Tensor, b: torch.Tensor, num: Numerics, grad_side: str | None = None) -> torch.Tensor:
    """``a @ b`` (a: (M, K), b: (K, N)) under ``num``; ``grad_side`` names the gradient operand
    (``"a"``/``"b"``) of a backward GEMM, which FP8 stores as E5M2."""
    a = a.float()
    b = b.float()
    mode = num.mode
    if mode == "fp32":
        return a @ b
    if mode == "fp8":
        fa = "e5m2" if grad_side == "a" else "e4m3"
        fb = "e5m2" if grad_side == "b" else "e4m3"
        return fp8_fake_quant(a, fa) @ fp8_fake_quant(b, fb)
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        # a diverged run stays diverged; integer emulation of NaN/inf is meaningless
        return torch.full((a.shape[0], b.shape[1]), float("nan"))
    ta, tb = bfp_tiles(a, b, num.bits, num.block)
    num.stats.gemms += 1
    num.stats.tile_outputs += ta.q.shape[0] * a.shape[0] * b.shape[1]
    if mode == "bfp":
        p = torch.matmul(ta.q, tb.q)
    elif mode == "rns":
        p = _tile_products_rns(ta.q, tb.q, num)
    else:
        p = _tile_products_fixed(ta.q, tb.q, num)
    return accumulate(p, ta.scale, tb.scale)


def accumulate(p: torch.Tensor, sa: torch.Tensor, sb: torch.Tensor) -> torch.Tensor:
    """FP32 sum over tiles of the rescaled integer tile products (shared by every integer mode, so
    equal tile products give bit-identical GEMM results)."""
    return (p * sa * sb).sum(0)
