"""`memory/accuracy.py`: what int8 costs on the digits CNN (trained on scikit-learn's digits, seeded)."""

from __future__ import annotations

import torch

from dnninfer.memory.accuracy import digits_int8_accuracy


def test_int8_digits_cnn_stays_within_two_points_of_float_and_is_reproducible():
    threads = torch.get_num_threads()
    a = digits_int8_accuracy(0, epochs=5, test_images=200)
    assert torch.get_num_threads() == threads  # training pins one thread and gives the setting back
    assert a.test_images == 200 and a.train_images == 1348 and a.calibration_images == 64
    assert a.float_accuracy >= 0.9  # it really learned (random weights score ~0.1)
    assert a.int8_accuracy >= a.float_accuracy - 0.02 and a.agreement >= 0.97
    b = digits_int8_accuracy(0, epochs=5, test_images=200)
    assert (a.float_accuracy, a.int8_accuracy, a.agreement) == (b.float_accuracy, b.int8_accuracy, b.agreement)
