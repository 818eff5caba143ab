"""`dnninfer bench rns`: Mirage-style RNS training vs FP32, BFP-exact, fixed-point analog and FP8, the
analog-noise sweep with and without redundant moduli, and the analytical photonic-vs-systolic model.

What is measured and what is modelled:

* Accuracies are MEASURED: every model is trained here, on offline data (sklearn digits, MNIST-1D
  generated locally), with every GEMM of the forward and both backward passes emulated under the
  given numerics (integer BFP + RNS tile products, CRT, noise). Seeded; bit-reproducible per machine.
* Bit-exactness is MEASURED: the noiseless RNS mode is compared with the BFP-exact mode on the three
  GEMMs of a linear and a conv layer and on whole training runs (parameter + logit digests).
* Speedup, EDP and power ratios are MODELLED (rns/photonic.py, constants cited in configs/photonic);
  the paper's numbers come from its own simulator, whose constants are not public.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dnninfer.bench.registry import BenchArgs, register_system
from dnninfer.env import pinned_threads
from dnninfer.rns.report import CLAIMS, plots, report_section

PAPER = {
    "speedup_iso_energy": 23.8, "edp_ratio_iso_energy": 32.1, "power_ratio_iso_area": 42.8,
    "edp_iso_area": "comparable or better", "accuracy": "FP32-comparable accuracy",
    "source": "Mirage abstract (Demirkiran, Yang, Bunandar, Joshi; ISCA 2024 pp. 73-87; arXiv 2311.17323): on "
              "average across several DNNs vs systolic arrays; accuracy 'comparable to FP32 training'",
    "companion": "Demirkiran et al., Nature Communications 2024 (s41467-024-49324-8): >= 99 % of FP32 accuracy "
                 "with 7-bit RNS arithmetic for training; RRNS for fault tolerance",
}
QUICK: dict[str, Any] = {
    "digits": {"epochs": 8}, "mnist1d": {"arch": "mlp", "epochs": 4, "limit": 2000},
    "noise_sigmas": (0.15, 0.2), "noise_epochs": 6, "redundant": (0, 2), "noise_seeds": 1, "exact_epochs": 2,
    "workloads": ("resnet18", "bert_encoder"), "inverse": {"maxiter": 30, "popsize": 8, "pairs": True},
}
#: --smoke: 1 epoch per mode, a small MNIST-1D subset, one sigma with and without redundancy.
SMOKE: dict[str, Any] = {
    "digits": {"epochs": 1}, "mnist1d": {"arch": "mlp", "epochs": 1, "limit": 300},
    "noise_sigmas": (0.2,), "noise_epochs": 1, "redundant": (0, 2), "noise_seeds": 1, "exact_epochs": 1,
    "workloads": ("resnet18", "bert_encoder"), "inverse": {"maxiter": 8, "popsize": 5, "pairs": False},
}
FULL: dict[str, Any] = {
    "digits": {"epochs": 30}, "mnist1d": {"arch": "cnn", "epochs": 30, "limit": None},
    "noise_sigmas": (0.1, 0.15, 0.2, 0.25, 0.3), "noise_epochs": 15, "redundant": (0, 2, 3), "noise_seeds": 2,
    "exact_epochs": None, "workloads": ("resnet18", "resnet50", "vgg16", "bert_encoder"),
    "inverse": {"maxiter": 300, "popsize": 12, "pairs": True},
    "extra_modes": {"mnist1d": {"fixed_point_analog_adc8": {"mode": "fixed_analog", "adc_bits": 8}}},
}
MODES = ("fp32", "rns", "fixed_analog", "fp8")
OURS_NAME = {"fp32": "fp32", "rns": "rns", "fixed_analog": "fixed_point_analog", "fp8": "fp8", "bfp": "bfp"}


def _add_arguments(p: Any) -> None:
    p.add_argument("--no-model", action="store_true", help="skip the analytical photonic model")


@register_system("rns", description="Mirage: RNS + BFP training (FP32/BFP/fixed analog/FP8) and photonic cost model",
                 report_section=report_section, add_arguments=_add_arguments, headline=CLAIMS[0])
def bench_rns(args: BenchArgs) -> dict[str, Any]:
    from dnninfer.rns.inverse import inverse_calibration
    from dnninfer.rns.photonic import compare, sensitivity, workload
    from dnninfer.rns.train import train
    from dnninfer.rns.verify import gemm_bit_exact

    cfg = args.pick(FULL, QUICK, SMOKE)
    seed = args.seed
    rows: list[dict[str, Any]] = []
    curves: dict[str, list[float]] = {}
    acc: dict[str, dict[str, float]] = {}
    digests: dict[str, str] = {}
    with pinned_threads(1):
        for dataset in ("digits", "mnist1d"):
            opts = cfg[dataset]
            acc[dataset] = {}
            modes = (*MODES, "bfp") if dataset == "digits" and cfg["exact_epochs"] is None else MODES
            for mode in modes:
                r = train(dataset, mode, seed=seed, **opts)
                acc[dataset][OURS_NAME[mode]] = r.test_acc
                curves[f"{dataset}/{mode}"] = [c["test_acc"] for c in r.curve]
                rows.append({"kind": "train", **r.summary(), "residue_error_rate": r.stats["residue_error_rate"]})
                if dataset == "digits":
                    digests[mode] = r.digest
            for name, extra in cfg.get("extra_modes", {}).get(dataset, {}).items():
                r = train(dataset, seed=seed, **opts, **extra)
                acc[dataset][name] = r.test_acc
                curves[f"{dataset}/{name}"] = [c["test_acc"] for c in r.curve]
                rows.append({"kind": "train", **r.summary(), "variant": name})
        if cfg["exact_epochs"] is not None:  # quick: a short BFP/RNS pair for the run-level check
            for mode in ("bfp", "rns"):
                r = train("digits", mode, seed=seed, epochs=cfg["exact_epochs"])
                digests[f"short_{mode}"] = r.digest
            run_exact = digests["short_bfp"] == digests["short_rns"]
        else:
            run_exact = digests["bfp"] == digests["rns"]
        gemm_exact = gemm_bit_exact(seed)
        sweep = _noise_sweep(cfg, seed, rows)
    ours: dict[str, Any] = {
        "acc": acc,
        "rns_gap_pts": {d: 100 * (a["fp32"] - a["rns"]) for d, a in acc.items()},
        "noise_sweep": sweep,
        "rns_equals_bfp_bit_for_bit": run_exact and all(gemm_exact.values()),
        "bit_exact": {**gemm_exact, "training_run": run_exact},
    }
    model: dict[str, Any] | None = None
    if not args.get("no_model"):
        loads = [workload(w) for w in cfg["workloads"]]
        model = compare(loads)
        model["sensitivity"] = sensitivity(loads)
        ours["model_sensitivity"] = model["sensitivity"]
        for key in ("speedup_iso_energy", "edp_ratio_iso_energy", "power_ratio_iso_area", "edp_ratio_iso_area",
                    "speedup_iso_area", "photonic_pj_per_mac", "sa_pj_per_mac"):
            ours[key] = model[key]
        ours["model_workloads"] = model["workloads"]
        # inverse calibration: can cited-range constants reproduce the paper's three ratios at once?
        inverse = inverse_calibration(loads, seed=seed, **cfg["inverse"])
        ours["inverse_calibration_exists"] = inverse["exists"]
        ours["inverse_calibration"] = inverse
        ours["model_reading"] = ("iso-energy = equal power budget (arrays sized to the SA's power); iso-area = "
                                 "arrays that fit the SA's area; arithmetic mean over workloads")
        for r in model["per_workload"]:
            rows.append({"kind": "model", "workload": r["workload"], "gmacs": r["gmacs"],
                         "sa_pj_per_mac": r["sa"]["pj_per_mac"],
                         "photonic_pj_per_mac": r["iso_area"]["photonic"]["pj_per_mac"],
                         "iso_area_arrays": r["iso_area"]["arrays"],
                         "iso_area_power_ratio": r["iso_area"]["power_ratio"],
                         "iso_area_edp_ratio": r["iso_area"]["edp_ratio"],
                         "iso_area_speedup": r["iso_area"]["speedup"],
                         "iso_energy_arrays": (r["iso_energy"] or {}).get("arrays"),
                         "iso_energy_speedup": (r["iso_energy"] or {}).get("speedup"),
                         "iso_energy_edp_ratio": (r["iso_energy"] or {}).get("edp_ratio")})
    result = {"paper": PAPER, "ours": ours, "rows": rows, "curves": curves,
              "model": model, "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}}
    if args.out:
        plots(result, Path(args.out))
    return result


def _noise_sweep(cfg: dict[str, Any], seed: int, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Digits accuracy vs readout noise sigma (residue steps), without and with redundant moduli."""
    from dnninfer.rns.train import train

    out = []
    for k in cfg["redundant"]:
        # sigma = 0 once (redundancy changes nothing without errors: decoding is exact either way)
        for sigma in ((0.0,) if k == 0 else ()) + tuple(cfg["noise_sigmas"]):
            runs = [train("digits", "rns", seed=seed + i, sigma=sigma, redundant=k, epochs=cfg["noise_epochs"])
                    for i in range(cfg["noise_seeds"])]
            accs = [r.test_acc for r in runs]
            stats = runs[0].stats
            point = {"sigma": sigma, "redundant": k, "acc": sum(accs) / len(accs), "accs": accs,
                     "diverged": sum(r.diverged for r in runs), "residue_error_rate": stats["residue_error_rate"],
                     "uncorrectable_per_tile_output": stats["uncorrectable"] / max(stats["tile_outputs"], 1)}
            out.append(point)
            rows.append({"kind": "noise", **{k2: v for k2, v in point.items() if k2 != "accs"}})
    return out
