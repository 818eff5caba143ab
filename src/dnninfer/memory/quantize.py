"""Post-training int8 quantisation of a float model into the MCU IR (TFLite int8 scheme).

* weights: per-output-channel symmetric int8 in [-127, 127], ``S_w[c] = max|W[..., c]| / 127``;
* biases: int32, ``round(b / (S_in * S_w[c]))``;
* activations: per-tensor **asymmetric** int8 from calibration min/max (range widened to include
  0, so zero padding and ReLU are exact): ``S = (max - min) / 255``, ``zp = round(-128 - min / S)``;
  pooling outputs keep their input's scale and zero point (TFLite's constraint), so pools need no
  requantisation;
* requantisation: per output channel, ``M = S_in * S_w[c] / S_out`` as an integer Q31 multiplier
  and shift (`fixedpoint.quantize_multiplier`, gemmlowp style), identical in the reference, the pool
  executor and C; add uses TFLite's int8 ADD parameters (left shift 20).

Calibrating on the data distribution keeps saturation low: the research report's prototype saw
about 30 % saturated outputs with arbitrary scales, and saturation can hide clobbering bugs in a
memory plan (§4 "Pitfall"); `saturation` measures it so tests can bound it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from dnninfer.errors import UserError
from dnninfer.graph import capture
from dnninfer.graph.core import Graph
from dnninfer.memory.fixedpoint import quantize_multiplier, quantize_multipliers, requantize
from dnninfer.memory.ir import IR, Layer, QuantParams, Tensor
from dnninfer.memory.kernels import layer_acc, reference
from dnninfer.memory.lower import lower, run_float

ADD_LEFT_SHIFT = 20
MIN_RANGE = 1e-3  # a constant tensor still gets a usable scale


def activation_qparams(lo: float, hi: float) -> tuple[float, int]:
    """(scale, zero point) for an asymmetric int8 tensor covering ``[min(lo, 0), max(hi, 0)]``."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < MIN_RANGE:
        hi = lo + MIN_RANGE
    scale = (hi - lo) / 255.0
    zp = int(np.clip(np.rint(-128 - lo / scale), -128, 127))
    return scale, zp


def calibrate(ir: IR, calibration: torch.Tensor | np.ndarray) -> dict[int, tuple[float, float]]:
    """Per-tensor (min, max) of the lowered float IR over a calibration batch ``(N, C, H, W)``."""
    with torch.no_grad():
        vals = run_float(ir, calibration)
    return {t: (float(v.min()), float(v.max())) for t, v in vals.items()}


def _clamp(act: str, scale: float, zp: int) -> tuple[int, int]:
    if act == "none":
        return -128, 127
    lo = max(-128, zp)
    hi = 127 if act == "relu" else min(127, zp + int(np.rint(6.0 / scale)))
    return lo, hi


def _quant_layer(layer: Layer, ins: list[tuple[float, int]], out: tuple[float, int]) -> QuantParams:
    s_out, z_out = out
    act_min, act_max = _clamp(layer.act, s_out, z_out)
    zps = tuple(z for _, z in ins)
    if layer.kind == "pool":
        empty = np.zeros(0, dtype=np.int64)
        return QuantParams(None, None, empty, empty, zps, z_out, act_min, act_max)
    if layer.kind == "add":
        (s1, _), (s2, _) = ins
        twice_max = 2 * max(s1, s2)
        reals = [s1 / twice_max, s2 / twice_max, twice_max / ((1 << ADD_LEFT_SHIFT) * s_out)]
        pairs = [quantize_multiplier(r) for r in reals]
        return QuantParams(None, None, np.array([p[0] for p in pairs], dtype=np.int64),
                           np.array([p[1] for p in pairs], dtype=np.int64), zps, z_out, act_min, act_max)
    w, b = layer.weights.weight, layer.weights.bias
    s_in = ins[0][0]
    wmax = np.abs(w).reshape(-1, w.shape[-1]).max(axis=0)
    s_w = np.where(wmax > 0, wmax / 127.0, 1.0)
    wq = np.clip(np.rint(w / s_w), -127, 127).astype(np.int8)
    bq = np.clip(np.rint(b / (s_in * s_w)), -(2**31), 2**31 - 1).astype(np.int64)
    m0, sh = quantize_multipliers(s_in * s_w / s_out)
    return QuantParams(wq, bq, m0, sh, zps, z_out, act_min, act_max)


