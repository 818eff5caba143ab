"""`dnninfer bench hidp-scale`: planning time and plan quality against the number of nodes (issue 22).

Sites of 3 to 64 boards (`fleet_cluster`: the edge3 gateway, then the shipped edge profiles in
turn, one Wi-Fi link) are planned by HiDP (hidp.py: device types, multiset DP, bounded spatial
search), by every baseline, and, where they can finish, by the two references:

* ``hidp-subsets``: HiDP as it was before (hidp_subsets.py, node subsets enumerated), up to
  `subsets_max` nodes: the new plan must never be worse;
* ``brute-force``: hidp.py's own design space enumerated without pruning (up to `brute_max`
  nodes): the new plan must equal it.

Above those sizes the gap is reported against a long-budget run of the same planner (anytime
mode, ``time_budget``). Timing: each planning call gets a fresh cost model (every memo cold; the
host profile, measured and cached, and the graph's tile walk are shared, as after the first plan of
a session), one thread, the median of `repeats` calls: wall seconds (``plan_s``) and, because the
box may be shared, this process's CPU seconds too (``plan_cpu_s``). ``growth_exponent`` is the
slope of log(plan seconds) against log(nodes), fitted by least squares over every node count.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dnninfer.bench.figures import Figures
from dnninfer.bench.harness import measure
from dnninfer.bench.registry import BenchArgs
from dnninfer.cost.profiles import Cluster, LinkProfile, NodeSpec
from dnninfer.errors import UserError

EDGE_MIX = ("odroid_xu4", "jetson_nano", "jetson_tx2", "jetson_nano_5w", "rpi4")
NODES = (3, 4, 5, 6, 7, 8, 9, 12, 16, 24, 32, 48, 64)
FULL = {"models": ("resnet50", "resnet18", "mobilenet_v2"), "nodes": NODES, "bandwidths": (50.0, 5.0),
        "objectives": ("latency", "energy", "throughput"), "subsets_max": 9, "brute_max": 5, "repeats": 3,
        "long_budget_s": 15.0, "long_nodes": (16, 64), "host": "measure"}
QUICK = {"models": ("resnet50",), "nodes": NODES, "bandwidths": (50.0,), "objectives": ("latency",),
         "subsets_max": 7, "brute_max": 5, "repeats": 1, "long_budget_s": 6.0, "long_nodes": (64,), "host": "measure"}
SMOKE = {"models": ("resnet18",), "nodes": (3, 5, 8, 16, 64), "bandwidths": (50.0,), "objectives": ("latency",),
         "subsets_max": 5, "brute_max": 4, "repeats": 1, "long_budget_s": 1.0, "long_nodes": (16,), "host": "flops"}
PAPER = {"wall_s_resnet18_by_nodes": {"3": 6.2, "5": 6.3, "7": 11.2, "9": 27.3, "12": 223.0},
         "source": "issue 22: `dnninfer partition resnet18 --strategy hidp` wall time before the change "
                   "(node subsets enumerated; process start and profiling included)",
         "goal": "resnet50 planned in-process (profile cached): 12 nodes < 2 s, 64 nodes < 30 s; zero gap "
                 "where a brute force can check"}


def fleet_cluster(n: int, bandwidth_mbps: float = 50.0, *, rtt_ms: float = 5.0) -> Cluster:
    """A site of `n` boards from the shipped profiles: an rpi4 gateway (the source), then
    odroid_xu4, jetson_nano, jetson_tx2, jetson_nano_5w, rpi4 in turn (3 nodes: edge3's boards,
    5: edge5's), all on one Wi-Fi link (edge3's, at `bandwidth_mbps`)."""
    if n < 1:
        raise UserError(f"fleet: expected at least one node, got {n}")
    nodes = [NodeSpec(name="gw", device="rpi4")]
    nodes += [NodeSpec(name=f"{EDGE_MIX[(i - 1) % len(EDGE_MIX)]}-{(i - 1) // len(EDGE_MIX) + 1}",
                       device=EDGE_MIX[(i - 1) % len(EDGE_MIX)]) for i in range(1, n)]
    link = LinkProfile(name="wifi", bandwidth_mbps=bandwidth_mbps, rtt_ms=rtt_ms, energy_nj_per_bit=125, jitter_ms=1)
    return Cluster(name=f"fleet{n}", description=f"{n} boards from the shipped profiles on Wi-Fi", nodes=nodes,
                   default_link=link)


def growth_exponent(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of log(seconds) against log(nodes)."""
    pts = [(math.log(n), math.log(s)) for n, s in points if s > 0]
    if len(pts) < 2:
        return None
    mx = statistics.fmean(x for x, _ in pts)
    my = statistics.fmean(y for _, y in pts)
    den = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / den if den else None


