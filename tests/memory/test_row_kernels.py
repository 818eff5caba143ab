"""`memory/kernels.py`: row kernels equal torch.nn.functional in float64 (exact accumulators)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dnninfer.memory.fixedpoint import quantize_multipliers
from dnninfer.memory.ir import IRBuilder, Layer, QuantParams
from dnninfer.memory.kernels import dw_plane, layer_acc, layer_forward, layer_row, torch_acc


def _quantised(layer: Layer, rng: np.random.Generator) -> Layer:
    """Random int8 weights, int32 bias, zero points and per-channel multipliers for one layer."""
    shapes = {"conv": (layer.k, layer.kw, layer.cin, layer.cout), "pw": (layer.cin, layer.cout),
              "dw": (layer.k, layer.kw, layer.cin), "fc": (layer.in_bytes, layer.cout)}
    w = rng.integers(-127, 128, size=shapes[layer.kind]).astype(np.int8) if layer.kind in shapes else None
    bias = rng.integers(-5000, 5000, size=layer.cout).astype(np.int64) if w is not None else None
    m0, sh = quantize_multipliers(rng.uniform(1e-4, 2e-3, size=layer.cout))
    zp = int(rng.integers(-20, 20))
    q = QuantParams(w, bias, m0, sh, (zp,), int(rng.integers(-10, 10)))
    return Layer(**{**layer.__dict__, "quant": q})


def _one(kind: str, h: int, w: int, c: int, **kw) -> Layer:
    b = IRBuilder("one", h, w, c)
    getattr(b, kind)(0, **kw)
    return b.build().layers[0]


CASES = {
    "conv3x3_s2_pad1": ("conv", dict(cout=6, k=3, s=2, p=1)),
    "conv5x5_s1_pad2": ("conv", dict(cout=4, k=5, s=1, p=2)),
    "dw3x3_s1": ("dw", dict(k=3, s=1)),
    "dw5x5_s2": ("dw", dict(k=5, s=2)),
    "pw1x1": ("conv", dict(cout=7, k=1)),
    "fc": ("fc", dict(n=9)),
    "avgpool2x2": ("pool", dict(pool="avg", k=2)),
    "global_avgpool": ("gap", {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_accumulators_equal_torch_float64(case):
    rng = np.random.default_rng(len(case))
    kind, kw = CASES[case]
    layer = _quantised(_one(kind, 11, 9, 5, **kw), rng)
    x = rng.integers(-128, 128, size=(11, 9, 5)).astype(np.int8)
    assert np.array_equal(layer_acc(layer, x), torch_acc(layer, x))


def test_float64_path_matches_dequantised_conv():
    """acc * S_in * S_w is the float conv of dequantised data (the meaning of the accumulator)."""
    rng = np.random.default_rng(3)
    layer = _quantised(_one("conv", 10, 10, 4, cout=3, k=3, s=2, p=1), rng)
    s_in, s_w = 0.02, rng.uniform(0.001, 0.01, size=3)
    x = rng.integers(-128, 128, size=(10, 10, 4)).astype(np.int8)
    zp = layer.quant.in_zp[0]
    xf = torch.from_numpy(s_in * (x.astype(np.float64) - zp)).permute(2, 0, 1)[None]
    wf = torch.from_numpy(layer.quant.weight * s_w).permute(3, 2, 0, 1)
    bf = torch.from_numpy(layer.quant.bias * s_in * s_w)
    yf = F.conv2d(xf, wf, bf, stride=2, padding=1)[0].permute(1, 2, 0).numpy()
    assert np.allclose(layer_acc(layer, x) * s_in * s_w, yf, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize(("k", "s", "p"), [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_max_pool_equals_torch(k, s, p):
    rng = np.random.default_rng(k + s + p)
    layer = _quantised(_one("pool", 8, 7, 3, pool="max", k=k, s=s, p=p), rng)
    layer = Layer(**{**layer.__dict__, "quant": QuantParams(None, None, np.zeros(0), np.zeros(0), (0,), 0)})
    x = rng.integers(-128, 128, size=(8, 7, 3)).astype(np.int8)
    want = F.max_pool2d(torch.from_numpy(x.astype(np.float64)).permute(2, 0, 1)[None], k, s, p)
    assert np.array_equal(layer_forward(layer, x), want[0].permute(1, 2, 0).numpy().astype(np.int8))


@pytest.mark.parametrize(("k", "s"), [(3, 1), (3, 2), (5, 2)])
def test_inplace_channel_plane_equals_row_kernel(k, s):
    rng = np.random.default_rng(k * s)
    layer = _quantised(_one("dw", 9, 8, 6, k=k, s=s), rng)
    x = rng.integers(-128, 128, size=(9, 8, 6)).astype(np.int8)
    want = layer_forward(layer, x)
    p = layer.p
    for c in range(6):
        plane = np.full((9 + 2 * p, 8 + 2 * p), layer.quant.in_zp[0], dtype=np.int8)
        plane[p: p + 9, p: p + 8] = x[:, :, c]
        assert np.array_equal(dw_plane(layer, plane, c), want[:, :, c])


def test_add_row_adds_real_values():
    """TFLite ADD with equal input and output scales: y = (x1 - zp) + (x2 - zp) + zp_out, +-1 LSB."""
    rng = np.random.default_rng(0)
    b = IRBuilder("add", 2, 6, 4)
    b.add(0, 0)
    layer = b.build().layers[0]
    # S1 = S2 = S_out: M1 = M2 = S / (2S) = 0.5, M_out = 2S / (2**20 * S)
    m0, sh = quantize_multipliers(np.array([0.5, 0.5, 2.0 / (1 << 20)]))
    layer = Layer(**{**layer.__dict__, "quant": QuantParams(None, None, m0, sh, (3, 3), -2)})
    x = rng.integers(-60, 60, size=(1, 6, 4)).astype(np.int8)
    y = rng.integers(-60, 60, size=(1, 6, 4)).astype(np.int8)
    got = layer_row(layer, 0, x, y).astype(np.int64)
    assert np.array_equal(got, layer_row(layer, 0, y, x))
    want = (x.astype(np.int64) - 3 + y - 3)[0] - 2
    assert np.abs(got - want).max() <= 1