def quantize_ir(ir: IR, calibration: torch.Tensor | np.ndarray) -> IR:
    """int8 parameters for a lowered float IR, from calibration data ``(N, C, H, W)``."""
    ranges = calibrate(ir, calibration)
    qp: dict[int, tuple[float, int]] = {ir.input: activation_qparams(*ranges[ir.input])}
    layers = []
    for layer in ir.layers:
        if layer.kind == "pool":
            qp[layer.output] = qp[layer.inputs[0]]
        else:
            qp[layer.output] = activation_qparams(*ranges[layer.output])
        quant = _quant_layer(layer, [qp[t] for t in layer.inputs], qp[layer.output])
        layers.append(replace(layer, quant=quant))
    tensors = tuple(replace(t, scale=qp[t.id][0], zp=qp[t.id][1]) for t in ir.tensors)
    meta = dict(ir.meta, calibration_samples=int(np.shape(calibration)[0]), scheme="int8 TFLite-style")
    return IR(ir.name, tuple(layers), tensors, ir.blocks, ir.output, meta)


def _batch(calibration: torch.Tensor | np.ndarray | Sequence[torch.Tensor]) -> torch.Tensor:
    if isinstance(calibration, (list, tuple)):
        calibration = torch.cat([torch.as_tensor(c).reshape(1, *torch.as_tensor(c).shape[-3:]) for c in calibration])
    x = torch.as_tensor(calibration, dtype=torch.float32)
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4:
        raise UserError(f"quantize: expected calibration images (N, C, H, W), got shape {tuple(x.shape)}")
    return x


def quantize(source: nn.Module | Graph | IR, calibration: torch.Tensor | np.ndarray | Sequence[torch.Tensor], *,
             name: str | None = None) -> IR:
    """Float model (module, captured graph, or lowered IR) + calibration images -> int8 IR.

    A module is captured on the first calibration image and lowered (`dnninfer.memory.lower`).
    """
    x = _batch(calibration)
    if isinstance(source, nn.Module):
        source = capture(source, (x[:1],), name=name or type(source).__name__)
    if isinstance(source, Graph):
        source = lower(source, name=name)
    if not isinstance(source, IR):
        raise UserError(f"quantize: expected an nn.Module, a captured Graph or an IR, got {type(source).__name__}")
    if name:
        source = IR(name, source.layers, source.tensors, source.blocks, source.output, dict(source.meta))
    return quantize_ir(source, x)


def quantize_input(ir: IR, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """A float image ``(C, H, W)`` or ``(1, C, H, W)`` as the IR's int8 input ``(H, W, C)``."""
    t = ir.tensors[ir.input]
    arr = np.asarray(x.detach().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    arr = arr.reshape(t.c, t.h, t.w).transpose(1, 2, 0)
    return np.clip(np.rint(arr / t.scale) + t.zp, -128, 127).astype(np.int8)


def dequantize(tensor: Tensor, q: np.ndarray) -> np.ndarray:
    """Real values of an int8 tensor: ``scale * (q - zp)``."""
    return tensor.scale * (np.asarray(q, dtype=np.float64) - tensor.zp)


def saturation(ir: IR, x: np.ndarray) -> dict[str, float]:
    """Per layer, the fraction of outputs whose requantised value fell outside int8 before clamping.

    Only real overflow counts: a ReLU output at its zero point -128 is an exact real 0, not
    saturation. Pools cannot overflow (their values are their input's) and are skipped.
    """
    _, vals = reference(ir, x, keep=True)
    out: dict[str, float] = {}
    for layer in ir.layers:
        q = layer.quant
        if layer.kind == "pool":
            continue
        if layer.kind == "add":
            a, b = (vals[t].astype(np.int64) for t in layer.inputs)
            sa = requantize((a - q.in_zp[0]) << ADD_LEFT_SHIFT, q.multiplier[0], q.shift[0])
            sb = requantize((b - q.in_zp[1]) << ADD_LEFT_SHIFT, q.multiplier[1], q.shift[1])
            y = requantize(sa + sb, q.multiplier[2], q.shift[2]) + q.out_zp
        else:
            y = requantize(layer_acc(layer, vals[layer.inputs[0]]), q.multiplier, q.shift) + q.out_zp
        out_t = ir.tensors[layer.output]
        ceiling = out_t.zp + np.rint(6.0 / out_t.scale) if layer.act == "relu6" else np.inf
        low = (y < -128) if layer.act == "none" else np.zeros(y.shape, dtype=bool)  # ReLU clips those anyway
        out[layer.name] = float((low | ((y > 127) & (y <= ceiling))).mean())
    return out
