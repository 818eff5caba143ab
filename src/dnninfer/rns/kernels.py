"""Fused CPU kernel (numba) for the RNS tile decode: modular reduction of the per-modulus dot
products, analog readout noise, CRT with the signed mapping and the RRNS check/correction, in one
pass over the tile outputs instead of a dozen full-size torch temporaries.

It computes exactly what ``arith.rrns_decode`` computes (that torch implementation is the reference;
tests check the two agree element for element), in int64 arithmetic.
"""

from __future__ import annotations

import itertools
import math

import numba
import numpy as np
import torch

from dnninfer.errors import UserError
from dnninfer.rns.arith import ModuliSet

__all__ = ["CandidateTable", "decode_tiles", "noise_cdf"]


class CandidateTable:
    """CRT coefficient rows for the full moduli set and, in correction order, every subset that drops
    ``1 .. k//2`` moduli (dropped moduli get coefficient 0)."""

    def __init__(self, ms: ModuliSet, correct: bool = True) -> None:
        everyone = tuple(range(len(ms.all_moduli)))
        subsets = [everyone]
        if correct:
            for e in range(1, ms.correctable + 1):
                for dropped in itertools.combinations(everyone, e):
                    subsets.append(tuple(i for i in everyone if i not in dropped))
        coeffs = np.zeros((len(subsets), len(everyone)), dtype=np.int64)
        bigs = np.zeros(len(subsets), dtype=np.int64)
        for row, subset in enumerate(subsets):
            big, cs = ms.coefficients(subset)
            bigs[row] = big
            for i, c in zip(subset, cs, strict=True):
                coeffs[row, i] = c
        self.coeffs = coeffs
        self.bigs = bigs
        self.mods = np.asarray(ms.all_moduli, dtype=np.int64)
        self.lim = ms.max_signed
        self.redundant = ms.k > 0
        # float64 arithmetic in the kernel is exact while every CRT sum stays below 2^51
        bound = int(max(self.mods.sum() * bigs.max(), 1))
        if bound >= 2**51:
            raise UserError(f"moduli {list(ms.all_moduli)}: CRT sums up to {bound} exceed the emulation kernel's "
                            "exact range (2^51); use smaller moduli")


# Integer arithmetic is done in float64 (exact below 2^51, checked by CandidateTable): ``x mod m`` is
# ``x - floor(x * (1/m)) * m`` plus a branch-free one-step fix, which LLVM vectorises, unlike an int64
# division. Each kernel is a flat loop over contiguous memory; the scalar helpers are inlined into it.


@numba.njit(cache=True, nogil=True, inline="always")
def _mod(x, m, inv):  # pragma: no cover - jitted
    """``x mod m`` in ``[0, m)`` for integer-valued ``x``; ``inv = 1/m`` (the floor may be one off: fixed)."""
    r = x - np.floor(x * inv) * m
    r += m * (r < 0.0)
    r -= m * (r >= m)
    return r


@numba.njit(cache=True, nogil=True, inline="always")
def _signed(x, b, inv, half):  # pragma: no cover - jitted
    """``x mod b`` in the signed range: above ``half = floor((b - 1) / 2)`` it maps to ``x - b``."""
    y = _mod(x, b, inv)
    return y - b * (y > half)


@numba.njit(cache=True, nogil=True)
def _signed_crt(acc, big, out):  # pragma: no cover - jitted
    """Finish a CRT: ``out[e]`` = the signed ``acc[e] mod big``, as float32."""
    b = np.float64(big)
    ib = 1.0 / b
    half = np.floor((b - 1.0) / 2.0)
    for e in range(acc.shape[0]):
        out[e] = np.float32(_signed(acc[e], b, ib, half))


@numba.njit(cache=True, nogil=True)
def _crt_plain(raw, mods, coeffs, big, out):  # pragma: no cover - jitted
    """Noiseless, no redundancy: residues on the fly, CRT sum, reduce mod M, signed mapping."""
    n = raw.shape[0]
    flat = raw.reshape(n, -1)
    acc = np.zeros(flat.shape[1], dtype=np.float64)
    for k in range(n):
        m = np.float64(mods[k])
        inv = 1.0 / m
        c = np.float64(coeffs[k])
        src = flat[k]
        for e in range(acc.shape[0]):
            acc[e] += _mod(np.float64(src[e]), m, inv) * c
    _signed_crt(acc, big, out.reshape(-1))


@numba.njit(cache=True, nogil=True)
def _residues(raw, mods, res):  # pragma: no cover - jitted
    flat = raw.reshape(raw.shape[0], -1)
    for k in range(flat.shape[0]):
        m = np.float64(mods[k])
        inv = 1.0 / m
        src = flat[k]
        dst = res[k]
        for e in range(flat.shape[1]):
            dst[e] = _mod(np.float64(src[e]), m, inv)


