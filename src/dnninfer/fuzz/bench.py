"""`dnninfer bench fuzz`: the fuzz campaign over every input surface (docs/fuzz.md).

No paper behind it: the figure of merit is 0 crashes / 0 hangs / 0 bad inputs accepted / 0
malformed error lines. ``--quick`` runs ~290 cases (~30 s), ``--smoke`` ~100 (every surface, bad
and valid inputs on each; what the test suite runs), the full run >= 5000 with a progress bar on
stderr. Results are deterministic for a given ``--seed`` (timings aside).
"""

from __future__ import annotations

import argparse
from typing import Any

from dnninfer.bench.registry import BenchArgs, register_system
from dnninfer.fuzz.report import CLAIMS, report_section

__all__ = ["bench_fuzz"]


def _add_arguments(p: argparse.ArgumentParser) -> None:
    from dnninfer.fuzz.campaign import SURFACES

    p.add_argument("--surfaces", default=None, help=f"comma list of surfaces (default all: {','.join(SURFACES)})")
    p.add_argument("--cases", type=int, default=None, help="cases per surface (default: quick or full sizes)")
    p.add_argument("--case-timeout", type=float, default=None, help="per-case time limit in seconds (hang above)")


@register_system("fuzz", description="fuzz campaign: YAML configs, model files, JPEG bodies, ledgers, CLI values",
                 add_arguments=_add_arguments, report_section=report_section, headline=CLAIMS[0])
def bench_fuzz(args: BenchArgs) -> dict[str, Any]:
    import math

    from dnninfer.errors import expected
    from dnninfer.fuzz.campaign import SMOKE_SIZES, SURFACES, run_campaign

    surfaces = [s.strip() for s in (args.get("surfaces") or ",".join(SURFACES)).split(",") if s.strip()]
    n = args.get("cases")
    if n is not None and n < 1:
        raise expected("--cases", "an integer >= 1", n)
    limit = args.get("case_timeout")
    if limit is not None and not (math.isfinite(limit) and limit > 0):
        raise expected("--case-timeout", "a finite number of seconds > 0", limit)
    smoke = {s: SMOKE_SIZES[s] for s in surfaces if s in SMOKE_SIZES}
    sizes = {s: n for s in surfaces} if n else args.pick(None, None, smoke)  # None: the campaign's own sizes
    res = run_campaign(seed=args.seed, quick=args.quick, surfaces=surfaces, sizes=sizes, limit_s=limit)
    failures = res.pop("failures")
    summary_rows = [{"surface": s, "row": "summary", **{k: v for k, v in d.items() if k != "labels"},
                     **{f"label_{k}": v for k, v in d.get("labels", {}).items()}}
                    for s, d in res["by_surface"].items()]
    return {
        "paper": {"note": "no paper figure: a robustness campaign over every input surface; the goal is "
                          "0 crashes / 0 hangs / 0 accepted_bad (and 0 bad_errors)",
                  "goal": {"crashes": 0, "hangs": 0, "accepted_bad": 0, "bad_errors": 0}},
        "ours": res,
        "rows": summary_rows + [{"row": "failure", **f} if "row" not in f else f for f in failures],
    }
