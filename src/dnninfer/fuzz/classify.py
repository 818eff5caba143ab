"""Cases, outcomes and the classifier: what counts as a crash, a hang, or bad input accepted.

Every fuzz case carries a `label` decided when it is built, from how it was made, never from
what the program did: ``bad`` (built to break a stated rule: bad magic, truncation, out-of-range or
wrong-typed value, unknown key, broken signature), ``valid`` (an unmodified known-good input) or
``maybe`` (a mutation that may still be valid, e.g. a flipped byte inside JPEG entropy data).
The program's answer is normalised into a `Result` (accepted / rejected / crash) by the surface's
driver, and `classify` combines the two:

=================  ==============================================================================
``crash``          an exception escaped, exit status not in {0, 2}, a traceback on stderr, an HTTP 5xx
``hang``           the case ran past its time limit
``accepted_bad``   a ``bad`` case that was accepted (exit 0, HTTP 200, ledger verified valid)
``bad_error``      rejected, but not with exactly one line ``dnninfer: error: ...`` (or a JSON
                   ``{"error": one line}`` answer with status 400/413/415 over HTTP)
``rejected_valid`` a ``valid`` case that was rejected
``valid_mutant``   a ``maybe`` case that was accepted (counted apart; not a failure)
``ok``             rejected bad input, accepted valid input
=================  ==============================================================================
"""

from __future__ import annotations

import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "FAILURES",
    "OUTCOMES",
    "Case",
    "CaseTimeout",
    "Result",
    "Verdict",
    "call_with_limit",
    "classify",
    "crash_detail",
    "one_line_error",
    "run_case",
]

Label = Literal["bad", "valid", "maybe"]
OUTCOMES = ("crash", "hang", "accepted_bad", "bad_error", "rejected_valid", "valid_mutant", "ok")
#: Outcomes that are failures (each gets a repro row).
FAILURES = ("crash", "hang", "accepted_bad", "bad_error", "rejected_valid")
ERROR_PREFIX = "dnninfer: error:"


class CaseTimeout(BaseException):
    """Raised into a case that ran past its limit. A BaseException, so ``except Exception`` in the
    code under test cannot swallow it."""


@dataclass(frozen=True)
class Result:
    """What the program under test did, normalised by a surface's driver.

    ``code`` is the exit status or HTTP status; ``message`` the error output (stderr or the error
    text of a JSON answer); ``error_ok`` whether a rejection had the house format; ``detail`` the
    exception and where it was raised, for crashes.
    """

    status: Literal["accepted", "rejected", "crash"]
    code: int | str
    message: str = ""
    error_ok: bool = True
    detail: str = ""


@dataclass
class Case:
    """One fuzz input: which surface, how it was made, its label, and how to run it."""

    surface: str
    kind: str
    label: Label
    describe: str
    run: Callable[[], Result]
    preview: str = ""

    def repro(self) -> dict[str, Any]:
        return {"surface": self.surface, "kind": self.kind, "label": self.label, "input": self.describe,
                "preview": self.preview}


@dataclass
class Verdict:
    """A case's outcome plus what happened, in one line."""

    case: Case
    outcome: str
    what: str
    code: int | str | None = None
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.outcome in FAILURES


def one_line_error(stderr: str) -> bool:
    """True when ``stderr`` is exactly one non-empty line starting ``dnninfer: error:``."""
    lines = stderr.strip("\n").split("\n")
    return len(lines) == 1 and lines[0].startswith(ERROR_PREFIX) and len(lines[0]) > len(ERROR_PREFIX) + 1


def crash_detail(exc: BaseException) -> str:
    """``Type: first line of message @ the innermost dnninfer frame``: enough to route a crash."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        fname = frame.filename.replace("\\", "/")
        if "/dnninfer/" in fname and "/dnninfer/fuzz/" not in fname:
            where = f"{fname.split('/dnninfer/', 1)[1]}:{frame.lineno} in {frame.name}"
    text = f"{type(exc).__name__}: {msg[:200]}"
    return f"{text} @ dnninfer/{where}" if where else text


def call_with_limit(fn: Callable[[], Any], limit_s: float) -> Any:
    """Run ``fn()``; raise `CaseTimeout` when it takes longer than ``limit_s``.

    In the main thread a SIGALRM timer interrupts the case itself (any previous timer, e.g.
    pytest-timeout's, is restored with its remaining time); elsewhere the case runs in a daemon
    thread that is abandoned on timeout.
    """
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        return _with_alarm(fn, limit_s)
    return _with_thread(fn, limit_s)


def _with_alarm(fn: Callable[[], Any], limit_s: float) -> Any:
    def on_alarm(signum: int, frame: Any) -> None:
        raise CaseTimeout(f"over the per-case limit of {limit_s:g} s")

    start = time.monotonic()
    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, limit_s)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay:
            left = old_delay - (time.monotonic() - start)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3), old_interval)


def _with_thread(fn: Callable[[], Any], limit_s: float) -> Any:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=target, name="dnninfer-fuzz-case", daemon=True)
    t.start()
    t.join(limit_s)
    if t.is_alive():
        raise CaseTimeout(f"over the per-case limit of {limit_s:g} s (case thread abandoned)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def classify(case: Case, result: Result) -> tuple[str, str]:
    """(outcome, what happened) for a case that finished."""
    if result.status == "crash":
        return "crash", f"crashed (status {result.code}): {result.detail or result.message}"
    if result.status == "rejected" and not result.error_ok:
        return "bad_error", f"rejected (status {result.code}) with a malformed error: {result.message[:300]!r}"
    if result.status == "accepted":
        if case.label == "bad":
            return "accepted_bad", f"accepted (status {result.code}) although built to be invalid"
        if case.label == "maybe":
            return "valid_mutant", f"accepted (status {result.code}); the mutation may be valid"
        return "ok", f"accepted (status {result.code})"
    if case.label == "valid":
        return "rejected_valid", f"valid input rejected (status {result.code}): {result.message[:300]}"
    return "ok", f"rejected (status {result.code}): {result.message[:200]}"


def run_case(case: Case, limit_s: float) -> Verdict:
    """Run one case under the time limit and classify it; never raises (except KeyboardInterrupt)."""
    start = time.perf_counter()
    try:
        result = call_with_limit(case.run, limit_s)
    except CaseTimeout as e:
        return Verdict(case, "hang", str(e), None, time.perf_counter() - start)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # escaped the surface's driver: a crash by definition
        return Verdict(case, "crash", f"exception escaped: {crash_detail(e)}", None, time.perf_counter() - start)
    wall = time.perf_counter() - start
    if not isinstance(result, Result):
        return Verdict(case, "crash", f"driver returned {type(result).__name__}, not a Result", None, wall)
    outcome, what = classify(case, result)
    return Verdict(case, outcome, what, result.code, wall)
