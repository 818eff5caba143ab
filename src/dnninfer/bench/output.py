"""Where bench results go: rich tables and progress on stderr, one JSON object on stdout.

Keeping humans on stderr and machines on stdout lets ``dnninfer bench x --json | jq`` work while
progress bars still show.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePath
from typing import Any, TextIO

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

__all__ = [
    "column_names",
    "emit_json",
    "err_console",
    "format_cell",
    "make_progress",
    "print_table",
    "to_jsonable",
]

#: Console for everything human-facing. rich resolves ``sys.stderr`` at write time, so pytest's
#: capture and redirections still work.
err_console = Console(stderr=True)


def to_jsonable(obj: Any, _path: str = "$") -> Any:
    """Plain JSON data from bench output: numpy scalars/arrays, Paths, dataclasses, enums, dates.

    Non-finite floats become ``None`` (JSON has no NaN). An object we cannot encode raises a
    ``TypeError`` naming where it sits, instead of being silently stringified.
    """
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int | np.integer) and not isinstance(obj, np.bool_):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, float | np.floating):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, f"{_path}.{k}") for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        return to_jsonable(fields, _path)
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value, _path)
    if isinstance(obj, _dt.datetime | _dt.date):
        return obj.isoformat()
    is_array = isinstance(obj, np.ndarray) or type(obj).__module__.startswith("torch")
    if is_array and hasattr(obj, "tolist"):
        return to_jsonable(obj.tolist(), _path)
    if isinstance(obj, list | tuple | set | frozenset | range):
        items = sorted(obj, key=repr) if isinstance(obj, set | frozenset) else obj
        return [to_jsonable(v, f"{_path}[{i}]") for i, v in enumerate(items)]
    raise TypeError(f"{_path}: cannot encode {type(obj).__qualname__} as JSON")


def emit_json(obj: Any, *, file: TextIO | None = None) -> None:
    """Print exactly one JSON object on one line of stdout (the ``--json`` contract)."""
    data = to_jsonable(obj)
    if not isinstance(data, dict):
        raise TypeError(f"emit_json expects a JSON object (mapping), got {type(obj).__qualname__}")
    out = file if file is not None else sys.stdout
    out.write(json.dumps(data, allow_nan=False, separators=(",", ":")) + "\n")
    out.flush()


def column_names(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Union of row keys in first-seen order, so sparse rows still line up."""
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(str(key), None)
    return list(seen)


def format_cell(value: Any) -> str:
    """One short, human string per value: 4 significant digits, '—' for missing."""
    if value is None:
        return "—"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        return "—" if math.isnan(value) else f"{float(value):.4g}"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(_rounded(to_jsonable(value)), allow_nan=False, separators=(",", ":"))
    return str(value)


def _rounded(value: Any) -> Any:
    """Floats inside nested cells cut to 4 significant digits, like top-level ones."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def print_table(
    title: str,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    console: Console | None = None,
) -> None:
    """Render rows as a rich table on stderr; numbers right-aligned."""
    cols = list(columns) if columns is not None else column_names(rows)
    table = Table(title=title, title_justify="left", header_style="bold")
    for col in cols:
        numeric = any(_is_number(row.get(col)) for row in rows)
        table.add_column(col, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(format_cell(row.get(col)) for col in cols))
    (console or err_console).print(table)


def make_progress(enabled: bool = True, *, console: Console | None = None) -> Progress:
    """A rich progress bar on stderr, disabled when asked or when stderr is not a terminal.

    Disabled bars keep the same API, so callers never branch on it.
    """
    con = console or err_console
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=con,
        transient=True,
        disable=not (enabled and con.is_terminal),
    )
