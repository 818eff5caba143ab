"""The whole recipe on real data: digits accuracy floors with a fixed seed, conversion raising the
exit-1 share, the guarded variant on a trained model, bit-exact reruns, and the IDX pipeline on
MNIST-format files written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dnninfer.adaptive.branchynet import softmax_entropy
from dnninfer.adaptive.pipeline import CBNetConfig, fit, load_split, summary
from dnninfer.bench.harness import pinned_threads
from dnninfer.data import load_digits, write_idx


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread, as the bench uses: tiny ops oversubscribe a loaded 2-core box."""
    with pinned_threads(1):
        yield


QUICK = {"epochs": 8, "ae_epochs": 12, "lr": 3e-3, "batch": 32, "seed": 0}  # cbnet 0.964 vs floor 0.93


@pytest.fixture(scope="module")
def digits_run():
    trained = fit(CBNetConfig(autoencoders=("dense",), **QUICK))
    return trained, summary(trained)


def test_cbnet_accuracy_on_digits_is_above_a_floor_and_near_the_full_dnn(digits_run):
    _, s = digits_run
    acc = s["accuracy"]
    assert acc["full"] >= 0.90
    assert acc["cbnet"] >= 0.93
    assert acc["cbnet"] >= acc["full"] - 0.03
    assert acc["cbnet_guarded"] >= acc["cbnet"] - 0.01


def test_conversion_makes_inputs_easy_for_exit_one(digits_run):
    _, s = digits_run
    assert 0.75 <= s["train_easy_fraction"] <= 0.85  # T is the 0.8 quantile of training entropies
    assert s["exit1_fraction_cbnet"] > s["exit1_fraction_original"] + 0.1


def test_guarded_variant_on_a_trained_model_uses_the_full_dnn_exactly_where_unsure(digits_run):
    trained, _ = digits_run
    x = trained.split.test_x
    with torch.inference_mode():
        ent = softmax_entropy(trained.light(trained.autoencoders["dense"](x)))
        out = trained.guarded.decide(x)
        unsure = ent >= trained.threshold
        assert torch.equal(out.fell_back, unsure)
        torch.testing.assert_close(out.logits[unsure], trained.full(x[unsure]))
        torch.testing.assert_close(out.logits[~unsure], trained.cbnets["dense"](x)[~unsure])


def test_same_seed_reproduces_weights_bit_for_bit():
    cfg = CBNetConfig(epochs=1, ae_epochs=1, train_limit=200, test_limit=50, autoencoders=("conv",), seed=3)
    a, b = fit(cfg), fit(cfg)
    for p, q in zip(a.bnet.state_dict().values(), b.bnet.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    assert torch.equal(a.targets.index, b.targets.index)
    for p, q in zip(a.autoencoders["conv"].state_dict().values(), b.autoencoders["conv"].state_dict().values(),
                    strict=True):
        assert torch.equal(p, q)


def _write_mnist_like(directory, n_train=300, n_test=100):
    """Digits upsampled to 28x28 uint8, saved as the four MNIST IDX files (gzip for the images)."""
    d = load_digits(seed=0)
    x = torch.cat([d.train_x, d.test_x])
    y = torch.cat([d.train_y, d.test_y])
    x28 = torch.nn.functional.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    img = (x28.clamp(0, 1) * 255).round().to(torch.uint8).squeeze(1).numpy()
    lab = y.numpy().astype(np.uint8)
    write_idx(directory / "train-images-idx3-ubyte.gz", img[:n_train])
    write_idx(directory / "train-labels-idx1-ubyte", lab[:n_train])
    write_idx(directory / "t10k-images-idx3-ubyte.gz", img[n_train: n_train + n_test])
    write_idx(directory / "t10k-labels-idx1-ubyte", lab[n_train: n_train + n_test])
    return img, lab


def test_idx_files_written_here_run_through_the_whole_pipeline(tmp_path):
    img, lab = _write_mnist_like(tmp_path)
    cfg = CBNetConfig(dataset="kmnist", data_dir=str(tmp_path), epochs=3, ae_epochs=3, lr=3e-3, batch=32,
                      autoencoders=("conv",))
    split = load_split(cfg)
    assert split.train_x.shape == (300, 1, 28, 28) and split.test_x.shape == (100, 1, 28, 28)
    assert torch.equal(split.train_x[5, 0], torch.from_numpy(img[5]).float() / 255)
    assert torch.equal(split.test_y, torch.from_numpy(lab[300:400]).long())
    trained = fit(cfg, split)
    s = summary(trained)
    assert s["dataset"] == "kmnist" and s["test"] == 100
    assert set(s["accuracy"]) == {"full", "branchynet", "light", "cbnet", "cbnet_guarded"}
    assert all(0.0 <= v <= 1.0 for v in s["accuracy"].values())
    assert s["accuracy"]["full"] > 0.2  # three epochs on 300 images: well above chance (0.1)
