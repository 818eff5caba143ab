"""`dnninfer bench dpra`: DPRA against its six baselines on the same Rayleigh channel trace, a V sweep,
a tamper campaign against the ledger, and a short run that executes every split and mines real blocks.

Latencies are simulated slot times of the reconstructed model (`dpra`: compute cycles from the
model's measured host profile, Shannon rates on Rayleigh block fading, Poisson mining race); the
tamper rate, the ledger's validity and the outputs' equality are measured, and so is what the
Ed25519 identities cost on the executed run's ledger (`signature_costs`: wall-clock medians, the
only timings here). The paper's body could
not be read, so `"paper"` holds only its qualitative claims.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from dnninfer import argtypes as at
from dnninfer.bdt.report import CLAIMS, plots, report_section
from dnninfer.bench.output import make_progress
from dnninfer.bench.registry import BenchArgs, register_system

PAPER = {
    "claim": "DPRA outperforms the baselines in overall latency while guaranteeing trustworthiness "
             "(the long-term reputation constraint); no figures in the abstract",
    "source": "Deng et al., Trustworthy DNN Partition for Blockchain-enabled Digital Twin in Wireless IIoT "
              "Networks, arXiv 2405.17914 (abstract only; partitioning.md §2)",
}
QUICK = {"models": ("resnet18",), "slots": 300, "vs": (0.05, 0.5, 5.0, 50.0), "run_slots": 20, "tamper": 1000,
         "timing_repeats": 20}
FULL = {"models": ("vgg16", "resnet18", "mobilenet_v2"), "slots": 1000, "vs": (0.02, 0.05, 0.2, 0.5, 2.0, 5.0, 50.0),
        "run_slots": 100, "tamper": 2000, "timing_repeats": 30}
#: --smoke: every method, a 2-point V sweep, a short executed run and tamper campaign (figures not meant to be read)
SMOKE = {"models": ("resnet18",), "slots": 60, "vs": (0.05, 50.0), "run_slots": 5, "tamper": 200, "timing_repeats": 5}


def signature_costs(ledger: Any, keys: Any, repeats: int = 20) -> dict[str, float | None]:
    """Median microseconds, on `ledger`'s main chain, to sign and to verify one receipt (Ed25519 alone)
    and one block: signing its header, and validating it with every check `ledger verify` makes
    (its receipts' signatures included), by replaying the chain on a fresh ledger of public keys.

    `keys`: the parties' private keys (a `Keyring`). A receipt figure is None when the chain has none.
    """
    from dnninfer.bench.harness import measure

    blocks = ledger.main_chain()[1:]
    pairs = [(r, ledger.public_keys(b.prev_hash)) for b in blocks for r in b.receipts]
    if not blocks:
        return dict.fromkeys(("sign_us_per_receipt", "verify_us_per_receipt", "sign_us_per_block",
                              "verify_us_per_block"))

    def per(fn: Any, n: int) -> float | None:
        return measure(fn, warmup=2, repeats=repeats).median / n * 1e6 if n else None

    return {
        "sign_us_per_receipt": per(lambda: [r.sign(keys[r.gateway]) for r, _ in pairs], len(pairs)),
        "verify_us_per_receipt": per(lambda: [r.verify(k, ledger.chain) for r, k in pairs], len(pairs)),
        "sign_us_per_block": per(lambda: [b.signed(keys[b.miner]) for b in blocks], len(blocks)),
        "verify_us_per_block": per(lambda: ledger.replay(blocks), len(blocks)),
    }


def _add_arguments(p: Any) -> None:
    p.add_argument("--models", nargs="*", default=None, help="zoo models (default: per --quick / --smoke)")
    p.add_argument("--slots", type=at.positive_int, default=None, help="simulated slots per method")


@register_system("dpra", description="DPRA Lyapunov partitioning + reputation-staked PoW ledger vs 6 baselines",
                 report_section=report_section, add_arguments=_add_arguments, headline=CLAIMS[0])
def bench_dpra(args: BenchArgs) -> dict[str, Any]:
    from dnninfer import zoo
    from dnninfer.bdt.dpra import METHODS, simulate, v_sweep
    from dnninfer.bdt.run import config_for, graph_workload, measured_block_seconds, run
    from dnninfer.graph import capture
    from dnninfer.ledger.identity import Keyring
    from dnninfer.ledger.store import open_ledger
    from dnninfer.ledger.tamper import tamper_trials

    cfg_ = args.pick(FULL, QUICK, SMOKE)
    models = args.get("models") or cfg_["models"]
    slots = args.get("slots") or cfg_["slots"]
    rows, sweeps, traces = [], {}, {}
    with make_progress() as bar:
        task = bar.add_task("dpra: simulating", total=len(models) * (len(METHODS) + len(cfg_["vs"])))
        for name in models:
            g = capture(zoo.build_model(name, seed=args.seed), zoo.example_inputs(name, seed=args.seed), name=name)
            gw = graph_workload(g, measured_block_seconds(g), segments=6)
            cfg = config_for(gw.workload, args.seed)
            results = {}
            for method in METHODS:
                res = results[method] = simulate(gw.workload, cfg, slots, method)
                rows.append({"model": name, "workload": gw.workload.name, "method": method, "slots": slots,
                             "avg_latency_s": res.avg_latency, "p95_latency_s": float(np.percentile(res.latency, 95)),
                             "avg_consensus_s": float(res.consensus_latency.mean()),
                             "min_avg_u": float(res.avg_u.min()), "u_th": cfg.u_th,
                             "constraint_met": res.constraint_met(), "avg_backlog": res.avg_backlog,
                             "offload_share": float((res.s < gw.workload.L).mean()),
                             "solve_ms": float(res.solve_seconds.mean() * 1e3)})
                bar.advance(task)
            sweeps[name] = v_sweep(gw.workload, cfg, slots, cfg_["vs"])
            bar.advance(task, len(cfg_["vs"]))
            traces[name] = {m: {"latency": r.latency.tolist(), "Q": r.Q.tolist()}
                            for m, r in results.items() if m in ("dpra", "myopic", "pure_pow", "equal_freq")}
    rejected, total = tamper_trials(cfg_["tamper"], args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dpra.sqlite"
        keys = Keyring.derive((), f"dpra-seed-{args.seed}")  # what `run` derives by default
        live = run(models[0], slots=cfg_["run_slots"], ledger_path=path, seed=args.seed, keys=keys)
        reopened = open_ledger(path, readonly=True)  # public keys only, as `ledger verify`
        ledger_ok = reopened.height == live["ledger"]["blocks"]
        costs = signature_costs(reopened, keys, cfg_["timing_repeats"])
        reopened.close()
    led = live["ledger"]
    first = models[0]
    by = {r["method"]: r for r in rows if r["model"] == first}
    ours: dict[str, Any] = {
        "avg_latency": {m: r["avg_latency_s"] for m, r in by.items()},
        **{f"latency_reduction_vs_{m}": 1 - by["dpra"]["avg_latency_s"] / r["avg_latency_s"]
           for m, r in by.items() if m != "dpra"},
        "reputation_constraint_met": by["dpra"]["constraint_met"],
        "constraint_met": {m: r["constraint_met"] for m, r in by.items()},
        "dpra_is_fastest_that_meets_constraint": all(
            by["dpra"]["avg_latency_s"] <= r["avg_latency_s"] + 1e-12 for r in by.values() if r["constraint_met"]),
        "v_sweep": sweeps[first],
        "tamper_detection_rate": rejected / total,
        "tamper_trials": total,
        **costs,
        "executed_run": {"model": first, "slots": cfg_["run_slots"], "blocks": led["blocks"],
                         "receipts": led["receipts"], "max_abs_err": led["max_abs_err"],
                         "reputation_gap_vs_controller": led["reputation_gap_vs_controller"],
                         "ledger_reopened_valid": ledger_ok, "difficulty_scale": led["difficulty_scale"]},
        "models": list(models),
    }
    if len(models) > 1:
        ours["per_model"] = {
            name: {"avg_latency": {r["method"]: r["avg_latency_s"] for r in rows if r["model"] == name},
                   "constraint_met": {r["method"]: r["constraint_met"] for r in rows if r["model"] == name}}
            for name in models}
    result = {"paper": PAPER, "ours": ours, "rows": rows, "v_sweeps": sweeps, "traces": traces}
    if args.out:
        plots(result, Path(args.out))
    return result
