"""Load generator bounds, and the `serve` / `loadtest` commands."""

from __future__ import annotations

import asyncio
import json

import pytest

from dnninfer.cli import main
from dnninfer.serving.images import jpeg_for
from dnninfer.serving.loadgen import closed_loop, open_loop, percentile
from dnninfer.serving.runner import ServerThread
from dnninfer.serving.server import ServeConfig, create_app

MODEL = "mobilenet_v2"


@pytest.fixture(scope="module")
def url():
    with ServerThread(create_app(ServeConfig(model=MODEL, broker="none", max_delay_ms=1))) as srv:
        yield f"{srv.url}/v1/models/{MODEL}/infer"


def test_closed_loop_stops_at_the_request_count(url):
    res = asyncio.run(closed_loop(url, [jpeg_for("small")], concurrency=3, requests=7, duration_s=60))
    assert len(res.records) == 7 and res.statuses() == {"200": 7}
    assert all(r.stages_ms.get("total", 0) > 0 for r in res.records)
    assert res.throughput_rps > 0


def test_closed_loop_stops_at_the_deadline(url):
    res = asyncio.run(closed_loop(url, [jpeg_for("small")], concurrency=2, requests=100_000, duration_s=0.3))
    assert 1 <= len(res.records) < 100_000
    assert res.statuses() == {"200": len(res.records)}


@pytest.mark.parametrize("poisson", [True, False])
def test_open_loop_sends_on_schedule_and_counts_from_the_schedule(url, poisson):
    res = asyncio.run(open_loop(url, [jpeg_for("small")], rate=40, requests=8, duration_s=60, poisson=poisson))
    assert len(res.records) == 8 and res.statuses() == {"200": 8}
    scheduled = [r.scheduled for r in res.records]
    assert scheduled == sorted(scheduled)
    assert all(r.sent >= r.scheduled - 1e-3 and r.latency_s >= r.done - r.sent - 1e-9 for r in res.records)


def test_percentile_interpolates():
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([5], 99) == 5


def test_loadtest_command_prints_one_json_object(url, capsys):
    code = main(["loadtest", url, "--image-size", "small", "--images", "1", "--requests", "5", "--concurrency", "2",
                 "--json"])
    out, _ = capsys.readouterr()
    assert code == 0
    obj = json.loads(out)
    assert obj["ok"] == 5 and obj["errors"] == 0 and obj["mode"] == "closed" and obj["concurrency"] == 2
    assert obj["latency_ms"]["p50"] > 0 and "decode" in obj["server_stage_median_ms"]


def test_loadtest_open_loop_command(url, capsys):
    code = main(["loadtest", url, "--image-size", "small", "--images", "1", "--rate", "30", "--requests", "4",
                 "--json"])
    obj = json.loads(capsys.readouterr()[0])
    assert code == 0 and obj["mode"] == "open" and obj["ok"] == 4 and obj["arrivals"] == "poisson"


@pytest.mark.parametrize("argv, words", [
    (["loadtest", "http://10.1.2.3:8000/v1/models/x/infer"], "not a loopback address"),
    (["loadtest", "http://127.0.0.1:8000/"], "inference endpoint"),
    (["loadtest", "http://127.0.0.1:9/v1/models/x/infer", "--requests", "1"], "cannot reach"),
    (["loadtest", "http://127.0.0.1:9/v1/models/x/infer", "--requests", "0"], "--requests"),
    (["serve", "no_such_model"], "model"),
    (["serve", "bert_encoder"], "image-classification"),
    (["serve", MODEL, "--broker", "redis"], "--redis-url"),
    (["serve", MODEL, "--max-batch", "0"], "max-batch"),
    (["serve", MODEL, "--broker", "kafka"], "broker"),
])
def test_user_mistakes_exit_2_with_one_line(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr()[1]
    assert err.startswith("dnninfer: error:") and words in err and "Traceback" not in err
