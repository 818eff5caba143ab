"""Add-only GEMV/GEMM kernels for quantised weights, and bit-packed weight storage (numba, one thread).

All kernels compute ``Y[n, m] = scale[n] * sum_k Wq[n, k] * X[m, k] + shift[n]`` with float32
activations, the weights' per-filter magnitude folded into ``scale`` (which can also carry a
folded BatchNorm) and the layout ``xt = X.T`` (``[K, M]``, so the inner loop runs over M, contiguous)
and ``out`` ``[N, M]``. M == 1 takes a scalar GEMV path. Variants (research report §5):

* ``DensePM1Kernel``  binary, dense: K additions/subtractions per output.
* ``BinaryKernel``    binary, "2 x positive sum - total": ``y = 2 sum_{w=+1} x - sum x``. Each filter
  stores the index list of its *minority* sign, so it costs ``min(#pos, #neg) <= K/2`` additions per
  output plus the row total, computed once and shared by every filter (the strongest binary kernel
  of this style).
* ``TernaryKernel``   ternary, index lists of the +1 and the -1 weights: nnz additions, one scale.
* ``SignedKernel``    signed binary, one index list per filter and one sign/scale per filter
  (PLUM §2.3): nnz pure additions, then one multiply per output.
* ``Fp32Kernel``      float32 BLAS GEMM (numpy), the speed reference, not an add-only kernel.

``pack``/``unpack`` store weights as bits: 1 bit/weight for binary (sign) and signed binary (mask,
plus one sign per filter), 2 bits/weight for ternary (mask and sign), plus one float32 magnitude per
filter. Kernels are built from the packed form (``make_kernel``).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numba
import numpy as np

from dnninfer.errors import expected

__all__ = [
    "KERNELS",
    "BinaryKernel",
    "DensePM1Kernel",
    "Fp32Kernel",
    "Kernel",
    "PackedWeights",
    "SignedKernel",
    "TernaryKernel",
    "make_kernel",
    "pack",
    "reference_gemm",
    "unpack",
]

_JIT = {"cache": True, "nogil": True, "fastmath": True}
_CACHE_OK = os.access(os.path.dirname(__file__), os.W_OK)
if not _CACHE_OK:  # read-only install: compile each run instead of failing to write the cache
    _JIT["cache"] = False


# -- numba kernels --------------------------------------------------------------------------------
@numba.njit(**_JIT)
def _dense_gemm(xt, w, scale, shift, out):  # pragma: no cover - compiled
    K, M = xt.shape
    for n in range(w.shape[0]):
        acc = out[n]
        acc[:] = 0.0
        for k in range(K):
            if w[n, k] > 0:
                for m in range(M):
                    acc[m] += xt[k, m]
            else:
                for m in range(M):
                    acc[m] -= xt[k, m]
        for m in range(M):
            acc[m] = acc[m] * scale[n] + shift[n]


@numba.njit(**_JIT)
def _dense_gemv(x, w, scale, shift, out):  # pragma: no cover - compiled
    K = x.shape[0]
    for n in range(w.shape[0]):
        acc = np.float32(0.0)
        for k in range(K):
            if w[n, k] > 0:
                acc += x[k]
            else:
                acc -= x[k]
        out[n, 0] = acc * scale[n] + shift[n]


@numba.njit(inline="always", **_JIT)
def _add_rows(xt, idx, lo, hi, sign, acc):  # pragma: no cover - compiled
    """``acc += sign * xt[idx[j]]`` for ``lo <= j < hi``; ``sign`` is a literal +-1 (exact: an add or a subtract)."""
    for j in range(lo, hi):
        k = idx[j]
        for m in range(acc.shape[0]):
            acc[m] += sign * xt[k, m]


@numba.njit(**_JIT)
def _pn_gemm(xt, ptr, mid, idx, scale, shift, out):  # pragma: no cover - compiled
    """Index lists: per filter, indices ptr[n]..mid[n] are +1 and mid[n]..ptr[n+1] are -1 (ternary;
    signed binary has no -1 range), pure additions, then one multiply per output."""
    M = xt.shape[1]
    for n in range(ptr.shape[0] - 1):
        acc = out[n]
        acc[:] = 0.0
        _add_rows(xt, idx, ptr[n], mid[n], np.float32(1.0), acc)
        _add_rows(xt, idx, mid[n], ptr[n + 1], np.float32(-1.0), acc)
        for m in range(M):
            acc[m] = acc[m] * scale[n] + shift[n]


@numba.njit(**_JIT)
def _pn_gemv(x, ptr, mid, idx, scale, shift, out):  # pragma: no cover - compiled
    for n in range(ptr.shape[0] - 1):
        acc = np.float32(0.0)
        for j in range(ptr[n], mid[n]):
            acc += x[idx[j]]
        for j in range(mid[n], ptr[n + 1]):
            acc -= x[idx[j]]
        out[n, 0] = acc * scale[n] + shift[n]


@numba.njit(**_JIT)
def _twopos_gemm(xt, ptr, idx, coef, tcoef, scale, shift, total, out):  # pragma: no cover - compiled
    """Binary: y = coef * sum_{minority} x + tcoef * total (coef = +-2, tcoef = -+1), total shared."""
    K, M = xt.shape
    total[:] = 0.0
    for k in range(K):
        for m in range(M):
            total[m] += xt[k, m]
    for n in range(ptr.shape[0] - 1):
        acc = out[n]
        acc[:] = 0.0
        _add_rows(xt, idx, ptr[n], ptr[n + 1], np.float32(1.0), acc)
        for m in range(M):
            acc[m] = (coef[n] * acc[m] + tcoef[n] * total[m]) * scale[n] + shift[n]


@numba.njit(**_JIT)
def _twopos_gemv(x, ptr, idx, coef, tcoef, scale, shift, out):  # pragma: no cover - compiled
    tot = np.float32(0.0)
    for k in range(x.shape[0]):
        tot += x[k]
    for n in range(ptr.shape[0] - 1):
        acc = np.float32(0.0)
        for j in range(ptr[n], ptr[n + 1]):
            acc += x[idx[j]]
        out[n, 0] = (coef[n] * acc + tcoef[n] * tot) * scale[n] + shift[n]


# -- packed storage -------------------------------------------------------------------------------
PACK_METHODS = ("fp32", "binary", "ternary", "signed")


@dataclass(frozen=True)
class PackedWeights:
    """A quantised weight matrix ``[N, K]`` in its deployment format.

    ``mask``: packed bits of ``Wq != 0`` (ternary, signed); ``sign``: packed bits of ``Wq > 0`` per
    weight (binary: ``Wq >= 0``; ternary); ``filter_sign``: +-1 per filter (signed); ``alpha``: the
    per-filter magnitude; ``dense``: the float32 weights (fp32 only). Bits are packed along K,
    little-endian, one padded byte row per filter.
    """

    method: str
    shape: tuple[int, int]
    alpha: np.ndarray
    mask: np.ndarray | None = None
    sign: np.ndarray | None = None
    filter_sign: np.ndarray | None = None
    dense: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of weight storage (bit planes + per-filter scalars; float32 weights for fp32)."""
        parts = [self.alpha, self.mask, self.sign, self.filter_sign, self.dense]
        return int(sum(p.nbytes for p in parts if p is not None))


