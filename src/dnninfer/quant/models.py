"""Small models for 8x8 digits (and any NCHW image), with a width multiplier.

Both are plain ``nn.Sequential`` stacks of Conv2d/Linear, BatchNorm, ReLU, Flatten and global
average pooling, so ``quantize`` can swap their layers and ``deploy`` can lower them to kernels.
BatchNorm follows every hidden layer: signed binary has no learned scale (PLUM §2.1) and relies on
it to set the magnitude.

* ``mlp``: ``flatten -> Linear(HW, h) -> BN -> ReLU -> Linear(h, h) -> BN -> ReLU -> Linear(h, 10)``
  with ``h = round(16 * width)``: the research report's discriminating setting (§5) when the first
  layer is quantised and the last kept FP.
* ``cnn``: ``conv3x3(1, c) -> conv3x3(c, 2c, s2) -> conv3x3(2c, 2c) -> GAP -> Linear(2c, 10)``, each
  conv followed by BN and ReLU, ``c = round(8 * width)``.
"""

from __future__ import annotations

from torch import nn

from dnninfer.errors import expected

__all__ = ["ARCHS", "build_model", "cnn", "hidden_units", "mlp"]

ARCHS = ("mlp", "cnn")
MLP_BASE = 16
CNN_BASE = 8


def hidden_units(arch: str, width: float) -> int:
    """Units (MLP) or base channels (CNN) for a width multiplier."""
    if not width > 0:
        raise expected("width", "a positive multiplier", width)
    base = MLP_BASE if arch == "mlp" else CNN_BASE
    return max(2, round(base * width))


def mlp(width: float = 1.0, in_features: int = 64, num_classes: int = 10) -> nn.Sequential:
    h = hidden_units("mlp", width)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, h, bias=False), nn.BatchNorm1d(h), nn.ReLU(),
        nn.Linear(h, h, bias=False), nn.BatchNorm1d(h), nn.ReLU(),
        nn.Linear(h, num_classes),
    )


def cnn(width: float = 1.0, in_channels: int = 1, num_classes: int = 10) -> nn.Sequential:
    c = hidden_units("cnn", width)
    return nn.Sequential(
        nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
        nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * c), nn.ReLU(),
        nn.Conv2d(2 * c, 2 * c, 3, padding=1, bias=False), nn.BatchNorm2d(2 * c), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(2 * c, num_classes),
    )


def build_model(arch: str, width: float, image_shape: tuple[int, ...] = (1, 8, 8), num_classes: int = 10) -> nn.Module:
    """``mlp`` or ``cnn`` for images of ``image_shape`` (C, H, W)."""
    if arch == "mlp":
        n = 1
        for d in image_shape:
            n *= d
        return mlp(width, n, num_classes)
    if arch == "cnn":
        return cnn(width, image_shape[0], num_classes)
    raise expected("architecture", f"one of {', '.join(ARCHS)}", arch)
