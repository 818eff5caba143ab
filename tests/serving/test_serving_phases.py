"""The serving study's stage shares (what is not the DNN, HTTP included) and its headline line."""

from __future__ import annotations

import pytest

from dnninfer.serving.loadgen import LoadResult, RequestRecord
from dnninfer.serving.phases import stage_shares
from dnninfer.serving.report import CLAIMS


def _result(latency_ms: float, stages_ms: dict[str, float], status: int = 200, n: int = 3) -> LoadResult:
    recs = [RequestRecord(scheduled=0.0, sent=0.0, done=latency_ms / 1e3, status=status, stages_ms=dict(stages_ms))
            for _ in range(n)]
    return LoadResult("closed", "http://x", recs, 0.0, 1.0)


def test_stage_shares_charge_http_and_everything_but_the_dnn():
    # server: 2 ms decode + 6 ms infer = 8 ms total; client saw 10 ms, so 2 ms are HTTP
    got = stage_shares(_result(10.0, {"decode": 2.0, "infer": 6.0, "total": 8.0}))
    assert got["stage_ms"]["http"] == pytest.approx(2.0)
    assert got["stage_share"]["infer"] == pytest.approx(0.6)
    assert got["preprocess_share"] == pytest.approx(0.4)
    assert sum(got["stage_share"].values()) == pytest.approx(1.0)
    assert got["latency_p50_ms"] == pytest.approx(10.0) and got["server_total_p50_ms"] == pytest.approx(8.0)


def test_stage_shares_negative_controls():
    # no stage header: the whole request is outside the DNN
    assert stage_shares(_result(10.0, {}))["preprocess_share"] == pytest.approx(1.0)
    # failed requests are not timed: a 503 with a fast stage header must not move the shares
    mixed = _result(10.0, {"decode": 2.0, "infer": 6.0, "total": 8.0})
    mixed.records += _result(1.0, {"infer": 0.1, "total": 0.1}, status=503).records
    assert stage_shares(mixed)["preprocess_share"] == pytest.approx(0.4)


def test_headline_is_not_measured_without_the_medium_image():
    headline = CLAIMS[0]
    assert headline.row({"ours": {"preprocess_share": {"small": 0.3}}})["status"] == "not measured"
    row = headline.row({"ours": {"preprocess_share": {"small": 0.3, "medium": 0.497}}})
    assert row["ours"] == "49.7%" and row["basis"] == "measured"