def _bits(a: np.ndarray) -> np.ndarray:
    return np.packbits(a.astype(bool), axis=1, bitorder="little")


def _unbits(b: np.ndarray, k: int) -> np.ndarray:
    return np.unpackbits(b, axis=1, count=k, bitorder="little").astype(bool)


def _as_matrix(wq: np.ndarray) -> np.ndarray:
    wq = np.asarray(wq, dtype=np.float32)
    if wq.ndim < 2:
        raise expected("quantised weight", "an array with filters along dim 0 (2-D or more)", wq.shape)
    return wq.reshape(wq.shape[0], -1)


def _filter_magnitude(w: np.ndarray, method: str) -> np.ndarray:
    """The single non-zero magnitude of each filter; raise if a filter has several."""
    a = np.abs(w)
    mag = a.max(axis=1)
    bad = np.any((a != 0) & (a != mag[:, None]), axis=1)
    if bad.any():
        raise expected(f"{method} weight", "one non-zero magnitude per filter", f"{int(bad.sum())} filters with more")
    return mag.astype(np.float32)


def pack(wq: np.ndarray, method: str) -> PackedWeights:
    """Pack a quantised weight (``[N, ...]``, flattened to ``[N, K]``) for ``method``."""
    w = _as_matrix(wq)
    shape = (int(w.shape[0]), int(w.shape[1]))
    if method == "fp32":
        return PackedWeights(method, shape, np.ones(shape[0], np.float32), dense=w.copy())
    if method not in PACK_METHODS:
        raise expected("quantisation method", f"one of {', '.join(PACK_METHODS)}", method)
    alpha = _filter_magnitude(w, method)
    if method == "binary":
        if np.any((w == 0) & (alpha[:, None] != 0)):
            raise expected("binary weight", "no zeros (values +-alpha per filter)", "zeros")
        return PackedWeights(method, shape, alpha, sign=_bits(w >= 0))
    if method == "ternary":
        return PackedWeights(method, shape, alpha, mask=_bits(w != 0), sign=_bits(w > 0))
    pos, neg = (w > 0).any(axis=1), (w < 0).any(axis=1)
    if np.any(pos & neg):
        raise expected("signed-binary weight", "one sign per filter", f"{int((pos & neg).sum())} mixed filters")
    filter_sign = np.where(neg, -1, 1).astype(np.int8)
    return PackedWeights(method, shape, alpha, mask=_bits(w != 0), filter_sign=filter_sign)


