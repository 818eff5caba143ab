"""`dnninfer mcu plan|run|codegen`: happy paths (JSON) and the one-line user-error contract."""

from __future__ import annotations

import json

import pytest

from dnninfer.cli import main
from dnninfer.memory import codegen
from dnninfer.memory.planners import PLANNERS

needs_gcc = pytest.mark.skipif(codegen.host_compiler() is None, reason="no host C compiler (gcc/cc) on PATH")


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def json_out(capsys, *argv) -> dict:
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    return json.loads(out)  # one JSON object and nothing else on stdout


def assert_user_error(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dnninfer: error: ")
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


def test_plan_all_planners_on_an_analytic_benchmark(capsys):
    obj = json_out(capsys, "mcu", "plan", "mbv2-1.0-224", "--json")
    by = {r["planner"]: r for r in obj["summary"]}
    assert list(by) == list(PLANNERS)
    assert by["tinyengine"]["peak_kib"] == 1372.0
    assert by["vmcu_fused"]["total_bytes"] < 0.4 * by["tinyengine"]["total_bytes"]
    assert len(obj["per_layer"]) == obj["layers"] == 64
    assert all(set(PLANNERS) <= set(row) for row in obj["per_layer"])
    assert "input included" in obj["accounting"]["vmcu_fused"]
    assert [p["planner"] for p in obj["plans"]] == list(PLANNERS)


def test_plan_one_planner_table_shows_steps(capsys):
    code, out, err = run_cli(capsys, "mcu", "plan", "digits-cnn", "--planner", "vmcu_fused", "--segment-bytes", "16")
    assert code == 0, err
    assert "fused_ib" in out and "footprint" in out and "vmcu_fused" in out


def test_plan_a_zoo_model_lowered_from_torch(capsys):
    obj = json_out(capsys, "mcu", "plan", "mobilenet_v2", "--planner", "tinyengine", "--json")
    assert obj["summary"][0]["peak_kib"] == 1372.0


def test_run_every_planner_is_bit_exact(capsys):
    obj = json_out(capsys, "mcu", "run", "digits-cnn", "--json")
    assert obj["bit_exact"] is True
    assert [r["planner"] for r in obj["runs"]] == list(PLANNERS)
    assert all(r["argmax"] == obj["reference_argmax"] for r in obj["runs"])


def test_run_reports_every_plan_shadow_checked_and_safe(capsys):
    obj = json_out(capsys, "mcu", "run", "digits-cnn", "--json")
    assert obj["safe"] is True
    assert all(r["shadow_checked"] and r["safe"] and r["bytes_checked"] > 0 for r in obj["runs"])


def test_run_refuses_an_unsafe_plan_in_one_line(capsys, monkeypatch):
    """vMCU shift d* - 1 on the digits CNN's first layer: refused, naming the layer and both tensors."""
    from dnninfer.memory import cli as mcu_cli
    from dnninfer.memory import plan

    def unsafe(ir, args):
        good = plan(ir, "vmcu")
        return [plan(ir, "vmcu", shifts={0: good.steps[0].shift - 1})]

    monkeypatch.setattr(mcu_cli, "make_plans", unsafe)
    code, _, err = run_cli(capsys, "mcu", "run", "digits-cnn", "--planner", "vmcu")
    assert_user_error(code, err, "plan vmcu is unsafe", "reads byte", "of tensor 'input'", "overwritten by tensor",
                      "refusing the plan")


def test_run_a_zoo_model_quantised_on_its_example_input(capsys):
    obj = json_out(capsys, "mcu", "run", "lenet_digits", "--planner", "vmcu", "--json")
    assert obj["bit_exact"] is True and obj["runs"][0]["planner"] == "vmcu"


@needs_gcc
def test_codegen_check_writes_c_that_equals_python(capsys, tmp_path):
    obj = json_out(capsys, "mcu", "codegen", "digits-cnn", "-o", str(tmp_path), "--planner", "all", "--check",
                   "--cpu", "cortex-m4", "--json")
    assert obj["bit_exact"] is True
    assert [r["planner"] for r in obj["outputs"]] == list(PLANNERS)
    for r in obj["outputs"]:
        assert (tmp_path / r["planner"] / "model.c").is_file() and (tmp_path / r["planner"] / "model.h").is_file()
        assert r["c_equals_python"] and r["c_equals_reference"]
    if None not in codegen.arm_toolchain():
        by = {r["planner"]: r for r in obj["outputs"]}
        assert obj["arm"] == "ok"
        assert by["vmcu_fused"]["m4_ram"] < by["tinyengine"]["m4_ram"]


def test_codegen_single_planner_text_output(capsys, tmp_path):
    code, out, err = run_cli(capsys, "mcu", "codegen", "digits-cnn", "-o", str(tmp_path), "--cpu")
    assert code == 0, err
    assert (tmp_path / "model.c").is_file()
    assert "vmcu_fused" in out and "model.c" in out


def test_unknown_planner_is_one_line(capsys):
    code, _, err = run_cli(capsys, "mcu", "plan", "digits-cnn", "--planner", "greedy")
    assert_user_error(code, err, "--planner", "vmcu_fused", "greedy")


def test_unsupported_op_is_one_line(capsys, tmp_path):
    f = tmp_path / "model.py"
    f.write_text("import torch\nfrom torch import nn\n\n"
                 "def model():\n    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.GELU()).eval()\n\n"
                 "def example_inputs():\n    return (torch.randn(1, 1, 8, 8),)\n")
    code, _, err = run_cli(capsys, "mcu", "plan", str(f))
    assert_user_error(code, err, "not supported by the MCU IR", "GELU")


def test_pool_too_small_is_refused_in_one_line(capsys):
    code, _, err = run_cli(capsys, "mcu", "run", "digits-cnn", "--planner", "tinyengine", "--pool-bytes", "3071")
    assert_user_error(code, err, "refusing to run", "3071")


@pytest.mark.parametrize("argv, needle", [
    (("mcu", "run", "mbv2-1.0-224"), "analytic"),
    (("mcu", "plan", "no-such-model"), "memory benchmark"),
    (("mcu", "plan", "resnet18", "--planner", "vmcu"), "not a chain"),
    (("mcu", "plan", "digits-cnn", "--planner", "vmcu", "--alignment", "16"), "unknown option"),
    (("mcu", "codegen", "digits-cnn", "-o", "/tmp/x", "--cpu", "cortex-a9"), "--cpu"),
    (("mcu",), "mcu"),
])
def test_other_bad_inputs_are_one_line(capsys, argv, needle):
    code, _, err = run_cli(capsys, *argv)
    assert_user_error(code, err, needle)
