"""Tiny nets for sklearn's 8x8 digits (1x8x8 inputs, 10 classes).

They train to useful accuracy in seconds on a CPU, so quantisation, early-exit and memory-planning
tests can assert accuracy floors instead of only shapes. All take (B, 1, 8, 8) float input.
"""

from __future__ import annotations

import torch
from torch import nn


class DigitsMLP(nn.Module):
    """64-128-64-10 multilayer perceptron."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64, 128)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(128, 64)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.fc1(self.flatten(x)))
        return self.fc3(self.relu2(self.fc2(x)))


def _conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU()
    )


class DigitsCNN(nn.Module):
    """Three conv-BN-ReLU units with two 2x2 max-pools (8x8 -> 4x4 -> 2x2), then a linear head."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(1, 16),
            _conv_bn_relu(16, 32),
            nn.MaxPool2d(2),
            _conv_bn_relu(32, 64),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(64 * 2 * 2, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class LeNetDigits(nn.Module):
    """LeNet-5 (LeCun et al. 1998) shrunk to 8x8: two conv + avg-pool stages, FC 120-84-10."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(2),  # 4x4
            nn.Conv2d(6, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(2),  # 2x2
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * 2 * 2, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def digits_mlp() -> DigitsMLP:
    """64-128-64-10 MLP, 17,226 parameters."""
    return DigitsMLP()


def digits_cnn() -> DigitsCNN:
    """Conv16-Conv32-pool-Conv64-pool-FC CNN."""
    return DigitsCNN()


def lenet_digits() -> LeNetDigits:
    """LeNet-5-style CNN for 8x8 digits."""
    return LeNetDigits()
