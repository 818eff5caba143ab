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


class Problem(str):
    """One line of a stored ledger's `problems`: still a plain string, plus where it points.

    `height` is the height of the block blamed (for a head-record mismatch: the height the head
    record names), `row` the stored hash column of the row; either is None when unknown (an
    unreadable row, a damaged database). `ledger verify --json` reports `height` as `block`.
    """

    height: int | None
    row: str | None

    def __new__(cls, text: str, *, height: int | None = None, row: str | None = None) -> Problem:
        self = super().__new__(cls, text)
        self.height = height
        self.row = row
        return self


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