@numba.njit(cache=True, nogil=True)
def _residues_noisy(raw, mods, uniform, cdf, offset, res):  # pragma: no cover - jitted
    """Residues, then readout noise: ``|r + d|_m`` with ``d = round(sigma * z)`` drawn by inverse CDF
    from one uniform per readout (``cdf`` holds P(d <= j) for j = -offset..offset-1). Returns how many
    residues changed."""
    n = raw.shape[0]
    flat = raw.reshape(n, -1)
    uf = uniform.reshape(n, -1)
    size = flat.shape[1]
    lo = cdf[offset - 1]  # P(d <= -1)
    hi = cdf[offset]  # P(d <= 0)
    n_cdf = cdf.shape[0]
    errors = 0
    for k in range(n):
        m = np.float64(mods[k])
        inv = 1.0 / m
        src = flat[k]
        u = uf[k]
        dst = res[k]
        for e in range(size):
            r = _mod(np.float64(src[e]), m, inv)
            ue = np.float64(u[e])
            if ue >= lo and ue < hi:
                dst[e] = r
                continue
            d = 0
            while d < n_cdf and ue >= cdf[d]:
                d += 1
            y = _mod(r + np.float64(d - offset), m, inv)
            errors += y != r
            dst[e] = y
    return errors


@numba.njit(cache=True, nogil=True)
def _crt_check(res, coeffs, bigs, lim, redundant, out, counters):  # pragma: no cover - jitted
    """Full-set CRT of stored residues; outside the legitimate range (RRNS only): try the subset rows
    of ``coeffs`` in order, else erase to 0. ``counters[1:4]`` += detected, corrected, uncorrectable."""
    n, size = res.shape
    acc = np.zeros(size, dtype=np.float64)
    for k in range(n):
        c = np.float64(coeffs[0, k])
        src = res[k]
        for e in range(size):
            acc[e] += np.float64(src[e]) * c
    o = out.reshape(-1)
    _signed_crt(acc, bigs[0], o)
    if not redundant:
        return
    flim = np.float64(lim)
    n_cands = coeffs.shape[0]
    for e in range(size):
        x = np.float64(o[e])
        if -flim <= x <= flim:
            continue
        counters[1] += 1
        found = False
        for cand in range(1, n_cands):
            bc = np.float64(bigs[cand])
            s = 0.0
            for k in range(n):
                s += np.float64(res[k, e]) * np.float64(coeffs[cand, k])
            y = _signed(s, bc, 1.0 / bc, np.floor((bc - 1.0) / 2.0))
            if -flim <= y <= flim:
                o[e] = np.float32(y)
                found = True
                counters[2] += 1
                break
        if not found:
            o[e] = 0.0
            counters[3] += 1


def noise_cdf(sigma: float) -> tuple[np.ndarray, int]:
    """CDF of the residue readout error ``d = round(sigma * z)``, ``z ~ N(0, 1)`` (research note §2.6:
    Gaussian noise on the detected phase in units of one residue step, rounded by the ADC):
    ``cdf[i] = P(d <= i - offset)`` for ``i = 0 .. 2 * offset - 1``; ``P(d != 0) = erfc(0.5 / (sigma sqrt 2))``."""
    offset = math.ceil(8 * sigma + 1)
    j = np.arange(-offset, offset, dtype=np.float64)
    cdf = np.array([0.5 * math.erfc(-(v + 0.5) / (sigma * math.sqrt(2))) for v in j])
    return cdf, offset


def decode_tiles(raw: torch.Tensor, table: CandidateTable, sigma: float = 0.0,
                 uniform: torch.Tensor | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """``raw`` (n, T, M, N) float32: un-reduced residue dot products ``r_a . r_b`` per modulus;
    ``uniform`` (same shape, U[0, 1)) drives the readout noise when ``sigma > 0``.

    Returns the decoded signed tile products (T, M, N) float32 and counters
    ``[residue_errors, detected, corrected, uncorrectable]``.
    """
    raw_np = raw.detach().contiguous().numpy()
    n, t_count, m_count, n_count = raw_np.shape
    out = np.empty((t_count, m_count, n_count), dtype=np.float32)
    counters = np.zeros(4, dtype=np.int64)
    noisy = uniform is not None and sigma > 0
    if not noisy and not table.redundant:
        _crt_plain(raw_np, table.mods, table.coeffs[0], table.bigs[0], out)
        return torch.from_numpy(out), counters
    res = np.empty((n, t_count * m_count * n_count), dtype=np.float32)
    if noisy:
        cdf, offset = noise_cdf(sigma)
        counters[0] = _residues_noisy(raw_np, table.mods, uniform.detach().contiguous().numpy(), cdf, offset, res)
    else:
        _residues(raw_np, table.mods, res)
    _crt_check(res, table.coeffs, table.bigs, table.lim, table.redundant, out, counters)
    return torch.from_numpy(out), counters
