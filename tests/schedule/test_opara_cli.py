"""`dnninfer schedule`: happy paths and the one-line user-error contract."""

from __future__ import annotations

import json

import pytest
import torch

from dnninfer.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dnninfer: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0]


def test_schedule_json_runs_the_plan_and_matches_eager(capsys):
    code, out, _ = run_cli(capsys, "schedule", "deepfm", "--json", "--repeats", "2")
    assert code == 0
    obj = json.loads(out)
    assert obj["equal"] and obj["max_abs_err"] <= 1e-5
    assert obj["streams_used"] == 2 and obj["max_streams"] == 2  # cpu default: 2 lanes
    assert obj["program"]["runs"] == obj["nodes"] and obj["timing"]["plan_ms"] > 0


def test_schedule_nimble_with_cap_and_program(capsys):
    code, out, _ = run_cli(capsys, "schedule", "googlenet", "--algo", "nimble", "--order", "topo",
                           "--max-streams", "3", "--no-profile", "--repeats", "0", "--show-program", "--json")
    assert code == 0
    obj = json.loads(out)
    assert obj["streams_used"] == 3 and obj["equal"] and obj["timing"] is None
    assert sum(line.endswith(")") for line in obj["launch_program"]) == len(obj["launch_program"])
    assert any(":wait(" in line for line in obj["launch_program"])


def test_schedule_table_output(capsys):
    code, out, _ = run_cli(capsys, "schedule", "nasnet_cells", "--no-profile", "--repeats", "0")
    assert code == 0 and "streams" in out and "max |plan - eager|" in out


def test_bad_algo_is_a_one_line_error(capsys):
    code, _, err = run_cli(capsys, "schedule", "googlenet", "--algo", "rammer")
    assert_user_error(code, err, "--algo", "rammer")


@pytest.mark.parametrize(("argv", "needle"), [
    (["schedule", "nosuchnet"], "nosuchnet"),
    (["schedule", "deepfm", "--max-streams", "0"], "--max-streams"),
    (["schedule", "deepfm", "--order", "bfs"], "--order"),
])
def test_other_user_errors(capsys, argv, needle):
    code, _, err = run_cli(capsys, *argv)
    assert_user_error(code, err, needle)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_a_gpu_is_a_user_error(capsys):
    code, _, err = run_cli(capsys, "schedule", "deepfm", "--device", "cuda")
    assert_user_error(code, err, "--device cuda")