def run(args: BenchArgs) -> dict[str, Any]:
    from dnninfer import zoo
    from dnninfer.bench.output import make_progress
    from dnninfer.env import pinned_threads
    from dnninfer.graph import capture
    from dnninfer.partition.costmodel import CostModel
    from dnninfer.partition.hidp import plan_hidp
    from dnninfer.partition.hidp_subsets import plan_hidp_brute_force, plan_hidp_subsets
    from dnninfer.partition.strategies import BASELINES

    cfg = dict(args.pick(FULL, QUICK, SMOKE))
    for key in ("models", "nodes", "bandwidths"):
        if args.get(key):
            cfg[key] = tuple(args.get(key))
    planners: dict[str, Callable[[Any, str], Any]] = {"hidp": plan_hidp, **BASELINES}
    rows: list[dict[str, Any]] = []
    cases = [(m, bw, n) for m in cfg["models"] for bw in cfg["bandwidths"] for n in cfg["nodes"]]
    with pinned_threads(1), make_progress() as bar:
        task = bar.add_task("hidp-scale: planning", total=len(cases))
        base: dict[str, Any] = {}
        for model, bw, n in cases:
            if model not in base:
                g = capture(zoo.build_model(model, seed=args.seed), zoo.example_inputs(model, seed=args.seed),
                            name=model)
                base[model] = CostModel.build(g, fleet_cluster(3, bw), host=cfg["host"])
                plan_hidp(base[model], "latency")  # warm the graph's tile walk once per model (untimed)
            cluster = fleet_cluster(n, bw)
            for objective in cfg["objectives"]:
                refs = {}
                for name, planner in planners.items():
                    rows.append(_timed(base[model], cluster, planner, name, objective, cfg["repeats"], model, bw, n))
                if n <= cfg["subsets_max"]:
                    refs["hidp-subsets"] = _timed(base[model], cluster, plan_hidp_subsets, "hidp-subsets", objective,
                                                  1, model, bw, n)
                if n <= cfg["brute_max"]:
                    refs["brute-force"] = _timed(base[model], cluster, plan_hidp_brute_force, "brute-force",
                                                 objective, 1, model, bw, n)
                if n in cfg["long_nodes"]:
                    refs["long-budget"] = _timed(base[model], cluster,
                                                 lambda cm, o: plan_hidp(cm, o, time_budget=cfg["long_budget_s"]),
                                                 "hidp-long-budget", objective, 1, model, bw, n)
                ours = rows[-len(planners)]
                for ref in refs.values():
                    ref["gap_of_hidp"] = (ours["score"] - ref["score"]) / abs(ref["score"])
                    rows.append(ref)
            bar.advance(task)
    return _summarise(rows, cfg, args)


