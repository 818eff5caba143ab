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
    return figs


def report_section(result: dict[str, Any], outdir: Path) -> ReportSection:
    intro = ("Digits MLP (not ImageNet ResNet-18); numba add-only kernels on this x86 host (not SumMerge). "
             "Matched non-zeros: " + escape(result["ours"]["matched_definition"]) + ".")
    return build_section("Signed binarization (PLUM)", result, outdir, intro=intro, claims=CLAIMS,
                         parts=[plots(result, outdir), Table(result.get("matched_pairs", []), "Matched pairs"),
                                Table(result["rows"], "Rows")])
