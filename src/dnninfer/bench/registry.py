"""The bench registry: each system registers its bench, report section and CLI options once.

The CLI and the report only iterate ``SYSTEMS``; ``load_all`` discovers ``dnninfer.<area>.bench``
modules with pkgutil, so adding a system is adding a file and nothing else keeps a list
(the tinygrad device-discovery pattern).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from dnninfer.bench.claims import Claim
from dnninfer.bench.output import to_jsonable
from dnninfer.env import capture_env
from dnninfer.errors import expected

__all__ = [
    "LOAD_ERRORS",
    "REQUIRED_KEYS",
    "SYSTEMS",
    "BenchArgs",
    "BenchFn",
    "InvalidBenchResult",
    "SectionFn",
    "System",
    "get_system",
    "load_all",
    "register_system",
    "run_system",
    "validate_result",
]

#: Keys of the ``--json`` object (CONVENTIONS.md, "Contracts every system keeps").
REQUIRED_KEYS: tuple[str, ...] = ("system", "quick", "paper", "ours", "rows", "env")

T = TypeVar("T")


@dataclass
class BenchArgs:
    """What every bench gets: the shared flags plus ``extra`` for its own CLI options.

    ``smoke``: the smallest run that still goes through every code path of the bench and gives
    every JSON key (at most ~20 s here); what the test suite's contract test runs. It implies
    ``quick``; its figures are not meant to be read."""

    quick: bool = False
    seed: int = 0
    out: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    smoke: bool = False

    def __post_init__(self) -> None:
        self.quick = self.quick or self.smoke

    @property
    def level(self) -> str:
        """"smoke", "quick" or "full": which of a bench's settings apply."""
        return "smoke" if self.smoke else "quick" if self.quick else "full"

    def pick(self, full: T, quick: T, smoke: T | None = None) -> T:
        """The setting for this run's level; a smoke run falls back to ``quick`` when it has
        none of its own. Returned as given (copy a dict before changing it)."""
        if self.smoke and smoke is not None:
            return smoke
        return quick if self.quick else full

    def get(self, key: str, default: Any = None) -> Any:
        """A system-specific option, or ``default`` when the caller did not set it."""
        return self.extra.get(key, default)


BenchFn = Callable[[BenchArgs], dict[str, Any]]
#: ``(result, outdir) -> dnninfer.report.ReportSection``; typed loosely because the report sits above
#: the bench layer (it runs benches), never below it.
SectionFn = Callable[[dict[str, Any], Path], Any]
AddArgumentsFn = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class System:
    """A registered system: its bench, optional report section and optional CLI options."""

    name: str
    bench: BenchFn
    description: str
    report_section: SectionFn | None = None
    add_arguments: AddArgumentsFn | None = None
    headline: Claim | None = None

    @property
    def module(self) -> str:
        return getattr(self.bench, "__module__", "?")


class InvalidBenchResult(ValueError):
    """A bench returned something that breaks the JSON contract: a bug in that bench."""


SYSTEMS: dict[str, System] = {}
#: ``dnninfer.<area>.bench`` modules that failed to import, with their traceback, so one broken
#: area cannot hide the others (and ``get_system`` can say why a name is missing).
LOAD_ERRORS: dict[str, str] = {}


