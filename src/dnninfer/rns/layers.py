"""``RNSLinear`` / ``RNSConv2d``: layers whose three training GEMMs run on an emulated core.

For ``Y = X W^T`` (X: N x K, W: P x K) the forward GEMM reduces over K, the grad-input GEMM
``dX = dY W`` over P and the grad-weight GEMM ``dW = dY^T X`` over N (batch x spatial); each call
re-blocks its operands along *its* reduction dimension (research note §2.4). Convolutions are lowered
to the same GEMMs with ``unfold`` (im2col); the column gradient is folded back (col2im) digitally in
FP32, like the bias gradient, the optimiser and every non-GEMM op (Mirage keeps FP32 outside the
GEMMs, §2.1).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dnninfer.errors import UserError
from dnninfer.graph.swap import FilterFn, candidates, swap_modules
from dnninfer.rns.numerics import Numerics, emu_matmul

__all__ = ["RNSConv2d", "RNSConv2dFunction", "RNSLinear", "RNSLinearFunction", "numerics_of", "rnsify",
           "set_numerics"]


class RNSLinearFunction(torch.autograd.Function):
    """``y = x W^T + b`` with forward, grad-input and grad-weight GEMMs under ``num``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                num: Numerics) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        y = emu_matmul(x2, weight.t(), num)
        if bias is not None:
            y = y + bias
        ctx.save_for_backward(x2, weight)
        ctx.num = num
        ctx.in_shape = x.shape
        ctx.has_bias = bias is not None
        return y.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x2, weight = ctx.saved_tensors
        g2 = gy.reshape(-1, weight.shape[0])
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = emu_matmul(g2, weight, ctx.num, grad_side="a").reshape(ctx.in_shape)
        if ctx.needs_input_grad[1]:
            gw = emu_matmul(g2.t(), x2, ctx.num, grad_side="a")
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g2.sum(0)
        return gx, gw, gb, None


def _conv_geometry(x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int],
                   dilation: tuple[int, int]) -> tuple[int, int]:
    h, w = x.shape[-2:]
    kh, kw = weight.shape[-2:]
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return ho, wo


class RNSConv2dFunction(torch.autograd.Function):
    """2-D convolution as im2col GEMMs (one per group) under ``num``, forward and both backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, num: Numerics,
                stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                groups: int) -> torch.Tensor:
        b = x.shape[0]
        out_ch = weight.shape[0]
        ho, wo = _conv_geometry(x, weight, stride, padding, dilation)
        cols = F.unfold(x, weight.shape[-2:], dilation=dilation, padding=padding, stride=stride)  # (B, CK, L)
        ck = cols.shape[1] // groups
        og = out_ch // groups
        outs = []
        for g in range(groups):
            xg = cols[:, g * ck:(g + 1) * ck, :].transpose(1, 2).reshape(-1, ck)  # (B*L, CKg)
            wg = weight[g * og:(g + 1) * og].reshape(og, -1)
            outs.append(emu_matmul(xg, wg.t(), num))  # (B*L, Og)
        y = torch.cat(outs, dim=1).reshape(b, ho * wo, out_ch).transpose(1, 2).reshape(b, out_ch, ho, wo)
        if bias is not None:
            y = y + bias.view(1, -1, 1, 1)
        ctx.save_for_backward(x, weight)
        ctx.num = num
        ctx.conf = (stride, padding, dilation, groups, ho, wo, bias is not None)
        return y

    @staticmethod
    def backward(ctx: Any, gy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups, ho, wo, has_bias = ctx.conf
        b = x.shape[0]
        out_ch = weight.shape[0]
        og = out_ch // groups
        g2 = gy.reshape(b, out_ch, ho * wo).transpose(1, 2).reshape(-1, out_ch)  # (B*L, O)
        cols = F.unfold(x, weight.shape[-2:], dilation=dilation, padding=padding, stride=stride)
        ck = cols.shape[1] // groups
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            parts = []
            for g in range(groups):
                wg = weight[g * og:(g + 1) * og].reshape(og, -1)
                parts.append(emu_matmul(g2[:, g * og:(g + 1) * og], wg, ctx.num, grad_side="a"))  # (B*L, CKg)
            gcols = torch.cat(parts, dim=1).reshape(b, ho * wo, -1).transpose(1, 2)
            gx = F.fold(gcols, x.shape[-2:], weight.shape[-2:], dilation=dilation, padding=padding, stride=stride)
        if ctx.needs_input_grad[1]:
            parts = []
            for g in range(groups):
                xg = cols[:, g * ck:(g + 1) * ck, :].transpose(1, 2).reshape(-1, ck)
                parts.append(emu_matmul(g2[:, g * og:(g + 1) * og].t(), xg, ctx.num, grad_side="a"))  # (Og, CKg)
            gw = torch.cat(parts, dim=0).reshape(weight.shape)
        if has_bias and ctx.needs_input_grad[2]:
            gb = gy.sum(dim=(0, 2, 3))
        return gx, gw, gb, None, None, None, None, None


class RNSLinear(nn.Linear):
    """``nn.Linear`` whose GEMMs run under ``self.numerics``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 numerics: Numerics | None = None, **kw: Any) -> None:
        super().__init__(in_features, out_features, bias=bias, **kw)
        self.numerics = numerics if numerics is not None else Numerics()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return RNSLinearFunction.apply(x, self.weight, self.bias, self.numerics)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, numerics={self.numerics.describe()}"


