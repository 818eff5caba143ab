"""Models the Opara bench needs beyond the zoo: a NASNet-A-like cell stack.

Opara's NASNet example is NASNet-Large (``pretrainedmodels.nasnetalarge``, 331x331); neither that
package nor torchvision imports with this CPU torch build (research/gpu_and_serving.md §4a), so
this is an in-house stack with the NASNet-A cell topology (Zoph et al., CVPR 2018, Fig. 4):

* normal cell: five pairwise combinations (3x3 / 5x5 separable convs, 3x3 average pools,
  identities) of the two previous cell outputs, added, then concatenated;
* reduction cell: 5x5 / 7x7 separable convs and max / average pools with stride 2.

Separable conv = (ReLU, depthwise kxk, pointwise 1x1, BN) twice, as in NASNet. Widths and depth
are small (about 0.3 GFLOPs at 128x128) so CPU benches stay quick, but the DAG has NASNet's many
small parallel branches, which is what stream schedulers feed on.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dnninfer import zoo

__all__ = ["ZOO_MODELS", "NASNetCells", "nasnet_cells"]

NASNET = "nasnet_cells"
_NASNET_INPUT = (1, 3, 96, 96)


class SepConv(nn.Module):
    """NASNet's separable conv: (ReLU, depthwise kxk, pointwise 1x1, BN) x 2, stride on the first."""

    def __init__(self, ch: int, k: int, stride: int = 1) -> None:
        super().__init__()
        pad = k // 2
        self.dw1 = nn.Conv2d(ch, ch, k, stride, pad, groups=ch, bias=False)
        self.pw1 = nn.Conv2d(ch, ch, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch, eps=1e-3)
        self.dw2 = nn.Conv2d(ch, ch, k, 1, pad, groups=ch, bias=False)
        self.pw2 = nn.Conv2d(ch, ch, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.pw1(self.dw1(F.relu(x))))
        return self.bn2(self.pw2(self.dw2(F.relu(x))))


class ReLUConvBN(nn.Module):
    """1x1 (optionally strided) projection of a cell input to the cell's width."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, stride, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(F.relu(x)))


class NormalCell(nn.Module):
    """NASNet-A normal cell; ``prev_stride`` 2 when the previous-previous input is at twice the size."""

    def __init__(self, c_prev_prev: int, c_prev: int, ch: int, prev_stride: int = 1) -> None:
        super().__init__()
        self.pre0 = ReLUConvBN(c_prev_prev, ch, prev_stride)
        self.pre1 = ReLUConvBN(c_prev, ch)
        self.b0_left = SepConv(ch, 3)
        self.b1_left, self.b1_right = SepConv(ch, 3), SepConv(ch, 5)
        self.b4_left, self.b4_right = SepConv(ch, 5), SepConv(ch, 3)
        self.out_channels = 6 * ch

    def forward(self, h_prev: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        p = self.pre0(h_prev)
        x = self.pre1(h)
        c0 = self.b0_left(x) + x
        c1 = self.b1_left(p) + self.b1_right(x)
        c2 = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False) + p
        c3 = F.avg_pool2d(p, 3, 1, 1, count_include_pad=False) + F.avg_pool2d(p, 3, 1, 1, count_include_pad=False)
        c4 = self.b4_left(p) + self.b4_right(p)
        return torch.cat([p, c0, c1, c2, c3, c4], 1)


class ReductionCell(nn.Module):
    """NASNet-A reduction cell (stride 2)."""

    def __init__(self, c_prev_prev: int, c_prev: int, ch: int, prev_stride: int = 1) -> None:
        super().__init__()
        self.pre0 = ReLUConvBN(c_prev_prev, ch, prev_stride)
        self.pre1 = ReLUConvBN(c_prev, ch)
        self.b0_left, self.b0_right = SepConv(ch, 5, 2), SepConv(ch, 7, 2)
        self.b1_right = SepConv(ch, 7, 2)
        self.b2_right = SepConv(ch, 5, 2)
        self.b4_left = SepConv(ch, 3)
        self.out_channels = 4 * ch

    def forward(self, h_prev: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        p = self.pre0(h_prev)
        x = self.pre1(h)
        c0 = self.b0_left(x) + self.b0_right(p)
        c1 = F.max_pool2d(x, 3, 2, 1) + self.b1_right(p)
        c2 = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False) + self.b2_right(p)
        c3 = F.avg_pool2d(c0, 3, 1, 1, count_include_pad=False) + c1
        c4 = self.b4_left(c0) + F.max_pool2d(x, 3, 2, 1)
        return torch.cat([c1, c2, c3, c4], 1)


class NASNetCells(nn.Module):
    """Stem, then ``stages`` of ``cells`` normal cells separated by reduction cells, pool, FC."""

    def __init__(self, ch: int = 16, cells: int = 2, stages: int = 3, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 2 * ch, 3, 2, 1, bias=False), nn.BatchNorm2d(2 * ch, eps=1e-3))
        layers: list[nn.Module] = []
        c_pp, c_p, width, reduced = 2 * ch, 2 * ch, ch, False
        for stage in range(stages):
            if stage > 0:
                width *= 2
                cell: nn.Module = ReductionCell(c_pp, c_p, width, 2 if reduced else 1)
                layers.append(cell)
                c_pp, c_p, reduced = c_p, cell.out_channels, True
            for _ in range(cells):
                cell = NormalCell(c_pp, c_p, width, 2 if reduced else 1)
                layers.append(cell)
                c_pp, c_p, reduced = c_p, cell.out_channels, False
        self.cells = nn.ModuleList(layers)
        self.fc = nn.Linear(c_p, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h_prev = h = self.stem(x)
        for cell in self.cells:
            h_prev, h = h, cell(h_prev, h)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(F.relu(h), 1), 1))


def nasnet_cells() -> NASNetCells:
    """The Opara bench's NASNet-A-like stack at its default size."""
    return NASNetCells()


#: Declared to the zoo, so every system takes ``nasnet_cells`` by name (``zoo.get``, the CLI).
ZOO_MODELS = (
    zoo.ModelSpec(NASNET, nasnet_cells, (zoo.InputSpec(_NASNET_INPUT),), "image-classification",
                  "NASNet-A-like cell stack: 3 stages x 2 normal cells + 2 reduction cells, 96x96 input.",
                  origin="schedule"),
)
