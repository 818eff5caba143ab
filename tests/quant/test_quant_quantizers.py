"""Quantisers: PLUM's signed binary (§2.1), BWN, TWN, their clipped STE, and `quantize` policies."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dnninfer.errors import UserError
from dnninfer.quant.models import cnn, mlp
from dnninfer.quant.quantizers import (
    BinaryQuant,
    QuantConv2d,
    QuantLinear,
    SignedBinaryQuant,
    TernaryQuant,
    quantize,
    quantize_weight,
    weight_stats,
)


def _w(*shape, seed=0, scale=0.5):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("shape", [(8, 3, 3, 3), (7, 5, 3, 3), (6, 10), (9, 4)])
def test_signed_layout_first_half_positive_rest_negative(shape):
    q = SignedBinaryQuant.apply(_w(*shape))
    flat = q.reshape(shape[0], -1)  # Conv dim 0 = Cout, Linear dim 0 = out_features
    half = shape[0] // 2
    assert (flat[:half] >= 0).all() and (flat[:half] > 0).any()
    assert (flat[half:] <= 0).all() and (flat[half:] < 0).any()
    assert set(flat.unique().tolist()) <= {-1.0, 0.0, 1.0}  # official code: scale is the constant 1


def test_signed_threshold_is_five_percent_of_filter_max():
    w = _w(6, 40, seed=1)
    q = SignedBinaryQuant.apply(w)
    for f in range(6):
        delta = 0.05 * w[f].abs().max()
        s = 1.0 if f < 3 else -1.0
        expected_keep = s * w[f] >= delta
        assert torch.equal(q[f] != 0, expected_keep)
    # negative control: a weight just below the threshold is dropped, just above kept
    w2 = torch.tensor([[1.0, 0.049, 0.051, -0.5], [-1.0, -0.049, -0.051, 0.5]])
    q2 = SignedBinaryQuant.apply(w2)
    assert q2.tolist() == [[1.0, 0.0, 1.0, 0.0], [-1.0, 0.0, -1.0, 0.0]]


@pytest.mark.parametrize("method", ["binary", "ternary", "signed"])
def test_one_nonzero_magnitude_per_filter(method):
    q = quantize_weight(_w(10, 4, 3, 3, seed=2), method).reshape(10, -1)
    for row in q:
        assert len(row[row != 0].abs().unique()) <= 1


def test_binary_is_alpha_sign_with_mean_abs():
    w = _w(4, 9, seed=3)
    q = BinaryQuant.apply(w)
    alpha = w.abs().mean(1, keepdim=True)
    assert torch.allclose(q, alpha * torch.where(w >= 0, 1.0, -1.0))


def test_ternary_threshold_and_alpha():
    w = _w(5, 30, seed=4)
    q = TernaryQuant.apply(w)
    for f in range(5):
        delta = 0.7 * w[f].abs().mean()
        keep = w[f].abs() > delta
        assert torch.equal(q[f] != 0, keep)
        assert torch.allclose(q[f][keep].abs(), w[f][keep].abs().mean().expand(int(keep.sum())))
        assert torch.equal(torch.sign(q[f][keep]), torch.sign(w[f][keep]))


@pytest.mark.parametrize("fn", [BinaryQuant, TernaryQuant, SignedBinaryQuant])
def test_ste_passes_gradient_clipped_and_masked(fn):
    w = torch.tensor([[0.3, -0.8, 1.5, -2.0, 0.0, 1.0]], requires_grad=True)
    g = torch.tensor([[0.5, -3.0, 1.0, 1.0, 2.0, -0.25]])
    fn.apply(w).backward(g)
    # clamp(g, -1, 1), zero where |W| > 1 (PLUM STESign.backward); |W| == 1 still passes
    assert w.grad.tolist() == [[0.5, -1.0, 0.0, 0.0, 1.0, -0.25]]


def test_ste_also_passes_through_pruned_weights():
    # the official backward does not mask weights quantised to 0 (only |W| > 1)
    w = torch.tensor([[1.0, 0.01, -0.3], [-1.0, 0.2, -0.01]], requires_grad=True)
    q = SignedBinaryQuant.apply(w)
    assert q.tolist() == [[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]
    q.sum().backward()
    assert w.grad.tolist() == [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]


def test_quantize_default_keeps_first_and_last_fp32():
    q = quantize(cnn(1.0), "signed")
    convs = [m for m in q.modules() if isinstance(m, nn.Conv2d)]
    lins = [m for m in q.modules() if isinstance(m, nn.Linear)]
    assert type(convs[0]) is nn.Conv2d and type(lins[-1]) is nn.Linear
    assert all(isinstance(m, QuantConv2d) and m.method == "signed" for m in convs[1:])


def test_quantize_policy_quantize_and_overrides():
    q = quantize(mlp(1.0), "binary", first_last="quantize")
    assert all(isinstance(m, QuantLinear) for m in q.modules() if isinstance(m, nn.Linear))
    q2 = quantize(mlp(1.0), "ternary", first="quantize", last="fp32")
    lins = [m for m in q2.modules() if isinstance(m, nn.Linear)]
    assert [type(m) for m in lins] == [QuantLinear, QuantLinear, nn.Linear]


def test_quantize_copies_weights_and_leaves_original_untouched():
    base = mlp(1.0)
    q = quantize(base, "signed", first_last="quantize")
    assert all(type(m) is not QuantLinear for m in base.modules())
    assert torch.equal(q[1].weight, base[1].weight)


def test_quantized_model_trains():
    torch.manual_seed(0)
    q = quantize(mlp(1.0), "signed", first="quantize")
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,))
    nn.CrossEntropyLoss()(q(x), y).backward()
    assert q[1].weight.grad is not None and q[1].weight.grad.abs().sum() > 0


def test_weight_stats_counts_quantised_layers_only():
    q = quantize(mlp(1.0), "signed", first="quantize")
    s = weight_stats(q)
    assert s["weights"] == 64 * 16 + 16 * 16
    assert 0 < s["nnz"] < s["weights"] and s["density"] == s["nnz"] / s["weights"]
    assert s["weights_all"] == s["weights"] + 16 * 10
    dense = weight_stats(quantize(mlp(1.0), "fp32", first="quantize"))
    assert dense["nnz"] == dense["weights"] == s["weights"]


def test_bad_method_and_policy_are_user_errors():
    with pytest.raises(UserError, match="quantisation method"):
        quantize(mlp(1.0), "quinary")
    with pytest.raises(UserError, match="first layer policy"):
        quantize(mlp(1.0), "signed", first="int8")
