"""Training on offline data under emulated numerics: accuracy floors with fixed seeds, bit-identical
BFP/RNS runs, analog noise and redundant moduli."""

import pytest
import torch

from dnninfer.bench.harness import pinned_threads
from dnninfer.errors import UserError
from dnninfer.rns.train import load_data, train


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with pinned_threads(1):
        yield


@pytest.fixture(scope="module")
def digits_runs():
    return {m: train("digits", m, epochs=10, seed=0, progress=False) for m in ("fp32", "bfp", "rns")}


def test_rns_training_reaches_fp32_accuracy_on_digits(digits_runs):
    fp32, rns = digits_runs["fp32"].test_acc, digits_runs["rns"].test_acc
    assert fp32 >= 0.93
    assert rns >= 0.92
    assert fp32 - rns <= 0.03  # "FP32-comparable": within 3 points with this seed
    assert len(digits_runs["rns"].curve) == 10 and not digits_runs["rns"].diverged


def test_noiseless_rns_training_is_bit_identical_to_bfp(digits_runs):
    assert digits_runs["rns"].digest == digits_runs["bfp"].digest
    assert digits_runs["rns"].digest != digits_runs["fp32"].digest  # negative control
    assert digits_runs["rns"].stats["gemms"] > 0 and digits_runs["rns"].stats["residue_errors"] == 0


def test_noise_breaks_plain_rns_and_redundant_moduli_recover():
    """sigma = 0.2 residue steps: ~1.2 % of residues wrong, ~3.7 % of tile outputs garbage without
    redundancy (training collapses); 2 redundant moduli correct single errors. Two seeds each."""
    plain = [train("digits", "rns", epochs=6, seed=s, sigma=0.2, progress=False).test_acc for s in (0, 1)]
    rrns = [train("digits", "rns", epochs=6, seed=s, sigma=0.2, redundant=2, progress=False).test_acc for s in (0, 1)]
    assert max(plain) < 0.5
    assert min(rrns) > 0.8
    assert min(rrns) - max(plain) > 0.3


def test_small_noise_is_harmless():
    r = train("digits", "rns", epochs=6, seed=0, sigma=0.05, progress=False)
    assert r.test_acc > 0.88 and r.stats["residue_error_rate"] < 1e-4


def test_mnist1d_is_generated_offline_and_trains():
    d = load_data("mnist1d")
    assert d.train_x.shape == (4000, 1, 1, 40) and d.test_x.shape == (1000, 1, 1, 40)
    r = train("mnist1d", "rns", arch="mlp", epochs=3, limit=1000, seed=0, progress=False)
    assert r.test_acc > 0.2  # well above chance (0.1) after three short epochs


def test_bad_dataset_and_mode_are_user_errors():
    with pytest.raises(UserError, match="dataset"):
        train("mnist", "rns")
    with pytest.raises(UserError, match="mode"):
        train("digits", "int4")
    with pytest.raises(UserError, match="epochs"):
        train("digits", "rns", epochs=0)


def test_training_is_seeded():
    a = train("digits", "fp32", epochs=2, seed=3, progress=False)
    b = train("digits", "fp32", epochs=2, seed=3, progress=False)
    assert a.digest == b.digest and a.curve == b.curve
    assert torch.is_tensor(load_data("digits", seed=3).train_x)
