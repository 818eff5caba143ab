"""`dnninfer bench dpra` lives in bdt/ and is found like every other area's bench (no import of
another area registers it), and its report's paper-vs-ours lines give verdicts that follow the
figures (each checked against a result that must fail)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from conftest import quick_bench
from dnninfer.bdt.report import CLAIMS, plots, report_section
from dnninfer.bench import registry


def _registered_after(module: str) -> bool:
    code = (f"import importlib; from dnninfer.bench import registry; importlib.import_module({module!r}); "
            "print('dpra' in registry.SYSTEMS)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return out.strip() == "True"


def test_dpra_is_discovered_from_its_own_area_only():
    assert "dnninfer.bdt.bench" in registry._bench_modules("dnninfer")
    assert _registered_after("dnninfer.bdt.bench")  # control: the probe can see a registration
    assert not _registered_after("dnninfer.partition.bench")  # no side-effect registration any more
    registry.load_all()
    system = registry.get_system("dpra")
    assert system.module == "dnninfer.bdt.bench" and system.headline is CLAIMS[0]
    assert system.headline.basis == "predicted"  # simulated slot latencies, not timed execution


@pytest.fixture(scope="module")
def smoke():
    code, out = quick_bench("dpra")
    assert code == 0
    return json.loads(out)


def _status(result, figure_start):
    claim = next(c for c in CLAIMS if c.figure.startswith(figure_start))
    return claim.status(result)


def test_claims_are_met_on_the_smoke_run(smoke):
    assert smoke["ours"]["executed_run"]["max_abs_err"] == 0.0
    rows = {c.figure: c.row(smoke) for c in CLAIMS}
    assert {r["status"] for r in rows.values()} <= {"met", "no target"}, rows
    assert all(r["basis"] == "predicted" for f, r in rows.items() if "latency" in f or "fastest" in f)
    assert all(r["basis"] == "measured" for f, r in rows.items() if "ledger" in f or "executed" in f)


def test_claims_fail_when_the_figures_do(smoke):
    bad = copy.deepcopy(smoke)
    ours = bad["ours"]
    ours["dpra_is_fastest_that_meets_constraint"] = False
    ours["tamper_detection_rate"] = 0.995
    ours["executed_run"]["max_abs_err"] = float("nan")
    ours["executed_run"]["ledger_reopened_valid"] = False
    assert _status(bad, "DPRA is the fastest") == "short"
    assert _status(bad, "tampered ledgers") == "short"
    assert _status(bad, "executed splits") == "not measured"  # NaN never passes for equality
    ours["executed_run"]["max_abs_err"] = 1e-3
    assert _status(bad, "executed splits") == "short"
    assert _status(bad, "mined ledger reopens") == "short"
    del ours["reputation_constraint_met"]
    assert _status(bad, "long-term reputation") == "not measured"


def test_report_section_has_every_figure_with_its_caption(smoke, tmp_path):
    figs = plots(smoke, tmp_path)
    assert [f.path.name for f in figs] == ["dpra_latency.png", "dpra_queues.png", "dpra_v_tradeoff.png"]
    assert all(f.path.stat().st_size > 1000 for f in figs)
    section = report_section(smoke, tmp_path)
    assert [p.name for p in section.images] == [f.path.name for f in figs]
    for f in figs:
        assert f.caption in section.html
    assert section.html.count("<tr>") >= len(CLAIMS) + len(smoke["rows"])
