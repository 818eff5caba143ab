"""`dnninfer bench signed-binary`: accuracy vs non-zeros and kernel speed, fp32/binary/ternary/signed.

Two parts, one run:

1. **Accuracy vs non-zeros (digits).** The MLP of ``models.mlp`` (first layer quantised, classifier
   FP: the research report's discriminating setting, §5) at several widths, every method, the same
   seeds for every method (paired: a seed fixes split, init and batch order). nnz counts the
   non-zero weights of the quantised layers. "Matched non-zeros" is the closest width pair
   (``analysis.matched_pairs``): for each binary width, the signed-binary width whose mean nnz is
   closest in log ratio, kept when within 1.5x; the headline is the pair closest to 1.
2. **Kernel speed (numba, one thread, interleaved medians).** Per shape ``(M, K, N)`` the same
   activations go through fp32 BLAS, dense +-1, binary "2 x pos - total", ternary and signed-binary
   kernels. Two kinds of shapes: the trained MLP's first layer (each method's own trained weights,
   M = the test set) and larger GEMV/GEMM shapes (ResNet-like, from the research report §5) whose
   weights are drawn at the densities the trained models reached in this run. Speedups are ratios
   of medians in the same run, median over shapes.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from dnninfer.bench.output import make_progress
from dnninfer.bench.registry import BenchArgs, register_system
from dnninfer.report.section import ReportSection

PAPER = {
    "density_reduction_vs_binary": 2.8,
    "speedup_vs_binary": 1.26,
    "speedup_vs_ternary": 1.75,
    "accuracy_claim": "signed binary is more accurate than binary at an equal number of non-zero weights",
    "resnet18_imagenet_top1": 0.662,
    "source": "Kuhar, Jain, Tumanov, 'Signed Binarization: Unlocking Efficiency Through Repetition-Sparsity "
              "Trade-Off' / PLUM, arXiv 2312.01581, TMLR 2024 (https://openreview.net/forum?id=IEKtMMSblm): "
              "abstract (66.2 % top-1 ResNet-18/ImageNet, 26 % faster than binary, 2.8x lower density); "
              "1.75x faster than ternary as summarised in the ICLR 2024 review (https://paperhub.cn/paper/1dY11GyZdp). "
              "Speed measured with SumMerge (ICS 2021) on real CPUs.",
}
METHODS = ("fp32", "binary", "ternary", "signed")
KERNEL_CASES = ("fp32_blas", "dense_pm1", "binary_2pos", "ternary", "signed")
QUICK: dict[str, Any] = {"widths": (0.5, 1.25), "seeds": 8, "epochs": 12, "kernel_width": 1.25,
                         "shapes": ((1, 1152, 128), (32, 576, 64)), "warmup": 3, "repeats": 15}
#: --smoke: both widths (a matched pair), 2 paired seeds, every kernel on the trained layer + one synthetic shape.
SMOKE: dict[str, Any] = {"widths": (0.5, 1.25), "seeds": 2, "epochs": 2, "kernel_width": 1.25,
                         "shapes": ((1, 1152, 128),), "warmup": 1, "repeats": 3}
FULL: dict[str, Any] = {"widths": (0.5, 0.75, 1.0, 1.5, 2.0, 3.0), "seeds": 10, "epochs": 60, "kernel_width": 3.0,
                        "shapes": ((1, 2304, 256), (1, 4608, 512), (64, 2304, 256), (196, 1152, 128)),
                        "warmup": 5, "repeats": 31}


def _add_arguments(p: Any) -> None:
    p.add_argument("--widths", nargs="*", type=float, default=None, help="MLP width multipliers (x16 hidden units)")
    p.add_argument("--seeds", type=int, default=None, help="paired seeds per (method, width) (8 quick, 10 full)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (12 quick, 60 full)")


@register_system("signed-binary",
                 description="Signed binarization (PLUM) vs binary/ternary/fp32: accuracy at matched non-zeros, "
                             "add-only kernel speed",
                 report_section=lambda result, outdir: report_section(result, outdir),
                 add_arguments=_add_arguments)
def bench_signed_binary(args: BenchArgs) -> dict[str, Any]:
    import numba
    from threadpoolctl import threadpool_limits

    from dnninfer.bench.harness import pinned_threads

    cfg = dict(SMOKE if args.smoke else QUICK if args.quick else FULL)
    cfg["widths"] = tuple(args.get("widths") or cfg["widths"])
    cfg["seeds"] = args.get("seeds") or cfg["seeds"]
    cfg["epochs"] = args.get("epochs") or cfg["epochs"]
    if cfg["kernel_width"] not in cfg["widths"]:
        cfg["kernel_width"] = max(cfg["widths"])
    seeds = [args.seed + i for i in range(cfg["seeds"])]
    numba.set_num_threads(1)
    with pinned_threads(1), threadpool_limits(1):
        runs, models = _train_all(cfg, seeds)
        deploy_err = _deploy_check(models, seeds[0])
        kernel_rows = _time_kernels(cfg, runs, models, seeds[0])
    result = _summarise(cfg, seeds, runs, kernel_rows, deploy_err)
    if args.out:
        plots(result, Path(args.out))
    return result


# -- part 1: training -----------------------------------------------------------------------------
def _train_all(cfg: dict[str, Any], seeds: list[int]) -> tuple[list[dict[str, Any]], dict[tuple, Any]]:
    from dnninfer.data import load_digits
    from dnninfer.quant.train import TrainConfig, train

    runs: list[dict[str, Any]] = []
    models: dict[tuple, Any] = {}
    total = len(seeds) * len(cfg["widths"]) * len(METHODS)
    with make_progress() as bar:
        task = bar.add_task("signed-binary: training", total=total)
        for seed in seeds:
            split = load_digits(seed=seed)
            for width in cfg["widths"]:
                for method in METHODS:
                    r = train(TrainConfig(method=method, width=width, epochs=cfg["epochs"], seed=seed), split,
                              progress=False)
                    runs.append({"method": method, "width": width, "hidden": r.layers[0]["shape"][0] if r.layers else 0,
                                 "seed": seed, "accuracy": r.accuracy, "train_accuracy": r.train_accuracy,
                                 "nnz": r.nnz, "weights": r.weights, "density": r.density, "nnz_all": r.nnz_all,
                                 "train_s": r.train_s})
                    if seed == seeds[0]:
                        models[(method, width)] = (r.model, split)
                    bar.advance(task)
    return runs, models


def _deploy_check(models: dict[tuple, Any], seed: int) -> float:
    """Max |deploy(model)(x) - model(x)| over every method and width of the first seed (test set)."""
    import torch

    from dnninfer.quant.engine import deploy

    worst = 0.0
    for model, split in models.values():
        model.eval()
        with torch.no_grad():
            ref = model(split.test_x).numpy()
        worst = max(worst, float(np.abs(deploy(model)(split.test_x) - ref).max()))
    return worst


# -- part 2: kernels ------------------------------------------------------------------------------
def synthetic_weights(n: int, k: int, method: str, density: float, rng: np.random.Generator) -> np.ndarray:
    """A +-1/0 pattern for ``method``: binary random signs; ternary a Bernoulli(density) mask with
    random signs; signed a Bernoulli(density) mask with PLUM's layout (first half +, rest -)."""
    signs = np.where(rng.random((n, k)) < 0.5, 1.0, -1.0)
    if method == "binary":
        return signs.astype(np.float32)
    mask = rng.random((n, k)) < density
    if method == "ternary":
        return (mask * signs).astype(np.float32)
    layout = np.where(np.arange(n) < n // 2, 1.0, -1.0)[:, None]
    return (mask * layout).astype(np.float32)


def _kernels_for(weights: dict[str, np.ndarray]) -> dict[str, Any]:
    from dnninfer.quant.kernels import make_kernel, pack

    pb = pack(weights["binary"], "binary")
    return {
        "fp32_blas": make_kernel(pack(weights["fp32"], "fp32")),
        "dense_pm1": make_kernel(pb, kind="dense_pm1"),
        "binary_2pos": make_kernel(pb, kind="binary_2pos"),
        "ternary": make_kernel(pack(weights["ternary"], "ternary")),
        "signed": make_kernel(pack(weights["signed"], "signed")),
    }


def _time_shape(label: str, source: str, x: np.ndarray, weights: dict[str, np.ndarray], cfg: dict[str, Any],
                seed: int) -> dict[str, Any]:
    from dnninfer.bench.harness import compare
    from dnninfer.bench.stats import ratio_ci
    from dnninfer.quant.kernels import reference_gemm

    kernels = _kernels_for(weights)
    m, k = x.shape
    n = weights["signed"].shape[0]
    xt = np.ascontiguousarray(x.T)
    # One output buffer shared by every kernel: the GEMM loops' speed depends on where ``out`` lies
    # relative to ``xt`` (store/load address aliasing, up to 3x on the dev box), so separate buffers
    # would hand each kernel a different, allocation-dependent handicap.
    out = np.empty((n, m), np.float32)
    err = 0.0
    for name, kern in kernels.items():  # correctness first (also compiles)
        w = weights[{"dense_pm1": "binary", "binary_2pos": "binary", "fp32_blas": "fp32"}.get(name, name)]
        ref = reference_gemm(x, w)
        err = max(err, float(np.abs(kern.run_t(xt, out).T - ref).max() / max(1.0, np.abs(ref).max())))
    cases = {name: (lambda kern=kern: kern.run_t(xt, out)) for name, kern in kernels.items()}
    t = compare(cases, warmup=cfg["warmup"], repeats=cfg["repeats"], seed=seed, progress=False,
                description=f"kernels {label}")
    best_binary = min(("dense_pm1", "binary_2pos"), key=lambda c: t[c].median)
    row: dict[str, Any] = {"kind": "kernel", "shape": label, "source": source, "M": m, "K": k, "N": n,
                           "density_ternary": float((weights["ternary"] != 0).mean()),
                           "density_signed": float((weights["signed"] != 0).mean()),
                           "max_rel_err": err}
    for name in KERNEL_CASES:
        row[f"{name}_ms"] = t[name].median * 1e3
        row[f"{name}_iqr_ms"] = t[name].iqr * 1e3
        row[f"{name}_adds_per_output"] = kernels[name].adds_per_output()
    for ref_name, key in (("binary_2pos", "vs_binary"), ("ternary", "vs_ternary"), (best_binary, "vs_best_binary"),
                          ("dense_pm1", "vs_dense_pm1"), ("fp32_blas", "vs_fp32_blas")):
        r = ratio_ci(t[ref_name].samples, t["signed"].samples, names=(ref_name, "signed"), seed=seed)
        row[f"speedup_{key}"] = r.ratio
        row[f"speedup_{key}_ci"] = [r.lo, r.hi]
    row["best_binary_kernel"] = best_binary
    return row


def _time_kernels(cfg: dict[str, Any], runs: list[dict[str, Any]], models: dict[tuple, Any],
                  seed: int) -> list[dict[str, Any]]:
    import torch

    from dnninfer.quant.quantizers import quant_layers

    rng = np.random.default_rng(seed)
    density = {m: statistics.fmean(r["density"] for r in runs if r["method"] == m) for m in ("ternary", "signed")}
    todo: list[tuple[str, str, np.ndarray, dict[str, np.ndarray]]] = []
    # (a) the trained first layer, each method's own weights, the whole test set as M
    width = cfg["kernel_width"]
    trained = {}
    for method in METHODS:
        layer = quant_layers(models[(method, width)][0])[0][1]
        with torch.no_grad():
            trained[method] = layer.quantized_weight().numpy().reshape(layer.weight.shape[0], -1)
    test_x = models[("signed", width)][1].test_x
    x_test = test_x.reshape(test_x.shape[0], -1).numpy()
    n, k = trained["signed"].shape
    todo.append((f"trained {x_test.shape[0]}x{k}x{n}", "trained", np.ascontiguousarray(x_test, np.float32), trained))
    # (b) larger shapes at this run's trained densities
    for m, k, n in cfg["shapes"]:
        x = rng.standard_normal((m, k)).astype(np.float32)
        w = {meth: synthetic_weights(n, k, meth, density.get(meth, 1.0), rng)
             for meth in ("binary", "ternary", "signed")}
        w["fp32"] = rng.standard_normal((n, k)).astype(np.float32)
        todo.append((f"{m}x{k}x{n}", "synthetic", x, w))
    rows = []
    with make_progress() as bar:
        task = bar.add_task("signed-binary: kernels", total=len(todo))
        for label, source, x, w in todo:
            rows.append(_time_shape(label, source, x, w, cfg, seed))
            bar.advance(task)
    return rows


# -- summary --------------------------------------------------------------------------------------
def _summarise(cfg: dict[str, Any], seeds: list[int], runs: list[dict[str, Any]], kernel_rows: list[dict[str, Any]],
               deploy_err: float) -> dict[str, Any]:
    from dnninfer.quant.analysis import by_method_width, headline_pair, matched_pairs

    groups = by_method_width(runs)
    rows: list[dict[str, Any]] = []
    for (method, width), per_seed in sorted(groups.items(), key=lambda kv: (METHODS.index(kv[0][0]), kv[0][1])):
        accs = [r["accuracy"] for r in per_seed.values()]
        rows.append({"kind": "accuracy", "method": method, "width": width,
                     "hidden": next(iter(per_seed.values()))["hidden"], "seeds": len(accs),
                     "acc_mean": statistics.fmean(accs), "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                     "nnz_mean": statistics.fmean(r["nnz"] for r in per_seed.values()),
                     "weights": next(iter(per_seed.values()))["weights"],
                     "density_mean": statistics.fmean(r["density"] for r in per_seed.values())})
    pairs_sb = matched_pairs(runs, "signed", "binary", seed=seeds[0])
    pairs_st = matched_pairs(runs, "signed", "ternary", seed=seeds[0])
    head = headline_pair(pairs_sb)
    head_t = headline_pair(pairs_st)
    dens = {m: statistics.fmean(r["density"] for r in runs if r["method"] == m) for m in METHODS}

    def med(key: str) -> float | None:
        vals = [r[key] for r in kernel_rows if r.get(key) is not None and math.isfinite(r[key])]
        return statistics.median(vals) if vals else None

    ours: dict[str, Any] = {
        "acc_signed_at_matched_nnz": head["acc_a"] if head else None,
        "acc_binary_at_matched_nnz": head["acc_b"] if head else None,
        "matched_widths": {"signed": head["width_a"], "binary": head["width_b"]} if head else None,
        "matched_nnz": {"signed": head["nnz_a"], "binary": head["nnz_b"]} if head else None,
        "matched_definition": "closest width pair: for each binary width, the signed width whose mean nnz "
                              "(quantised layers) is closest in log ratio, kept within 1.5x; headline = the pair "
                              "with the ratio closest to 1; no interpolation",
        "paired_signed_minus_binary": ({k: head[k] for k in ("n", "mean_diff", "std_diff", "ci_lo", "ci_hi", "wins",
                                                             "losses", "ties", "sign_test_p")} if head else None),
        "signed_beats_binary_at_every_matched_pair": all(p["mean_diff"] > 0 for p in pairs_sb if p["matched"]) if
        any(p["matched"] for p in pairs_sb) else None,
        "acc_signed_minus_ternary_at_matched_nnz": head_t["mean_diff"] if head_t else None,
        "paired_signed_minus_ternary": ({k: head_t[k] for k in ("n", "width_a", "width_b", "nnz_ratio", "mean_diff",
                                                                "ci_lo", "ci_hi", "sign_test_p")} if head_t else None),
        "density_signed": dens["signed"],
        "density_ternary": dens["ternary"],
        "density_reduction_vs_binary": 1.0 / dens["signed"] if dens["signed"] else None,
        "kernel_speedup_vs_binary": med("speedup_vs_binary"),
        "kernel_speedup_vs_ternary": med("speedup_vs_ternary"),
        "kernel_speedup_vs_best_binary": med("speedup_vs_best_binary"),
        "kernel_speedup_vs_dense_pm1": med("speedup_vs_dense_pm1"),
        "kernel_speedup_vs_fp32_blas": med("speedup_vs_fp32_blas"),
        "kernel_shapes": len(kernel_rows),
        "kernel_max_rel_err": max(r["max_rel_err"] for r in kernel_rows),
        "deploy_max_abs_err": deploy_err,
        "seeds": len(seeds),
        "training_runs": len(runs),
    }
    return {
        "paper": PAPER, "ours": ours, "rows": rows + kernel_rows,
        "matched_pairs": pairs_sb + pairs_st, "runs": runs,
        "config": {"model": "MLP flatten->Q(64,h)->BN->ReLU->Q(h,h)->BN->ReLU->FP(h,10), h = 16 x width",
                   "dataset": "scikit-learn digits, 75/25 split by seed", "widths": list(cfg["widths"]),
                   "seeds": seeds, "epochs": cfg["epochs"], "optimizer": "Adam lr 2e-3, linear decay, batch 64",
                   "kernel_shapes_MxKxN": [list(s) for s in cfg["shapes"]], "kernel_width": cfg["kernel_width"],
                   "timing": f"numba 1 thread, BLAS 1 thread, interleaved, warmup {cfg['warmup']}, "
                             f"{cfg['repeats']} rounds, medians",
                   "speedup_definition": "median(time of rival kernel) / median(time of signed kernel) per shape, "
                                         "median over shapes; vs_binary = the '2 x pos - total' index-list kernel"},
    }


# -- plots and report -----------------------------------------------------------------------------
_COLORS = {"fp32": "tab:gray", "binary": "tab:blue", "ternary": "tab:green", "signed": "tab:red"}


def plots(result: dict[str, Any], outdir: Path) -> list[Path]:
    """Accuracy vs non-zeros per method (Pareto) and kernel time per method per shape."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    acc = [r for r in result["rows"] if r.get("kind") == "accuracy"]
    fig, ax = plt.subplots(figsize=(7, 5))
    for method in METHODS:
        pts = sorted((r["nnz_mean"], r["acc_mean"], r["acc_std"], r["width"]) for r in acc if r["method"] == method)
        if not pts:
            continue
        ax.errorbar([p[0] for p in pts], [100 * p[1] for p in pts], yerr=[100 * p[2] for p in pts], marker="o",
                    capsize=3, label=method, color=_COLORS[method])
        for p in pts:
            ax.annotate(f"x{p[3]:g}", (p[0], 100 * p[1]), fontsize=7, xytext=(3, -9), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("non-zero weights in quantised layers (mean over seeds, log)")
    ax.set_ylabel("test accuracy % (mean +- std over seeds)")
    ax.set_title("Digits MLP: accuracy vs non-zeros (labels: width)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    pareto = outdir / "signed_binary_pareto.png"
    fig.savefig(pareto, dpi=110)
    plt.close(fig)

    kern = [r for r in result["rows"] if r.get("kind") == "kernel"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(KERNEL_CASES)
    for i, name in enumerate(KERNEL_CASES):
        ax.bar([j + i * width for j in range(len(kern))], [r[f"{name}_ms"] for r in kern], width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(kern))], [r["shape"] for r in kern], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("median time (ms, log), 1 thread")
    ax.set_title("Kernel time per method per shape (M x K x N)")
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    times = outdir / "signed_binary_kernels.png"
    fig.savefig(times, dpi=110)
    plt.close(fig)
    return [pareto, times]


def report_section(result: dict[str, Any], outdir: Path) -> ReportSection:
    from dnninfer.report.html import figure_html, table_html

    images = plots(result, outdir)
    ours, paper = result["ours"], result["paper"]
    paired = ours.get("paired_signed_minus_binary") or {}
    head = [
        {"figure": "density reduction vs binary (1 / density_signed)", "paper": paper["density_reduction_vs_binary"],
         "ours": ours["density_reduction_vs_binary"]},
        {"figure": "kernel speedup vs binary", "paper": paper["speedup_vs_binary"],
         "ours": ours["kernel_speedup_vs_binary"]},
        {"figure": "kernel speedup vs ternary", "paper": paper["speedup_vs_ternary"],
         "ours": ours["kernel_speedup_vs_ternary"]},
        {"figure": "kernel speedup vs best binary kernel (incl. dense SIMD)", "paper": "",
         "ours": ours["kernel_speedup_vs_best_binary"]},
        {"figure": "acc signed / binary at matched nnz", "paper": "signed > binary",
         "ours": f"{ours['acc_signed_at_matched_nnz']} / {ours['acc_binary_at_matched_nnz']}"},
        {"figure": "paired diff (signed - binary), 95% CI, sign-test p", "paper": "",
         "ours": f"{paired.get('mean_diff')} [{paired.get('ci_lo')}, {paired.get('ci_hi')}], "
                 f"p={paired.get('sign_test_p')}"},
    ]
    parts = [
        "<p>Digits MLP (not ImageNet ResNet-18); numba add-only kernels on this x86 host (not SumMerge). "
        "Matched non-zeros: " + ours["matched_definition"] + ".</p>",
        table_html(head, ["figure", "paper", "ours"]),
        figure_html(images[0], "Accuracy vs non-zero weights, mean +- std over paired seeds.", base=outdir),
        figure_html(images[1], "Median kernel time per method and shape (1 thread).", base=outdir),
        "<h3>Matched pairs</h3>", table_html(result.get("matched_pairs", [])),
        "<h3>Rows</h3>", table_html(result["rows"]),
    ]
    return ReportSection(title="Signed binarization (PLUM)", html="\n".join(parts), images=images)
