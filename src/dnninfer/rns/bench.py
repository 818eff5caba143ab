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

import torch

from dnninfer.bench.harness import pinned_threads
from dnninfer.bench.registry import BenchArgs, register_system
from dnninfer.report.section import ReportSection

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
    "workloads": ("resnet18", "bert_encoder"),
}
#: --smoke: 1 epoch per mode, a small MNIST-1D subset, one sigma with and without redundancy.
SMOKE: dict[str, Any] = {
    "digits": {"epochs": 1}, "mnist1d": {"arch": "mlp", "epochs": 1, "limit": 300},
    "noise_sigmas": (0.2,), "noise_epochs": 1, "redundant": (0, 2), "noise_seeds": 1, "exact_epochs": 1,
    "workloads": ("resnet18", "bert_encoder"),
}
FULL: dict[str, Any] = {
    "digits": {"epochs": 30}, "mnist1d": {"arch": "cnn", "epochs": 30, "limit": None},
    "noise_sigmas": (0.1, 0.15, 0.2, 0.25, 0.3), "noise_epochs": 15, "redundant": (0, 2, 3), "noise_seeds": 2,
    "exact_epochs": None, "workloads": ("resnet18", "resnet50", "vgg16", "bert_encoder"),
    "extra_modes": {"mnist1d": {"fixed_point_analog_adc8": {"mode": "fixed_analog", "adc_bits": 8}}},
}
MODES = ("fp32", "rns", "fixed_analog", "fp8")
OURS_NAME = {"fp32": "fp32", "rns": "rns", "fixed_analog": "fixed_point_analog", "fp8": "fp8", "bfp": "bfp"}


def gemm_bit_exact(seed: int = 0) -> dict[str, bool]:
    """Noiseless RNS vs BFP-exact on the forward, grad-input and grad-weight GEMMs of a linear and a
    conv layer (random data with a wide dynamic range): True where the results are bit-identical."""
    from dnninfer.rns.layers import RNSConv2dFunction, RNSLinearFunction
    from dnninfer.rns.numerics import Numerics

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(37, 100, generator=g) * torch.logspace(-3, 2, 100)
    w = torch.randn(23, 100, generator=g)
    gy = torch.randn(37, 23, generator=g) * 1e-3
    xc = torch.randn(4, 3, 9, 9, generator=g)
    wc = torch.randn(8, 3, 3, 3, generator=g)
    gyc = torch.randn(4, 8, 5, 5, generator=g)

    def run(mode: str) -> list[torch.Tensor]:
        num = Numerics(mode=mode)
        xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = RNSLinearFunction.apply(xs, ws, None, num)
        y.backward(gy)
        xcs, wcs = xc.clone().requires_grad_(), wc.clone().requires_grad_()
        yc = RNSConv2dFunction.apply(xcs, wcs, None, num, (2, 2), (1, 1), (1, 1), 1)
        yc.backward(gyc)
        return [y.detach(), xs.grad, ws.grad, yc.detach(), xcs.grad, wcs.grad]

    a, b = run("bfp"), run("rns")
    names = ["linear_forward", "linear_grad_input", "linear_grad_weight", "conv_forward", "conv_grad_input",
             "conv_grad_weight"]
    return {n: bool(torch.equal(p, q)) for n, p, q in zip(names, a, b, strict=True)}


def _add_arguments(p: Any) -> None:
    p.add_argument("--no-model", action="store_true", help="skip the analytical photonic model")


@register_system("rns", description="Mirage: RNS + BFP training (FP32/BFP/fixed analog/FP8) and photonic cost model",
                 report_section=lambda result, outdir: report_section(result, outdir), add_arguments=_add_arguments)
def bench_rns(args: BenchArgs) -> dict[str, Any]:
    from dnninfer.rns.photonic import compare, sensitivity, workload
    from dnninfer.rns.train import train

    cfg = SMOKE if args.smoke else QUICK if args.quick else FULL
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


