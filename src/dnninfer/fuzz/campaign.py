"""The campaign: build every surface's cases, run each under a time limit, tally, keep repros.

`run_campaign` is what ``dnninfer bench fuzz`` calls; `tally` is shared with the tests' negative
controls (fake surfaces that crash, accept bad input or hang), so the same code that reports the
real figures is the code proven able to report failures.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from dnninfer.fuzz.classify import FAILURES, OUTCOMES, Case, Verdict, crash_detail, run_case
from dnninfer.fuzz.drivers import normalise

__all__ = ["FULL_SIZES", "QUICK_SIZES", "SMOKE_SIZES", "SURFACES", "run_campaign", "run_surface", "summarise"]

SurfaceFn = Callable[[int, int, Path], Iterator[Case]]


def _surfaces() -> dict[str, SurfaceFn]:
    from dnninfer.fuzz import cliargs, configs, jpeg, ledger, models

    return {"yaml": configs.cases, "model": models.cases, "jpeg": jpeg.cases, "ledger": ledger.cases,
            "cli": cliargs.cases}


SURFACES = ("yaml", "model", "jpeg", "ledger", "cli")
#: Cases per surface. Quick fits in ~30 s on the 2-core box; full is >= 5000 cases in all.
QUICK_SIZES = {"yaml": 60, "model": 50, "jpeg": 48, "ledger": 40, "cli": 90}
FULL_SIZES = {"yaml": 1200, "model": 700, "jpeg": 1200, "ledger": 900, "cli": 1200}
#: ``--smoke`` (the test suite's run): the fewest cases that still give every surface bad and valid
#: inputs (yaml: its shipped files, 12, come first; jpeg: 12 valid bases per pipeline come first).
SMOKE_SIZES = {"yaml": 20, "model": 12, "jpeg": 36, "ledger": 12, "cli": 24}
#: Address-space headroom over the process's current size while cases run: an input that makes the
#: code allocate without bound fails with MemoryError (a crash with a repro) instead of taking the
#: shared box's memory. ``DNNINFER_FUZZ_MEM_GB`` overrides it.
MEMORY_HEADROOM_GB = 4.0
#: Repro rows kept per failure class (a class = surface, outcome, kind, and what happened).
EXAMPLES_PER_CLASS = 2


def _signature(v: Verdict) -> str:
    """What makes two failures the same bug: digits, hex and paths folded away."""
    what = re.sub(r"0x[0-9a-f]+|[0-9a-f]{12,}|\d+", "N", v.what)
    what = re.sub(r"'[^']*'", "'…'", what)[:160]
    return f"{v.case.surface}|{v.outcome}|{v.case.kind}|{what}"


@contextlib.contextmanager
def memory_cap(headroom_gb: float | None = None) -> Iterator[int | None]:
    """Lower the soft RLIMIT_AS to (current address space + headroom) for the block; restore after.

    Yields the cap in bytes, or None where the platform has no such limit.
    """
    try:
        import resource

        page = os.sysconf("SC_PAGE_SIZE")
        with open("/proc/self/statm", encoding="ascii") as fh:
            current = int(fh.read().split()[0]) * page
    except (ImportError, OSError, ValueError):
        yield None
        return
    gb = float(os.environ.get("DNNINFER_FUZZ_MEM_GB", headroom_gb if headroom_gb is not None else MEMORY_HEADROOM_GB))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = current + int(gb * 2**30)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if soft != resource.RLIM_INFINITY and soft <= cap:
        yield soft
        return
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield cap
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def run_surface(name: str, cases: Iterable[Case], *, limit_s: float, on_case: Callable[[Verdict], None] | None = None,
                into: list[Verdict] | None = None) -> list[Verdict]:
    """Run every case of one surface (appending to ``into`` as it goes, so a surface whose case
    generator breaks midway keeps what it ran); the generator is closed even on an interrupt."""
    verdicts = [] if into is None else into
    it = iter(cases)
    try:
        for case in it:
            v = run_case(case, limit_s)
            verdicts.append(v)
            if on_case:
                on_case(v)
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()
    return verdicts


def summarise(verdicts: list[Verdict]) -> dict[str, Any]:
    """Counts per outcome, overall and per surface, plus one repro row per failure class."""
    by_surface: dict[str, dict[str, Any]] = {}
    for v in verdicts:
        s = by_surface.setdefault(v.case.surface, {"cases": 0, **{o: 0 for o in OUTCOMES}, "wall_s": 0.0,
                                                   "labels": {"bad": 0, "valid": 0, "maybe": 0}})
        s["cases"] += 1
        s[v.outcome] += 1
        s["labels"][v.case.label] += 1
        s["wall_s"] += v.wall_s
    for s in by_surface.values():
        s["wall_s"] = round(s["wall_s"], 2)
        s["bad_errors"] = s.pop("bad_error")
        s["crashes"] = s.pop("crash")
        s["hangs"] = s.pop("hang")
        s["valid_mutants"] = s.pop("valid_mutant")
    classes: dict[str, dict[str, Any]] = {}
    for v in verdicts:
        if not v.failed:
            continue
        sig = _signature(v)
        row = classes.get(sig)
        if row is None:
            row = classes[sig] = {"failure": v.outcome, **v.case.repro(), "what": v.what, "code": v.code,
                                  "count": 0, "examples": []}
        row["count"] += 1
        if len(row["examples"]) < EXAMPLES_PER_CLASS:
            row["examples"].append({"input": v.case.describe, "preview": v.case.preview})
    total = {o: sum(s.get(k, 0) for s in by_surface.values())
             for o, k in (("crash", "crashes"), ("hang", "hangs"), ("accepted_bad", "accepted_bad"),
                          ("bad_error", "bad_errors"), ("rejected_valid", "rejected_valid"),
                          ("valid_mutant", "valid_mutants"), ("ok", "ok"))}
    failures = sorted(classes.values(), key=lambda r: (FAILURES.index(r["failure"]), r["surface"], -r["count"]))
    return {
        "cases_tried": {k: s["cases"] for k, s in by_surface.items()},
        "cases_total": len(verdicts),
        "crashes": total["crash"],
        "hangs": total["hang"],
        "accepted_bad": total["accepted_bad"],
        "valid_mutants": total["valid_mutant"],
        "bad_errors": total["bad_error"],
        "rejected_valid": total["rejected_valid"],
        "failure_classes": len(failures),
        "by_surface": by_surface,
        "failures": failures,
    }


def run_campaign(*, seed: int = 0, quick: bool = False, surfaces: Iterable[str] | None = None,
                 sizes: dict[str, int] | None = None, limit_s: float | None = None, progress: bool = True,
                 workdir: Path | None = None) -> dict[str, Any]:
    """Run the campaign; returns `summarise`'s figures plus ``limit_s`` and ``sizes``."""
    from dnninfer.bench.output import make_progress

    chosen = list(surfaces or SURFACES)
    unknown = [s for s in chosen if s not in SURFACES]
    if unknown:
        from dnninfer.errors import expected

        raise expected("fuzz surface", f"one or more of {', '.join(SURFACES)}", ",".join(unknown))
    sizes = {**(QUICK_SIZES if quick else FULL_SIZES), **(sizes or {})}
    limit = limit_s if limit_s is not None else (20.0 if quick else 30.0)
    fns = _surfaces()
    verdicts: list[Verdict] = []
    walls: dict[str, float] = {}
    setup_errors: list[dict[str, Any]] = []
    from rich.console import Console

    console = Console(file=sys.stderr, stderr=True)
    with contextlib.ExitStack() as stack:
        work = Path(workdir) if workdir else Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix="dnninfer-fuzz-")))
        bar = stack.enter_context(make_progress(progress and not quick, console=console))
        stack.enter_context(memory_cap())
        for name in chosen:
            task = bar.add_task(f"fuzz {name}", total=sizes[name])
            start = time.perf_counter()
            try:
                run_surface(name, fns[name](sizes[name], seed, work), limit_s=limit,
                            on_case=lambda v, task=task: bar.advance(task), into=verdicts)
            except Exception as e:  # the surface's own setup broke (e.g. mid-edit code): report, go on
                setup_errors.append({"row": "setup_error", "surface": name,
                                     "error": normalise(crash_detail(e), work)})
            walls[name] = round(time.perf_counter() - start, 2)
    out = summarise(verdicts)
    out["setup_errors"] = len(setup_errors)
    out["failures"] = setup_errors + out["failures"]
    for name, wall in walls.items():
        out["by_surface"].setdefault(name, {})["surface_wall_s"] = wall
    out["limit_s"] = limit
    out["sizes"] = {k: sizes[k] for k in chosen}
    return out
