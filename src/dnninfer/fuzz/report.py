"""The fuzz report section (no paper behind it): the goal is zero on every failure count."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dnninfer.bench.claims import Claim, lookup
from dnninfer.report.section import ReportSection, Table, build_section


def _zero(figure: str, key: str, note: Any) -> Claim:
    return Claim(figure, "", key, target=0, better="lower", note=note)


CLAIMS = (
    Claim("crashes (escaped exception, traceback, exit not 0/2, HTTP 5xx)", "", "crashes", target=0, better="lower",
          note=lambda r: f"{lookup(r, 'cases_total')} cases over {len(lookup(r, 'cases_tried') or {})} surfaces"),
    _zero("hangs (over the per-case limit)", "hangs", lambda r: f"per-case limit {lookup(r, 'limit_s')} s"),
    _zero("bad inputs accepted", "accepted_bad", "a bad case exited 0, got HTTP 200 or verified valid"),
    _zero("malformed error lines", "bad_errors", "rejected without exactly one line 'dnninfer: error: ...'"),
    Claim("valid inputs rejected", ours="rejected_valid", note="reported, not part of the goal (docs/fuzz.md)"),
)


def report_section(result: dict[str, Any], outdir: Path) -> ReportSection:
    rows = result["rows"]
    return build_section(
        "Fuzz campaign: every input surface", result, outdir, claims=CLAIMS,
        parts=[Table([r for r in rows if r.get("row") == "summary"], "Per surface"),
               Table([r for r in rows if r.get("row") == "failure"], "Failures")],
        intro="Deterministic for a given seed (timings aside); see docs/fuzz.md for the surfaces and labels.")
