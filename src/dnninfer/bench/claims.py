"""Paper-vs-ours lines, read from a bench's JSON: the figure, the paper's value, ours, whether we
meet it, and whether ours was measured or predicted by a model.

Every system's report opens with such a table and the report's scoreboard shows each system's
headline line; both are built here from the same declaration, so the text a reader sees and the
verdict (met / short / not measured) cannot disagree. ``basis`` matters because a figure our own
cost model predicts says nothing about execution: the scoreboard says which one it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Claim", "claim_rows", "lookup"]

Status = Literal["met", "short", "not measured", "no target"]


def lookup(result: Mapping[str, Any], path: str) -> Any:
    """``result["ours"]`` followed along a dotted ``path`` ("a.b.c"); ``None`` where it stops."""
    value: Any = result.get("ours") or {}
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


@dataclass(frozen=True)
class Claim:
    """One line of the paper-vs-ours table.

    ``ours`` is a dotted key into ``result["ours"]`` or a function of the whole result.
    ``target`` is the bar to meet (a number compared with ``better``, or a bool that must
    match); without one the line informs but gives no verdict. ``tolerance`` is relative slack
    (0.05: within 5% of the paper's figure counts as met). ``fmt`` is a format spec for a number
    (".1%", ".2f", "x": "{:.2f}x").
    """

    figure: str
    paper: str = ""
    ours: str | Callable[[Mapping[str, Any]], Any] = ""
    target: float | bool | None = None
    better: Literal["higher", "lower"] = "higher"
    tolerance: float = 0.0
    basis: Literal["measured", "predicted"] = "measured"
    fmt: str = ""
    note: str | Callable[[Mapping[str, Any]], str] = ""

    def value(self, result: Mapping[str, Any]) -> Any:
        if callable(self.ours):
            try:
                return self.ours(result)
            except (KeyError, TypeError, IndexError, ValueError, ZeroDivisionError):
                return None
        return lookup(result, self.ours) if self.ours else None

    def status(self, result: Mapping[str, Any]) -> Status:
        """met / short against ``target``; "not measured" when the result has no value."""
        value = self.value(result)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "not measured"
        if self.target is None:
            return "no target"
        if isinstance(self.target, bool):
            return "met" if value is self.target or value == self.target else "short"
        if not isinstance(value, int | float) or isinstance(value, bool):
            return "short"
        slack = abs(self.target) * self.tolerance
        ok = value >= self.target - slack if self.better == "higher" else value <= self.target + slack
        return "met" if ok else "short"

    def text(self, result: Mapping[str, Any]) -> str:
        """Our figure as the table shows it."""
        value = self.value(result)
        if value is None:
            return "not measured"
        if isinstance(value, bool) or not isinstance(value, int | float) or not self.fmt:
            return str(value)
        if self.fmt == "x":
            return f"{value:.2f}x"
        return format(value, self.fmt)

    def row(self, result: Mapping[str, Any]) -> dict[str, Any]:
        note = self.note(result) if callable(self.note) else self.note
        status = self.status(result)
        return {"figure": self.figure, "paper": self.paper, "ours": self.text(result), "status": status,
                "basis": "" if status == "not measured" else self.basis, "note": note}


def claim_rows(claims: Sequence[Claim], result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The paper-vs-ours table of ``result``: one row per claim."""
    return [c.row(result) for c in claims]
