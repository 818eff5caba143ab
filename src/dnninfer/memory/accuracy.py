"""What int8 costs: post-training quantisation accuracy of the digits CNN against its float model.

The memory benchmarks run the digits CNN with random weights (planning and bit-exactness do not
depend on accuracy). Here the same architecture (`models.DigitsVmcuCNN`) is *trained* on
scikit-learn's 8x8 digits (`data.load_digits`: 1347 train / 450 held-out images, split by seed),
then quantised exactly as every executed benchmark is (`quantize.quantize`: per-channel int8
weights, activation ranges calibrated on training images, TFLite requantisation) and the int8 IR
is run image by image with `kernels.reference`, the oracle the pool executor, the generated C and
the QEMU firmware equal bit for bit. Reported: float and int8 top-1 accuracy on the held-out
images and how often the two predictions agree. Seeded: the split, the initial weights, the batch
order and the calibration images, so the figures are reproducible bit for bit (on one torch build).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["DigitsAccuracy", "digits_int8_accuracy"]


@dataclass(frozen=True)
class DigitsAccuracy:
    """Held-out top-1 accuracy of the float digits CNN and of its int8 IR, and their agreement."""

    float_accuracy: float
    int8_accuracy: float
    agreement: float  # fraction of held-out images where both predict the same class
    train_images: int
    test_images: int
    calibration_images: int
    epochs: int
    seed: int
    wall_s: float

    @property
    def drop(self) -> float:
        """Accuracy points lost to int8 (float minus int8; negative if int8 happens to do better)."""
        return self.float_accuracy - self.int8_accuracy

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "drop": round(self.drop, 4)}


def digits_int8_accuracy(seed: int = 0, *, epochs: int = 30, calibration_images: int = 64,
                         test_images: int | None = None) -> DigitsAccuracy:
    """Train `DigitsVmcuCNN` (Adam, ``epochs`` passes of batch 64), quantise it with
    ``calibration_images`` training images, and compare float and int8 on the held-out digits
    (``test_images`` of them, default all 450)."""
    from dnninfer.data.datasets import load_digits
    from dnninfer.data.training import fit
    from dnninfer.memory.kernels import reference
    from dnninfer.memory.models import DigitsVmcuCNN
    from dnninfer.memory.quantize import quantize, quantize_input

    start = time.perf_counter()
    split = load_digits(seed=seed).subset(test=test_images)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same float sums, so the same weights, whatever the caller's setting
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = DigitsVmcuCNN()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        loss = nn.CrossEntropyLoss()
        fit(model, split.train_x, split.train_y, loss_fn=lambda m, xb, yb: loss(m(xb), yb), optimizer=opt,
            epochs=epochs, batch=64, seed=seed, min_batch=2)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    with torch.no_grad():
        float_pred = model(split.test_x).argmax(1).numpy()
    ir = quantize(model, split.train_x[:calibration_images], name="digits_cnn-int8-trained")
    int8_pred = np.array([int(np.argmax(reference(ir, quantize_input(ir, img)).ravel())) for img in split.test_x])
    y = split.test_y.numpy()
    return DigitsAccuracy(
        float_accuracy=round(float((float_pred == y).mean()), 4),
        int8_accuracy=round(float((int8_pred == y).mean()), 4),
        agreement=round(float((float_pred == int8_pred).mean()), 4), train_images=len(split.train_y),
        test_images=len(y), calibration_images=min(calibration_images, len(split.train_y)), epochs=epochs, seed=seed,
        wall_s=round(time.perf_counter() - start, 2))