def _timed(base: Any, cluster: Cluster, planner: Callable[[Any, str], Any], name: str, objective: str,
           repeats: int, model: str, bw: float, n: int) -> dict[str, Any]:
    """Plan on fresh cost models (memos cold); the median wall time and the last plan's score."""
    got: list[Any] = []
    cpu: list[float] = []

    def once() -> None:
        start = time.process_time()
        got.append(planner(base.with_cluster(cluster), objective))
        cpu.append(time.process_time() - start)

    try:
        timing = measure(once, warmup=0, repeats=repeats)
    except UserError as e:  # a baseline with no feasible plan on this site
        return {"model": model, "bandwidth_mbps": bw, "nodes": n, "objective": objective, "strategy": name,
                "plan_s": None, "score": None, "error": str(e)}
    p = got[-1]
    row = {"model": model, "bandwidth_mbps": bw, "nodes": n, "objective": objective, "strategy": name,
           "plan_s": timing.median, "plan_cpu_s": statistics.median(cpu), "score": p.score(objective), "mode": p.mode,
           "latency_ms": p.latency_s * 1e3, "energy_mj": p.energy_j * 1e3, "throughput_ips": p.throughput_ips}
    if p.search:
        row.update({f"search_{k}": v for k, v in p.search.items() if k in (
            "types", "candidates", "spatial_multisets_scored", "spatial_multisets", "complete", "stopped_by")})
    return row


def _summarise(rows: list[dict[str, Any]], cfg: dict[str, Any], args: BenchArgs) -> dict[str, Any]:
    head = (cfg["models"][0], cfg["bandwidths"][0], cfg["objectives"][0])

    def curve(strategy: str, model: str, bw: float, objective: str) -> list[tuple[int, float]]:
        return [(r["nodes"], r["plan_s"]) for r in rows if r["strategy"] == strategy and r["model"] == model
                and r["bandwidth_mbps"] == bw and r["objective"] == objective and r["plan_s"] is not None]

    hidp_curve = curve("hidp", *head)
    exponents = {f"{m}/{bw:g}Mbps/{o}": growth_exponent(curve("hidp", m, bw, o))
                 for m in cfg["models"] for bw in cfg["bandwidths"] for o in cfg["objectives"]}
    checked = [r for r in rows if r["strategy"] in ("hidp-subsets", "brute-force") and r.get("gap_of_hidp") is not None]
    long_runs = [r for r in rows if r["strategy"] == "hidp-long-budget" and r.get("gap_of_hidp") is not None]
    by_strategy = {s: growth_exponent(curve(s, *head)) for s in dict.fromkeys(r["strategy"] for r in rows)}
    cpu = {r["nodes"]: r["plan_cpu_s"] for r in rows if r["strategy"] == "hidp" and r["plan_s"] is not None
           and (r["model"], r["bandwidth_mbps"], r["objective"]) == head}
    ours = {
        "plan_s": {str(n): s for n, s in hidp_curve},
        "plan_cpu_s": {str(n): s for n, s in sorted(cpu.items())},
        "plan_s_64_nodes": dict(hidp_curve).get(64),
        "plan_s_12_nodes": dict(hidp_curve).get(12),
        "quality_gap_vs_exhaustive": max((r["gap_of_hidp"] for r in checked), default=None),
        "quality_gap_vs_brute_force": max((r["gap_of_hidp"] for r in checked if r["strategy"] == "brute-force"),
                                          default=None),
        "quality_gap_vs_subsets": max((r["gap_of_hidp"] for r in checked if r["strategy"] == "hidp-subsets"),
                                      default=None),
        "cases_checked": len(checked),
        "never_worse_than_subsets": all(r["gap_of_hidp"] <= 1e-9 for r in checked if r["strategy"] == "hidp-subsets"),
        "quality_gap_vs_long_budget": max((r["gap_of_hidp"] for r in long_runs), default=None),
        "long_budget_s": cfg["long_budget_s"],
        "growth_exponent": growth_exponent(hidp_curve),
        "growth_exponent_cpu": growth_exponent(sorted(cpu.items())),
        "growth_exponent_max": max((e for e in exponents.values() if e is not None), default=None),
        "growth_exponents": exponents,
        "growth_exponent_by_strategy": by_strategy,
        "headline": {"model": head[0], "bandwidth_mbps": head[1], "objective": head[2], "host": cfg["host"]},
    }
    result = {"paper": PAPER, "ours": ours, "rows": rows,
              "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}}
    if args.out:
        plots(result, Path(args.out))
    return result


def plots(result: dict[str, Any], outdir: Path) -> Figures:
    """Planning time against nodes (log-log) per strategy, and the gap of HiDP's plan to each reference."""
    figs = Figures(outdir)
    rows, head = result["rows"], result["ours"]["headline"]
    pick = [r for r in rows if r["model"] == head["model"] and r["bandwidth_mbps"] == head["bandwidth_mbps"]
            and r["objective"] == head["objective"] and r["plan_s"] is not None]
    if not pick:
        return figs
    with figs.plot("hidp_scale_time.png", f"Planning time vs nodes, log-log ({head['model']}, "
                   f"{head['bandwidth_mbps']:g} Mbit/s, {head['objective']}); slope = growth exponent.",
                   figsize=(8, 5)) as (_, ax):
        for s in dict.fromkeys(r["strategy"] for r in pick):
            pts = sorted((r["nodes"], r["plan_s"], r.get("plan_cpu_s")) for r in pick if r["strategy"] == s)
            bold = s in ("hidp", "hidp-subsets")
            line = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if bold else ".",
                           lw=2 if bold else 1, label=s)[0]
            if bold and all(p[2] for p in pts):  # CPU seconds: what a busy box does not inflate
                ax.plot([p[0] for p in pts], [p[2] for p in pts], ls="--", lw=1, color=line.get_color(),
                        label=f"{s} (CPU s)")
        nodes = sorted({r["nodes"] for r in pick})
        ax.set(xscale="log", yscale="log", xlabel="nodes", ylabel="planning time (s, wall; dashed: CPU)",
               title="Planning time vs number of nodes")
        ax.set_xticks(nodes, [str(n) for n in nodes])
        ax.minorticks_off()
        ax.legend(fontsize=7, ncol=2)
    gaps = [r for r in rows if r.get("gap_of_hidp") is not None]
    if gaps:
        with figs.plot("hidp_scale_gap.png", "Relative gap of HiDP's plan to each reference (> 0: HiDP worse).",
                       figsize=(8, 4)) as (_, ax):
            for s in dict.fromkeys(r["strategy"] for r in gaps):
                pts = [(r["nodes"], r["gap_of_hidp"]) for r in gaps if r["strategy"] == s]
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=s, s=14)
            ax.axhline(0.0, color="k", lw=0.5)
            ax.set(xscale="log", xlabel="nodes", ylabel="(hidp - reference) / reference")
            ax.legend(fontsize=8)
    return figs


