"""Drive the CLI in-process and read its answer as a `Result`.

In-process because a subprocess pays the torch import (seconds) per case; ``cli.main(argv)`` with
stdout/stderr captured is the same code path a user's shell runs, minus the interpreter start.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path

from dnninfer.fuzz.classify import CaseTimeout, Result, crash_detail, one_line_error

__all__ = ["cli_result", "normalise", "run_cli"]


def normalise(text: str, work: Path | None) -> str:
    """Replace the campaign's temp folder with ``<tmp>`` so repro rows are reproducible."""
    if work is None:
        return text
    for form in {str(work), str(work.resolve())}:
        text = text.replace(form, "<tmp>")
    return text


def run_cli(argv: Sequence[str], work: Path | None = None) -> Result:
    """``dnninfer.cli.main(argv)`` in this process, classified by the CLI error contract.

    Crash: an exception (SystemExit with a status other than 2 included) escaped ``main``, the
    exit status is not 0 or 2, or stderr holds a traceback. A SystemExit(2) from a bare argparse
    parser counts as a rejection whose error format is wrong (usage text, not one line).
    """
    import torch

    from dnninfer.cli import main

    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    escaped = ""
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code: int | str = main(list(argv))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                escaped = f"SystemExit({e.code!r}) escaped main()"
    except CaseTimeout:
        raise
    except KeyboardInterrupt:
        raise
    except BaseException as e:
        return Result("crash", "exception", normalise(err.getvalue()[-500:], work),
                      detail=normalise(f"exception escaped main(): {crash_detail(e)}", work))
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    return cli_result(code, normalise(err.getvalue(), work), escaped)


def cli_result(code: int | str, stderr: str, escaped: str = "") -> Result:
    """Classify an exit status and stderr by the CLI contract (see `run_cli`)."""
    if "Traceback (most recent call last)" in stderr:
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        return Result("crash", code, stderr[-500:], detail=f"traceback on stderr: {tail[:200]}")
    if code not in (0, 2) or (escaped and code != 2):
        what = escaped or f"exit status {code}"
        return Result("crash", code, stderr[-500:], detail=what)
    if code == 0:
        return Result("accepted", 0, stderr[-300:])
    ok = one_line_error(stderr) and not escaped
    message = stderr.strip()
    if escaped:
        message = f"{escaped}; stderr: {message}"
    return Result("rejected", 2, message[:500], error_ok=ok)
