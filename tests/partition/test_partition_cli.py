"""`dnninfer partition`: JSON output, every strategy, real runs, and the one-line user-error contract."""

from __future__ import annotations

import json

import pytest
import yaml

from dnninfer.cli import main
from dnninfer.partition.strategies import STRATEGIES

BASE = ["partition", "digits_cnn", "--cluster", "edge3", "--host-estimate", "flops"]


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


def test_default_is_hidp(capsys):
    obj = json_out(capsys, *BASE, "--json")
    assert obj["model"] == "digits_cnn" and obj["cluster"] == "edge3" and obj["objective"] == "latency"
    assert len(obj["plans"]) == 1
    p = obj["plans"][0]
    assert p["strategy"] == "hidp" and p["source"] == "rpi4"
    assert p["latency_ms"] > 0 and p["energy_mj"] > 0 and p["throughput_ips"] > 0
    assert p["reason"] and p["parts"] and p["stages"]
    assert sum(part["nodes"] for part in p["parts"]) > 0


def test_strategy_all_lists_every_strategy_and_runs_them(capsys):
    obj = json_out(
        capsys, *BASE, "--strategy", "all", "--objective", "throughput", "--bandwidth-mbps", "20", "--run", "--json"
    )
    assert [p["strategy"] for p in obj["plans"]] == list(STRATEGIES)
    assert all(p["objective"] == "throughput" for p in obj["plans"])
    by = {p["strategy"]: p for p in obj["plans"]}
    assert all(by["hidp"]["throughput_ips"] >= p["throughput_ips"] * (1 - 1e-9) for p in obj["plans"])
    assert [r["strategy"] for r in obj["runs"]] == list(STRATEGIES)
    for r in obj["runs"]:
        assert r["equal"] is True and r["max_abs_err"] <= 1e-4, r
    assert "emulated" in obj["note"]


def test_run_reports_equal_output(capsys):
    obj = json_out(capsys, *BASE, "--run", "--json")
    (r,) = obj["runs"]
    assert r["strategy"] == "hidp" and r["equal"] is True and r["max_abs_err"] <= 1e-4
    assert r["predicted_ms"] == pytest.approx(obj["plans"][0]["latency_ms"])


def test_table_output_explains_the_choice(capsys):
    code, out, _ = run_cli(capsys, *BASE, "--strategy", "neurosurgeon")
    assert code == 0
    assert "why:" in out and "neurosurgeon" in out


def test_strategy_all_json_stays_json_when_a_strategy_is_skipped(capsys):
    # digits_mlp has no conv prefix: coedge raises a UserError and is skipped
    code, out, err = run_cli(
        capsys, "partition", "digits_mlp", "--host-estimate", "flops", "--strategy", "all", "--json"
    )
    assert code == 0, err
    obj = json.loads(out)
    assert "coedge" not in [p["strategy"] for p in obj["plans"]]


def test_run_bytes_sent_matches_the_plan(capsys):
    obj = json_out(capsys, *BASE, "--strategy", "all-local", "--run", "--json")
    assert obj["plans"][0]["bytes_sent"] == 0
    assert obj["runs"][0]["bytes_sent"] == obj["plans"][0]["bytes_sent"]


def write_yaml(path, data) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


LINK = {"name": "wifi", "bandwidth_mbps": 50, "rtt_ms": 5, "energy_nj_per_bit": 10}


def test_unknown_cluster_name(capsys):
    code, _, err = run_cli(capsys, "partition", "digits_cnn", "--cluster", "nosuch", "--host-estimate", "flops")
    assert_user_error(code, err, "cluster 'nosuch'", "edge3")


def test_cluster_with_unknown_device(capsys, tmp_path):
    path = write_yaml(
        tmp_path / "c.yaml",
        {
            "name": "c",
            "nodes": [{"name": "a", "device": "host1"}, {"name": "b", "device": "no_such_board"}],
            "default_link": LINK,
        },
    )
    code, _, err = run_cli(capsys, "partition", "digits_cnn", "--cluster", path, "--host-estimate", "flops")
    assert_user_error(code, err, "nodes.1.device", "no_such_board")


def test_link_with_zero_bandwidth(capsys, tmp_path):
    path = write_yaml(
        tmp_path / "c.yaml",
        {
            "name": "c",
            "nodes": [{"name": "a", "device": "host1"}, {"name": "b", "device": "host1"}],
            "links": [{"a": "a", "b": "b", "link": {**LINK, "bandwidth_mbps": 0}}],
        },
    )
    code, _, err = run_cli(capsys, "partition", "digits_cnn", "--cluster", path, "--host-estimate", "flops")
    assert_user_error(code, err, "links.0.link.bandwidth_mbps", "> 0")


def test_bandwidth_override_must_be_positive(capsys):
    code, _, err = run_cli(capsys, *BASE, "--bandwidth-mbps", "0")
    assert_user_error(code, err, "bandwidth")


def test_unknown_strategy(capsys):
    code, _, err = run_cli(capsys, *BASE, "--strategy", "magic")
    assert_user_error(code, err, "--strategy", "magic", "hidp")


def tiny_memory_cluster(tmp_path) -> str:
    write_yaml(
        tmp_path / "tiny.yaml",
        {
            "name": "tiny",
            "pus": [{"name": "cpu", "kind": "cpu", "cores": 2, "speed": 0.5, "p_active_w": 2.0}],
            "p_board_idle_w": 1.0,
            "memory_mb": 1,
        },
    )
    return write_yaml(
        tmp_path / "c.yaml",
        {"name": "c", "nodes": [{"name": n, "device": "tiny.yaml"} for n in ("a", "b")], "default_link": LINK},
    )


@pytest.mark.parametrize(
    "strategy",
    [
        "all-local",
        "pipeedge",
        "hidp",
    ],
)
def test_model_that_fits_no_node(capsys, tmp_path, strategy):
    code, _, err = run_cli(
        capsys,
        "partition",
        "resnet18",
        "--cluster",
        tiny_memory_cluster(tmp_path),
        "--host-estimate",
        "flops",
        "--strategy",
        strategy,
    )
    assert_user_error(code, err)
    assert any(k in err for k in ("memory", "MB", "no plan fits")), err


def test_time_budget_runs_hidp_anytime_and_says_how_far_it_got(capsys):
    obj = json_out(capsys, *BASE, "--time-budget", "30", "--json")
    search = obj["plans"][0]["search"]
    assert search["budget_s"] == 30.0 and search["complete"] is True  # edge3: the whole space in time
    assert "complete" in obj["plans"][0]["reason"]


def test_time_budget_is_for_hidp_only(capsys):
    code, _, err = run_cli(capsys, *BASE, "--strategy", "coedge", "--time-budget", "1")
    assert_user_error(code, err, "--time-budget", "coedge")
