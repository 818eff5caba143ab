"""Per-field validation of the ledger's frozen records, declared once per record as a table."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

FieldCheck = Callable[[Any, str], Any]
"""``check(value, what)``: raise `LedgerError` naming `what` unless `value` is valid (canonical's check_*)."""


def check_fields(record: Any, what: str, checks: Mapping[str, FieldCheck]) -> None:
    """Run each field's check in table order, every message prefixed ``{what}: field '{name}'``."""
    for name, check in checks.items():
        check(getattr(record, name), f"{what}: field {name!r}")
