"""`deploy(model)` equals the PyTorch forward of the same quantised model (MLP and conv via im2col)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import randomise_bn
from dnninfer.errors import UserError
from dnninfer.quant.engine import deploy, im2col_t
from dnninfer.quant.models import cnn, mlp
from dnninfer.quant.quantizers import quantize


@pytest.mark.parametrize("method", ["fp32", "binary", "ternary", "signed"])
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_deploy_matches_pytorch_forward(arch, method):
    torch.manual_seed(0)
    base = mlp(1.5) if arch == "mlp" else cnn(1.0)
    model = randomise_bn(quantize(base, method, first_last="quantize" if arch == "mlp" else "fp32"))
    x = torch.rand(20, 1, 8, 8)
    with torch.no_grad():
        ref = model(x).numpy()
    deployed = deploy(model)
    np.testing.assert_allclose(deployed(x), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(deployed(x[:1]), ref[:1], rtol=1e-4, atol=1e-4)  # GEMV path
    kinds = [op["kernel"] for op in deployed.summary() if "kernel" in op]
    expected_kernel = {"fp32": "fp32_blas", "binary": "binary_2pos", "ternary": "ternary", "signed": "signed"}[method]
    assert expected_kernel in kinds


def test_deploy_with_dense_binary_kernel_and_strided_conv():
    torch.manual_seed(1)
    model = randomise_bn(quantize(cnn(0.5), "binary"))
    x = torch.rand(3, 1, 9, 7)  # odd sizes through the stride-2 conv
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(deploy(model, kernels={"binary": "dense_pm1"})(x), ref, rtol=1e-4, atol=1e-4)


def test_deploy_negative_control_sees_a_changed_weight():
    torch.manual_seed(2)
    model = randomise_bn(quantize(mlp(1.0), "signed", first="quantize"))
    x = torch.rand(8, 1, 8, 8)
    deployed = deploy(model)
    with torch.no_grad():
        model[4].weight.neg_()  # flips every sign of the second quantised layer's latent weights
        changed = model(x).numpy()
    assert not np.allclose(deployed(x), changed, atol=1e-3)


def test_im2col_matches_unfold():
    x = torch.rand(2, 3, 6, 5)
    cols, oh, ow = im2col_t(x.numpy(), 3, 3, (2, 1), (1, 1))
    ref = torch.nn.functional.unfold(x, 3, padding=1, stride=(2, 1))  # [B, C*9, L]
    assert (oh, ow) == (3, 5)
    np.testing.assert_allclose(cols, ref.permute(1, 0, 2).reshape(27, -1).numpy())


def test_deploy_refuses_unsupported_layers():
    with pytest.raises(UserError, match="not supported"):
        deploy(nn.Sequential(nn.Linear(4, 4), nn.Sigmoid()))
    with pytest.raises(UserError, match=r"nn\.Sequential"):
        deploy(nn.Linear(4, 4))
