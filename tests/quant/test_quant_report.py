"""The signed-binary report section and headline, read from the smoke bench's JSON."""

from __future__ import annotations

import copy
import json
import re

import pytest

from conftest import quick_bench
from dnninfer.bench import registry
from dnninfer.quant.report import CLAIMS, report_section


@pytest.fixture(scope="module")
def result():
    code, out = quick_bench("signed-binary")
    assert code == 0
    return json.loads(out)


def test_section_shows_every_plot_with_its_caption(result, tmp_path):
    section = report_section(result, tmp_path)
    figs = re.findall(r'<img src="([^"]+)".*?<figcaption>([^<]*)', section.html, flags=re.S)
    assert [f for f, _ in figs] == ["signed_binary_pareto.png", "signed_binary_kernels.png",
                                    "signed_binary_density.png", "signed_binary_study.png"]
    assert "non-zero" in figs[0][1] and "kernel" in figs[1][1]
    assert "density" in figs[2][1] and "matched non-zeros" in figs[3][1]
    assert all((tmp_path / f).stat().st_size > 0 for f, _ in figs)


def test_headline_is_accuracy_at_matched_non_zeros(result):
    headline = registry.get_system("signed-binary").headline
    assert headline is CLAIMS[0]
    paired = result["ours"]["paired_signed_minus_binary"]
    assert headline.value(result) == pytest.approx(100 * paired["mean_diff"])
    better, worse, unmatched = (copy.deepcopy(result) for _ in range(3))
    better["ours"]["paired_signed_minus_binary"]["mean_diff"] = 0.02
    worse["ours"]["paired_signed_minus_binary"]["mean_diff"] = -0.02
    unmatched["ours"]["paired_signed_minus_binary"] = None
    assert [headline.status(r) for r in (better, worse, unmatched)] == ["met", "short", "not measured"]
    assert headline.row(unmatched)["note"] == "no width pair within 1.5x non-zeros"
