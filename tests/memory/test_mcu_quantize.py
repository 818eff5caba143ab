"""`memory/quantize.py`: calibrated int8 stays close to float and does not saturate (§4 pitfall)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dnninfer.memory.kernels import reference
from dnninfer.memory.lower import run_float
from dnninfer.memory.models import benchmark_ir, example_input
from dnninfer.memory.quantize import activation_qparams, dequantize, quantize_input, saturation


@pytest.mark.parametrize("model", ["digits-cnn", "mbv2-0.35-48", "mbv2-0.5-64"])
def test_calibrated_models_barely_saturate_and_track_float(model):
    ir = benchmark_ir(model, seed=0)
    x = example_input(ir, seed=1)
    sat = saturation(ir, x)
    assert max(sat.values()) < 0.05, sorted(sat.items(), key=lambda kv: -kv[1])[:3]
    y = reference(ir, x)
    assert np.unique(y).size >= min(10, y.size)  # not constant: clobbering cannot hide behind saturation
    xf = dequantize(ir.tensors[ir.input], x).transpose(2, 0, 1)[None]
    yf = run_float(ir, torch.from_numpy(xf))[ir.output].numpy().ravel()
    yq = dequantize(ir.tensors[ir.output], y).ravel()
    assert np.corrcoef(yf, yq)[0, 1] > 0.9


def test_layer_parameters_fit_their_integer_types():
    ir = benchmark_ir("mbv2-0.5-64", seed=0)
    for layer in ir.layers:
        q = layer.quant
        assert -128 <= q.act_min <= q.act_max <= 127
        assert all(-128 <= z <= 127 for z in (*q.in_zp, q.out_zp))
        if q.weight is not None:
            assert q.weight.dtype == np.int8 and np.abs(q.weight).max() <= 127
            assert np.abs(q.bias).max() < 2**31
            assert np.all((q.multiplier >= 2**30) & (q.multiplier < 2**31))
    for t in ir.tensors:
        assert t.scale > 0 and -128 <= t.zp <= 127


def test_zero_is_exactly_representable():
    for lo, hi in [(-1.0, 3.0), (0.0, 6.0), (0.5, 2.0), (-4.0, -1.0)]:
        scale, zp = activation_qparams(lo, hi)
        assert -128 <= zp <= 127  # real 0 is the integer zp exactly (zero padding, ReLU clamp)
        # the int8 grid covers [min(lo, 0), max(hi, 0)] up to the rounding of zp (one step)
        assert scale * (-128 - zp) <= min(lo, 0) + scale and scale * (127 - zp) >= max(hi, 0) - scale


def test_quantize_input_round_trips_within_half_a_step():
    ir = benchmark_ir("digits-cnn", seed=0)
    t = ir.tensors[ir.input]
    x = np.random.default_rng(0).random((1, 8, 8))
    q = quantize_input(ir, x)
    assert q.shape == (8, 8, 1) and q.dtype == np.int8
    assert np.abs(dequantize(t, q)[:, :, 0] - x[0]).max() <= t.scale / 2 + 1e-12