def report_section(result: dict[str, Any], outdir: Path) -> Any:
    from dnninfer.report.section import Table, build_section

    ours = result["ours"]
    summary = [{"nodes": n, "hidp_plan_s": s} for n, s in ours["plan_s"].items()]
    return build_section(
        "HiDP at fleet scale: planning time and quality vs nodes", result, outdir, claims=CLAIMS,
        parts=[plots(result, outdir), Table(summary, "HiDP planning time per node count"),
               Table([{k: v for k, v in r.items() if not k.startswith("search_")} for r in result["rows"]],
                     "Cases")],
        intro="Planning time is measured in-process (fresh cost model per call, host profile cached); plan "
              "quality is what the shared simulator predicts. The references: HiDP as it was (node subsets "
              "enumerated) and a brute force over the new planner's own design space.")


def _claims() -> tuple[Any, ...]:
    from dnninfer.bench.claims import Claim

    return (
        Claim("resnet50, 12 nodes: planning time (s)", "< 2 s (goal)", "plan_s_12_nodes", target=2.0,
              better="lower", fmt=".2f"),
        Claim("resnet50, 64 nodes: planning time (s)", "< 30 s (goal)", "plan_s_64_nodes", target=30.0,
              better="lower", fmt=".2f"),
        Claim("quality gap vs exhaustive (<= 9 nodes)", "0", "quality_gap_vs_exhaustive", target=1e-9,
              better="lower", fmt=".2e"),
        Claim("growth exponent (log time vs log nodes)", "polynomial", "growth_exponent", fmt=".2f"),
    )


CLAIMS = _claims()


def bench_hidp_scale(args: BenchArgs) -> dict[str, Any]:
    start = time.perf_counter()
    result = run(args)
    result["config"]["wall_s"] = time.perf_counter() - start
    return result
