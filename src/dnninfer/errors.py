"""User-facing errors.

A `UserError` is a mistake the user can fix (unknown model, bad YAML, missing file, unreachable
node). `cli.main` prints it as one line, ``dnninfer: error: <message>``, and exits 2. Any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """A problem with the user's input, reported without a traceback."""


def expected(thing: str, what: str, got: object, fix: str | None = None) -> UserError:
    """Build the house-style message: ``<thing>: expected <what>, got <got>[; <fix>]``."""
    msg = f"{thing}: expected {what}, got {got!r}"
    if fix:
        msg += f"; {fix}"
    return UserError(msg)
