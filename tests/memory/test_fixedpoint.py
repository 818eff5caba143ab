"""`memory/fixedpoint.py`: the integer requantisation equals a scalar port of its C code."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dnninfer.memory.fixedpoint import quantize_multiplier, requantize, rounding_int_divide


def _c_div(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _c_requant(acc: int, m0: int, shift: int) -> int:
    """Scalar transcription of the C code in fixedpoint.py's docstring."""
    left, right = max(shift, 0), max(-shift, 0)
    x = max(-(2**31), min(2**31 - 1, acc << left))
    ab = x * m0
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    high = _c_div(ab + nudge, 1 << 31)
    mask = (1 << right) - 1
    rem, thr = high & mask, (mask >> 1) + (1 if high < 0 else 0)
    return (high >> right) + (1 if rem > thr else 0)


@given(st.floats(1e-9, 0.999), st.lists(st.integers(-(2**24), 2**24), min_size=1, max_size=20))
@settings(max_examples=200, deadline=None)
def test_requantize_matches_the_c_transcription(real, accs):
    m0, shift = quantize_multiplier(real)
    got = requantize(np.array(accs, dtype=np.int64), m0, shift)
    assert got.tolist() == [_c_requant(a, m0, shift) for a in accs]


@given(st.floats(1e-6, 1e6))
@settings(max_examples=200, deadline=None)
def test_quantize_multiplier_is_a_q31_mantissa_and_exponent(real):
    m0, shift = quantize_multiplier(real)
    assert 2**30 <= m0 < 2**31
    assert math.isclose(m0 * 2.0 ** (shift - 31), real, rel_tol=2**-30)


def test_requantize_rounds_twice_like_tflite():
    """gemmlowp rounds in the high multiply and again in the shift: 0.25 * 1 -> 0.5 -> 1 (not 0)."""
    m0, shift = quantize_multiplier(0.25)
    acc = np.array([0, 1, 2, 3, 6, -1, -2, -3, -6, 1000], dtype=np.int64)
    assert requantize(acc, m0, shift).tolist() == [0, 1, 1, 1, 2, 0, -1, -1, -2, 250]


@given(st.floats(1e-4, 0.99), st.integers(-(2**20), 2**20))
@settings(max_examples=200, deadline=None)
def test_requantize_is_within_one_of_the_real_product(real, acc):
    m0, shift = quantize_multiplier(real)
    assert abs(int(requantize(np.array([acc]), m0, shift)[0]) - real * acc) <= 1


def test_rounding_int_divide_is_tflite_average_rounding():
    acc = np.array([0, 1, 2, 3, 5, -1, -2, -3, -5, 7])
    got = rounding_int_divide(acc, 4)
    want = [_c_div(a + 2, 4) if a > 0 else _c_div(a - 2, 4) for a in acc.tolist()]
    assert got.tolist() == want


def test_zero_multiplier_flushes_to_zero():
    assert quantize_multiplier(0.0) == (0, 0)
    assert requantize(np.array([12345]), 0, 0).tolist() == [0]
