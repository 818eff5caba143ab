"""The environment a timing was taken in, and the thread pinning every timing uses.

A number without its machine, versions, thread count and load average cannot be compared with
anything, so every bench result and every cached latency profile carries this record. It sits at
the bottom of the package (it imports nothing from dnninfer) so the cost model, the runtime and
the benches share one copy. Nothing here may fail a bench: each probe falls back to ``None``.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["capture_env", "cpu_model", "git_commit", "pinned_threads"]

_PACKAGE_DIR = Path(__file__).resolve().parent


def cpu_model() -> str | None:
    """CPU model name from /proc/cpuinfo (Linux), else whatever ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def _git(*argv: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", *argv],
            cwd=_PACKAGE_DIR,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_commit() -> str | None:
    """HEAD commit of the checkout the package runs from, or ``None`` outside git."""
    return _git("rev-parse", "HEAD") or None


def _git_dirty() -> bool | None:
    status = _git("status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _affinity() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _torch_info() -> dict[str, Any]:
    try:
        import torch
    except Exception:  # a broken torch must not break the record of it
        return {"torch": None, "torch_threads": None, "torch_interop_threads": None}
    return {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
    }


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:
        return None


def capture_env() -> dict[str, Any]:
    """Versions, CPU, threads, load average, time and commit, as plain JSON data."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "executable": sys.executable,
        "numpy": _version("numpy"),
    }
    env.update(_torch_info())
    env.update(
        {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "cpu_affinity": _affinity(),
            "loadavg": _loadavg(),
            "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "git_commit": git_commit(),
            "git_dirty": _git_dirty(),
        }
    )
    return env


@contextmanager
def pinned_threads(n: int) -> Iterator[int]:
    """Run a block with ``torch.set_num_threads(n)`` and restore the previous count after.

    Thread count changes latency more than most optimisations do, so every timing pins it.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        from dnninfer.errors import expected

        raise expected("threads", "an integer >= 1", n)
    import torch  # lazy: importing this module should not cost a torch import

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(previous)
