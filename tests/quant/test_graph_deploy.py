"""`deploy()` through the captured Graph equals the quantised PyTorch model on nets the Sequential path
refuses: resnet18-style residual blocks (in-place add, strided 1x1 downsample, max-pool stem) and a
depthwise-separable net (groups=C convs, average pooling, functional ops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import randomise_bn
from dnninfer.errors import UserError
from dnninfer.quant.engine import DeployedModel, deploy
from dnninfer.quant.graph_deploy import GraphDeployedModel
from dnninfer.quant.quantizers import quantize


class BasicBlock(nn.Module):
    """torchvision's ResNet-18 BasicBlock (conv-bn-relu-conv-bn, identity or 1x1 downsample, `+=`)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class TinyResNet(nn.Module):
    """ResNet-18's layout at width 8 with one block per stage (stem, max-pool, 4 stages, GAP, fc)."""

    def __init__(self, width: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        chans = [width, width, 2 * width, 4 * width, 8 * width]
        self.layers = nn.Sequential(*(BasicBlock(chans[i], chans[i + 1], 1 if i == 0 else 2) for i in range(4)))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(chans[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.layers(x))
        return self.fc(torch.flatten(x, 1))


class Depthwise(nn.Module):
    """MobileNet-style depthwise-separable blocks, functional relu/pooling, a branch joined by cat."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 1, 1)
        self.dw = nn.Conv2d(8, 8, 3, 2, 1, groups=8, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.grouped = nn.Conv2d(16, 16, 3, 1, 1, groups=4)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(32 * 2 * 2, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = F.relu(self.bn(self.dw(x)))
        x = self.pw(x)
        x = torch.cat([x, F.max_pool2d(self.grouped(x), 3, 1, 1)], dim=1)
        x = self.pool(x)
        return self.fc(x.view(x.size(0), -1))



def _check(model: nn.Module, x: torch.Tensor) -> GraphDeployedModel:
    with torch.no_grad():
        ref = model(x).numpy()
    deployed = deploy(model)
    assert isinstance(deployed, GraphDeployedModel)
    scale = float(np.abs(ref).max())
    np.testing.assert_allclose(deployed(x), ref, rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(deployed(x[:1]), ref[:1], rtol=1e-4, atol=1e-4 * scale)  # GEMV path
    return deployed


@pytest.mark.parametrize("method", ["fp32", "binary", "signed"])
def test_resnet18_style_blocks_match_pytorch(method):
    torch.manual_seed(0)
    model = randomise_bn(quantize(TinyResNet(), method, first_last="fp32"), shift_scale=0.1)
    deployed = _check(model, torch.rand(4, 3, 32, 32))
    kinds = {op["kind"] for op in deployed.summary()}
    assert {"conv2d", "linear", "maxpool2d", "add"} <= kinds
    # every BatchNorm in a BasicBlock follows a conv with one reader, so all are folded away
    assert "batchnorm2d" not in kinds
    if method == "signed":
        assert "signed" in {op.get("kernel") for op in deployed.summary()}


@pytest.mark.parametrize("method", ["ternary", "signed"])
def test_depthwise_net_matches_pytorch(method):
    torch.manual_seed(1)
    model = randomise_bn(quantize(Depthwise(), method, first_last="quantize"), shift_scale=0.1)
    deployed = _check(model, torch.rand(3, 3, 8, 8))
    groups = {op["op"]: op["groups"] for op in deployed.summary() if "groups" in op}
    assert groups["dw"] == 8 and groups["grouped"] == 4


def test_grouped_sequential_goes_through_the_graph_and_plain_sequential_does_not():
    torch.manual_seed(2)
    seq = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    model = quantize(seq, "signed", first_last="quantize").eval()
    _check(model, torch.rand(2, 4, 4, 4))
    plain = quantize(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()), "signed").eval()
    assert isinstance(deploy(plain), DeployedModel)


def test_negative_control_sees_a_changed_weight_in_a_residual_block():
    """The comparison can fail: flipping one quantised conv's latent weights changes the model's output,
    and the deployed copy (snapshotted before the change) no longer matches it."""
    torch.manual_seed(3)
    model = randomise_bn(quantize(TinyResNet(), "signed", first_last="fp32"), shift_scale=0.1)
    x = torch.rand(2, 3, 32, 32)
    deployed = deploy(model, example_inputs=x)
    with torch.no_grad():
        before = model(x).numpy()
        model.layers[1].conv2.weight.neg_()
        changed = model(x).numpy()
    np.testing.assert_allclose(deployed(x), before, rtol=1e-4, atol=1e-4 * float(np.abs(before).max()))
    assert not np.allclose(deployed(x), changed, atol=1e-3)


def test_unsupported_node_is_refused_with_its_name():
    class Sig(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.fc(x))

    with pytest.raises(UserError, match=r"sigmoid.*not supported"):
        deploy(Sig(), example_inputs=torch.rand(1, 4))
