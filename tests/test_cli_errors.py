"""The one-line error contract end to end (issue 14, items 4 and 7): a user mistake exits 2 with
exactly one stderr line ``dnninfer: error: ...`` naming the problem; valid input still runs."""

from __future__ import annotations

import argparse
import io
import json
import math
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnninfer import argtypes as at
from dnninfer.cli import main
from dnninfer.cliutil import one_line


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, *needles):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dnninfer: error: ")
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"


# -- item 4: model.py files ---------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "needles"), [
    ("def model():\n    raise RuntimeError('boom')\n", ["raise_.py: model() raised RuntimeError: boom"]),
    ("import sys\ndef model():\n    sys.exit(3)\n", ["model() raised SystemExit(3)"]),
    ("def model():\n    return [1]\n", ["model() returned list, expected an nn.Module"]),
    ("import torch\nraise ImportError('needs\\nsomething')\n", ["importing it raised ImportError: needs"]),
    ("from torch import nn\ndef model():\n    return nn.ReLU()\ndef example_inputs():\n    return 1 / 0\n",
     ["example_inputs() raised ZeroDivisionError"]),
    ("from torch import nn\ndef model():\n    return nn.ReLU()\ndef example_inputs():\n    return ['x']\n",
     ["example_inputs() returned str at position 0"]),
], ids=["factory_raises", "factory_exits", "not_a_module", "import_raises", "inputs_raise", "inputs_not_tensors"])
def test_broken_model_file_is_one_line(capsys, tmp_path, body, needles):
    path = tmp_path / "raise_.py"
    path.write_text(body)
    code, _, err = run_cli(capsys, "inspect", str(path), "--input-shape", "1,3")
    assert_user_error(code, err, *needles)


