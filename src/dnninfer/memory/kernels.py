"""int8 row kernels and the full-tensor reference built from them (research report §4 "Executor").

A kernel computes one output row ``t`` (shape ``(wout, cout)``) from the input rows it needs,
``layer.needed_rows(t)`` (§1.2 item 2: output rows are produced in order and staged in a tile).
All planners' executors and the reference call the same row kernels, so a plan is correct iff its
pool execution equals `reference` bit for bit.

Arithmetic (TFLite int8 reference semantics, reproducible in C):

* conv / dw / pw / fc: ``acc[c] = bias[c] + sum (x - zp_in) * w[..., c]`` over the window, zero padding
  meaning ``x = zp_in`` (real 0); ``y = clamp(requantize(acc, m0[c], shift[c]) + zp_out, act_min, act_max)``
  (`fixedpoint.requantize`). conv/pw products are summed in float64 BLAS: every operand and partial
  sum is an integer below 2**53, so the result equals int32 accumulation exactly.
* add (TFLite ADD, left shift 20): ``a_i = requantize((x_i - zp_i) << 20, m0[i], shift[i])`` for the
  two inputs, ``y = clamp(requantize(a_1 + a_2, m0[2], shift[2]) + zp_out, ...)``.
* avg pool (incl. global): ``y = clamp(round_half_away(sum x / count), ...)`` on raw int8 values
  (output scale and zero point equal the input's; no padding); max pool: window max (padding ignored).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from dnninfer.memory.fixedpoint import requantize, rounding_int_divide
from dnninfer.memory.ir import IR, Layer, QuantParams


def _q(layer: Layer) -> QuantParams:
    if layer.quant is None:
        raise ValueError(f"layer {layer.name}: no int8 parameters (quantise the IR first)")
    return layer.quant


@functools.lru_cache(maxsize=1024)
def _wmat(layer: Layer) -> np.ndarray:
    """conv/pw/fc weights as a float64 ``(K, cout)`` matrix (exact for int8 values)."""
    w = _q(layer).weight
    return w.reshape(-1, w.shape[-1]).astype(np.float64)


def _finish(layer: Layer, acc: np.ndarray) -> np.ndarray:
    q = _q(layer)
    y = requantize(acc, q.multiplier, q.shift) + q.out_zp
    return np.clip(y, q.act_min, q.act_max).astype(np.int8)


def _padded(layer: Layer, t: int, window: np.ndarray, fill: float, dtype: type) -> np.ndarray:
    """The k input rows of output row t as ``(k, win + 2p, c)``, padding filled with `fill`."""
    top = t * layer.s - layer.p
    lo = max(0, top)
    xp = np.full((layer.k, layer.win + 2 * layer.p, window.shape[-1]), fill, dtype=dtype)
    xp[lo - top: lo - top + window.shape[0], layer.p: layer.p + layer.win] = window
    return xp


def acc_row(layer: Layer, t: int, window: np.ndarray) -> np.ndarray:
    """int64 accumulators of output row t (conv/dw/pw/fc incl. bias; avg pool: window sums)."""
    kind = layer.kind
    if kind == "pool":
        if layer.pool != "avg":
            raise ValueError("acc_row: max pooling has no accumulator")
        x = window.astype(np.int64).sum(axis=0)  # (win, c)
        return sum(x[kx: kx + layer.s * (layer.wout - 1) + 1: layer.s] for kx in range(layer.kw))
    q = _q(layer)
    zp = q.in_zp[0]
    if kind == "fc":
        x = window.reshape(1, -1).astype(np.float64) - zp
        return np.rint(x @ _wmat(layer)).astype(np.int64) + q.bias
    if kind == "pw":
        x = window[0].astype(np.float64) - zp
        return np.rint(x @ _wmat(layer)).astype(np.int64) + q.bias
    if kind == "dw":
        xp = _padded(layer, t, window.astype(np.int32) - zp, 0, np.int32)
        acc = np.zeros((layer.wout, layer.cout), dtype=np.int64)
        last = layer.s * (layer.wout - 1) + 1
        for ky in range(layer.k):
            for kx in range(layer.kw):
                acc += xp[ky, kx: kx + last: layer.s] * q.weight[ky, kx].astype(np.int32)
        return acc + q.bias
    if kind == "conv":
        xp = _padded(layer, t, window.astype(np.float64) - zp, 0.0, np.float64)
        last = layer.s * (layer.wout - 1) + 1
        cols = np.stack([xp[ky, kx: kx + last: layer.s] for ky in range(layer.k) for kx in range(layer.kw)], axis=1)
        return np.rint(cols.reshape(layer.wout, -1) @ _wmat(layer)).astype(np.int64) + q.bias
    raise ValueError(f"acc_row: kind {kind!r} has no accumulator")


def layer_row(layer: Layer, t: int, window: np.ndarray, window2: np.ndarray | None = None) -> np.ndarray:
    """int8 output row t, ``(wout, cout)``, from the needed input rows (and the add's second input row)."""
    if layer.kind == "add":
        q = _q(layer)
        a = requantize((window[0].astype(np.int64) - q.in_zp[0]) << 20, q.multiplier[0], q.shift[0])
        b = requantize((window2[0].astype(np.int64) - q.in_zp[1]) << 20, q.multiplier[1], q.shift[1])
        y = requantize(a + b, q.multiplier[2], q.shift[2]) + q.out_zp
        return np.clip(y, q.act_min, q.act_max).astype(np.int8)
    if layer.kind == "pool":
        q = _q(layer)
        if layer.pool == "avg":
            count = window.shape[0] * layer.kw
            y = rounding_int_divide(acc_row(layer, t, window), count)
        else:
            xp = _padded(layer, t, window.astype(np.int16), -32768, np.int16)  # padding never wins
            last = layer.s * (layer.wout - 1) + 1
            y = np.max([xp[:, kx: kx + last: layer.s].max(axis=0) for kx in range(layer.kw)], axis=0)
        return np.clip(y, q.act_min, q.act_max).astype(np.int8)
    return _finish(layer, acc_row(layer, t, window))


def dw_plane(layer: Layer, plane: np.ndarray, c: int) -> np.ndarray:
    """Channel ``c`` of an in-place depthwise layer from its padded plane (TinyEngine style, §1.3).

    `plane` is ``(H + 2p, W + 2p)`` int8 with the padding filled with the input zero point; returns
    the ``(hout, wout)`` int8 output channel, bit-identical to `layer_row`'s.
    """
    q = _q(layer)
    x = plane.astype(np.int32) - q.in_zp[0]
    acc = np.zeros((layer.hout, layer.wout), dtype=np.int64)
    lh, lw = layer.s * (layer.hout - 1) + 1, layer.s * (layer.wout - 1) + 1
    for ky in range(layer.k):
        for kx in range(layer.kw):
            acc += x[ky: ky + lh: layer.s, kx: kx + lw: layer.s] * int(q.weight[ky, kx, c])
    acc += int(q.bias[c])
    y = requantize(acc, q.multiplier[c], q.shift[c]) + q.out_zp
    return np.clip(y, q.act_min, q.act_max).astype(np.int8)


def layer_forward(layer: Layer, x: np.ndarray, x2: np.ndarray | None = None) -> np.ndarray:
    """Whole output tensor ``(hout, wout, cout)`` int8, one `layer_row` per output row."""
    out = np.empty((layer.hout, layer.wout, layer.cout), dtype=np.int8)
    for t in range(layer.hout):
        lo, hi = layer.needed_rows(t)
        out[t] = layer_row(layer, t, x[lo:hi], None if x2 is None else x2[lo:hi])
    return out


def layer_acc(layer: Layer, x: np.ndarray) -> np.ndarray:
    """Whole accumulator tensor ``(hout, wout, cout)`` int64, one `acc_row` per output row."""
    rows = []
    for t in range(layer.hout):
        lo, hi = layer.needed_rows(t)
        rows.append(acc_row(layer, t, x[lo:hi]))
    return np.stack(rows)


def reference(ir: IR, x: np.ndarray, *, keep: bool = False) -> np.ndarray | tuple[np.ndarray, dict[int, np.ndarray]]:
    """Run the int8 IR tensor by tensor (no memory plan): the oracle every executor must equal.

    `x` is the int8 input ``(H, W, C)``; returns the output tensor ``(hout, wout, cout)`` (fc: ``(1, 1, N)``),
    and with ``keep=True`` also every tensor by id (for debugging a plan layer by layer).
    """
    ir.require_quantized("reference")
    x = np.asarray(x, dtype=np.int8).reshape(ir.tensors[ir.input].shape)
    vals: dict[int, np.ndarray] = {ir.input: x}
    for layer in ir.layers:
        ins = [vals[t] for t in layer.inputs]
        vals[layer.output] = layer_forward(layer, *ins)
    out = vals[ir.output]
    return (out, vals) if keep else out


def torch_acc(layer: Layer, x: np.ndarray) -> np.ndarray:
    """The same accumulators as `layer_acc`, computed with ``torch.nn.functional`` in float64.

    An independent check of the row kernels (padding, stride, weight layout): conv2d (incl.
    depthwise ``groups=C`` and 1x1), linear, and avg_pool2d (times the window size = window sums).
    """
    if layer.kind == "pool":
        xt = torch.from_numpy(x.astype(np.float64)).permute(2, 0, 1)[None]
        y = F.avg_pool2d(xt, (layer.k, layer.kw), layer.s) * (layer.k * layer.kw)
        return np.rint(y[0].permute(1, 2, 0).numpy()).astype(np.int64)
    q = _q(layer)
    xf = torch.from_numpy(x.astype(np.float64) - q.in_zp[0])
    w = torch.from_numpy(q.weight.astype(np.float64))
    b = torch.from_numpy(q.bias.astype(np.float64))
    if layer.kind == "fc":
        y = F.linear(xf.reshape(1, -1), w.T, b)
        return np.rint(y.numpy()).astype(np.int64).reshape(1, 1, -1)
    xt = xf.permute(2, 0, 1)[None]
    if layer.kind == "dw":
        wt, groups = w.permute(2, 0, 1)[:, None], layer.cin
    elif layer.kind == "pw":
        wt, groups = w.T[:, :, None, None], 1
    else:
        wt, groups = w.permute(3, 2, 0, 1), 1
    y = F.conv2d(xt, wt, b, stride=layer.s, padding=layer.p, groups=groups)
    return np.rint(y[0].permute(1, 2, 0).numpy()).astype(np.int64)
