"""One harness for every system: timing, statistics, environment, registry and output.

A system's ``bench.py`` typically needs only::

    from dnninfer.bench import BenchArgs, compare, register_system, ratios, capture_env
"""

from __future__ import annotations

from dnninfer.bench.env import capture_env
from dnninfer.bench.harness import Timing, compare, measure, pinned_threads, ratios
from dnninfer.bench.output import emit_json, make_progress, print_table, to_jsonable
from dnninfer.bench.registry import (
    SYSTEMS,
    BenchArgs,
    InvalidBenchResult,
    ReportSection,
    System,
    get_system,
    load_all,
    register_system,
    run_system,
)
from dnninfer.bench.stats import RatioCI, bootstrap_ratio_ci, pairwise_ratios, ratio_ci, summarize

__all__ = [
    "SYSTEMS",
    "BenchArgs",
    "InvalidBenchResult",
    "RatioCI",
    "ReportSection",
    "System",
    "Timing",
    "bootstrap_ratio_ci",
    "capture_env",
    "compare",
    "emit_json",
    "get_system",
    "load_all",
    "make_progress",
    "measure",
    "pairwise_ratios",
    "pinned_threads",
    "print_table",
    "ratio_ci",
    "ratios",
    "register_system",
    "run_system",
    "summarize",
    "to_jsonable",
]
