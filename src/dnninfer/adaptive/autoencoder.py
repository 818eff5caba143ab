"""Converting autoencoders: map any image of a class to that class's easy target image.

`DenseAE` is the CBNet notebooks' Keras model (``max2022/Converting-Autoencoder``): flatten,
dense ReLU layers, a sigmoid output layer of the image size. Two published widths:

* ``kmnist``: 512-384-256-64 (last hidden layer linear), L1 activity 1e-7 (K_Mnist_LeNet.ipynb);
  about 0.76 M MACs at 28x28, the one CBNet's KMNIST numbers come from, and our default;
* ``mnist``: 512-256-512, L1 activity 1e-4 (LeNet_MNIST.ipynb), about 1.06 M MACs at 28x28.

`ConvAE` is our cheaper variant (not in the paper): two stride-2 3x3 convolutions and a 64-wide
ReLU code, decoded by ONE linear layer. The decoder only has to reproduce a handful of class
templates, which a linear map from the code does exactly, so a convolutional decoder would
spend MACs for nothing; at 28x28 the whole AE costs about 0.17 M MACs. (A 32-wide ReLU code
costs 0.12 M but one init in three collapsed a class on digits: 90% vs 98-99%.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dnninfer.errors import UserError

__all__ = ["AE_KINDS", "DENSE_WIDTHS", "ConvAE", "DenseAE", "build_autoencoder"]

#: Hidden widths and L1 activity weight of the two published dense AEs.
DENSE_WIDTHS: dict[str, tuple[tuple[int, ...], tuple[bool, ...], float]] = {
    "kmnist": ((512, 384, 256, 64), (True, True, True, False), 1e-7),
    "mnist": ((512, 256, 512), (True, True, True), 1e-4),
}


class DenseAE(nn.Module):
    """Flatten, dense hidden layers (ReLU or linear), dense sigmoid output, reshape to the image."""

    def __init__(self, image_shape: tuple[int, int, int], widths: Sequence[int],
                 relu: Sequence[bool] | None = None) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        size = int(torch.tensor(image_shape).prod())
        relu = [True] * len(widths) if relu is None else list(relu)
        self.hidden = nn.ModuleList()
        prev = size
        for w, r in zip(widths, relu, strict=True):
            self.hidden.append(nn.Sequential(nn.Linear(prev, w), nn.ReLU()) if r else nn.Sequential(nn.Linear(prev, w)))
            prev = w
        self.out = nn.Sequential(nn.Linear(prev, size), nn.Sigmoid())
        self.unflatten = nn.Unflatten(1, self.image_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.flatten(x, 1)
        for layer in self.hidden:
            h = layer(h)
        return self.unflatten(self.out(h))

    def forward_with_activity(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output and the summed |activation| of the hidden layers (Keras activity_regularizer)."""
        h = torch.flatten(x, 1)
        activity = x.new_zeros(())
        for layer in self.hidden:
            h = layer(h)
            activity = activity + h.abs().sum()
        return self.unflatten(self.out(h)), activity


class ConvAE(nn.Module):
    """conv 3x3/2 → ReLU → conv 3x3/2 → ReLU → linear code (ReLU) → linear → sigmoid image."""

    def __init__(self, image_shape: tuple[int, int, int], channels: tuple[int, int] = (8, 16), code: int = 64) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        c, h, w = image_shape
        self.encoder = nn.Sequential(
            nn.Conv2d(c, channels[0], 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(channels[0], channels[1], 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
        )
        with torch.no_grad():
            feat = int(self.encoder(torch.zeros(1, *image_shape)).shape[1])
        self.bottleneck = nn.Sequential(nn.Linear(feat, code), nn.ReLU())
        self.decoder = nn.Sequential(nn.Linear(code, c * h * w), nn.Sigmoid(), nn.Unflatten(1, self.image_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.bottleneck(self.encoder(x)))


AE_KINDS = ("dense", "dense_mnist", "conv", "dense_small")
#: ``dense_small``: one ReLU layer of 64, ~0.1 M MACs at 28x28, sized for B-AlexNet (AE / main path
#: ≈ 2% by MACs): at batch 1 a deploy runtime charges per op, so few, small ops matter more than MACs
SMALL_WIDTH = 64


def build_autoencoder(kind: str, image_shape: tuple[int, int, int], seed: int = 0) -> tuple[nn.Module, float]:
    """A fresh, seeded AE and the L1 activity weight it is trained with."""
    torch.manual_seed(seed)
    if kind == "dense":
        widths, relu, l1 = DENSE_WIDTHS["kmnist"]
        return DenseAE(image_shape, widths, relu), l1
    if kind == "dense_mnist":
        widths, relu, l1 = DENSE_WIDTHS["mnist"]
        return DenseAE(image_shape, widths, relu), l1
    if kind == "dense_small":
        return DenseAE(image_shape, (SMALL_WIDTH,), (True,)), 0.0
    if kind == "conv":
        return ConvAE(image_shape), 0.0
    raise UserError(f"autoencoder {kind!r}: expected one of {', '.join(AE_KINDS)}")
