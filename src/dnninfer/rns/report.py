"""The Mirage report section: paper-vs-ours lines, training curves, the noise sweep, the model tables.

Accuracies and bit-exactness are measured by training here; the speed, EDP and power ratios come
from our analytical model (rns/photonic.py, public constants), so their lines say "predicted".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dnninfer.bench.claims import Claim, lookup
from dnninfer.bench.figures import Figures
from dnninfer.report.section import ReportSection, Table, build_section

MODEL_NOTE = "analytical model, public constants (configs/photonic); mean over workloads"


def _rns_over_fp32(result: dict[str, Any]) -> float:
    """The worst dataset's RNS accuracy as a fraction of its FP32 accuracy."""
    return min(a["rns"] / a["fp32"] for a in lookup(result, "acc").values())


def _gaps(result: dict[str, Any]) -> str:
    return ", ".join(f"{d}: FP32 - RNS = {g:.2f} pts" for d, g in lookup(result, "rns_gap_pts").items())


def _noise(result: dict[str, Any]) -> str:
    sweep = lookup(result, "noise_sweep")
    sigma = max(s["sigma"] for s in sweep)
    acc = {s["redundant"]: s["acc"] for s in sweep if s["sigma"] == sigma}
    return ", ".join(f"{'no' if k == 0 else k} redundant moduli: {a:.1%}" for k, a in sorted(acc.items())) + \
        f" (digits, sigma = {sigma:g})"


#: The headline first: Mirage's claim is FP32-level accuracy from RNS arithmetic (measured here); the
#: speed, EDP and power lines come from our analytical model.
CLAIMS = (
    Claim("RNS training accuracy vs FP32", "FP32-comparable (>= 99% of FP32)", _rns_over_fp32, target=0.99,
          fmt=".1%", note=_gaps),
    Claim("training speedup, iso-energy", "23.8x", "speedup_iso_energy", target=23.8, basis="predicted", fmt="x",
          note=MODEL_NOTE),
    Claim("EDP ratio, iso-energy", "32.1x", "edp_ratio_iso_energy", target=32.1, basis="predicted", fmt="x",
          note=MODEL_NOTE),
    Claim("power ratio, iso-area", "42.8x", "power_ratio_iso_area", target=42.8, basis="predicted", fmt="x",
          note=MODEL_NOTE),
    Claim("EDP ratio, iso-area", "comparable or better", "edp_ratio_iso_area", target=1.0, tolerance=0.1,
          basis="predicted", fmt="x", note=MODEL_NOTE + "; met at >= 0.9x"),
    Claim("noiseless RNS == BFP-exact, bit for bit", ours="rns_equals_bfp_bit_for_bit", target=True,
          note="forward, grad-input, grad-weight GEMMs of a linear and a conv layer, and a whole training run"),
    Claim("accuracy under analog readout noise", "RRNS for fault tolerance", _noise),
)


def plots(result: dict[str, Any], outdir: Path) -> Figures:
    """Test accuracy per epoch for every mode (one panel per dataset); accuracy vs sigma."""
    from matplotlib.ticker import MaxNLocator

    figs = Figures(outdir)
    curves = result.get("curves") or {}
    if datasets := list(dict.fromkeys(k.split("/")[0] for k in curves)):
        with figs.plot("rns_training_curves.png", "Test accuracy per epoch, every numerics mode.",
                       figsize=(5.5 * len(datasets), 4), ncols=len(datasets), squeeze=False) as (_, axes):
            for ax, ds in zip(axes[0], datasets, strict=True):
                for key, ys in curves.items():
                    if key.startswith(ds + "/"):
                        mode = key.split("/")[1]
                        ax.plot(range(1, len(ys) + 1), [100 * y for y in ys], label=mode, marker="o", ms=3,
                                linestyle="--" if mode == "bfp" else "-")  # a marker: 1 epoch is a point
                ax.set(title=f"{ds}: test accuracy per epoch", xlabel="epoch", ylabel="test accuracy (%)")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.legend(fontsize=8)
    if sweep := result["ours"].get("noise_sweep") or []:
        with figs.plot("rns_noise_sweep.png", "Digits accuracy vs readout noise, with and without redundant moduli.",
                       figsize=(6, 4)) as (_, ax):
            for k in sorted({s["redundant"] for s in sweep}):
                pts = sorted((s["sigma"], 100 * s["acc"]) for s in sweep if s["redundant"] == k and s["sigma"] > 0)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                        label="no redundant moduli" if k == 0 else f"RRNS, {k} redundant moduli")
            if clean := [s["acc"] for s in sweep if s["sigma"] == 0]:
                ax.axhline(100 * clean[0], color="grey", linestyle=":", label="noiseless RNS (same epochs)")
            ax.set(xlabel="readout noise sigma (residue steps)", ylabel="digits test accuracy (%)",
                   title="Accuracy vs analog noise")
            ax.legend(fontsize=8)
    return figs


def report_section(result: dict[str, Any], outdir: Path) -> ReportSection:
    ours = result["ours"]
    acc_rows = [{"dataset": d, **{m: round(100 * v, 2) for m, v in a.items()}} for d, a in ours["acc"].items()]
    parts: list[Any] = [
        Table(acc_rows, "Test accuracy (%)"),
        Table([{k: v for k, v in s.items() if k != "accs"} for s in ours["noise_sweep"]], "Noise sweep (digits)"),
        plots(result, outdir),
    ]
    if model_rows := [r for r in result["rows"] if r.get("kind") == "model"]:
        parts.append(Table(model_rows, "Analytical model per workload"))
    if ours.get("model_sensitivity"):
        parts.append(Table(ours["model_sensitivity"], "Model sensitivity (one knob at a time)"))
    return build_section(
        "Mirage: RNS arithmetic for analog DNN training", result, outdir, claims=CLAIMS, parts=parts,
        intro="Accuracies are measured (every GEMM of training emulated in integer BFP + RNS arithmetic); the "
              "speed, EDP and power ratios come from our analytical model with the public constants in "
              "configs/photonic (the paper's own constants are not public).")