# -- plots and report ------------------------------------------------------------------------------------
def plots(result: dict[str, Any], outdir: Path) -> list[Path]:
    """Test accuracy per epoch for every mode (one panel per dataset); accuracy vs sigma."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    curves = result.get("curves") or {}
    datasets = list(dict.fromkeys(k.split("/")[0] for k in curves))
    if datasets:
        fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
        for ax, ds in zip(axes[0], datasets, strict=True):
            for key, ys in curves.items():
                if key.startswith(ds + "/"):
                    mode = key.split("/")[1]
                    ax.plot(range(1, len(ys) + 1), [100 * y for y in ys], label=mode,
                            linestyle="--" if mode == "bfp" else "-")
            ax.set_title(f"{ds}: test accuracy per epoch")
            ax.set_xlabel("epoch")
            ax.set_ylabel("test accuracy (%)")
            ax.legend(fontsize=8)
        fig.tight_layout()
        p = outdir / "rns_training_curves.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    sweep = result["ours"].get("noise_sweep") or []
    if sweep:
        fig, ax = plt.subplots(figsize=(6, 4))
        for k in sorted({s["redundant"] for s in sweep}):
            pts = sorted((s["sigma"], 100 * s["acc"]) for s in sweep if s["redundant"] == k and s["sigma"] > 0)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                    label="no redundant moduli" if k == 0 else f"RRNS, {k} redundant moduli")
        clean = [s["acc"] for s in sweep if s["sigma"] == 0]
        if clean:
            ax.axhline(100 * clean[0], color="grey", linestyle=":", label="noiseless RNS (same epochs)")
        ax.set_xlabel("readout noise sigma (residue steps)")
        ax.set_ylabel("digits test accuracy (%)")
        ax.set_title("Accuracy vs analog noise")
        ax.legend(fontsize=8)
        fig.tight_layout()
        p = outdir / "rns_noise_sweep.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def report_section(result: dict[str, Any], outdir: Path) -> ReportSection:
    from dnninfer.report.html import figure_html, table_html

    images = plots(result, outdir)
    ours, paper = result["ours"], result["paper"]
    head = [
        {"figure": "training speedup, iso-energy", "paper": paper["speedup_iso_energy"],
         "ours (modelled)": ours.get("speedup_iso_energy")},
        {"figure": "EDP ratio, iso-energy", "paper": paper["edp_ratio_iso_energy"],
         "ours (modelled)": ours.get("edp_ratio_iso_energy")},
        {"figure": "power ratio, iso-area", "paper": paper["power_ratio_iso_area"],
         "ours (modelled)": ours.get("power_ratio_iso_area")},
        {"figure": "EDP ratio, iso-area", "paper": paper["edp_iso_area"],
         "ours (modelled)": ours.get("edp_ratio_iso_area")},
        {"figure": "accuracy", "paper": paper["accuracy"],
         "ours (measured)": ", ".join(f"{d}: FP32 - RNS = {g:.2f} pts" for d, g in ours["rns_gap_pts"].items())},
        {"figure": "noiseless RNS == BFP-exact, bit for bit", "paper": "",
         "ours (measured)": ours["rns_equals_bfp_bit_for_bit"]},
    ]
    acc_rows = [{"dataset": d, **{m: round(100 * v, 2) for m, v in a.items()}} for d, a in ours["acc"].items()]
    parts = [
        "<p>Accuracies are measured (every GEMM of training emulated in integer BFP + RNS arithmetic); the "
        "speed, EDP and power ratios come from our analytical model with the public constants in "
        "configs/photonic (the paper's own constants are not public).</p>",
        table_html(head), "<h3>Test accuracy (%)</h3>", table_html(acc_rows),
        "<h3>Noise sweep (digits)</h3>",
        table_html([{k: v for k, v in s.items() if k != "accs"} for s in ours["noise_sweep"]]),
    ]
    captions = ["Test accuracy per epoch, every numerics mode.", "Digits accuracy vs readout noise, with and "
                "without redundant moduli."]
    parts += [figure_html(p, c, base=outdir) for p, c in zip(images, captions, strict=False)]
    model_rows = [r for r in result["rows"] if r.get("kind") == "model"]
    if model_rows:
        parts += ["<h3>Analytical model per workload</h3>", table_html(model_rows)]
    if ours.get("model_sensitivity"):
        parts += ["<h3>Model sensitivity (one knob at a time)</h3>", table_html(ours["model_sensitivity"])]
    return ReportSection(title="Mirage: RNS arithmetic for analog DNN training", html="\n".join(parts), images=images)
