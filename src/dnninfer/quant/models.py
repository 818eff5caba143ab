"""Small models for 8x8 digits (and any NCHW image, or an (N, 1, 1, L) signal), with a width multiplier.

``mlp`` and ``cnn`` are plain ``nn.Sequential`` stacks of Conv2d/Linear, BatchNorm, ReLU, Flatten and global
average pooling, so ``quantize`` can swap their layers and ``deploy`` can lower them to kernels.
BatchNorm follows every hidden layer: signed binary has no learned scale (PLUM §2.1) and relies on
it to set the magnitude.

* ``mlp``: ``flatten -> Linear(HW, h) -> BN -> ReLU -> Linear(h, h) -> BN -> ReLU -> Linear(h, 10)``
  with ``h = round(16 * width)``: the research report's discriminating setting (§5) when the first
  layer is quantised and the last kept FP.
* ``cnn``: ``conv3x3(1, c) -> conv3x3(c, 2c, s2) -> conv3x3(2c, 2c) -> GAP -> Linear(2c, 10)``, each
  conv followed by BN and ReLU, ``c = round(8 * width)``.
* ``resnet``: a conv net with residuals (He et al. 2016 basic blocks):
  ``stem conv3x3(1, c) -> block(c, c) -> block(c, 2c, s2) -> GAP -> Linear(2c, 10)``, a block being
  ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))`` with a 1x1 conv + BN shortcut when the shape
  changes. Not an ``nn.Sequential`` chain at block level, so the Sequential ``deploy`` refuses it.

Inputs of shape (C, 1, L) (MNIST-1D) get the 1-D twins: ``Flatten(1, 2)`` to (N, C, L), then Conv1d,
BatchNorm1d and AdaptiveAvgPool1d (``dims=1``).
"""

from __future__ import annotations

from torch import nn

from dnninfer.errors import expected

__all__ = ["ARCHS", "BasicBlock", "build_model", "cnn", "hidden_units", "mlp", "resnet"]

ARCHS = ("mlp", "cnn", "resnet")
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


def _layers(dims: int) -> tuple[type[nn.Module], type[nn.Module], type[nn.Module]]:
    if dims == 1:
        return nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d
    if dims == 2:
        return nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d
    raise expected("conv dimensionality", "1 or 2", dims)


def _to_signal(dims: int) -> list[nn.Module]:
    return [nn.Flatten(1, 2)] if dims == 1 else []


def cnn(width: float = 1.0, in_channels: int = 1, num_classes: int = 10, dims: int = 2) -> nn.Sequential:
    conv, bn, gap = _layers(dims)
    c = hidden_units("cnn", width)
    return nn.Sequential(
        *_to_signal(dims),
        conv(in_channels, c, 3, padding=1, bias=False), bn(c), nn.ReLU(),
        conv(c, 2 * c, 3, stride=2, padding=1, bias=False), bn(2 * c), nn.ReLU(),
        conv(2 * c, 2 * c, 3, padding=1, bias=False), bn(2 * c), nn.ReLU(),
        gap(1), nn.Flatten(),
        nn.Linear(2 * c, num_classes),
    )


class BasicBlock(nn.Module):
    """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``; 1x1 conv + BN shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dims: int = 2) -> None:
        super().__init__()
        conv, bn, _ = _layers(dims)
        self.conv1, self.bn1 = conv(cin, cout, 3, stride=stride, padding=1, bias=False), bn(cout)
        self.conv2, self.bn2 = conv(cout, cout, 3, padding=1, bias=False), bn(cout)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(conv(cin, cout, 1, stride=stride, bias=False), bn(cout))

    def forward(self, x):  # type: ignore[no-untyped-def]
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


def resnet(width: float = 1.0, in_channels: int = 1, num_classes: int = 10, dims: int = 2) -> nn.Sequential:
    conv, bn, gap = _layers(dims)
    c = hidden_units("cnn", width)
    return nn.Sequential(
        *_to_signal(dims),
        conv(in_channels, c, 3, padding=1, bias=False), bn(c), nn.ReLU(),
        BasicBlock(c, c, 1, dims), BasicBlock(c, 2 * c, 2, dims),
        gap(1), nn.Flatten(),
        nn.Linear(2 * c, num_classes),
    )


def build_model(arch: str, width: float, image_shape: tuple[int, ...] = (1, 8, 8), num_classes: int = 10) -> nn.Module:
    """``mlp``, ``cnn`` or ``resnet`` for images of ``image_shape`` (C, H, W); H = 1 (a signal) builds
    the 1-D conv nets."""
    if arch == "mlp":
        n = 1
        for d in image_shape:
            n *= d
        return mlp(width, n, num_classes)
    dims = 1 if len(image_shape) == 3 and image_shape[1] == 1 else 2
    if arch == "cnn":
        return cnn(width, image_shape[0], num_classes, dims)
    if arch == "resnet":
        return resnet(width, image_shape[0], num_classes, dims)
    raise expected("architecture", f"one of {', '.join(ARCHS)}", arch)
