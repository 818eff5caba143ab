"""DPRA on a real model: executed splits equal the model, receipts and blocks land in a valid ledger
whose reputation tracks the controller's, and the CLI refuses bad ledger paths."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dnninfer.bdt.run import graph_workload, run
from dnninfer.cli import main
from dnninfer.ledger.store import open_ledger


def test_graph_workload_segments_cover_the_chain_in_order(graph_of):
    g = graph_of("resnet18")[2]
    secs = [float(i + 1) for i in range(len(g.chain()))]
    gw = graph_workload(g, secs, segments=6)
    assert gw.workload.L == 6
    flat = [b for a, z in gw.segment_blocks for b in range(a, z + 1)]
    assert flat == list(range(len(g.chain())))
    assert gw.workload.w.sum() == pytest.approx(sum(secs) * 2.0e9)
    # every split point gives a valid two-stage split of the graph
    for s in range(1, gw.workload.L):
        labels = set(gw.assignment(s).values())
        assert labels == {0, 1}


def test_executed_run_writes_a_valid_ledger_that_tracks_the_controller(tmp_path):
    path = tmp_path / "dpra.sqlite"
    out = run("digits_cnn", slots=12, ledger_path=path, host="flops", segments=4)
    led = out["ledger"]
    assert led["blocks"] == 12 and not led["rejected"]
    assert led["receipts"] == sum(out["split_histogram"][:-1])  # one receipt per offloading gateway-slot
    assert led["receipts"] > 0
    assert led["max_abs_err"] == 0.0  # the split model's output equals the whole model's
    assert led["reputation_gap_vs_controller"] < 1e-6
    reopened = open_ledger(path)
    assert reopened.height == 12
    assert reopened.reputation() == pytest.approx(led["reputation"])
    rho = np.array(list(reopened.replay().values()))
    assert rho == pytest.approx(np.array(list(led["reputation"].values())))


def test_cli_simulate_json_and_ledger_verify(tmp_path, capsys):
    path = tmp_path / "l.sqlite"
    code = main(["dpra", "simulate", "--model", "digits_cnn", "--slots", "5", "--run", "--ledger", str(path),
                 "--host-estimate", "flops", "--segments", "3", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    obj = json.loads(out)
    assert obj["runs"][0]["method"] == "dpra" and obj["runs"][0]["ledger"]["blocks"] == 5
    assert main(["ledger", "verify", str(path)]) == 0
    capsys.readouterr()
    # an existing ledger is never overwritten, and --ledger without --run is refused
    assert main(["dpra", "simulate", "--model", "digits_cnn", "--slots", "2", "--run", "--ledger", str(path),
                 "--host-estimate", "flops"]) == 2
    assert main(["dpra", "simulate", "--model", "digits_cnn", "--slots", "2", "--ledger", str(tmp_path / "x"),
                 "--host-estimate", "flops"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("dnninfer: error:") for e in err)
