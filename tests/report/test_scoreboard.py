"""The report's scoreboard: every registered system has a line, and its verdict comes from its
headline claim applied to its bench JSON."""

from __future__ import annotations

from dnninfer.bench import SYSTEMS, Claim, load_all
from dnninfer.report import ReportSection, write_report
from dnninfer.report.scoreboard import scoreboard_rows

CLAIM = Claim("latency reduction", "38%", "reduction", target=0.38, basis="predicted", fmt=".1%")


def test_every_registered_system_declares_a_headline():
    load_all(strict=True)
    assert SYSTEMS, "no bench registered"
    missing = sorted(name for name, system in SYSTEMS.items() if system.headline is None)
    assert not missing, f"systems without a headline Claim for the scoreboard: {missing}"


def test_every_registered_system_has_a_row_even_when_it_did_not_run():
    load_all(strict=True)
    headlines = {name: s.headline for name, s in SYSTEMS.items()}
    rows = scoreboard_rows({}, headlines)
    assert [r["system"] for r in rows] == list(headlines)
    assert {r["status"] for r in rows if headlines[r["system"]] is not None} == {"not measured"}


def test_verdicts_come_from_the_result():
    headlines = {"a": CLAIM, "b": CLAIM, "c": CLAIM, "d": None}
    results = {"a": {"ours": {"reduction": 0.40}}, "b": {"ours": {"reduction": 0.30}},
               "c": {"error": "ValueError: boom"}}
    rows = {r["system"]: r for r in scoreboard_rows(results, headlines)}
    assert (rows["a"]["status"], rows["a"]["ours"], rows["a"]["basis"]) == ("met", "40.0%", "predicted")
    assert rows["b"]["status"] == "short"  # negative control: below the paper's figure is not "met"
    assert rows["c"]["status"] == "failed" and "boom" in rows["c"]["ours"]
    assert rows["d"]["status"] == "no headline declared"


def test_scoreboard_opens_the_page_with_a_row_per_system(tmp_path):
    results = {"a": {"system": "a", "quick": True, "ours": {"reduction": 0.4}},
               "b": {"system": "b", "quick": True, "ours": {"reduction": 0.1}}}
    rows = scoreboard_rows(results, {"a": CLAIM, "b": CLAIM})
    sections = [ReportSection("A section", "<p>a</p>", system="a"), ReportSection("B section", "<p>b</p>", system="b")]
    page = write_report(tmp_path, results, sections, [], rows).read_text()
    main = page[page.index("<main>"):]
    assert main.index('id="scoreboard"') < main.index('id="summary"') < main.index("A section")
    board = main[main.index('id="scoreboard"'):main.index('id="summary"')]
    assert board.count("<tr>") == 3  # header + one per system
    assert 'class="verdict-met"' in board and 'class="verdict-short"' in board
    assert 'href="#a-section"' in board
