"""`dnninfer quant train`: JSON happy path with deployment, one-line user errors (exit 2)."""

from __future__ import annotations

import json

import pytest

from dnninfer.cli import main


def test_train_json_happy_path(capsys):
    code = main(["quant", "train", "--method", "signed", "--width", "1", "--epochs", "2", "--seed", "3",
                 "--deploy", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    obj = json.loads(out)
    assert obj["method"] == "signed" and obj["seed"] == 3 and obj["dataset"] == "digits"
    assert 0 < obj["nnz"] < obj["weights"] and 0 < obj["density"] < 1
    assert 0.0 <= obj["accuracy"] <= 1.0
    assert obj["deploy"]["max_abs_err"] < 1e-3 and obj["deploy"]["accuracy"] == pytest.approx(obj["accuracy"])


def test_train_table_output(capsys):
    assert main(["quant", "train", "--method", "binary", "--width", "0.5", "--epochs", "1"]) == 0
    out, _ = capsys.readouterr()
    assert "binary" in out and "density" in out


@pytest.mark.parametrize("argv, needle", [
    (["--method", "quinary"], "quantisation method"),
    (["--method", "signed", "--arch", "vgg"], "architecture"),
    (["--method", "signed", "--width", "0"], "width"),
    (["--method", "signed", "--dataset", "mnist"], "directory"),
    (["--method", "signed", "--dataset", "cifar"], "dataset"),
])
def test_user_errors_are_one_line_exit_2(capsys, argv, needle):
    code = main(["quant", "train", *argv])
    _, err = capsys.readouterr()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dnninfer: error: ") and needle in lines[0], err