def test_working_model_file_negative_control(capsys, tmp_path):
    path = tmp_path / "ok.py"
    path.write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def model():
            return nn.Linear(3, 2)

        def example_inputs():
            return torch.randn(4, 3)
    """))
    code, out, err = run_cli(capsys, "inspect", str(path), "--json")
    assert code == 0, err
    assert json.loads(out)["summary"]["params"] == 8


# -- item 7: checkpoints ------------------------------------------------------------------------------

def test_random_bytes_checkpoint_names_the_format(capsys, tmp_path):
    """torch.load on these bytes said ``MemoryError: `` and nothing more."""
    path = tmp_path / "junk.pt"
    path.write_bytes(b"\x80\x04\x8d" + (2**62).to_bytes(8, "little") + b"abc")
    code, _, err = run_cli(capsys, "inspect", str(path), "--input-shape", "1,3")
    assert_user_error(code, err, "junk.pt", "not a PyTorch checkpoint")
    assert "MemoryError" not in err


def test_state_dict_checkpoint_says_what_to_do(capsys, tmp_path):
    import torch

    path = tmp_path / "weights.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    code, _, err = run_cli(capsys, "inspect", str(path), "--input-shape", "1,3")
    assert_user_error(code, err, "holds a state_dict, not a module", "model.py factory")


def test_module_checkpoint_negative_control(capsys, tmp_path):
    import torch

    path = tmp_path / "m.pt"
    torch.save(torch.nn.Linear(3, 2), path)
    code, out, err = run_cli(capsys, "inspect", str(path), "--input-shape", "1,3", "--json", "--trust-pickle")
    assert code == 0, err
    assert json.loads(out)["summary"]["params"] == 8
    code, _, err = run_cli(capsys, "inspect", str(path), "--input-shape", "1,3", "--json")
    assert code == 2 and "--trust-pickle" in err and err.count("\n") == 1  # refused by default, one line


# -- item 7: numeric options are checked at parse time ----------------------------------------------

BAD_OPTIONS = [
    (["run", "digits_mlp", "--bandwidth-mbps", "nan"], ["--bandwidth-mbps", "finite number > 0", "'nan'"]),
    (["run", "digits_mlp", "--bandwidth-mbps", "0"], ["--bandwidth-mbps", "> 0", "'0'"]),
    (["run", "digits_mlp", "--bandwidth-mbps", "inf"], ["--bandwidth-mbps", "'inf'"]),
    (["run", "digits_mlp", "--bandwidth-mbps", "10", "--rtt-ms", "-1"], ["--rtt-ms"]),
    (["run", "digits_mlp", "--bandwidth-mbps", "1e-300"], ["would take", "at most 3600 s"]),  # was OverflowError
    (["run", "digits_mlp", "--rtt-ms", "5"], ["--rtt-ms", "needs --bandwidth-mbps"]),
    (["run", "digits_mlp", "--stages", "0"], ["--stages", "an integer >= 1"]),
    (["run", "digits_mlp", "--threads", "0"], ["--threads"]),
    (["inspect", "digits_mlp", "--batch", "0"], ["--batch", "1..4096"]),
    (["inspect", "digits_mlp", "--batch", "10" * 30], ["--batch", "..."]),
    (["inspect", "digits_mlp", "--seed", "-1"], ["--seed", "0..2**63-1"]),
    (["inspect", "digits_mlp", "--input-shape", "1,3,1000000,1000000"], ["--input-shape", "2**31 elements"]),
    (["inspect", "digits_mlp", "--input-shape", "1,a"], ["--input-shape", "positive integers"]),
    (["profile", "digits_mlp", "--repeats", "0"], ["--repeats"]),
    (["partition", "digits_mlp", "--bandwidth-mbps", "nan"], ["--bandwidth-mbps", "'nan'"]),
    (["dpra", "simulate", "--V", "-1"], ["--V", "> 0"]),
    (["schedule", "digits_mlp", "--max-streams", "0"], ["--max-streams"]),
    (["schedule", "digits_mlp", "--seed", "x"], ["--seed"]),
    (["rns", "train", "--sigma", "nan"], ["--sigma", ">= 0"]),
    (["rns", "train", "--moduli", "31,x"], ["--moduli", "comma-separated"]),
    (["cbnet", "train", "--threshold", "nan"], ["--threshold"]),
    (["bench", "runtime", "--seed", "-5"], ["--seed"]),
    (["inspect", "digits_mlp", "--batch=--"], ["--batch", "expected a value, got '--'"]),  # argparse skips type=
    (["run", "digits_mlp", "--bandwidth-mbps=--"], ["--bandwidth-mbps", "got '--'"]),
    # area CLIs: plain int/float options used to let nan, 0 or -1 through to the work
    (["serve", "mobilenet_v2", "--max-delay-ms", "nan"], ["--max-delay-ms", ">= 0", "'nan'"]),
    (["serve", "mobilenet_v2", "--threads", "0"], ["--threads", "1..256"]),
    (["serve", "mobilenet_v2", "--port", "65536"], ["--port", "0..65535"]),
    (["loadtest", "http://127.0.0.1:9/v1/models/x/infer", "--duration", "nan"], ["--duration", "'nan'"]),
    (["loadtest", "http://127.0.0.1:9/v1/models/x/infer", "--rate", "inf"], ["--rate", "'inf'"]),
    (["loadtest", "http://127.0.0.1:9/v1/models/x/infer", "--images", "0"], ["--images", ">= 1"]),
    (["quant", "train", "--method", "signed", "--batch-size", "0"], ["--batch-size", ">= 1"]),
    (["mcu", "run", "digits-cnn", "--pool-bytes", "-1"], ["--pool-bytes", ">= 0"]),
    (["dpra", "simulate", "--slots", "0"], ["--slots", "1..100000"]),
    (["bench", "dpra", "--slots", "0"], ["--slots", ">= 1"]),
]


@pytest.mark.parametrize(("argv", "needles"), BAD_OPTIONS, ids=[" ".join(a)[:60] for a, _ in BAD_OPTIONS])
def test_bad_numeric_option_is_one_line_naming_the_flag(capsys, argv, needles):
    code, _, err = run_cli(capsys, *argv)
    assert_user_error(code, err, *needles)


def test_emulation_runs_when_a_bandwidth_is_given_negative_control(capsys):
    code, out, err = run_cli(capsys, "run", "digits_mlp", "--stages", "2", "--bandwidth-mbps", "1000",
                             "--rtt-ms", "0.5", "--json")
    assert code == 0, err
    obj = json.loads(out)
    assert obj["equal"] and "emulated" in obj["note"] and obj["bytes_sent"] > 0
    assert obj["transfer_s"] >= 0.5e-3 / 2  # the RTT asked for is in every delay


def test_too_many_stages_are_capped_with_a_note(capsys):
    code, out, err = run_cli(capsys, "run", "digits_mlp", "--stages", str(10**30), "--json")
    assert code == 0
    stages = json.loads(out)["stages"]
    assert 1 < stages < 100 and f"running {stages} stage(s), not {10**30}" in err


# -- argtypes: each helper refuses what it must and accepts what it should --------------------------

BAD = ["nan", "-nan", "inf", "-inf", "1e309", "", " ", "abc", "1,5", "0x10", "None"]


@pytest.mark.parametrize(("fn", "good", "bad"), [
    (at.finite_float, {"-2.5": -2.5, "0": 0.0, "1e3": 1000.0}, BAD),
    (at.positive_float, {"1e-300": 1e-300, " 7 ": 7.0, "5.5": 5.5}, [*BAD, "0", "-0.0", "-1"]),
    (at.nonneg_float, {"0": 0.0, "-0.0": 0.0, "2": 2.0}, [*BAD, "-1e-9"]),
    (at.bounded_float(0, 10), {"0": 0.0, "10": 10.0}, [*BAD, "10.0001", "-1"]),
    (at.positive_int, {"1": 1, "+3": 3, str(10**30): 10**30}, [*BAD, "0", "-1", "1.0", "1e3"]),
    (at.nonneg_int, {"0": 0, "-0": 0}, [*BAD, "-1", "0.5"]),
    (at.bounded_int(2, 5), {"2": 2, "5": 5}, [*BAD, "1", "6", str(2**64)]),
    (at.seed, {"0": 0, str(2**63 - 1): 2**63 - 1}, [*BAD, "-1", str(2**63)]),
    (at.batch, {"1": 1, "4096": 4096}, [*BAD, "0", "4097"]),
])
def test_argtypes_accept_and_refuse(fn, good, bad):
    for text, value in good.items():
        assert fn(text) == value
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match="expected"):
            fn(text)


def test_input_shape_bounds():
    assert at.input_shape("2x3") == (2, 3) and at.input_shape("1,3,224,224") == (1, 3, 224, 224)
    assert math.prod(at.input_shape("2,1024,1024,1024")) == at.MAX_INPUT_ELEMENTS
    for text in ["", "1,,2", "1,0", "-1", "1.5", "a", "2,1024,1024,1025", ",".join(["9" * 300] * 20)]:
        with pytest.raises(argparse.ArgumentTypeError):
            at.input_shape(text)


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=12))
def test_positive_float_is_finite_and_positive_or_refused(text):
    try:
        value = at.positive_float(text)
    except argparse.ArgumentTypeError as e:
        assert "\n" not in str(e)
    else:
        assert math.isfinite(value) and value > 0


def test_argparse_reports_the_helper_message_not_invalid_type():
    """argparse swallows a ValueError's text; the helpers raise ArgumentTypeError so it is kept."""
    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--n", type=at.bounded_int(1, 3))
    with pytest.raises(argparse.ArgumentError, match=r"expected an integer in 1\.\.3, got '7'"):
        parser.parse_args(["--n", "7"])


