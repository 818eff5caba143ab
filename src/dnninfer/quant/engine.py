"""``deploy(model)``: run a quantised ``nn.Sequential`` on the add-only kernels (NumPy + numba).

Each Conv1d/Conv2d/Linear (quantised or not) is packed (``kernels.pack``) and lowered to its method's kernel;
a BatchNorm right after it is folded into the kernel's per-output ``scale``/``shift`` together
with the bias, so a signed-binary layer costs nnz additions per output and one multiply-add.
Convolutions run as im2col + GEMM (the kernels' ``[K, M]`` layout is built directly, K ordered
``(Cin, kh, kw)`` like ``weight.reshape(Cout, -1)``). ReLU, Flatten, global average pooling,
Identity and Dropout (eval) are supported; anything else is refused with the layer's name.
The result matches the PyTorch eval-mode forward of the same quantised weights (tested allclose).
A call whose output is inf/NaN warns (``calibrate.NonFiniteWarning``) naming the first op that
went non-finite: NaN logits still have an argmax, so they would otherwise pass as predictions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from dnninfer.errors import UserError
from dnninfer.graph.ops import bn_scale_shift, folds_into
from dnninfer.quant.calibrate import warn_if_nonfinite
from dnninfer.quant.kernels import Kernel, PackedWeights, make_kernel, pack
from dnninfer.quant.quantizers import QuantConv1d, QuantConv2d, QuantLinear

_QUANT = (QuantConv1d, QuantConv2d, QuantLinear)

__all__ = ["DeployedModel", "deploy", "im2col_t"]

_PASS = (nn.Identity, nn.Dropout)


def _flatten_modules(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    out = []
    for name, m in model.named_children():
        full = f"{prefix}{name}"
        if isinstance(m, nn.Sequential):
            out += _flatten_modules(m, full + ".")
        else:
            out.append((full, m))
    return out


def im2col_t(x: np.ndarray, kh: int, kw: int, stride: tuple[int, int],
             padding: tuple[int, int]) -> tuple[np.ndarray, int, int]:
    """``x`` [B, C, H, W] -> columns ``[C*kh*kw, B*OH*OW]`` (the kernels' ``xt`` layout), OH, OW."""
    b, c, _, _ = x.shape
    ph, pw = padding
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride[0], ::stride[1]]
    oh, ow = win.shape[2], win.shape[3]
    cols = win.transpose(1, 4, 5, 0, 2, 3).reshape(c * kh * kw, b * oh * ow)
    return np.ascontiguousarray(cols, dtype=np.float32), oh, ow


