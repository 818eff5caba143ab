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
3. **Across datasets and architectures (issue 20).** ``study.py``: signed vs binary on digits and
   MNIST-1D, MLP and the residual conv net (2-D on digits, 1-D on MNIST-1D), under one policy
   (``POLICY``: the first layer, which reads the raw input, kept FP32, as PLUM keeps its stem), paired
   seeds, the matched pair's paired difference with a bootstrap CI. The full run adds the ablations
   on the MLPs (``ABLATIONS``: what makes signed lose on MNIST-1D).
4. **Speedup vs density.** One shape (a 64->64 3x3 conv as im2col: K = 576, N = 64) with signed and
   ternary weights drawn at each density, against binary and fp32 BLAS on the same activations.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from dnninfer.bench.output import make_progress
from dnninfer.bench.registry import BenchArgs, register_system
from dnninfer.quant.report import CLAIMS, plots, report_section
from dnninfer.quant.study import ABLATIONS, add_study, run_study

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
QUICK: dict[str, Any] = {"widths": (0.5, 1.25), "seeds": 4, "epochs": 12, "kernel_width": 1.25,
                         "shapes": ((1, 1152, 128), (32, 576, 64)), "warmup": 3, "repeats": 15,
                         "study_seeds": 3, "study_epochs": 4, "study_widths": {"signed": (1.5,), "binary": (1.0,)},
                         "subset": 1000, "ablations": (),
                         "curve_shape": (196, 576, 64), "densities": (0.1, 0.2, 0.335, 0.5), "curve_repeats": 7}
#: --smoke: both widths (a matched pair), 2 paired seeds, every kernel on the trained layer + one synthetic shape.
SMOKE: dict[str, Any] = {"widths": (0.5, 1.25), "seeds": 2, "epochs": 2, "kernel_width": 1.25,
                         "shapes": ((1, 1152, 128),), "warmup": 1, "repeats": 3,
                         "study_seeds": 2, "study_epochs": 1, "study_widths": {"signed": (1.5,), "binary": (1.0,)},
                         "subset": 300, "ablations": (),
                         "curve_shape": (16, 576, 64), "densities": (0.2, 0.5), "curve_repeats": 3}
FULL: dict[str, Any] = {"widths": (0.5, 0.75, 1.0, 1.5, 2.0, 3.0), "seeds": 10, "epochs": 60, "kernel_width": 3.0,
                        "shapes": ((1, 2304, 256), (1, 4608, 512), (64, 2304, 256), (196, 1152, 128)),
                        "warmup": 5, "repeats": 31,
                        "study_seeds": 10, "study_epochs": 30,
                        "study_widths": {"signed": (1.0, 1.5, 2.0, 2.5), "binary": (0.75, 1.0, 1.5)},
                        "subset": None, "ablations": ABLATIONS,
                        "curve_shape": (3136, 576, 64), "densities": (0.05, 0.1, 0.2, 0.335, 0.476, 0.6, 0.8),
                        "curve_repeats": 15}


def _add_arguments(p: Any) -> None:
    p.add_argument("--widths", nargs="*", type=float, default=None, help="MLP width multipliers (x16 hidden units)")
    p.add_argument("--seeds", type=int, default=None, help="paired seeds per (method, width) (8 quick, 10 full)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (12 quick, 60 full)")


@register_system("signed-binary",
                 description="Signed binarization (PLUM) vs binary/ternary/fp32: accuracy at matched non-zeros, "
                             "add-only kernel speed",
                 report_section=report_section, add_arguments=_add_arguments, headline=CLAIMS[0])
def bench_signed_binary(args: BenchArgs) -> dict[str, Any]:
    import numba
    from threadpoolctl import threadpool_limits

    from dnninfer.env import pinned_threads
    from dnninfer.quant.speed import density_curve, time_kernels

    cfg = dict(args.pick(FULL, QUICK, SMOKE))
    cfg["widths"] = tuple(args.get("widths") or cfg["widths"])
    cfg["seeds"] = args.get("seeds") or cfg["seeds"]
    cfg["epochs"] = args.get("epochs") or cfg["epochs"]
    if cfg["kernel_width"] not in cfg["widths"]:
        cfg["kernel_width"] = max(cfg["widths"])
    seeds = [args.seed + i for i in range(cfg["seeds"])]
    numba.set_num_threads(1)
    with pinned_threads(1), threadpool_limits(1):
        runs, models = _train_all(cfg, seeds)
        deploy_err = _deploy_check(models)
        trained, x_test = _trained_first_layers(models, cfg["kernel_width"])
        kernel_rows = time_kernels(trained, x_test, runs, shapes=cfg["shapes"], warmup=cfg["warmup"],
                                   repeats=cfg["repeats"], seed=seeds[0])
        study = run_study(cfg, args.seed)
        trained_density = statistics.fmean(r["density"] for r in runs if r["method"] == "signed")
        densities = sorted({*cfg["densities"], round(trained_density, 3)})
        curve_rows = density_curve(cfg["curve_shape"], densities, warmup=cfg["warmup"],
                                   repeats=cfg["curve_repeats"], seed=seeds[0])
    result = _summarise(cfg, seeds, runs, kernel_rows, deploy_err)
    add_study(result, study, curve_rows, trained_density, cfg)
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


def _deploy_check(models: dict[tuple, Any]) -> float:
    """Max |deploy(model)(x) - model(x)| over every method and width of the first seed (test set)."""
    import torch

    from dnninfer.graph.compare import max_abs_diff
    from dnninfer.quant.engine import deploy

    refs, outs = [], []
    for model, split in models.values():
        model.eval()
        with torch.no_grad():
            refs.append(model(split.test_x))
        outs.append(deploy(model)(split.test_x))
    return max_abs_diff(outs, refs)


# -- part 2: kernels (timed in quant/speed.py) ----------------------------------------------------
def _trained_first_layers(models: dict[tuple, Any], width: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each method's quantised first-layer weights at ``width`` and the flattened test set: the
    trained shape of the kernel timing."""
    import torch

    from dnninfer.quant.quantizers import quant_layers

    trained = {}
    for method in METHODS:
        layer = quant_layers(models[(method, width)][0])[0][1]
        with torch.no_grad():
            trained[method] = layer.quantized_weight().numpy().reshape(layer.weight.shape[0], -1)
    test_x = models[("signed", width)][1].test_x
    return trained, test_x.reshape(test_x.shape[0], -1).numpy()


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
