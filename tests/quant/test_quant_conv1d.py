"""Conv1d through ``quantize`` and ``deploy`` (MNIST-1D nets), the residual net, and the signed threshold."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import randomise_bn
from dnninfer.errors import UserError
from dnninfer.quant.engine import deploy
from dnninfer.quant.models import build_model, cnn, resnet
from dnninfer.quant.quantizers import QuantConv1d, quant_layers, quantize, weight_stats


def test_quantize_swaps_conv1d_and_uses_the_quantised_weight():
    torch.manual_seed(0)
    model = quantize(cnn(1.0, dims=1), "signed", first_last="quantize")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d)]
    assert convs and all(isinstance(m, QuantConv1d) for m in convs)
    layer = convs[1]
    x = torch.randn(4, layer.in_channels, 11)
    with torch.no_grad():
        ref = F.conv1d(x, layer.quantized_weight(), None, layer.stride, layer.padding)
        assert torch.equal(layer(x), ref)
        assert not torch.allclose(layer(x), F.conv1d(x, layer.weight, None, layer.stride, layer.padding))
    q = layer.quantized_weight().reshape(layer.out_channels, -1)
    half = layer.out_channels // 2
    assert (q[:half] >= 0).all() and (q[half:] <= 0).all()  # PLUM's fixed sign layout per filter


@pytest.mark.parametrize("method", ["fp32", "binary", "ternary", "signed"])
def test_deploy_conv1d_matches_pytorch_forward(method):
    torch.manual_seed(0)
    model = randomise_bn(quantize(build_model("cnn", 1.0, (1, 1, 40)), method, first_last="quantize"))
    x = torch.randn(7, 1, 1, 40)  # MNIST-1D layout (N, 1, 1, L); an odd length through the stride-2 conv
    with torch.no_grad():
        ref = model(x).numpy()
    deployed = deploy(model)
    np.testing.assert_allclose(deployed(x), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(deployed(x[:1]), ref[:1], rtol=1e-4, atol=1e-4)  # GEMV path
    assert "conv1d" in [op["kind"] for op in deployed.summary()]


def test_deploy_conv1d_negative_control():
    """A deployed model that is not the PyTorch model must not match: the comparison above can fail.
    (Random BatchNorm statistics make this net insensitive to one conv, so the classifier is flipped.)"""
    torch.manual_seed(0)
    model = randomise_bn(quantize(cnn(1.0, dims=1), "signed", first_last="quantize"))
    x = torch.randn(5, 1, 1, 40)
    with torch.no_grad():
        ref = model(x).numpy()
        quant_layers(model)[-1][1].weight.neg_()  # every signed filter now keeps the other half of its weights
        deployed = deploy(model)
    assert np.abs(deployed(x) - ref).max() > 0.1


def test_deploy_refuses_unsupported_conv1d():
    model = quantize(nn.Sequential(nn.Conv1d(1, 4, 3, dilation=2), nn.Flatten(), nn.Linear(4 * 36, 2)), "signed",
                     first_last="quantize")
    with pytest.raises(UserError, match="dilation"):
        deploy(model)


def test_resnet_1d_and_2d_quantize_every_conv_including_the_shortcut():
    for shape, conv in (((1, 1, 40), nn.Conv1d), ((1, 8, 8), nn.Conv2d)):
        model = quantize(build_model("resnet", 1.0, shape), "signed", first_last="fp32")
        convs = [m for m in model.modules() if isinstance(m, conv)]
        assert len(convs) == 6  # stem, 2 + 2 block convs, 1x1 shortcut
        assert len(quant_layers(model)) == 5  # all but the FP32 stem (the FP32 classifier is a Linear)
        assert model.eval()(torch.randn(3, *shape)).shape == (3, 10)
    assert isinstance(resnet(1.0, dims=1)[1], nn.Conv1d)


def test_signed_delta_sets_the_threshold():
    torch.manual_seed(0)
    base = cnn(1.0, dims=1)
    dense = weight_stats(quantize(base, "signed", signed_delta=0.0))["density"]
    plum = weight_stats(quantize(base, "signed"))["density"]
    sparse = weight_stats(quantize(base, "signed", signed_delta=0.5))["density"]
    assert sparse < plum < dense <= 0.55  # delta 0 keeps about the half of the weights with the filter's sign
    with pytest.raises(UserError):
        quantize(base, "signed", signed_delta=1.5)
