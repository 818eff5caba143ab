"""`dnninfer rns train|model`: happy paths and the one-line user-error contract."""

import json

from dnninfer.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_rns_train_json(capsys):
    code, out, _ = _run(capsys, "rns", "train", "--dataset", "digits", "--mode", "rns", "--epochs", "1", "--json")
    assert code == 0
    obj = json.loads(out)
    assert obj["mode"] == "rns" and obj["epochs"] == 1 and 0.3 < obj["test_acc"] <= 1
    assert obj["numerics"]["moduli"] == [31, 32, 33] and len(obj["curve"]) == 1


def test_rns_train_table(capsys):
    code, out, _ = _run(capsys, "rns", "train", "--mode", "fp8", "--epochs", "1")
    assert code == 0 and "test_acc" in out


def test_rns_model_json(capsys):
    code, out, _ = _run(capsys, "rns", "model", "--workloads", "bert_encoder", "--json")
    assert code == 0
    obj = json.loads(out)
    assert obj["paper"]["speedup_iso_energy"] == 23.8
    assert obj["workloads"] == ["bert_encoder"] and obj["power_ratio_iso_area"] > 0


def _assert_user_error(code, err, needle):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dnninfer: error: ") and needle in lines[0]


def test_bad_mode_is_one_line_exit_2(capsys):
    code, _, err = _run(capsys, "rns", "train", "--mode", "int4")
    _assert_user_error(code, err, "--mode")


def test_bad_dataset_and_moduli_are_user_errors(capsys):
    code, _, err = _run(capsys, "rns", "train", "--dataset", "cifar")
    _assert_user_error(code, err, "--dataset")
    code, _, err = _run(capsys, "rns", "train", "--moduli", "31,32,34", "--epochs", "1")
    _assert_user_error(code, err, "co-prime")
    code, _, err = _run(capsys, "rns", "model", "--workloads", "nope")
    _assert_user_error(code, err, "--workloads")
