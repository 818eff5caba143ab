"""Ledger errors: one type for anything a ledger, block or receipt rejects.

`LedgerError` is a `UserError`, so the CLI prints its one-line reason and exits 2 instead of
showing a traceback: a forged block or a corrupt file is a problem with the user's data, not a bug.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dnninfer.errors import UserError

if TYPE_CHECKING:
    from dnninfer.ledger.chain import Ledger


class LedgerError(UserError):
    """A receipt, block or ledger file failed validation; the message says which rule and where."""


class CorruptLedgerError(LedgerError):
    """A stored ledger has rows that fail validation (or cannot be read at all).

    `ledger` holds every block that did validate (the valid prefix is never thrown away; the file
    itself is left untouched), or None when nothing could be read; `problems` lists one line per
    rejected row.
    """

    def __init__(self, message: str, ledger: Ledger | None = None, problems: list[str] | None = None):
        super().__init__(message)
        self.ledger = ledger
        self.problems = list(problems or [])
