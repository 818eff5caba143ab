"""Benchmark networks for the memory planners (research report §4 "MobileNetV2 builder", §6 (a)).

* `mobilenet_v2_ir`: analytic MobileNetV2 (shapes only, for planning 1.0/224 and 0.35/144).
* `mobilenet_v2_int8`: an executable int8 MobileNetV2 (0.35/48, 0.5/64): the zoo's float
  MobileNetV2 with seeded random weights and BatchNorm statistics, lowered and quantised with
  calibration on seeded random images, so scales fit the activations and little saturates (§4 pitfall).
* `digits_cnn_int8`: the tiny digits CNN of §6 (a): conv3x3 1->16, dw, pw 16->32, dw s2, pw 32->64,
  global average pool, FC 64->10 on 8x8 inputs, random weights (scikit-learn is not installed, so
  it is not trained; memory planning and bit-exactness do not depend on accuracy).
* `benchmark_ir(name)`: the table of named benchmark IRs; `example_input(ir, seed)`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from dnninfer import zoo
from dnninfer.errors import UserError
from dnninfer.memory.ir import IR, IRBuilder
from dnninfer.memory.quantize import quantize, quantize_input
from dnninfer.zoo.vision import MobileNetV2, make_divisible

#: t (expansion), c (channels), n (repeats), s (first stride): the zoo model's (Sandler et al. 2018, Table 2).
MBV2_SETTING = MobileNetV2.SETTING


def mobilenet_v2_ir(width: float, resolution: int, num_classes: int = 1000) -> IR:
    """MobileNetV2 as an IR without weights: stem 32, the seven (t, c, n, s) stages, last conv
    ``1280 * max(1, width)``, global average pool, FC; residual iff stride 1 and Cin == Cout (§4).
    """
    b = IRBuilder(f"mobilenet_v2-{width:g}-{resolution}", resolution, resolution, 3)
    cin = make_divisible(32 * width)
    x = b.conv(0, cin, 3, 2, act="relu6", name="features.0")
    idx = 1
    for t, c, n, s in MBV2_SETTING:
        cout = make_divisible(c * width)
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = round(cin * t)
            block_in = x
            if t != 1:
                x = b.conv(x, hidden, 1, act="relu6", name=f"features.{idx}.expand")
            x = b.dw(x, 3, stride, act="relu6", name=f"features.{idx}.dw")
            x = b.conv(x, cout, 1, name=f"features.{idx}.project")
            if stride == 1 and cin == cout:
                x = b.add(block_in, x, name=f"features.{idx}.add")
            cin = cout
            idx += 1
    last = make_divisible(1280 * max(1.0, width))
    x = b.conv(x, last, 1, act="relu6", name=f"features.{idx}")
    x = b.gap(x, name="avgpool")
    b.fc(x, num_classes, name="classifier")
    return b.build(meta={"source": "analytic", "width": width, "resolution": resolution})


class DigitsVmcuCNN(nn.Module):
    """The §6 (a) digits CNN: conv3x3 1->16, dw3x3, pw 16->32, dw3x3 s2, pw 32->64, GAP, FC 64->10.

    Every conv is followed by BatchNorm and ReLU, so lowering folds BN and clamps in requantisation.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()

        def unit(cin: int, cout: int, k: int, s: int = 1, groups: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, k, s, (k - 1) // 2, groups=groups, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU())

        self.features = nn.Sequential(
            unit(1, 16, 3), unit(16, 16, 3, groups=16), unit(16, 32, 1),
            unit(32, 32, 3, 2, groups=32), unit(32, 64, 1),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def _randomise_batchnorm(model: nn.Module) -> None:
    """Non-trivial BN statistics, so folding and biases are exercised (weights stay O(1) scaled)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = torch.empty(c).uniform_(0.5, 1.5)
            m.bias.data = torch.randn(c) * 0.1
            m.running_mean.data = torch.randn(c) * 0.1
            m.running_var.data = torch.empty(c).uniform_(0.5, 1.5)


def mobilenet_v2_int8(width: float, resolution: int, seed: int = 0, num_classes: int = 1000,
                      calibration_samples: int = 4) -> IR:
    """Executable int8 MobileNetV2: the zoo's float model (seeded random weights), calibrated on
    seeded N(0, 1) images and quantised (per-channel weights, calibrated activation scales)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = MobileNetV2(num_classes=num_classes, width_mult=width)
        _randomise_batchnorm(model)
        calib = torch.randn(calibration_samples, 3, resolution, resolution)
    model.eval()
    ir = quantize(model, calib, name=f"mobilenet_v2-{width:g}-{resolution}-int8")
    return _with_meta(ir, input_dist="normal", seed=seed, width=width, resolution=resolution)


def digits_cnn_int8(seed: int = 0, calibration_samples: int = 8) -> IR:
    """Executable int8 digits CNN (8x8 single-channel inputs in [0, 1], like sklearn digits / 16)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DigitsVmcuCNN()
        _randomise_batchnorm(model)
        calib = torch.rand(calibration_samples, 1, 8, 8)
    model.eval()
    ir = quantize(model, calib, name="digits_cnn-int8")
    return _with_meta(ir, input_dist="uniform", seed=seed)


def _with_meta(ir: IR, **meta: object) -> IR:
    return IR(ir.name, ir.layers, ir.tensors, ir.blocks, ir.output, {**ir.meta, **meta})


def example_input(ir: IR, seed: int = 0) -> np.ndarray:
    """A seeded int8 input ``(H, W, C)`` from the distribution the IR was calibrated on."""
    ir.require_quantized("example_input")
    t = ir.tensors[ir.input]
    rng = np.random.default_rng(seed)
    shape = (t.c, t.h, t.w)
    x = rng.random(shape) if ir.meta.get("input_dist") == "uniform" else rng.standard_normal(shape)
    return quantize_input(ir, x)


#: Declared to the zoo: the float digits CNN (`digits_cnn_int8` quantises it) by name for every system.
ZOO_MODELS = (
    zoo.ModelSpec("digits_vmcu_cnn", DigitsVmcuCNN, (zoo.InputSpec((1, 1, 8, 8)),), "digits",
                  "vMCU's digits CNN: conv3x3 16, dw, pw 32, dw s2, pw 64, GAP, FC (MCU-sized, BN folds).",
                  origin="memory"),
)

#: name -> (builder taking a seed, executable?, description)
BENCHMARKS: dict[str, tuple[Callable[[int], IR], bool, str]] = {
    "mbv2-1.0-224": (lambda seed: mobilenet_v2_ir(1.0, 224), False, "MobileNetV2 1.0 / 224, analytic (planning only)"),
    "mbv2-0.35-144": (lambda seed: mobilenet_v2_ir(0.35, 144), False,
                      "MobileNetV2 0.35 / 144, analytic (planning only)"),
    "mbv2-0.35-48": (lambda seed: mobilenet_v2_int8(0.35, 48, seed), True, "MobileNetV2 0.35 / 48, int8, executed"),
    "mbv2-0.5-64": (lambda seed: mobilenet_v2_int8(0.5, 64, seed), True, "MobileNetV2 0.5 / 64, int8, executed"),
    "digits-cnn": (lambda seed: digits_cnn_int8(seed), True, "digits CNN 8x8, int8, executed"),
}


def benchmark_ir(name: str, seed: int = 0) -> IR:
    """A benchmark IR by name (`BENCHMARKS`); unknown names are a user error listing them."""
    try:
        build = BENCHMARKS[name][0]
    except KeyError:
        raise UserError(f"memory benchmark: expected one of {', '.join(BENCHMARKS)}, got {name!r}") from None
    return build(seed)