def register_system(
    name: str,
    *,
    description: str,
    report_section: SectionFn | None = None,
    add_arguments: AddArgumentsFn | None = None,
    headline: Claim | None = None,
) -> Callable[[BenchFn], BenchFn]:
    """Decorator registering ``fn(args: BenchArgs) -> dict`` as the bench of ``name``.

    ``report_section(result, outdir) -> ReportSection`` renders it in the report (a generic
    paper-vs-ours section is used when omitted); ``add_arguments(parser)`` adds its CLI options,
    whose values arrive in ``BenchArgs.extra``; ``headline`` is the one paper-vs-ours line the
    report's scoreboard shows for the system.
    """

    def decorator(fn: BenchFn) -> BenchFn:
        old = SYSTEMS.get(name)
        if old is not None and (old.module, old.bench.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(
                f"bench system {name!r} is registered twice: by {old.module}.{old.bench.__qualname__} "
                f"and by {fn.__module__}.{fn.__qualname__}"
            )
        SYSTEMS[name] = System(name, fn, description, report_section, add_arguments, headline)
        return fn

    return decorator


def _bench_modules(package: str) -> list[str]:
    """``<package>.<area>.bench`` for every area folder holding a bench.py, without importing
    areas that have none."""
    pkg = importlib.import_module(package)
    found = []
    for area in pkgutil.iter_modules(pkg.__path__):
        if not area.ispkg or area.name in ("bench", "report"):
            continue
        area_dir = Path(area.module_finder.path) / area.name  # type: ignore[union-attr]
        if any(m.name == "bench" for m in pkgutil.iter_modules([str(area_dir)])):
            found.append(f"{package}.{area.name}.bench")
    return sorted(found)


def load_all(*, package: str = "dnninfer", strict: bool = False) -> list[str]:
    """Import every ``<package>.<area>.bench`` so its systems register; return the module names.

    A module that fails to import is recorded in ``LOAD_ERRORS`` (raised when ``strict``), so the
    report still runs every other system.
    """
    loaded = []
    for module in _bench_modules(package):
        try:
            importlib.import_module(module)
        except Exception:
            if strict:
                raise
            LOAD_ERRORS[module] = traceback.format_exc()
        else:
            LOAD_ERRORS.pop(module, None)
            loaded.append(module)
    return loaded


def get_system(name: str) -> System:
    """The registered system ``name``; an unknown name is a user error listing the known ones."""
    if name not in SYSTEMS:
        load_all()
    if name in SYSTEMS:
        return SYSTEMS[name]
    known = ", ".join(sorted(SYSTEMS)) or "(none registered)"
    fix = None
    if LOAD_ERRORS:
        fix = "these bench modules failed to import: " + ", ".join(sorted(LOAD_ERRORS))
    raise expected("bench system", f"one of: {known}", name, fix=fix)


def validate_result(name: str, result: Any) -> None:
    """Check a bench result against the ``--json`` contract; raise ``InvalidBenchResult`` naming
    the system and what is wrong."""
    if not isinstance(result, Mapping):
        raise InvalidBenchResult(f"bench {name!r} returned {type(result).__qualname__}, expected a dict")
    missing = [k for k in REQUIRED_KEYS if k not in result]
    if missing:
        raise InvalidBenchResult(
            f"bench {name!r} returned a result without key(s) {', '.join(map(repr, missing))}; "
            f"expected keys: {', '.join(REQUIRED_KEYS)}"
        )
    kinds = {"system": str, "quick": bool, "paper": Mapping, "ours": Mapping, "rows": list, "env": Mapping}
    for key, kind in kinds.items():
        if not isinstance(result[key], kind):
            raise InvalidBenchResult(
                f"bench {name!r}: key {key!r} must be {getattr(kind, '__name__', kind)}, "
                f"got {type(result[key]).__qualname__}"
            )
    bad_rows = [i for i, row in enumerate(result["rows"]) if not isinstance(row, Mapping)]
    if bad_rows:
        raise InvalidBenchResult(f"bench {name!r}: rows {bad_rows[:5]} are not dicts (one dict per case)")


def run_system(name: str, args: BenchArgs) -> dict[str, Any]:
    """Run one bench and return its result as validated, plain JSON data.

    Fills ``system``, ``quick`` and ``env`` (``capture_env()``) when the bench left them out (and
    ``smoke: true`` on a smoke run), and
    records the bench's wall time in ``env["bench_wall_s"]``.
    """
    system = get_system(name)
    start = time.perf_counter()
    raw = system.bench(args)
    wall = time.perf_counter() - start
    if not isinstance(raw, Mapping):
        raise InvalidBenchResult(f"bench {name!r} returned {type(raw).__qualname__}, expected a dict")
    result = dict(raw)
    result.setdefault("system", name)
    result.setdefault("quick", args.quick)
    if args.smoke:
        result["smoke"] = True
    if "env" not in result:
        result["env"] = capture_env()
    if isinstance(result["env"], Mapping):
        result["env"] = {**result["env"], "bench_wall_s": round(wall, 3)}
    try:
        result = to_jsonable(result)
    except TypeError as exc:
        raise InvalidBenchResult(f"bench {name!r}: {exc}") from exc
    validate_result(name, result)
    return result
