"""The scoreboard: one line per system, at the top of the report, saying whether we meet the
paper's headline claim, and whether our figure was measured or predicted by our own model.

A reader should not have to open eight sections to learn which claims hold. Each system
declares its headline ``Claim`` when it registers its bench; the verdict is computed from the
bench's JSON by that claim, the same code that writes the system's own paper-vs-ours table.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from dnninfer.bench.claims import Claim
from dnninfer.bench.output import format_cell

__all__ = ["COLUMNS", "scoreboard_html", "scoreboard_rows"]

COLUMNS = ("system", "paper's headline", "paper", "ours", "status", "basis")


def scoreboard_rows(
    results: Mapping[str, Mapping[str, Any]], headlines: Mapping[str, Claim | None]
) -> list[dict[str, Any]]:
    """One row per system in ``headlines`` (every registered one), whether or not it ran."""
    rows = []
    for name, claim in headlines.items():
        result = results.get(name)
        row: dict[str, Any] = {"system": name, "paper's headline": "", "paper": "", "ours": "",
                               "status": "", "basis": ""}
        if claim is None:
            row.update(status="no headline declared")
        else:
            row.update({"paper's headline": claim.figure, "paper": claim.paper})
            if result is None:
                row.update(ours="not run", status="not measured")
            elif "error" in result:
                row.update(ours=str(result["error"])[:80], status="failed")
            else:
                r = claim.row(result)
                row.update(ours=r["ours"], status=r["status"], basis=r["basis"])
        rows.append(row)
    return rows


def scoreboard_html(rows: list[dict[str, Any]], ids: Mapping[str, str]) -> str:
    """The rows as a table; the status cell is coloured and each system links to its section."""
    if not rows:
        return '<p class="note">No systems are registered.</p>'
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = []
    for row in rows:
        cells = []
        for col in COLUMNS:
            text = html.escape(format_cell(row[col]))
            if col == "system" and row["system"] in ids:
                text = f'<a href="#{ids[row["system"]]}">{text}</a>'
            cls = f' class="verdict-{row["status"].replace(" ", "-")}"' if col == "status" else ""
            cells.append(f"<td{cls}>{text}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table class=\"scoreboard\"><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
