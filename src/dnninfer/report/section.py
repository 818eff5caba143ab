"""The unit a report is built from, and the one way a system assembles its section.

A section is: a short intro, the paper-vs-ours table (from the system's ``Claim`` lines), then
tables and figures in the order the system lists them. ``build_section`` does the assembly and
the escaping, so an area's bench says only what to show.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnninfer.bench.claims import Claim, claim_rows
from dnninfer.bench.figures import Figures

__all__ = ["CLAIM_COLUMNS", "ReportSection", "Table", "build_section"]

CLAIM_COLUMNS = ("figure", "paper", "ours", "status", "basis", "note")


@dataclass
class ReportSection:
    """One report section. ``html`` is a trusted fragment (escape user data with
    ``report.html.table_html``); ``images`` are files it references, copied next to
    ``index.html`` when they live elsewhere. ``system`` names the bench it belongs to (filled in
    by ``build_report``) so the summary can link to it."""

    title: str
    html: str
    images: list[Path] = field(default_factory=list)
    system: str | None = None


@dataclass(frozen=True)
class Table:
    """Records shown as an escaped table under an optional heading."""

    rows: Sequence[Mapping[str, Any]]
    heading: str = ""
    columns: Sequence[str] | None = None


def build_section(
    title: str,
    result: Mapping[str, Any],
    outdir: Path,
    *,
    intro: str = "",
    claims: Sequence[Claim] = (),
    parts: Sequence[str | Table | Figures] = (),
    figures: Figures | None = None,
) -> ReportSection:
    """Intro (trusted HTML), the paper-vs-ours table of ``claims``, then ``parts`` in order: a
    string is trusted HTML, a ``Table`` an escaped table, a ``Figures`` its images with their
    captions. ``figures`` not placed among ``parts`` are shown last."""
    from dnninfer.report.html import figure_html, table_html

    html: list[str] = [f"<p>{intro}</p>"] if intro else []
    if claims:
        html.append(table_html(claim_rows(claims, result), list(CLAIM_COLUMNS)))
    placed = False
    for part in parts:
        if isinstance(part, Table):
            if part.heading:
                html.append(f"<h3>{_escape(part.heading)}</h3>")
            html.append(table_html(part.rows, part.columns))
        elif isinstance(part, Figures):
            html += [figure_html(f.path, f.caption, base=outdir) for f in part]
            placed = placed or part is figures
        else:
            html.append(part)
    if figures is not None and not placed:
        html += [figure_html(f.path, f.caption, base=outdir) for f in figures]
    images = [f.path for p in (*parts, figures) if isinstance(p, Figures) for f in p]
    return ReportSection(title=title, html="\n".join(html), images=list(dict.fromkeys(images)))


def _escape(text: str) -> str:
    from html import escape

    return escape(text)
