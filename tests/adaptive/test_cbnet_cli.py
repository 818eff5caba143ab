"""`dnninfer cbnet train` and `dnninfer bench cbnet`: happy paths print one JSON object with the
promised keys; user mistakes are one line on stderr and exit 2."""

from __future__ import annotations

import json

import pytest

from dnninfer.bench.harness import pinned_threads
from dnninfer.cli import main


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread, as the bench uses: tiny ops oversubscribe a loaded 2-core box."""
    with pinned_threads(1):
        yield


TINY = ["--epochs", "1", "--train-limit", "200", "--test-limit", "64"]


def test_train_happy_path_prints_accuracies_and_macs(capsys, tmp_path):
    code = main(["cbnet", "train", "--dataset", "digits", *TINY, "--ae-epochs", "1", "--seed", "1", "--json",
                 "--save", str(tmp_path / "m.pt")])
    out, _ = capsys.readouterr()
    assert code == 0
    obj = json.loads(out)
    assert set(obj["accuracy"]) >= {"full", "branchynet", "light", "cbnet", "cbnet_conv", "cbnet_guarded"}
    assert obj["macs_per_image"]["cbnet"] < obj["macs_per_image"]["full"]
    assert obj["config"]["seed"] == 1 and (tmp_path / "m.pt").exists()


@pytest.mark.parametrize(("argv", "needle"), [
    (["cbnet", "train", "--dataset", "cifar10"], "dataset 'cifar10'"),
    (["cbnet", "train", "--dataset", "mnist"], "nothing is downloaded"),
    (["cbnet", "train", "--dataset", "mnist", "--data-dir", "/nonexistent/dir"], "not a directory"),
    (["cbnet", "train", "--autoencoders", "dense,vae"], "autoencoder 'vae'"),
    (["cbnet", "train", "--epochs", "0"], "--epochs"),
])
def test_user_mistakes_are_one_line_errors_with_exit_2(capsys, argv, needle):
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dnninfer: error:") and needle in lines[0]


def test_bench_reports_the_promised_keys(capsys, tmp_path):
    code = main(["bench", "cbnet", "--smoke", "--json", "--out", str(tmp_path), *TINY])
    out, _ = capsys.readouterr()
    assert code == 0
    obj = json.loads(out)
    ours = obj["ours"]
    for key in ("accuracy", "latency_ms_b1", "latency_ms_b64", "macs_per_image"):
        assert {"full", "branchynet", "cbnet"} <= set(ours[key]), key
    assert {"b1", "b64"} <= set(ours["speedup_vs_full"]) and {"b1", "b64"} <= set(ours["speedup_vs_branchynet"])
    assert set(ours["energy_reduction_vs_full"]) == {"host", "rpi4", "jetson_nano"}
    assert {"speedup_vs_full", "speedup_vs_branchynet"} <= set(ours["paper_protocol"])
    assert obj["paper"]["latency_speedup"] == 4.8 and obj["paper"]["energy_reduction"] == 0.79
    assert "timing_caveat" in obj["paper"]
    assert {r["batch"] for r in obj["rows"]} == {1, 64}
    assert ours["deploy_runtime"] == "onnxruntime"
    for key in ("speedup_vs_full_b1_by_backbone", "speedup_vs_branchynet_b1_by_backbone"):
        assert set(ours[key]) == {"blenet"} and ours[key]["blenet"] > 0, key  # smoke: the trained backbone only
    assert set(ours["deploy_speedups"]["blenet"]) == {"eager", "torchscript", "onnxruntime"}
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "cbnet_accuracy_latency.png", "cbnet_branchynet_sweep.png", "cbnet_hard_fraction.png",
        "cbnet_speedup_model.png"]
