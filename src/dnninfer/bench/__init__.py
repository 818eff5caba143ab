"""One harness for every system: timing, statistics, environment, registry, figures, claims and output.

A system's ``bench.py`` typically needs only::

    from dnninfer.bench import BenchArgs, Claim, Figures, compare, register_system
"""

from __future__ import annotations

from dnninfer.bench.claims import Claim, claim_rows
from dnninfer.bench.figures import Figure, Figures
from dnninfer.bench.harness import Timing, compare, measure, ratios
from dnninfer.bench.output import emit_json, make_progress, print_table, to_jsonable
from dnninfer.bench.registry import (
    SYSTEMS,
    BenchArgs,
    InvalidBenchResult,
    System,
    get_system,
    load_all,
    register_system,
    run_system,
)
from dnninfer.bench.stats import RatioCI, bootstrap_ratio_ci, pairwise_ratios, ratio_ci, summarize
from dnninfer.env import capture_env, pinned_threads

__all__ = [
    "SYSTEMS",
    "BenchArgs",
    "Claim",
    "Figure",
    "Figures",
    "InvalidBenchResult",
    "RatioCI",
    "System",
    "Timing",
    "bootstrap_ratio_ci",
    "capture_env",
    "claim_rows",
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
