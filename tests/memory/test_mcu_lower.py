"""`memory/lower.py`: captured float models lower to the MCU IR, or fail naming the op and node."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dnninfer import zoo
from dnninfer.errors import UserError
from dnninfer.graph import capture
from dnninfer.memory.executor import run
from dnninfer.memory.kernels import reference
from dnninfer.memory.lower import lower, run_float
from dnninfer.memory.models import DigitsVmcuCNN, example_input, mobilenet_v2_ir
from dnninfer.memory.planners import PLANNERS, plan
from dnninfer.memory.quantize import quantize


def _lowered(model: nn.Module, x: torch.Tensor):
    model.eval()
    ir = lower(capture(model, (x,)))
    with torch.no_grad():
        want = model(x).double()
    got = run_float(ir, x)[ir.output].reshape(want.shape)
    return ir, got, want


def test_zoo_digits_cnn_lowers_quantises_and_runs_under_every_planner():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = zoo.build_model("digits_cnn")
        calib = torch.rand(8, 1, 8, 8)
    ir, got, want = _lowered(model, calib[:1])
    assert [layer.kind for layer in ir.layers] == ["conv", "conv", "pool", "conv", "pool", "fc"]
    assert all(layer.act == "relu" for layer in ir.layers if layer.kind == "conv")  # BN folded, ReLU fused
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)  # incl. the CHW -> HWC flatten permutation
    q = quantize(model, calib)
    x = example_input(q, seed=2)
    ref = reference(q, x)
    assert np.unique(ref).size > 1
    for name in PLANNERS:
        assert np.array_equal(run(q, plan(q, name), x), ref), name


def test_zoo_mobilenet_v2_lowers_to_the_analytic_plans():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = zoo.build_model("mobilenet_v2")
    x = torch.randn(1, 3, 64, 64)
    ir, got, want = _lowered(model, x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    analytic = mobilenet_v2_ir(1.0, 64)
    assert len(ir.blocks) == len(analytic.blocks) == 17
    for name in PLANNERS:
        a, b = plan(ir, name), plan(analytic, name)
        assert (a.peak_bytes, a.scratch_bytes) == (b.peak_bytes, b.scratch_bytes), name


def test_digits_vmcu_cnn_finds_its_two_depthwise_blocks():
    ir, got, want = _lowered(DigitsVmcuCNN(), torch.rand(1, 1, 8, 8))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert [layer.kind for layer in ir.layers] == ["conv", "dw", "pw", "dw", "pw", "pool", "fc"]
    assert [(b.dw, b.project, b.expand) for b in ir.blocks] == [(1, 2, None), (3, 4, None)]


class _Sigmoid(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x):
        return torch.sigmoid(self.conv(x))


class _LayerNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 8)
        self.norm = nn.LayerNorm(8)

    def forward(self, x):
        return self.norm(self.fc(torch.flatten(x, 1)))


class _Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, groups=2)

    def forward(self, x):
        return self.conv(x)


class _SharedRelu(nn.Module):
    """The conv output is read by the ReLU and by the add: the clamp cannot be fused into the conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return torch.relu(y) + y


@pytest.mark.parametrize(
    ("model", "channels", "pattern"),
    [
        (_Sigmoid(), 1, r"op sigmoid at node sigmoid is not supported by the MCU IR \(supported: Conv2d"),
        (_LayerNorm(), 1, r"op LayerNorm at node norm is not supported by the MCU IR"),
        (_Grouped(), 4, r"op Conv2d at node conv is not supported by the MCU IR \(groups=2"),
        (_SharedRelu(), 1, r"op relu at node relu is not supported by the MCU IR \(relu must directly follow"),
    ],
)
def test_unsupported_ops_are_user_errors_naming_op_and_node(model, channels, pattern):
    with pytest.raises(UserError, match=pattern):
        lower(capture(model.eval(), (torch.rand(1, channels, 8, 8),)))