def _fold(layer: nn.Module, bn: nn.Module | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-output (scale, shift) of ``bn(layer_without_bias(x) + bias)``: the kernel applies the
    scale after its additions, so the packed weights stay signed binary (graph/ops.py folding)."""
    n = layer.weight.shape[0]
    if bn is None:
        bias = layer.bias.detach().numpy() if layer.bias is not None else np.zeros(n)
        return np.ones(n, np.float32), bias.astype(np.float32)
    s, shift = bn_scale_shift(bn, layer.bias)
    return s.float().numpy(), shift.float().numpy()


@dataclass
class _Op:
    name: str
    kind: str
    fn: Callable[[np.ndarray], np.ndarray]
    kernel: Kernel | None = None
    packed: PackedWeights | None = None


@dataclass
class DeployedModel:
    """A lowered model: ``__call__(x [B, ...]) -> logits np.ndarray``; ``ops`` in order."""

    ops: list[_Op] = field(default_factory=list)

    def __call__(self, x: Any) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        y = np.asarray(x, dtype=np.float32)
        for op in self.ops:
            y = op.fn(y)
        if not np.isfinite(y).all():  # only then pay for a second pass to find the culprit
            warn_if_nonfinite(y, "deploy", self.first_nonfinite(x))
        return y

    def first_nonfinite(self, x: Any) -> str | None:
        """The name of the first op whose output is inf/NaN on ``x`` (``"<input>"``), or ``None``."""
        y = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
        if not np.isfinite(y).all():
            return "<input>"
        for op in self.ops:
            y = op.fn(y)
            if not np.isfinite(y).all():
                return op.name
        return None

    @property
    def weight_bytes(self) -> int:
        return sum(op.packed.nbytes for op in self.ops if op.packed is not None)

    def summary(self) -> list[dict[str, Any]]:
        return [{"op": op.name, "kind": op.kind,
                 **({"kernel": op.kernel.name, "shape": list(op.kernel.shape),
                     "adds_per_output": round(op.kernel.adds_per_output(), 2),
                     "weight_bytes": op.packed.nbytes} if op.kernel and op.packed else {})}
                for op in self.ops]


def _weight_and_method(layer: nn.Module) -> tuple[np.ndarray, str]:
    with torch.no_grad():
        if isinstance(layer, _QUANT):
            return layer.quantized_weight().float().numpy(), layer.method
        return layer.weight.float().numpy(), "fp32"


def _linear_op(name: str, layer: nn.Linear, bn: nn.Module | None, kind: str | None) -> _Op:
    w, method = _weight_and_method(layer)
    p = pack(w, method)
    kernel = make_kernel(p, *_fold(layer, bn), kind=kind if method != "fp32" else None)

    def run(x: np.ndarray) -> np.ndarray:
        if x.ndim != 2:
            raise UserError(f"deploy: {name} (Linear) expects a 2-D input, got shape {x.shape}")
        return kernel(x)

    return _Op(name, "linear", run, kernel, p)


def _conv_op(name: str, layer: nn.Conv1d | nn.Conv2d, bn: nn.Module | None, kind: str | None) -> _Op:
    """A Conv2d, or a Conv1d run as a Conv2d of height 1 (kernel ``(1, k)``: same K order)."""
    one_d = isinstance(layer, nn.Conv1d)
    if (layer.groups != 1 or any(d != 1 for d in layer.dilation) or layer.padding_mode != "zeros"
            or isinstance(layer.padding, str)):
        raise UserError(f"deploy: {name}: only groups=1, dilation=1, numeric zero padding are supported")
    w, method = _weight_and_method(layer)
    p = pack(w, method)
    kernel = make_kernel(p, *_fold(layer, bn), kind=kind if method != "fp32" else None)
    if one_d:
        kh, kw, stride, padding = 1, layer.kernel_size[0], (1, layer.stride[0]), (0, layer.padding[0])
    else:
        (kh, kw), stride, padding = layer.kernel_size, tuple(layer.stride), tuple(layer.padding)
    n = layer.out_channels

    def run(x: np.ndarray) -> np.ndarray:
        if x.ndim != (3 if one_d else 4):
            raise UserError(f"deploy: {name} ({type(layer).__name__}) got an input of shape {x.shape}")
        x4 = x[:, :, None, :] if one_d else x
        cols, oh, ow = im2col_t(x4, kh, kw, stride, padding)  # type: ignore[arg-type]
        out = np.empty((n, cols.shape[1]), np.float32)
        kernel.run_t(cols, out)
        y = out.reshape(n, x.shape[0], oh, ow).transpose(1, 0, 2, 3)
        return np.ascontiguousarray(y[:, :, 0, :] if one_d else y)

    return _Op(name, "conv1d" if one_d else "conv2d", run, kernel, p)


def _bn_op(name: str, bn: nn.Module) -> _Op:
    if bn.running_mean is None:
        raise UserError(f"deploy: {name}: BatchNorm without running statistics (track_running_stats=False)")
    s, t = bn_scale_shift(bn)
    s_np, t_np = s.float().numpy(), t.float().numpy()

    def run(x: np.ndarray) -> np.ndarray:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * s_np.reshape(shape) + t_np.reshape(shape)

    return _Op(name, "batchnorm", run)


def _gap(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=tuple(range(2, x.ndim)), keepdims=True)


def _flatten_op(name: str, m: nn.Flatten) -> _Op:
    """``Flatten(1)``, or ``Flatten(1, 2)`` (an (N, 1, 1, L) signal to the (N, 1, L) a Conv1d takes)."""
    if (m.start_dim, m.end_dim) == (1, -1):
        return _Op(name, "flatten", lambda x: x.reshape(x.shape[0], -1))
    if (m.start_dim, m.end_dim) == (1, 2):
        return _Op(name, "flatten", lambda x: x.reshape(x.shape[0], x.shape[1] * x.shape[2], *x.shape[3:]))
    raise UserError(f"deploy: {name}: only Flatten(1) and Flatten(1, 2) are supported")


def deploy(model: nn.Module, *, kernels: dict[str, str] | None = None, example_inputs: Any = None) -> Any:
    """Lower an ``nn.Sequential`` (possibly nested) of supported layers to the add-only kernels.

    ``kernels`` maps a method to a kernel variant (e.g. ``{"binary": "dense_pm1"}``); by default each
    method uses its own (``kernels.DEFAULT_KERNEL``). The model is read in eval mode (BatchNorm
    running statistics) and not modified. Any other network (residuals, branches) or one with grouped
    or depthwise convolutions goes through its captured Graph instead (``graph_deploy.deploy_graph``,
    captured on ``example_inputs`` or at the first call).
    """
    from dnninfer.quant.graph_deploy import deploy_graph, needs_graph_deploy

    if needs_graph_deploy(model):
        return deploy_graph(model, example_inputs, kernels=kernels)
    if not isinstance(model, nn.Sequential):
        raise UserError(f"deploy: expected an nn.Sequential of Conv2d/Linear/BatchNorm/ReLU/Flatten/pooling, "
                        f"got {type(model).__name__}")
    kernels = kernels or {}
    mods = _flatten_modules(model)
    ops: list[_Op] = []
    i = 0
    while i < len(mods):
        name, m = mods[i]
        nxt = mods[i + 1][1] if i + 1 < len(mods) else None
        if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d):
            bn = nxt if nxt is not None and folds_into(m, nxt) else None
            method = m.method if isinstance(m, _QUANT) else "fp32"
            make = _linear_op if isinstance(m, nn.Linear) else _conv_op
            ops.append(make(name, m, bn, kernels.get(method)))  # type: ignore[arg-type]
            i += 2 if bn is not None else 1
            continue
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            ops.append(_bn_op(name, m))
        elif isinstance(m, nn.ReLU):
            ops.append(_Op(name, "relu", lambda x: np.maximum(x, 0.0)))
        elif isinstance(m, nn.Flatten):
            ops.append(_flatten_op(name, m))
        elif isinstance(m, nn.AdaptiveAvgPool1d | nn.AdaptiveAvgPool2d):
            if m.output_size not in (1, (1,), (1, 1)):
                raise UserError(f"deploy: {name}: only AdaptiveAvgPool1d/2d(1) (global average pooling) is supported")
            ops.append(_Op(name, "gap", _gap))
        elif not isinstance(m, _PASS):
            raise UserError(f"deploy: layer {name} ({type(m).__name__}) is not supported; expected Conv2d, Linear, "
                            "BatchNorm, ReLU, Flatten, AdaptiveAvgPool1d/2d(1), Identity or Dropout")
        i += 1
    return DeployedModel(ops)
