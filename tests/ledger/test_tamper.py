"""Every altered block is rejected: >= 1000 random tamperings of a mined 10-block chain."""

from __future__ import annotations

from dnninfer.ledger.tamper import tamper_report, tamper_trials


def test_tamper_detection_rate_is_one():
    rejected, total = tamper_trials(1000, seed=0)
    assert total == 1000
    assert rejected / total == 1.0


def test_every_kind_of_tampering_is_exercised_and_caught():
    r = tamper_report(400, seed=3, n_blocks=6, expected_hashes=2**14)
    assert r["rate"] == 1.0
    assert all(k["total"] > 0 and k["rejected"] == k["total"] for k in r["per_kind"].values()), r["per_kind"]
    reasons = " | ".join(r["example_reasons"].values())
    assert "block" in reasons