class RNSConv2d(nn.Conv2d):
    """``nn.Conv2d`` (zero padding) whose GEMMs run under ``self.numerics``."""

    def __init__(self, *args: Any, numerics: Numerics | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        if self.padding_mode != "zeros":
            raise UserError(f"RNSConv2d: expected padding_mode 'zeros', got {self.padding_mode!r}")
        if isinstance(self.padding, str):
            if self.padding != "valid":
                raise UserError(f"RNSConv2d: expected integer padding or 'valid', got {self.padding!r}")
            self.padding = (0, 0)
        self.numerics = numerics if numerics is not None else Numerics()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return RNSConv2dFunction.apply(x, self.weight, self.bias, self.numerics, self.stride, self.padding,
                                       self.dilation, self.groups)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, numerics={self.numerics.describe()}"


def _convert(mod: nn.Module, num: Numerics) -> nn.Module:
    if isinstance(mod, RNSLinear | RNSConv2d):
        mod.numerics = num
        return mod
    if type(mod) is nn.Linear:
        new: nn.Module = RNSLinear(mod.in_features, mod.out_features, bias=mod.bias is not None, numerics=num,
                                   device="meta")
    elif type(mod) is nn.Conv2d:
        new = RNSConv2d(mod.in_channels, mod.out_channels, mod.kernel_size, stride=mod.stride,
                        padding=mod.padding, dilation=mod.dilation, groups=mod.groups, bias=mod.bias is not None,
                        padding_mode=mod.padding_mode, numerics=num, device="meta")
    else:
        return mod
    new.weight = mod.weight  # share the Parameter objects: optimiser state and init carry over
    new.bias = mod.bias
    new.train(mod.training)
    return new


def rnsify(model: nn.Module, numerics: Numerics | None = None, *, inplace: bool = False,
           filter_fn: FilterFn | None = None, **opts: Any) -> nn.Module:
    """Return ``model`` with every ``nn.Linear`` / ``nn.Conv2d`` replaced by its RNS twin.

    All converted layers share one ``Numerics`` (one noise generator, one set of counters), built from
    ``opts`` (``mode``, ``moduli``, ``bits``, ``block``, ``sigma``, ``redundant``, ``adc_bits``,
    ``adc_range``, ``seed``) when ``numerics`` is not given. Parameters are shared with the original
    layers (a deep copy is converted unless ``inplace``). ``filter_fn(module, fqn)`` picks which
    layers convert (default all); RNS layers already there are pointed at the new numerics.
    """
    num = numerics if numerics is not None else Numerics(**opts)
    if numerics is not None and opts:
        raise UserError(f"rnsify: give either a Numerics or options, not both (got {sorted(opts)})")
    if not inplace:
        model = copy.deepcopy(model)
    names = candidates(model, (nn.Linear, nn.Conv2d, RNSLinear, RNSConv2d), filter_fn)
    return swap_modules(model, names, lambda m: _convert(m, num))


def numerics_of(model: nn.Module) -> Numerics | None:
    """The ``Numerics`` shared by the model's RNS layers (None if it has none)."""
    for m in model.modules():
        if isinstance(m, RNSLinear | RNSConv2d):
            return m.numerics
    return None


def set_numerics(model: nn.Module, numerics: Numerics) -> nn.Module:
    """Point every RNS layer of ``model`` at ``numerics`` (switch mode without touching weights)."""
    for m in model.modules():
        if isinstance(m, RNSLinear | RNSConv2d):
            m.numerics = numerics
    return model
