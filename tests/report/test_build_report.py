"""build_report keeps going when a bench fails, and shows the failure."""

import json
import subprocess
import sys

import pytest

from dnninfer.bench import registry
from dnninfer.bench.registry import register_system
from dnninfer.errors import UserError
from dnninfer.report import ReportSection, build_report


@pytest.fixture
def dummies(monkeypatch):
    monkeypatch.setattr(registry, "SYSTEMS", {})
    monkeypatch.setattr(registry, "LOAD_ERRORS", {})
    monkeypatch.setattr(registry, "load_all", lambda **kw: [])

    @register_system("dummy-fail", description="always raises")
    def fail(args):
        raise RuntimeError("deliberate failure 1234")

    @register_system("dummy-ok", description="works")
    def ok(args):
        return {"paper": {"speedup": 2.0}, "ours": {"speedup": 1.9}, "rows": [{"case": "a", "seed": args.seed}]}

    return registry.SYSTEMS


def test_failing_bench_does_not_lose_the_others(tmp_path, dummies):
    index = build_report(tmp_path, quick=True, seed=3, core=lambda outdir, quick: [])
    page = index.read_text()
    assert "deliberate failure 1234" in page
    results = json.loads((tmp_path / "results.json").read_text())
    assert "deliberate failure 1234" in results["dummy-fail"]["error"]
    assert results["dummy-ok"]["rows"] == [{"case": "a", "seed": 3}]
    assert "dummy-ok" in page and "dummy-ok_paper_vs_ours.png" in page


def test_core_sections_come_first_and_a_failing_core_is_shown(tmp_path, dummies):
    core = lambda outdir, quick: [ReportSection("Zoo overview", f"<p>quick={quick}</p>")]  # noqa: E731
    page = build_report(tmp_path, quick=True, systems=["dummy-ok"], core=core).read_text()
    assert page.index("Zoo overview") < page.index("dummy-ok_paper_vs_ours.png")

    def broken(outdir, quick):
        raise ValueError("core went wrong")

    page = build_report(tmp_path / "b", quick=True, systems=["dummy-ok"], core=broken).read_text()
    assert "core went wrong" in page and "dummy-ok" in page


def test_unknown_system_is_a_user_error_before_anything_runs(tmp_path, dummies):
    with pytest.raises(UserError, match="dummy-ok"):
        build_report(tmp_path, quick=True, systems=["nope"], core=lambda o, q: [])
    assert not (tmp_path / "index.html").exists()


def test_failing_section_renderer_keeps_the_result(tmp_path, dummies):
    def bad_section(result, outdir):
        raise KeyError("section bug 42")

    @register_system("dummy-badsection", description="d", report_section=bad_section)
    def bench(args):
        return {"paper": {}, "ours": {"x": 1}, "rows": []}

    page = build_report(tmp_path, quick=True, systems=["dummy-badsection"], core=lambda o, q: []).read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["dummy-badsection"]["ours"] == {"x": 1}
    assert "section bug 42" in results["dummy-badsection"]["report_error"] and "section bug 42" in page


def test_areas_that_fail_to_import_are_reported(tmp_path, dummies):
    registry.LOAD_ERRORS["dnninfer.fake.bench"] = "Traceback ...\nImportError: no module named zzz"
    page = build_report(tmp_path, quick=True, core=lambda o, q: []).read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    assert "no module named zzz" in results["dnninfer.fake.bench"]["traceback"]
    assert "dnninfer.fake.bench" in page and "dummy-ok" in results


@pytest.mark.parametrize("module", ["dnninfer.report", "dnninfer.bench", "dnninfer.bench.registry"])
def test_bench_and_report_import_in_any_order(module):
    """bench.registry imports report.section and report.html imports bench.output: no cycle."""
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
