"""The unit a report is built from: a titled HTML fragment plus the images it references."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ReportSection"]


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