def unpack(p: PackedWeights) -> np.ndarray:
    """The ``[N, K]`` float32 matrix that ``pack`` stored (exact round trip)."""
    k = p.shape[1]
    if p.method == "fp32":
        assert p.dense is not None
        return p.dense.copy()
    a = p.alpha[:, None]
    if p.method == "binary":
        assert p.sign is not None
        return np.where(_unbits(p.sign, k), a, -a).astype(np.float32)
    assert p.mask is not None
    mask = _unbits(p.mask, k)
    if p.method == "ternary":
        assert p.sign is not None
        s = np.where(_unbits(p.sign, k), 1.0, -1.0).astype(np.float32)
        return np.where(mask, s * a, 0.0).astype(np.float32)
    assert p.filter_sign is not None
    return np.where(mask, p.filter_sign[:, None].astype(np.float32) * a, 0.0).astype(np.float32)


# -- kernels --------------------------------------------------------------------------------------
#: Index lists use *unsigned* pointers and indices: numba then skips negative-index wraparound and
#: LLVM vectorises the gathers (2-2.5x faster GEMVs than int64/int32 on the dev box, for every variant).
PTR, IDX = np.uint64, np.uint32


def _csr(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row pointers and column indices of the True entries of ``mask`` [N, K]."""
    ptr = np.zeros(mask.shape[0] + 1, PTR)
    np.cumsum(mask.sum(axis=1), out=ptr[1:])
    return ptr, np.nonzero(mask)[1].astype(IDX)


@dataclass
class Kernel(ABC):
    """A quantised layer ``[N, K]`` ready to run; ``__call__(x [M, K]) -> y [M, N]``."""

    method: str
    shape: tuple[int, int]
    scale: np.ndarray
    shift: np.ndarray
    name: str = field(default="", init=False)

    @abstractmethod
    def run_t(self, xt: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``xt`` [K, M] float32 C-contiguous -> ``out`` [N, M]."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        out = np.empty((self.shape[0], x.shape[0]), np.float32)
        return self.run_t(np.ascontiguousarray(x.T), out).T

    @abstractmethod
    def adds_per_output(self) -> float:
        """Additions per output element: the work the kernel's sparsity/repetition leaves."""


class Fp32Kernel(Kernel):
    def __init__(self, w: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> None:
        super().__init__("fp32", (w.shape[0], w.shape[1]), scale, shift)
        self.name = "fp32_blas"
        self.w = np.ascontiguousarray(w, np.float32)

    def run_t(self, xt: np.ndarray, out: np.ndarray) -> np.ndarray:
        np.matmul(self.w, xt, out=out)
        out *= self.scale[:, None]
        out += self.shift[:, None]
        return out

    def adds_per_output(self) -> float:
        return float(self.shape[1])  # multiply-adds


class DensePM1Kernel(Kernel):
    def __init__(self, w: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> None:
        super().__init__("binary", (w.shape[0], w.shape[1]), scale, shift)
        self.name = "dense_pm1"
        self.w = np.where(w >= 0, 1, -1).astype(np.int8)

    def run_t(self, xt: np.ndarray, out: np.ndarray) -> np.ndarray:
        if xt.shape[1] == 1:
            _dense_gemv(xt[:, 0], self.w, self.scale, self.shift, out)
        else:
            _dense_gemm(xt, self.w, self.scale, self.shift, out)
        return out

    def adds_per_output(self) -> float:
        return float(self.shape[1])


class BinaryKernel(Kernel):
    def __init__(self, w: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> None:
        super().__init__("binary", (w.shape[0], w.shape[1]), scale, shift)
        self.name = "binary_2pos"
        pos = w >= 0
        minority_pos = pos.sum(axis=1) <= w.shape[1] / 2
        self.ptr, self.idx = _csr(np.where(minority_pos[:, None], pos, ~pos))
        # minority +1: y = 2 S - T;  minority -1: y = T - 2 S
        self.coef = np.where(minority_pos, 2.0, -2.0).astype(np.float32)
        self.tcoef = np.where(minority_pos, -1.0, 1.0).astype(np.float32)
        self._total = np.empty(0, np.float32)

    def run_t(self, xt: np.ndarray, out: np.ndarray) -> np.ndarray:
        m = xt.shape[1]
        if m == 1:
            _twopos_gemv(xt[:, 0], self.ptr, self.idx, self.coef, self.tcoef, self.scale, self.shift, out)
        else:
            if self._total.shape[0] != m:
                self._total = np.empty(m, np.float32)
            _twopos_gemm(xt, self.ptr, self.idx, self.coef, self.tcoef, self.scale, self.shift, self._total, out)
        return out

    def adds_per_output(self) -> float:
        return len(self.idx) / self.shape[0] + self.shape[1] / self.shape[0]


class TernaryKernel(Kernel):
    def __init__(self, w: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> None:
        super().__init__("ternary", (w.shape[0], w.shape[1]), scale, shift)
        self.name = "ternary"
        n = w.shape[0]
        pos_ptr, pos_idx = _csr(w > 0)
        neg_ptr, neg_idx = _csr(w < 0)
        counts = np.diff(pos_ptr) + np.diff(neg_ptr)
        self.ptr = np.zeros(n + 1, PTR)
        np.cumsum(counts, out=self.ptr[1:])
        self.mid = (self.ptr[:-1] + np.diff(pos_ptr)).astype(PTR)
        self.idx = np.empty(int(self.ptr[-1]), IDX)
        for f in range(n):
            self.idx[self.ptr[f]:self.mid[f]] = pos_idx[pos_ptr[f]:pos_ptr[f + 1]]
            self.idx[self.mid[f]:self.ptr[f + 1]] = neg_idx[neg_ptr[f]:neg_ptr[f + 1]]

    def run_t(self, xt: np.ndarray, out: np.ndarray) -> np.ndarray:
        if xt.shape[1] == 1:
            _pn_gemv(xt[:, 0], self.ptr, self.mid, self.idx, self.scale, self.shift, out)
        else:
            _pn_gemm(xt, self.ptr, self.mid, self.idx, self.scale, self.shift, out)
        return out

    def adds_per_output(self) -> float:
        return len(self.idx) / self.shape[0]


class SignedKernel(TernaryKernel):
    """Signed binary: one index list per filter, all additions (the ternary layout with an empty -1
    range, so it runs the ternary kernels); the filter's sign is folded into ``scale``."""

    def __init__(self, w: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> None:
        Kernel.__init__(self, "signed", (w.shape[0], w.shape[1]), scale, shift)
        self.name = "signed"
        self.ptr, self.idx = _csr(w != 0)
        self.mid = self.ptr[1:].copy()


KERNELS = {"fp32_blas": Fp32Kernel, "dense_pm1": DensePM1Kernel, "binary_2pos": BinaryKernel,
           "ternary": TernaryKernel, "signed": SignedKernel}
DEFAULT_KERNEL = {"fp32": "fp32_blas", "binary": "binary_2pos", "ternary": "ternary", "signed": "signed"}


def make_kernel(p: PackedWeights, scale: np.ndarray | None = None, shift: np.ndarray | None = None,
                kind: str | None = None) -> Kernel:
    """A kernel for packed weights: ``y = out_scale * (pattern . x) + shift`` where the pattern is the
    +-1/0 weights and ``out_scale = alpha * filter_sign * scale`` (signed) or ``alpha * scale``.

    ``kind`` picks a variant (``KERNELS``); by default the method's own (``DEFAULT_KERNEL``).
    ``dense_pm1``/``binary_2pos`` need binary weights, ``ternary`` works for ternary and signed.
    """
    kind = kind or DEFAULT_KERNEL[p.method]
    if kind not in KERNELS:
        raise expected("kernel", f"one of {', '.join(KERNELS)}", kind)
    n = p.shape[0]
    scale = np.ones(n, np.float32) if scale is None else np.asarray(scale, np.float32).reshape(n)
    shift = np.zeros(n, np.float32) if shift is None else np.asarray(shift, np.float32).reshape(n)
    w = unpack(p)
    if kind == "fp32_blas":
        return Fp32Kernel(w, scale, shift)
    if p.method == "fp32":
        raise expected("kernel for fp32 weights", "fp32_blas", kind)
    if kind in ("dense_pm1", "binary_2pos") and p.method != "binary":
        raise expected(f"kernel {kind}", "binary weights", p.method)
    alpha = p.alpha
    if kind == "signed":
        if p.method != "signed":
            raise expected("kernel signed", "signed-binary weights", p.method)
        assert p.filter_sign is not None
        return SignedKernel(w, (alpha * p.filter_sign * scale).astype(np.float32), shift)
    pattern = np.sign(w) if p.method != "binary" else np.where(w >= 0, 1.0, -1.0)
    return KERNELS[kind](pattern.astype(np.float32), (alpha * scale).astype(np.float32), shift)


def reference_gemm(x: np.ndarray, wq: np.ndarray, scale: np.ndarray | None = None,
                   shift: np.ndarray | None = None) -> np.ndarray:
    """NumPy float64 reference of every kernel: ``(x @ Wq.T) * scale + shift``."""
    y = np.asarray(x, np.float64) @ _as_matrix(wq).astype(np.float64).T
    if scale is not None:
        y = y * np.asarray(scale, np.float64)
    if shift is not None:
        y = y + np.asarray(shift, np.float64)
    return y
