"""Block floating point (BFP) along a GEMM's reduction dimension.

Why: RNS needs integers; Mirage supplies them with BFP (one shared exponent per block, b-bit signed
mantissas), keeping FP32 for everything outside the GEMM (research note §2.1, recipe §2.8 step 1).
Each operand is blocked along the dimension the dot product reduces over, in blocks of ``h``
(= the length of one modular dot product in the photonic core), so every block of one operand meets
exactly one block of the other in a tile product.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["BFPTiles", "bfp_quantize", "bfp_tiles", "dequantize", "qmax"]


def qmax(bits: int) -> int:
    """Largest mantissa magnitude of a signed ``bits``-bit mantissa (symmetric, no -2^(b-1))."""
    return 2 ** (bits - 1) - 1


@dataclass(frozen=True)
class BFPTiles:
    """``x ~ q * scale`` blocked along the reduction dim: ``q`` holds integers (float32 storage).

    For the left operand (M, K): ``q`` is (T, M, h), ``scale`` is (T, M, 1).
    For the right operand (K, N): ``q`` is (T, h, N), ``scale`` is (T, 1, N).
    """

    q: torch.Tensor
    scale: torch.Tensor


def bfp_quantize(x: torch.Tensor, bits: int, block: int, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise ``x`` in blocks of ``block`` along ``dim`` (zero-padded to a multiple of ``block``).

    Returns ``(q, scale)`` with the blocked dim split into ``(T, block)`` and moved last:
    ``q`` (…, T, block) integer-valued float32, ``scale`` (…, T, 1) with
    ``scale = 2^E / qmax`` where ``max|x_block| = f * 2^E``, ``f in [0.5, 1)`` (frexp): so
    ``|x / scale| <= qmax`` and no clipping occurs; rounding is to nearest, ties to even.
    """
    x = x.movedim(dim, -1)
    k = x.shape[-1]
    pad = (-k) % block
    if pad:
        x = torch.nn.functional.pad(x, (0, pad))
    x = x.reshape(*x.shape[:-1], -1, block)
    amax = x.abs().amax(dim=-1, keepdim=True)
    _, exp = torch.frexp(amax)
    scale = torch.ldexp(torch.ones_like(amax), exp) / qmax(bits)
    q = torch.round(x / scale).clamp_(-qmax(bits), qmax(bits))
    return q, scale


def bfp_tiles(a: torch.Tensor, b: torch.Tensor, bits: int, block: int) -> tuple[BFPTiles, BFPTiles]:
    """BFP tiles of ``a`` (M, K) and ``b`` (K, N) along K, laid out for a batched tile product."""
    qa, sa = bfp_quantize(a, bits, block, dim=1)  # (M, T, h), (M, T, 1)
    qb, sb = bfp_quantize(b, bits, block, dim=0)  # (N, T, h), (N, T, 1)
    return (BFPTiles(qa.permute(1, 0, 2).contiguous(), sa.permute(1, 0, 2).contiguous()),
            BFPTiles(qb.permute(1, 2, 0).contiguous(), sb.permute(1, 2, 0).contiguous()))


def dequantize(q: torch.Tensor, scale: torch.Tensor, length: int, dim: int = -1) -> torch.Tensor:
    """Inverse of ``bfp_quantize`` (for tests and error bounds): back to the original layout."""
    x = (q * scale).reshape(*q.shape[:-2], -1)[..., :length]
    return x.movedim(-1, dim)
