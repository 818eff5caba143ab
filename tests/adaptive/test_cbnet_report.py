"""The CBNet report section and headline, read from the smoke bench's JSON; the modelled BranchyNet
latency of the sweeps."""

from __future__ import annotations

import copy
import json
import re

import pytest

from conftest import quick_bench
from dnninfer.adaptive.report import CLAIMS, report_section
from dnninfer.adaptive.sweeps import modelled_b1_ms
from dnninfer.bench import registry
from dnninfer.bench.harness import Timing


@pytest.fixture(scope="module")
def result():
    code, out = quick_bench("cbnet")
    assert code == 0
    return json.loads(out)


def _figures(html: str) -> list[tuple[str, str]]:
    return re.findall(r'<img src="([^"]+)".*?<figcaption>([^<]*)', html, flags=re.S)


def test_each_caption_stays_with_its_plot_even_when_one_is_skipped(result, tmp_path):
    figs = _figures(report_section(result, tmp_path).html)
    assert [f for f, _ in figs] == ["cbnet_accuracy_latency.png", "cbnet_branchynet_sweep.png",
                                    "cbnet_hard_fraction.png", "cbnet_speedup_model.png"]
    no_hard = {**result, "hard_fraction": []}
    figs = dict(_figures(report_section(no_hard, tmp_path / "b").html))
    assert list(figs) == ["cbnet_accuracy_latency.png", "cbnet_branchynet_sweep.png", "cbnet_speedup_model.png"]
    assert "hard inputs" in figs["cbnet_speedup_model.png"]
    assert "threshold" in figs["cbnet_branchynet_sweep.png"]


def test_headline_is_the_measured_speedup_against_the_papers_4_8x(result):
    headline = registry.get_system("cbnet").headline
    assert headline is CLAIMS[0] and headline.basis == "measured" and headline.target == 4.8
    assert headline.value(result) == result["ours"]["speedup_vs_full"]["b1"]
    fast, slow, gone = (copy.deepcopy(result) for _ in range(3))
    fast["ours"]["speedup_vs_full"]["b1"] = 5.0
    slow["ours"]["speedup_vs_full"]["b1"] = 1.0
    del gone["ours"]["speedup_vs_full"]["b1"]
    assert [headline.status(r) for r in (fast, slow, gone)] == ["met", "short", "not measured"]


def test_modelled_latency_mixes_the_two_measured_paths():
    t1 = {"bnet_exit1_always": Timing.from_samples([1e-3] * 3), "bnet_exit1_never": Timing.from_samples([3e-3] * 3)}
    assert modelled_b1_ms(1.0, t1) == pytest.approx(1.0)
    assert modelled_b1_ms(0.0, t1) == pytest.approx(3.0)
    assert modelled_b1_ms(0.25, t1) == pytest.approx(2.5)


def test_the_emulated_pi_claim_reads_the_testbed_keys_or_says_not_measured():
    from dnninfer.bench.claims import claim_rows

    (claim,) = [c for c in CLAIMS if "emulated Raspberry Pi" in c.figure]
    ours = {"speedup_vs_branchynet_b1_testbed_by_backbone": {"balexnet": 1.37},
            "speedup_vs_full_b1_testbed_by_backbone": {"balexnet": 2.8},
            "testbed": {"target": "rpi4/cpu", "cluster": "edge3", "dilation": 2.3}}
    (row,) = claim_rows([claim], {"ours": ours})
    assert row["status"] == "met" and row["ours"] == "1.37x" and "2.80x" in row["note"]
    ours["speedup_vs_branchynet_b1_testbed_by_backbone"]["balexnet"] = 0.9  # slower than BranchyNet: short
    assert claim_rows([claim], {"ours": ours})[0]["status"] == "short"
    (row,) = claim_rows([claim], {"ours": {}})
    assert row["status"] == "not measured" and "--testbed-pu" in row["note"]
