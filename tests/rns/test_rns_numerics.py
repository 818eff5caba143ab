"""GEMM numerics: noiseless RNS == BFP-exact bit for bit, BFP close to FP32 within its quantisation
bound, an independent BFP reference, option validation, FP8 and fixed-point baselines."""

import numpy as np
import pytest
import torch

from dnninfer.errors import UserError
from dnninfer.rns.bfp import bfp_quantize, dequantize, qmax
from dnninfer.rns.numerics import Numerics, emu_matmul, fp8_fake_quant


def _operands(m=37, k=100, n=23, seed=0):
    g = torch.Generator().manual_seed(seed)
    # wide dynamic range along K: exercises per-block exponents
    a = torch.randn(m, k, generator=g) * torch.logspace(-4, 3, k)
    b = torch.randn(k, n, generator=g)
    return a, b


@pytest.mark.parametrize("moduli, bits, block", [((31, 32, 33), 6, 16), ((63, 64, 65), 6, 128), ((63, 64, 65), 7, 32)])
def test_noiseless_rns_equals_bfp_exact_bit_for_bit(moduli, bits, block):
    a, b = _operands()
    ref = emu_matmul(a, b, Numerics(mode="bfp", bits=bits, block=block))
    for red in (0, 2):
        got = emu_matmul(a, b, Numerics(mode="rns", moduli=moduli, bits=bits, block=block, redundant=red))
        assert torch.equal(got, ref)
    # negative control: the comparison can fail (a different block size changes the result)
    assert not torch.equal(emu_matmul(a, b, Numerics(mode="bfp", bits=bits, block=max(1, block // 2))), ref)


def test_bfp_quantize_has_no_clipping_and_half_step_error():
    x = torch.randn(5, 70) * torch.logspace(-3, 3, 70)
    q, s = bfp_quantize(x, 6, 16, dim=1)
    assert q.abs().max() <= qmax(6)
    back = dequantize(q, s, 70, dim=1)
    step = s.expand(-1, -1, 16).reshape(5, -1)[:, :70]
    assert bool(((back - x).abs() <= step / 2 + 1e-12).all())


def _reference_bfp_matmul(a: np.ndarray, b: np.ndarray, bits: int, block: int) -> np.ndarray:
    """Independent float64 implementation of the BFP tile product (frexp exponent per block)."""
    m, k = a.shape
    n = b.shape[1]
    qm = 2 ** (bits - 1) - 1
    out = np.zeros((m, n))
    for t0 in range(0, k, block):
        ab, bb = a[:, t0:t0 + block], b[t0:t0 + block, :]
        ea = np.frexp(np.abs(ab).max(axis=1, keepdims=True))[1]
        eb = np.frexp(np.abs(bb).max(axis=0, keepdims=True))[1]
        sa, sb = np.ldexp(1.0, ea) / qm, np.ldexp(1.0, eb) / qm
        qa, qb = np.clip(np.round(ab / sa), -qm, qm), np.clip(np.round(bb / sb), -qm, qm)
        out += (qa @ qb) * sa * sb
    return out


def test_bfp_matches_independent_reference():
    a, b = _operands(seed=1)
    got = emu_matmul(a, b, Numerics(mode="bfp")).double().numpy()
    ref = _reference_bfp_matmul(a.double().numpy(), b.double().numpy(), 6, 16)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())


def test_rns_close_to_fp32_within_bfp_bound():
    """|RNS - exact| <= sum over K of the per-element quantisation bound (|da||b| + |a||db| + |da||db|,
    |d| <= scale / 2) plus float32 accumulation slack."""
    a, b = _operands(seed=2)
    got = emu_matmul(a, b, Numerics(mode="rns")).double()
    a64, b64 = a.double(), b.double()
    exact = a64 @ b64
    _, sa = bfp_quantize(a64, 6, 16, dim=1)  # (M, T, 1)
    _, sb = bfp_quantize(b64, 6, 16, dim=0)  # (N, T, 1)
    da = (sa.expand(-1, -1, 16).reshape(a.shape[0], -1)[:, : a.shape[1]]) / 2
    db = (sb.expand(-1, -1, 16).reshape(b.shape[1], -1)[:, : b.shape[0]]).t() / 2
    bound = da @ b64.abs() + a64.abs() @ db + da @ db
    slack = 1e-5 * (a64.abs() @ b64.abs())
    assert bool(((got - exact).abs() <= bound + slack).all())
    rel = float((got - exact).norm() / exact.norm())
    assert 1e-4 < rel < 0.1  # close, but not trivially equal (negative control on the bound)


@pytest.mark.parametrize("opts, needle", [
    (dict(mode="rns", block=32), "overflow"),
    (dict(mode="rns", moduli=(31, 32, 34)), "co-prime"),
    (dict(mode="bogus"), "mode"),
    (dict(mode="rns", sigma=-1.0), "sigma"),
    (dict(mode="bfp", bits=12, block=4096), "exact-integer"),
    (dict(mode="rns", redundant=5), "redundant"),
])
def test_bad_options_are_user_errors(opts, needle):
    with pytest.raises(UserError, match=needle):
        Numerics(**opts)


def test_redundant_count_uses_family_defaults():
    assert Numerics(mode="rns", redundant=2).ms.redundant == (37, 41)
    assert Numerics(mode="rns", moduli=(63, 64, 65), block=64, redundant=3).ms.redundant == (67, 71, 73)


def test_fp8_formats_round_like_torch_float8():
    x = torch.randn(1000) * 3
    y = fp8_fake_quant(x, "e4m3")
    scale = 448.0 / x.abs().max()
    assert torch.equal(y, (x * scale).to(torch.float8_e4m3fn).float() / scale)
    rel4 = float(((y - x).abs() / x.abs().clamp_min(1e-3)).median())
    rel5 = float(((fp8_fake_quant(x, "e5m2") - x).abs() / x.abs().clamp_min(1e-3)).median())
    assert rel4 < rel5 < 0.1  # E5M2 has one mantissa bit fewer


def test_fixed_point_adc_worst_case_range_loses_precision():
    a, b = torch.randn(64, 128), torch.randn(128, 32)
    exact = a @ b

    def err(**kw):
        y = emu_matmul(a, b, Numerics(mode="fixed_analog", **kw))
        return float((y - exact).norm() / exact.norm())

    bfp = float((emu_matmul(a, b, Numerics(mode="bfp")) - exact).norm() / exact.norm())
    assert err(adc_bits=6) > 3 * bfp  # fixed full-scale range: most tile sums land in a few LSBs
    assert err(adc_bits=6, adc_range="calibrated") < err(adc_bits=6)
    assert err(adc_bits=16) < 1.1 * bfp  # enough ADC bits: back to the BFP input error


def test_nonfinite_inputs_give_nan_not_garbage():
    a, b = torch.randn(4, 16), torch.randn(16, 3)
    a[0, 0] = float("inf")
    assert bool(torch.isnan(emu_matmul(a, b, Numerics(mode="rns"))).all())


def test_noise_is_seeded():
    a, b = _operands(seed=3)
    y1 = emu_matmul(a, b, Numerics(mode="rns", sigma=0.2, seed=5))
    y2 = emu_matmul(a, b, Numerics(mode="rns", sigma=0.2, seed=5))
    y3 = emu_matmul(a, b, Numerics(mode="rns", sigma=0.2, seed=6))
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)
