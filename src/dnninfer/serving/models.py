"""The two DNNs a server runs: a zoo classifier (top-k) and a small detector-like network (boxes).

The detector stands in for the paper's first DNN in a multi-DNN pipeline (a detector feeding a
per-crop classifier, research notes §2.3 item 4): a strided CNN down to a 7 x 7 grid with one
objectness logit and four box offsets per cell, YOLO-v1 style. Weights are random (seeded), so
boxes are arbitrary but deterministic; what matters for serving is that it produces a variable
number of crops per image, which makes the second DNN run at a different rate than the first.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from dnninfer import zoo

__all__ = ["Box", "ModelRunner", "TinyDetector", "UserClassifier", "build_detector", "decode_boxes", "topk_rows"]


class UserClassifier(nn.Module):
    """A user's classification module behind the serving pipelines, which produce normalised
    3 x 224 x 224 crops: resized (bilinear) to the module's own input size and, for a one-channel
    module, averaged to grey, so any image classifier can be served without retraining.

    Built from one example input, which is run once here: a module whose output is not a
    (batch, classes) tensor is refused before the server starts."""

    def __init__(self, model: nn.Module, example: torch.Tensor, name: str = "model") -> None:
        super().__init__()
        from dnninfer.errors import UserError

        if not (isinstance(example, torch.Tensor) and example.dim() == 4 and example.shape[1] in (1, 3)):
            shape = tuple(example.shape) if isinstance(example, torch.Tensor) else type(example).__name__
            raise UserError(f"serve {name}: expected an image classifier taking (N, 1|3, H, W) inputs, got {shape}")
        self.model = model.eval()
        self.channels, self.size = int(example.shape[1]), (int(example.shape[2]), int(example.shape[3]))
        with torch.inference_mode():
            out = self.model(example[:1])
        if not (isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == 1 and out.shape[1] >= 1):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise UserError(f"serve {name}: expected (batch, classes) logits from the model, got {shape}")
        self.classes = int(out.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels == 1:
            x = x.mean(dim=1, keepdim=True)
        if tuple(x.shape[-2:]) != self.size:
            x = torch.nn.functional.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return self.model(x)


class ModelRunner:
    """Stacks per-request inputs into a batch and runs the model under ``torch.inference_mode``.

    ``layout='hwc'`` takes float32 HWC arrays; the stacked NHWC array viewed as NCHW *is* a
    channels-last tensor, so no copy is made (the optimised path). ``layout='chw'`` takes CHW
    arrays and runs contiguous NCHW (the naive path).
    """

    def __init__(self, model: nn.Module, *, layout: str = "chw", channels_last: bool = False) -> None:
        if layout not in ("chw", "hwc"):
            raise ValueError(f"layout: expected 'chw' or 'hwc', got {layout!r}")
        self.layout, self.channels_last = layout, channels_last
        self.model = model.eval()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def batch(self, xs: Sequence[np.ndarray]) -> torch.Tensor:
        arr = np.stack(xs) if len(xs) > 1 else xs[0][None]
        t = torch.from_numpy(np.ascontiguousarray(arr))
        if self.layout == "hwc":
            t = t.permute(0, 3, 1, 2)  # channels-last strides already
            if not self.channels_last:
                t = t.contiguous()
        elif self.channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def __call__(self, xs: Sequence[np.ndarray]) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(self.batch(xs))

    def warmup(self, example: np.ndarray, batch_sizes: Sequence[int] = (1,)) -> None:
        for n in batch_sizes:
            self([example] * n)


def topk_rows(logits: torch.Tensor, k: int = 5) -> list[list[dict[str, Any]]]:
    """Per row, the ``k`` best classes: index, label, softmax probability and raw logit."""
    logits = logits.float()
    probs = torch.softmax(logits, dim=1)
    k = min(k, logits.shape[1])
    vals, idx = torch.topk(logits, k, dim=1)
    rows = []
    for r in range(logits.shape[0]):
        rows.append([{"class": int(i), "label": f"class_{int(i)}", "score": float(probs[r, i]), "logit": float(v)}
                     for v, i in zip(vals[r].tolist(), idx[r].tolist(), strict=True)])
    return rows


class TinyDetector(nn.Module):
    """Five stride-2 conv-BN-ReLU stages (224 -> 7) and a 1x1 head: 5 numbers per grid cell."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 6 * width, 8 * width]
        layers: list[nn.Module] = []
        for cin, cout in itertools.pairwise(chans):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True)]
        self.backbone = nn.Sequential(*layers)
        self.head = nn.Conv2d(chans[-1], 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


#: Declared to the zoo, so the detector is a model every system takes by name.
ZOO_MODELS = (
    zoo.ModelSpec("tiny_detector", TinyDetector, (zoo.InputSpec((1, 3, 224, 224)),), "detection",
                  "Serving's YOLO-v1-style detector: five stride-2 conv-BN-ReLU stages to 7x7, 5 outputs a cell.",
                  origin="serving"),
)


def build_detector(seed: int = 0) -> TinyDetector:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 7919)
        return TinyDetector().eval()


@dataclass(frozen=True)
class Box:
    """A box in relative coordinates (0..1 of width and height) with its objectness score."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float

    def pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Integer pixel box inside an image of ``width`` x ``height``, at least 2 px on each side
        (1 px where the image itself is 1 px wide or high)."""
        x0 = min(max(0, int(self.x0 * width)), max(0, width - 2))
        y0 = min(max(0, int(self.y0 * height)), max(0, height - 2))
        x1 = min(width, max(x0 + 2, round(self.x1 * width)))
        y1 = min(height, max(y0 + 2, round(self.y1 * height)))
        return x0, y0, x1, y1

    def to_dict(self, width: int, height: int) -> dict[str, Any]:
        x0, y0, x1, y1 = self.pixels(width, height)
        return {"box": [x0, y0, x1, y1], "relative": [round(v, 6) for v in (self.x0, self.y0, self.x1, self.y1)],
                "score": self.score}


def decode_boxes(grid: torch.Tensor, max_boxes: int = 3, min_score: float = 0.0) -> list[list[Box]]:
    """Per image, the ``max_boxes`` cells with the highest objectness (above ``min_score``) as boxes:
    centre = (cell + sigmoid(offset)) / grid, side = 0.15 + 0.5 * sigmoid(size logit)."""
    grid = grid.float()
    n, _c, gh, gw = grid.shape
    out = []
    for b in range(n):
        g = grid[b]
        score = torch.sigmoid(g[0]).flatten()
        k = min(max_boxes, score.numel())
        vals, idx = torch.topk(score, k)
        boxes = []
        for v, i in zip(vals.tolist(), idx.tolist(), strict=True):
            if v < min_score:
                continue
            r, c = divmod(i, gw)
            cx = (c + torch.sigmoid(g[1, r, c]).item()) / gw
            cy = (r + torch.sigmoid(g[2, r, c]).item()) / gh
            w = 0.15 + 0.5 * torch.sigmoid(g[3, r, c]).item()
            h = 0.15 + 0.5 * torch.sigmoid(g[4, r, c]).item()
            boxes.append(Box(max(0.0, cx - w / 2), max(0.0, cy - h / 2), min(1.0, cx + w / 2), min(1.0, cy + h / 2),
                             float(v)))
        out.append(boxes)
    return out
