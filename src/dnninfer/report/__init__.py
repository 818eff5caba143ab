"""The report: run every registered bench and write one HTML page with their sections.

The report iterates the registry and never names a system; a bench that fails shows up as an
error section and in ``results.json`` instead of stopping the others.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
import traceback
from collections.abc import Callable
from html import escape as _escape  # not `import html`: the submodule .html shadows it
from pathlib import Path
from typing import Any

from dnninfer.report.html import default_section, error_section, figure_html, table_html, write_report
from dnninfer.report.scoreboard import scoreboard_rows
from dnninfer.report.section import ReportSection

__all__ = [
    "CoreFn",
    "ReportSection",
    "build_report",
    "default_section",
    "error_section",
    "figure_html",
    "table_html",
    "write_report",
]

CoreFn = Callable[[Path, bool], list[ReportSection]]


def _default_core() -> CoreFn | None:
    """``dnninfer.report.core.core_sections`` when that module exists (it is optional); a module
    that exists but fails to import raises, so the caller can show the failure."""
    try:
        module = importlib.import_module("dnninfer.report.core")
    except ModuleNotFoundError as exc:
        if exc.name == "dnninfer.report.core":
            return None
        raise
    return getattr(module, "core_sections", None)


def _short_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _run_one(name: str, args: Any, outdir: Path, registry: Any) -> tuple[dict[str, Any], ReportSection]:
    """Run one bench and render its section; failures become an error result and section."""
    try:
        result = registry.run_system(name, args)
    except Exception as exc:
        tb = traceback.format_exc()
        result = {"system": name, "quick": args.quick, "error": _short_error(exc), "traceback": tb}
        return result, error_section(f"{name} (failed)", tb, system=name)
    system = registry.SYSTEMS[name]
    render = system.report_section or default_section
    try:
        section = render(result, outdir)
    except Exception as exc:
        tb = traceback.format_exc()
        result["report_error"] = _short_error(exc)
        return result, error_section(f"{name} (section failed)", tb, system=name)
    intro = f'<p class="note">{_escape(system.description)}</p>\n' if system.description else ""
    return result, dataclasses.replace(section, html=intro + section.html, system=name)


def build_report(
    outdir: Path,
    *,
    quick: bool,
    smoke: bool = False,
    seed: int = 0,
    systems: list[str] | None = None,
    core: CoreFn | None = None,
) -> Path:
    """Run the benches (all registered, or ``systems``), prepend the core sections and write
    ``outdir/index.html`` and ``outdir/results.json``; return the index path.

    ``smoke`` runs every bench at its smoke level (every code path, figures not meant to be read).
    ``core(outdir, quick)`` supplies the zoo/graph sections; when omitted,
    ``dnninfer.report.core.core_sections`` is used if that module exists.
    """
    from dnninfer.bench import registry
    from dnninfer.bench.output import err_console, make_progress

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    registry.load_all()
    names = list(systems) if systems is not None else sorted(registry.SYSTEMS)
    for name in names:  # fail on a typo before spending minutes on the others
        registry.get_system(name)

    results: dict[str, dict[str, Any]] = {}
    sections: list[ReportSection] = []
    if systems is None:  # areas whose bench.py does not import are failures too
        for module, tb in sorted(registry.LOAD_ERRORS.items()):
            results[module] = {"system": module, "quick": quick or smoke, "error": "import failed", "traceback": tb}
            sections.append(error_section(f"{module} (import failed)", tb, system=module))

    core_sections: list[ReportSection] = []
    try:
        core_fn = core if core is not None else _default_core()
        if core_fn is not None:
            core_sections = list(core_fn(outdir, quick or smoke))
    except Exception:
        core_sections = [error_section("Core (failed)", traceback.format_exc())]

    with make_progress() as bar:
        task = bar.add_task("report", total=len(names))
        for name in names:
            bar.update(task, description=f"bench {name}")
            start = time.perf_counter()
            args = registry.BenchArgs(quick=quick, smoke=smoke, seed=seed, out=outdir / name)
            result, section = _run_one(name, args, outdir, registry)
            results[name] = result
            sections.append(section)
            status = "[red]failed[/red]" if "error" in result else "[green]ok[/green]"
            err_console.print(f"bench {name}: {status} ({time.perf_counter() - start:.1f} s)")
            bar.advance(task)
    headlines = {name: system.headline for name, system in sorted(registry.SYSTEMS.items())}
    return write_report(outdir, results, sections, core_sections, scoreboard_rows(results, headlines))
