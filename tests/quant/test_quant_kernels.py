"""Add-only kernels equal the NumPy reference; pack/unpack round trip; op counts follow the weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dnninfer.errors import UserError
from dnninfer.quant.kernels import KERNELS, make_kernel, pack, reference_gemm, unpack
from dnninfer.quant.quantizers import quantize_weight

VALID = {"fp32": ["fp32_blas"], "binary": ["fp32_blas", "dense_pm1", "binary_2pos"],
         "ternary": ["fp32_blas", "ternary"], "signed": ["fp32_blas", "ternary", "signed"]}


def _wq(n, k, method, seed=0):
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 0.3
    return quantize_weight(w, method).numpy()


@pytest.mark.parametrize("m", [1, 5, 33])
@pytest.mark.parametrize("method", list(VALID))
def test_every_kernel_matches_numpy_reference(method, m):
    rng = np.random.default_rng(m)
    n, k = 13, 70
    wq = _wq(n, k, method, seed=m)
    x = rng.standard_normal((m, k)).astype(np.float32)
    scale = rng.uniform(0.5, 2.0, n).astype(np.float32)
    shift = rng.standard_normal(n).astype(np.float32)
    ref = reference_gemm(x, wq, scale, shift)
    for kind in VALID[method]:
        y = make_kernel(pack(wq, method), scale, shift, kind=kind)(x)
        assert y.shape == (m, n)
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-4, err_msg=kind)


def test_kernel_negative_control_detects_a_flipped_weight():
    wq = _wq(8, 40, "signed")
    x = np.random.default_rng(0).standard_normal((3, 40)).astype(np.float32)
    bad = wq.copy()
    j = int(np.flatnonzero(bad[0])[0])
    bad[0, j] = 0.0
    y = make_kernel(pack(bad, "signed"))(x)
    assert not np.allclose(y, reference_gemm(x, wq), atol=1e-4)


@pytest.mark.parametrize("method", ["fp32", "binary", "ternary", "signed"])
@pytest.mark.parametrize("shape", [(6, 17), (4, 3, 3, 3), (5, 64)])
def test_pack_unpack_round_trip_is_exact(method, shape):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    wq = quantize_weight(w, method).numpy()
    p = pack(wq, method)
    assert np.array_equal(unpack(p), wq.reshape(shape[0], -1))


def test_packed_sizes_are_bits():
    n, k = 32, 64
    assert pack(_wq(n, k, "binary"), "binary").nbytes == n * k // 8 + 4 * n
    assert pack(_wq(n, k, "signed"), "signed").nbytes == n * k // 8 + 4 * n + n  # mask + alpha + 1 sign/filter
    assert pack(_wq(n, k, "ternary"), "ternary").nbytes == 2 * n * k // 8 + 4 * n
    assert pack(_wq(n, k, "fp32"), "fp32").nbytes == 4 * n * k + 4 * n


def test_pack_rejects_weights_of_the_wrong_kind():
    with pytest.raises(UserError, match="one sign per filter"):
        pack(np.array([[1.0, -1.0, 0.0]]), "signed")
    with pytest.raises(UserError, match="one non-zero magnitude"):
        pack(np.array([[1.0, -0.5]]), "ternary")
    with pytest.raises(UserError, match="kernel"):
        make_kernel(pack(_wq(4, 8, "signed"), "signed"), kind="dense_pm1")


def test_op_counts_follow_nonzeros():
    wq = _wq(16, 100, "signed")
    nnz_per_filter = (wq != 0).sum() / 16
    assert make_kernel(pack(wq, "signed")).adds_per_output() == pytest.approx(nnz_per_filter)
    wb = _wq(16, 100, "binary")
    k2 = make_kernel(pack(wb, "binary"), kind="binary_2pos")
    minority = np.minimum((wb > 0).sum(1), (wb < 0).sum(1)).sum() / 16
    assert k2.adds_per_output() == pytest.approx(minority + 100 / 16)
    assert k2.adds_per_output() <= 50 + 100 / 16
    assert set(KERNELS) == {"fp32_blas", "dense_pm1", "binary_2pos", "ternary", "signed"}
