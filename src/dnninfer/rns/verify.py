"""Bit-exactness of the RNS datapath: noiseless RNS must equal integer BFP, bit for bit.

Mirage's accuracy argument rests on RNS being an exact encoding of the BFP integer products (the
CRT recovers them without loss); any difference means a modulus, a tile split or a rescale is
wrong. So the three GEMMs of training (forward, grad-input, grad-weight) of a linear and a conv
layer are run in both modes on data with a wide dynamic range and compared with ``torch.equal``.
"""

from __future__ import annotations

import torch

__all__ = ["GEMMS", "gemm_bit_exact"]

GEMMS = ("linear_forward", "linear_grad_input", "linear_grad_weight", "conv_forward", "conv_grad_input",
         "conv_grad_weight")


def gemm_bit_exact(seed: int = 0, modes: tuple[str, str] = ("bfp", "rns")) -> dict[str, bool]:
    """``GEMMS`` name -> True where the two numerics ``modes`` (default BFP-exact and noiseless RNS)
    give bit-identical results."""
    from dnninfer.rns.layers import RNSConv2dFunction, RNSLinearFunction
    from dnninfer.rns.numerics import Numerics

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(37, 100, generator=g) * torch.logspace(-3, 2, 100)
    w = torch.randn(23, 100, generator=g)
    gy = torch.randn(37, 23, generator=g) * 1e-3
    xc = torch.randn(4, 3, 9, 9, generator=g)
    wc = torch.randn(8, 3, 3, 3, generator=g)
    gyc = torch.randn(4, 8, 5, 5, generator=g)

    def run(mode: str) -> list[torch.Tensor]:
        num = Numerics(mode=mode)
        xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = RNSLinearFunction.apply(xs, ws, None, num)
        y.backward(gy)
        xcs, wcs = xc.clone().requires_grad_(), wc.clone().requires_grad_()
        yc = RNSConv2dFunction.apply(xcs, wcs, None, num, (2, 2), (1, 1), (1, 1), 1)
        yc.backward(gyc)
        return [y.detach(), xs.grad, ws.grad, yc.detach(), xcs.grad, wcs.grad]

    a, b = (run(m) for m in modes)
    return {n: bool(torch.equal(p, q)) for n, p, q in zip(GEMMS, a, b, strict=True)}
