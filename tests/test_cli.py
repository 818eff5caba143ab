"""CLI smoke tests and the user-error contract: exit 2, one line `dnninfer: error: ...`."""

import json
import subprocess
import sys
import textwrap

import pytest

from dnninfer.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dnninfer: error: ")
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0]


def test_models_json_lists_every_zoo_model(capsys):
    from dnninfer import zoo

    code, out, _ = run_cli(capsys, "models", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)["models"]}
    assert list(rows) == zoo.names()
    assert rows["resnet18"]["params"] == 11_689_512
    assert rows["vgg16"]["flops"] > 30e9


def test_inspect_resnet18_json_is_valid(capsys):
    code, out, _ = run_cli(capsys, "inspect", "resnet18", "--json")
    assert code == 0
    obj = json.loads(out)
    assert obj["summary"]["params"] == 11_689_512
    conv1 = next(n for n in obj["nodes"] if n["name"] == "conv1")
    assert conv1["shape"] == [1, 64, 112, 112]
    assert conv1["flops"] == 2 * 64 * 112 * 112 * 3 * 7 * 7


def test_inspect_blocks_table(capsys):
    code, out, _ = run_cli(capsys, "inspect", "mobilenet_v2", "--blocks")
    assert code == 0 and "out_bytes" in out


def test_run_splits_and_matches_whole_model(capsys):
    code, out, _ = run_cli(capsys, "run", "digits_cnn", "--stages", "3", "--bandwidth-mbps", "100", "--json")
    assert code == 0
    obj = json.loads(out)
    assert obj["equal"] and obj["stages"] == 3 and "emulated" in obj["note"]


def test_unknown_model_is_one_line_error(capsys):
    code, _, err = run_cli(capsys, "inspect", "resnet19")
    assert_user_error(code, err, "resnet19", "resnet18")


def test_missing_model_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, "inspect", str(tmp_path / "nope.pt"))
    assert_user_error(code, err, "not found")


def test_corrupt_model_file(capsys, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a torch file")
    code, _, err = run_cli(capsys, "inspect", str(bad), "--input-shape", "1,3,8,8")
    assert_user_error(code, err, "bad.pt", "not a PyTorch checkpoint", "bad magic")


def test_untraceable_user_model(capsys, tmp_path):
    src = tmp_path / "dd.py"
    src.write_text(textwrap.dedent("""
        import torch
        from torch import nn

        class DataDependent(nn.Module):
            def forward(self, x):
                return x * 2 if x.sum() > 0 else x - 1

        def model():
            return DataDependent()
    """))
    code, _, err = run_cli(capsys, "inspect", f"{src}:model", "--input-shape", "2,3")
    assert_user_error(code, err, "cannot be captured")


def test_user_model_file_with_example_inputs(capsys, tmp_path):
    src = tmp_path / "tiny.py"
    src.write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def model():
            return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))

        def example_inputs():
            return (torch.randn(1, 3, 8, 8),)
    """))
    code, out, _ = run_cli(capsys, "inspect", str(src), "--json")
    assert code == 0
    assert json.loads(out)["summary"]["params"] == 3 * 4 * 9 + 4 + 144 * 2 + 2


def test_bad_shape_argument(capsys, tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from torch import nn\ndef model():\n    return nn.ReLU()\n")
    code, _, err = run_cli(capsys, "inspect", str(f), "--input-shape", "1,x,3")
    assert_user_error(code, err, "--input-shape")


def test_bad_device_yaml(capsys, tmp_path):
    bad = tmp_path / "dev.yaml"
    bad.write_text("name: broken\npus: 3\n")
    code, _, err = run_cli(capsys, "profile", "digits_mlp", "--device", str(bad), "--repeats", "1")
    assert_user_error(code, err, "dev.yaml")


def test_unknown_bench_system(capsys):
    code, _, err = run_cli(capsys, "bench", "no-such-system")
    assert_user_error(code, err, "no-such-system")


def test_bad_flag_is_one_line(capsys):
    code, _, err = run_cli(capsys, "models", "--frobnicate")
    assert_user_error(code, err, "--frobnicate")


def test_console_script_runs_and_fails_cleanly():
    ok = subprocess.run([sys.executable, "-m", "dnninfer.cli", "models", "digits_mlp", "--json"],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["models"][0]["params"] == 17_226
    bad = subprocess.run([sys.executable, "-m", "dnninfer.cli", "inspect", "nope"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith("dnninfer: error:") and "Traceback" not in bad.stderr


@pytest.mark.parametrize("argv", [["devices", "--json"]])
def test_devices_lists_profiles(capsys, argv):
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0
    devices = {r["device"] for r in json.loads(out)["devices"]}
    assert {"host", "rpi4", "odroid_xu4", "jetson_nano", "jetson_tx2"} <= devices
