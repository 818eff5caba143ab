"""Integer requantisation, gemmlowp / TFLite-reference style, so C code can reproduce it bit for bit.

Every int8 layer ends the same way: an int32 accumulator ``acc`` is scaled by a real multiplier
``M = S_in * S_w / S_out`` that is stored as a Q31 integer ``M0`` and a power-of-two exponent
``shift`` (``M = M0 * 2**(shift - 31)``, ``M0`` in ``[2**30, 2**31)``). The runtime arithmetic is
only integer operations (research report §4 "Executor", "per-channel requantization"):

.. code-block:: c

    static inline int32_t srdhm(int32_t a, int32_t b) {          /* SaturatingRoundingDoublingHighMul */
        int64_t ab = (int64_t)a * (int64_t)b;
        int64_t nudge = ab >= 0 ? (1ll << 30) : (1 - (1ll << 30));
        return (int32_t)((ab + nudge) / (1ll << 31));             /* C division truncates toward 0 */
    }
    static inline int32_t rdbpot(int32_t x, int e) {             /* RoundingDivideByPOT, e >= 0 */
        int32_t mask = (int32_t)((1ll << e) - 1);
        int32_t rem = x & mask, thr = (mask >> 1) + (x < 0 ? 1 : 0);
        return (x >> e) + (rem > thr ? 1 : 0);                    /* >> is arithmetic */
    }
    static inline int32_t requant(int32_t acc, int32_t m0, int32_t shift) {
        int32_t left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
        int64_t x = (int64_t)acc << left;                          /* saturate to int32 */
        if (x > INT32_MAX) x = INT32_MAX; if (x < INT32_MIN) x = INT32_MIN;
        return rdbpot(srdhm((int32_t)x, m0), right);
    }

``M0 > 0`` always, so the one saturating case of ``srdhm`` (both operands INT32_MIN) cannot occur.
The multipliers are computed once, offline, in Python (`quantize_multiplier`); C only sees integers.
"""

from __future__ import annotations

import math

import numpy as np

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite ``QuantizeMultiplier``: ``real ~= m0 * 2**(shift - 31)`` with ``m0`` in ``[2**30, 2**31)``.

    Rounds half away from zero (``std::round``), as TFLite does; zero (or a value below 2**-62) maps to
    ``(0, 0)``, i.e. the layer outputs its zero point.
    """
    if real < 0:
        raise ValueError(f"quantize_multiplier: expected a non-negative multiplier, got {real}")
    if real == 0.0:
        return 0, 0
    m, e = math.frexp(real)  # real = m * 2**e, m in [0.5, 1)
    q = math.floor(m * (1 << 31) + 0.5)
    if q == 1 << 31:
        q //= 2
        e += 1
    if e < -31:  # flushes to zero like TFLite's QuantizeMultiplier
        return 0, 0
    if e > 30:
        raise ValueError(f"quantize_multiplier: multiplier {real} is too large for int32 requantisation")
    return int(q), int(e)


def quantize_multipliers(reals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`quantize_multiplier` per element; returns (m0, shift) as int64 arrays of the same shape."""
    pairs = [quantize_multiplier(float(r)) for r in np.asarray(reals, dtype=np.float64).ravel()]
    m0 = np.array([p[0] for p in pairs], dtype=np.int64).reshape(np.shape(reals))
    sh = np.array([p[1] for p in pairs], dtype=np.int64).reshape(np.shape(reals))
    return m0, sh


def _trunc_div_pow2_31(x: np.ndarray) -> np.ndarray:
    """``x / 2**31`` rounded toward zero, like C integer division (NumPy's >> floors)."""
    return np.where(x >= 0, x >> 31, -((-x) >> 31))


def srdhm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int64 arrays holding int32 values."""
    ab = a.astype(np.int64) * b.astype(np.int64)
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    return _trunc_div_pow2_31(ab + nudge)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """gemmlowp ``RoundingDivideByPOT``: round-half-away-from-zero division by ``2**exponent``."""
    x = x.astype(np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << e) - 1
    rem = x & mask
    thr = (mask >> 1) + (x < 0)
    return (x >> e) + (rem > thr)


def requantize(acc: np.ndarray, m0: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """TFLite ``MultiplyByQuantizedMultiplier`` (double rounding), broadcast over the last axis.

    `acc` holds int32 values (any integer dtype); `m0`/`shift` broadcast against it (per output
    channel: shape ``(C,)``). Returns int64 holding int32 values; the caller adds the zero point and
    clamps. See the module docstring for the C version.
    """
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    x = np.clip(acc.astype(np.int64) << left, INT32_MIN, INT32_MAX)
    return rounding_divide_by_pot(srdhm(x, np.asarray(m0, dtype=np.int64)), right)


def rounding_int_divide(acc: np.ndarray, count: int | np.ndarray) -> np.ndarray:
    """TFLite average-pool rounding: ``(acc ± count/2) / count`` truncated, i.e. half away from zero.

    C: ``acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count`` (integer division).
    """
    acc = acc.astype(np.int64)
    count = np.asarray(count, dtype=np.int64)
    half = count // 2
    num = np.where(acc > 0, acc + half, acc - half)
    q = np.abs(num) // count
    return np.where(num < 0, -q, q)
