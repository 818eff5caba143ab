"""The signed-binary report section: paper-vs-ours lines, the two plots, the pair and row tables."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from dnninfer.bench.claims import Claim, lookup
from dnninfer.bench.figures import Figures
from dnninfer.quant.speed import KERNEL_CASES
from dnninfer.report.section import ReportSection, Table, build_section


def _paired_note(key: str) -> Any:
    def note(r: dict[str, Any]) -> str:
        p = lookup(r, key)
        if not p:
            return "no width pair within 1.5x non-zeros"
        return (f"95% CI [{100 * p['ci_lo']:+.2f}, {100 * p['ci_hi']:+.2f}] pts over {p['n']} paired seeds, "
                f"sign-test p = {p['sign_test_p']:.3g}")
    return note


def _matched(r: dict[str, Any]) -> str:
    nnz = lookup(r, "matched_nnz")
    return (f"{lookup(r, 'acc_signed_at_matched_nnz'):.2%} vs {lookup(r, 'acc_binary_at_matched_nnz'):.2%} "
            f"({nnz['signed']:.0f} vs {nnz['binary']:.0f} nnz)")


CLAIMS = (
    Claim("accuracy at matched non-zeros, signed - binary (points)", "signed > binary at the same nnz",
          lambda r: 100 * lookup(r, "paired_signed_minus_binary.mean_diff"), target=0.0, fmt="+.2f",
          note=_paired_note("paired_signed_minus_binary")),
    Claim("accuracy at matched non-zeros, signed vs binary", "signed > binary", _matched,
          note=lambda r: "widths x{signed:g} vs x{binary:g}".format(**w) if (w := lookup(r, "matched_widths"))
          else "no matched pair"),
    Claim("signed beats binary at every matched pair", "signed > binary",
          "signed_beats_binary_at_every_matched_pair", target=True),
    Claim("density reduction vs binary (1 / density_signed)", "2.8x", "density_reduction_vs_binary", target=2.8,
          fmt="x", note=lambda r: f"density signed {lookup(r, 'density_signed'):.3f}, "
                                  f"ternary {lookup(r, 'density_ternary'):.3f}"),
    Claim("kernel speedup vs binary ('2 x pos - total')", "1.26x", "kernel_speedup_vs_binary", target=1.26, fmt="x",
          note=lambda r: f"median of {lookup(r, 'kernel_shapes')} shapes; numba, 1 thread (paper: SumMerge)"),
    Claim("kernel speedup vs ternary", "1.75x (ICLR 2024 review)", "kernel_speedup_vs_ternary", target=1.75,
          fmt="x"),
    Claim("kernel speedup vs best binary kernel (incl. dense SIMD)", ours="kernel_speedup_vs_best_binary", fmt="x"),
    Claim("kernel speedup vs fp32 BLAS (1 thread)", ours="kernel_speedup_vs_fp32_blas", fmt="x"),
    Claim("deployed numba model equals the trained model", ours="deploy_max_abs_err", target=1e-4, better="lower",
          fmt=".1e", note=lambda r: f"max |deploy - torch| on the test set; kernels max rel err "
                                    f"{lookup(r, 'kernel_max_rel_err'):.1e}"),
    Claim("signed >= binary at matched nnz on digits and MNIST-1D, MLP and residual conv net",
          "signed > binary", "signed_ge_binary_everywhere", target=True,
          note=lambda r: "; ".join(f"{k} {100 * v['mean_diff']:+.1f} pts [{100 * v['ci95'][0]:+.1f}, "
                                   f"{100 * v['ci95'][1]:+.1f}]" if v else f"{k} unmatched"
                                   for k, v in (lookup(r, "signed_minus_binary_at_matched_nnz") or {}).items())
          + f" (policy {lookup(r, 'signed_minus_binary_policy')})"),
    Claim("kernel speedup vs binary at trained density", "1.26x", "kernel_speedup_vs_binary_at_trained_density",
          target=1.26, fmt="x", note=lambda r: f"density curve shape {lookup(r, 'kernel_density_curve.shape_MxKxN')}"),
    Claim("kernel speedup vs fp32 BLAS at trained density", ours="kernel_speedup_vs_fp32_blas_at_trained_density",
          fmt="x"),
    Claim("ResNet-18 ImageNet top-1", "66.2%", note="not attempted: digits MLP only"),
)

_COLORS = {"fp32": "tab:gray", "binary": "tab:blue", "ternary": "tab:green", "signed": "tab:red"}


def plots(result: dict[str, Any], outdir: Path) -> Figures:
    """Accuracy vs non-zeros per method (Pareto) and kernel time per method per shape."""
    figs = Figures(outdir)
    acc = [r for r in result["rows"] if r.get("kind") == "accuracy"]
    with figs.plot("signed_binary_pareto.png", "Accuracy vs non-zero weights, mean +- std over paired seeds.",
                   figsize=(7, 5)) as (_, ax):
        for method in dict.fromkeys(r["method"] for r in acc):
            pts = sorted((r["nnz_mean"], r["acc_mean"], r["acc_std"], r["width"]) for r in acc if r["method"] == method)
            ax.errorbar([p[0] for p in pts], [100 * p[1] for p in pts], yerr=[100 * p[2] for p in pts], marker="o",
                        capsize=3, label=method, color=_COLORS.get(method))
            for p in pts:
                ax.annotate(f"x{p[3]:g}", (p[0], 100 * p[1]), fontsize=7, xytext=(3, -9), textcoords="offset points")
        ax.set(xscale="log", xlabel="non-zero weights in quantised layers (mean over seeds, log)",
               ylabel="test accuracy % (mean +- std over seeds)",
               title="Digits MLP: accuracy vs non-zeros (labels: width)")
        ax.grid(alpha=0.3)
        ax.legend()
    kern = [r for r in result["rows"] if r.get("kind") == "kernel"]
    with figs.plot("signed_binary_kernels.png", "Median kernel time per method and shape (1 thread).",
                   figsize=(9, 4.5)) as (_, ax):
        width = 0.8 / len(KERNEL_CASES)
        for i, name in enumerate(KERNEL_CASES):
            ax.bar([j + i * width for j in range(len(kern))], [r[f"{name}_ms"] for r in kern], width, label=name)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(kern))], [r["shape"] for r in kern], fontsize=8)
        ax.set(yscale="log", ylabel="median time (ms, log), 1 thread",
               title="Kernel time per method per shape (M x K x N)")
        ax.legend(fontsize=8, ncol=3)
    _density_plot(figs, result)
    _study_plot(figs, result)
    return figs


def _density_plot(figs: Figures, result: dict[str, Any]) -> None:
    """Each kernel's speed relative to fp32 BLAS (time_blas / time_kernel) against the signed/ternary density."""
    rows = sorted((r for r in result["rows"] if r.get("kind") == "kernel_density"), key=lambda r: r["density"])
    if not rows:
        return
    curve = result["ours"].get("kernel_density_curve", {})
    with figs.plot("signed_binary_density.png", "Kernel speed relative to fp32 BLAS vs density, same shape "
                   "and activations (1 thread, medians); dashed: the trained signed density.",
                   figsize=(7, 4.5)) as (_, ax):
        d = [r["density"] for r in rows]
        for name in KERNEL_CASES:
            ax.plot(d, [r["fp32_blas_ms"] / r[f"{name}_ms"] for r in rows], marker="o", label=name,
                    color=_COLORS.get({"binary_2pos": "binary", "fp32_blas": "fp32"}.get(name, name)),
                    linestyle=":" if name == "dense_pm1" else "-")
        if curve.get("trained_density"):
            ax.axvline(curve["trained_density"], color="k", linestyle="--", alpha=0.5)
        ax.axhline(1.0, color="gray", linewidth=0.8)
        ax.set(xlabel="density of signed / ternary weights (binary and fp32 are dense)",
               ylabel="speed vs fp32 BLAS (x, higher = faster)",
               title=f"Speedup vs density, M x K x N = {' x '.join(map(str, curve.get('shape_MxKxN', [])))}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)


def _study_plot(figs: Figures, result: dict[str, Any]) -> None:
    """Paired signed - binary difference with its 95 % CI per dataset/architecture/policy."""
    study = result.get("study") or {}
    items = [(k, v["summary"]) for k, v in study.items() if v["summary"].get("matched")]
    if not items:
        return
    with figs.plot("signed_binary_study.png", "Signed - binary accuracy at matched non-zeros (paired seeds, "
                   "bootstrap 95 % CI) per dataset / architecture / policy.", figsize=(7, 0.4 * len(items) + 1.5)) \
            as (_, ax):
        for i, (_k, s) in enumerate(items):
            ax.errorbar([100 * s["mean_diff"]], [i], xerr=[[100 * (s["mean_diff"] - s["ci_lo"])],
                                                           [100 * (s["ci_hi"] - s["mean_diff"])]],
                        marker="o", capsize=3, color="tab:red" if s["mean_diff"] < 0 else "tab:blue")
        ax.set_yticks(range(len(items)), [f"{k} (nnz x{s['nnz_ratio']:.2f})" for k, s in items], fontsize=8)
        ax.axvline(0.0, color="k", linewidth=0.8)
        ax.set(xlabel="signed - binary test accuracy (points)")
        ax.grid(alpha=0.3, axis="x")


def report_section(result: dict[str, Any], outdir: Path) -> ReportSection:
    intro = ("Digits MLP (not ImageNet ResNet-18); numba add-only kernels on this x86 host (not SumMerge). "
             "Matched non-zeros: " + escape(result["ours"]["matched_definition"]) + ".")
    return build_section("Signed binarization (PLUM)", result, outdir, intro=intro, claims=CLAIMS,
                         parts=[plots(result, outdir), Table(result.get("matched_pairs", []), "Matched pairs"),
                                Table(result["rows"], "Rows")])
