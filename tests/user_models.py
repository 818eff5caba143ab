"""Models nobody in the zoo wrote: what a user brings. Shared by the API, intake and ONNX tests.

`user_mcu_cnn.py` beside this file is the same kind of model reached the way a user reaches it from the
CLI (``dnninfer mcu plan tests/user_mcu_cnn.py``)."""

from __future__ import annotations

import torch
from torch import nn


class TinyUNet(nn.Module):
    """Two levels: conv, max-pool, transposed-conv up-sampling, skip concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.down = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.dec = nn.Conv2d(16, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.enc(x)
        return self.dec(torch.cat([e, self.up(self.down(e))], dim=1))


class ThreeBranch(nn.Module):
    """A stem, three parallel branches of different cost, summed, then a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.b = nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU())
        self.c = nn.Sequential(nn.Conv2d(8, 8, 5, padding=2), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.stem(x))
        return self.head(self.a(s) + self.b(s) + self.c(s))


def unet() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    return TinyUNet().eval(), (torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)),)


def three_branch() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    return ThreeBranch().eval(), (torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)),)
