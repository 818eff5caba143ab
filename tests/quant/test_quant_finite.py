"""Issue 14 item 3: a quantised ResNet-18 is usable (finite, sane logits) and inf/NaN never passes silently.

Scale derived from the weights (``signed_scale="mean"``), BatchNorm re-estimation (``calibrate_bn`` /
``quantize(calibrate=...)``), and the non-finite checks at quantize time, in eval and in ``deploy``.
"""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
from torch import nn

from dnninfer.errors import UserError
from dnninfer.quant import (
    NonFiniteWarning,
    QuantConv2d,
    calibrate_bn,
    cnn,
    deploy,
    first_nonfinite,
    mlp,
    quantize,
)
from dnninfer.quant.quantizers import quantize_weight
from dnninfer.zoo import build_model

METHODS = ["binary", "ternary", "signed"]


@pytest.fixture(scope="module")
def resnet18():
    return build_model("resnet18")


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 64, 64, generator=g)
    cal = [torch.randn(4, 3, 64, 64, generator=g) for _ in range(2)]
    return x, cal


def _logits(model, x):
    with torch.no_grad():
        return model(x)


def _huge(model: nn.Module) -> nn.Module:
    """Every conv/linear weight set to 1e30: activations overflow float32 by the second layer."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                m.weight.fill_(1e30)
    return model


@pytest.mark.parametrize("method", METHODS)
def test_issue_repro_quantised_resnet18_is_finite(resnet18, images, method):
    x, _ = images
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteWarning)
        y = _logits(quantize(resnet18, method).eval(), x)
    assert torch.isfinite(y).all(), y.abs().max()


@pytest.mark.parametrize("method", METHODS)
def test_calibrated_logits_have_the_fp32_scale(resnet18, images, method):
    x, cal = images
    ref = _logits(resnet18, x).std().item()
    y = _logits(quantize(resnet18, method, calibrate=cal).eval(), x)
    assert torch.isfinite(y).all()
    assert ref / 100 < y.std().item() < ref * 100, (y.std().item(), ref)


def test_scale_check_negative_control_uncalibrated_signed_is_far_off(resnet18, images):
    # signed filters are one-signed, so stale BatchNorm stats let the mean grow ~7x a layer:
    # finite, but the scale check above would fail without calibration
    x, _ = images
    ref = _logits(resnet18, x).std().item()
    assert _logits(quantize(resnet18, "signed").eval(), x).std().item() > ref * 1e6


def test_plum_constant_scale_is_refused_at_quantize_time_with_the_layer(resnet18, images):
    x, _ = images
    name = first_nonfinite(quantize(resnet18, "signed", signed_scale=1.0), x)
    assert name is not None and not name.startswith("<")
    with pytest.raises(UserError, match=rf"the output of {name} \(\w+\) is not finite") as err:
        quantize(resnet18, "signed", signed_scale=1.0, example_inputs=x)
    assert "\n" not in str(err.value)


def test_signed_mean_scale_is_the_mean_of_the_kept_magnitudes():
    w = torch.randn(6, 40, generator=torch.Generator().manual_seed(1)) * 0.2
    q = quantize_weight(w, "signed", signed_scale="mean")
    unit = quantize_weight(w, "signed", signed_scale=1.0)
    assert torch.equal(q != 0, unit != 0) and torch.equal(torch.sign(q), unit)  # same mask and signs
    for f in range(6):
        kept = unit[f] != 0
        assert torch.allclose(q[f][kept].abs(), w[f][kept].abs().mean().expand(int(kept.sum())))
    layer = quantize(cnn(1.0), "signed")[3]
    assert isinstance(layer, QuantConv2d) and layer.signed_scale == "mean"


def test_calibrate_bn_recomputes_batch_statistics_without_grads():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.ReLU())
    model[1].running_mean.fill_(5.0)
    model[1].running_var.fill_(9.0)
    model.eval()
    x = torch.rand(6, 1, 8, 8)
    calibrate_bn(model, [x])
    with torch.no_grad():
        z = model[0](x).transpose(0, 1).reshape(4, -1)
    assert torch.allclose(model[1].running_mean, z.mean(1), atol=1e-6)
    assert torch.allclose(model[1].running_var, z.var(1, unbiased=True), atol=1e-6)
    assert not model.training and not model[1].training and model[1].momentum == 0.1
    assert all(p.grad is None for p in model.parameters())
    # several batches: the plain average of their statistics (momentum=None while calibrating)
    a, b = x[:3], x[3:]
    calibrate_bn(model, iter([a, b]))
    with torch.no_grad():
        ma, mb = (model[0](t).mean((0, 2, 3)) for t in (a, b))
    assert torch.allclose(model[1].running_mean, (ma + mb) / 2, atol=1e-6)


def test_nonfinite_detector_names_the_first_layer_and_has_a_negative_control():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 8, 8)
    ok = quantize(cnn(1.0), "binary")
    assert first_nonfinite(ok, x) is None
    quantize(cnn(1.0), "binary", example_inputs=x)  # finite: no error
    assert first_nonfinite(ok, torch.full_like(x, float("nan"))) == "<input>"
    huge = _huge(cnn(1.0))  # conv0 -> ~1e31, then the (quantised) conv at index 3 overflows
    assert first_nonfinite(quantize(huge, "binary"), x) == "3"
    with pytest.raises(UserError, match=r"output of 3 \(QuantConv2d\) is not finite"):
        quantize(huge, "binary", example_inputs=x)


def test_eval_forward_warns_on_nonfinite_output():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 8, 8)
    bad = quantize(_huge(cnn(1.0)), "ternary").eval()
    with pytest.warns(NonFiniteWarning, match="not finite"):
        _logits(bad, x)
    with warnings.catch_warnings():  # negative control: finite model, and train mode, stay silent
        warnings.simplefilter("error", NonFiniteWarning)
        _logits(quantize(cnn(1.0), "ternary").eval(), x)
        _logits(bad.train(), x)


def test_deploy_warns_naming_the_first_nonfinite_op():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 8, 8)
    deployed = deploy(quantize(_huge(cnn(1.0)), "signed").eval())
    with pytest.warns(NonFiniteWarning, match="first non-finite output at 3"):
        deployed(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteWarning)
        deployed_ok = deploy(quantize(cnn(1.0), "signed").eval())
        deployed_ok(x)


def test_quantised_model_with_its_output_check_still_pickles():
    q = quantize(cnn(1.0), "signed").eval()
    buf = io.BytesIO()
    torch.save(q, buf)
    buf.seek(0)
    q2 = torch.load(buf, weights_only=False)
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(_logits(q, x), _logits(q2, x))
    assert len(quantize(q, "signed")._forward_hooks) == 1  # re-quantising does not stack checks


@pytest.mark.parametrize("kwargs, needle", [
    ({"signed_scale": "max"}, "signed-binary scale"),
    ({"signed_scale": 0.0}, "signed-binary scale"),
    ({"calibrate": []}, "at least one input batch"),
    ({"calibrate": 3}, "iterable of input batches"),
])
def test_bad_quantize_arguments_are_user_errors(kwargs, needle):
    with pytest.raises(UserError, match=needle):
        quantize(mlp(1.0), "signed", **kwargs)


def test_calibrate_bn_user_errors():
    with pytest.raises(UserError, match="no BatchNorm"):
        calibrate_bn(nn.Sequential(nn.Linear(2, 2)), torch.rand(4, 2))
    model = copy.deepcopy(mlp(1.0))
    with pytest.raises(UserError, match="at least 2 samples"):
        calibrate_bn(model, torch.rand(1, 1, 8, 8))
    assert model[2].momentum == 0.1 and model[2].num_batches_tracked == 0