# -- item 7: YAML through the CLI --------------------------------------------------------------------

def test_typo_in_cluster_yaml_names_the_typo(capsys, tmp_path):
    path = tmp_path / "foo.yaml"
    path.write_text("name: foo\nnodes: [{name: a, device: host1}, {name: b, device: host1}]\n"
                    "links: [{a: a, b: b, link: {name: l, bandwith_mbps: 5, rtt_ms: 1, energy_nj_per_bit: 0}}]\n")
    code, _, err = run_cli(capsys, "partition", "digits_mlp", "--cluster", str(path), "--host-estimate", "flops")
    assert_user_error(code, err, "cluster", "foo.yaml", "links.0.link: unknown key 'bandwith_mbps'",
                      "did you mean 'bandwidth_mbps'?")


def test_correct_cluster_yaml_negative_control(capsys, tmp_path):
    path = tmp_path / "foo.yaml"
    path.write_text("name: foo\nnodes: [{name: a, device: host1}, {name: b, device: host1}]\n"
                    "links: [{a: a, b: b, link: {name: l, bandwidth_mbps: 5, rtt_ms: 1, energy_nj_per_bit: 0}}]\n")
    code, out, err = run_cli(capsys, "partition", "digits_mlp", "--cluster", str(path), "--host-estimate", "flops",
                             "--json")
    assert code == 0, err
    assert json.loads(out)["cluster"] == "foo"


# -- main itself -------------------------------------------------------------------------------------

def test_newline_in_a_file_name_stays_on_one_line(capsys, tmp_path):
    code, _, err = run_cli(capsys, "inspect", str(tmp_path / "a\nb.pt"))
    assert_user_error(code, err, "a\\nb.pt", "not found")


def test_one_line_escapes_only_what_would_break_the_line():
    assert one_line("plain message: ünïcode ok") == "plain message: ünïcode ok"
    assert one_line("a\nb\tc\x00") == "a\\nb\\tc\\x00"


def test_out_folder_that_cannot_exist_fails_before_the_bench(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, out, err = run_cli(capsys, "bench", "runtime", "--quick", "--out", str(blocker / "sub"))
    assert_user_error(code, err, "--out", "sub", "NotADirectoryError")
    assert out == ""


def test_broken_pipe_exits_quietly(monkeypatch, capsys):
    class Closed(io.StringIO):
        def write(self, s):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("sys.stdout", Closed())
    code = main(["devices", "--json"])
    monkeypatch.undo()
    _, err = capsys.readouterr()
    assert code == 141 and "Traceback" not in err


def test_bugs_keep_their_traceback(monkeypatch):
    """Only user mistakes become one line: an internal error still raises."""
    import dnninfer.cli as cli

    def boom(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "cmd_devices", boom)
    with pytest.raises(ZeroDivisionError):
        main(["devices"])
