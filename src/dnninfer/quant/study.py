"""Signed minus binary at matched non-zeros across datasets, architectures and quantisation policies.

Why signed binarization wins on digits and loses on MNIST-1D (issue 20, item 2) is answered by
ablation: each *policy* changes one thing against PLUM's recipe (``plum``: first layer per the
architecture's default, threshold 0.05 x max|W_f|, constant scale 1, raw inputs) and the study
trains signed and binary under it on paired seeds (a seed fixes split, init and batch order for
both methods), pairs widths by non-zeros (``analysis.matched_pairs``: closest mean nnz in log ratio,
kept within 1.5x) and reports the paired difference with a bootstrap CI and a sign test.

Policies (``POLICIES``): ``first_fp32`` keeps the first layer FP32; ``centered`` subtracts the
training set's per-feature mean (MNIST-1D is already zero-mean, digits is not); ``delta0`` and
``delta0.2`` move the signed threshold; ``scale_mean`` uses the per-filter mean of the kept |W|
instead of the constant 1. Only the signed side changes with the threshold and the scale; the first
layer and the inputs change for both methods.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from dnninfer.bench.output import make_progress
from dnninfer.quant.analysis import headline_pair, matched_pairs
from dnninfer.quant.train import TrainConfig

__all__ = ["POLICIES", "Case", "policy_config", "run_case", "summarise_case"]

#: policy name -> TrainConfig overrides (applied to both methods; signed-only fields are ignored by binary)
POLICIES: dict[str, dict[str, Any]] = {
    "plum": {},
    "first_fp32": {"first": "fp32"},
    "centered": {"inputs": "centered"},
    "delta0": {"signed_delta": 0.0},
    "delta0.2": {"signed_delta": 0.2},
    "scale_mean": {"signed_scale": "mean"},
}
Case = tuple[str, str, str]  # (dataset, arch, policy)


def policy_config(dataset: str, arch: str, policy: str, **kw: Any) -> TrainConfig:
    """The TrainConfig of one case (``kw``: method, width, epochs, seed)."""
    return replace(TrainConfig(dataset=dataset, arch=arch, **kw), **POLICIES[policy])


def run_case(case: Case, widths: dict[str, Sequence[float]], seeds: Sequence[int], epochs: int, *,
             split_for: Callable[[str, int], Any], on_run: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """Train signed and binary at their widths on every seed; one record per run."""
    from dnninfer.quant.train import train

    dataset, arch, policy = case
    runs = []
    for seed in seeds:
        split = split_for(dataset, seed)
        for method in ("signed", "binary"):
            for width in widths[method]:
                cfg = policy_config(dataset, arch, policy, method=method, width=width, epochs=epochs, seed=seed)
                r = train(cfg, split, progress=False)
                runs.append({"dataset": dataset, "arch": arch, "policy": policy, "method": method, "width": width,
                             "seed": seed, "accuracy": r.accuracy, "nnz": r.nnz, "weights": r.weights,
                             "density": r.density, "train_s": r.train_s})
                if on_run:
                    on_run()
    return runs


def summarise_case(runs: Iterable[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """The headline matched pair of one case (or why there is none) and every pair."""
    runs = list(runs)
    pairs = matched_pairs(runs, "signed", "binary", seed=seed)
    head = headline_pair(pairs)
    keys = ("mean_diff", "ci_lo", "ci_hi", "n", "wins", "losses", "ties", "sign_test_p", "nnz_ratio", "width_a",
            "width_b", "nnz_a", "nnz_b", "acc_a", "acc_b")
    out: dict[str, Any] = {k: (head[k] if head else None) for k in keys}
    out["matched"] = head is not None
    out["pairs"] = pairs
    return out


#: the one policy of the cross-dataset study (see docs/signed_binary.md, "Beyond digits")
POLICY = "first_fp32"
STUDY_CASES = (("digits", "mlp"), ("digits", "resnet"), ("mnist1d", "mlp"), ("mnist1d", "resnet"))
#: ablations (full run): dataset/arch x policy; each changes one thing against PLUM's recipe
ABLATIONS = (*(("mnist1d", "mlp", p) for p in ("plum", "first_fp32", "centered", "delta0", "delta0.2", "scale_mean")),
             ("digits", "mlp", "plum"), ("digits", "mlp", "centered"), ("digits", "mlp", "first_fp32"))


# -- part 3: across datasets and architectures, ablations ---------------------------------------
def run_study(cfg: dict[str, Any], seed: int) -> dict[str, dict[str, Any]]:
    """``{"dataset/arch[/policy]": {"summary": ..., "runs": [...]}}`` for the study cases under
    ``POLICY`` and the configured ablations (train/test subsets of ``cfg["subset"]`` in quick runs)."""
    import functools

    from dnninfer.data import load_dataset

    @functools.cache
    def split_for(dataset: str, s: int) -> Any:
        split = load_dataset(dataset, seed=s)
        return split.subset(cfg["subset"], cfg["subset"]) if cfg["subset"] else split

    seeds = [seed + i for i in range(cfg["study_seeds"])]
    cases = list(dict.fromkeys([(d, a, POLICY) for d, a in STUDY_CASES] + list(cfg["ablations"])))
    n_runs = len(cases) * len(seeds) * sum(len(w) for w in cfg["study_widths"].values())
    out: dict[str, dict[str, Any]] = {}
    with make_progress() as bar:
        task = bar.add_task("signed-binary: datasets x architectures", total=n_runs)
        for case in cases:
            runs = run_case(case, cfg["study_widths"], seeds, cfg["study_epochs"], split_for=split_for,
                            on_run=lambda: bar.advance(task))
            out["/".join(case)] = {"summary": summarise_case(runs, seed), "runs": runs}
    return out


def add_study(result: dict[str, Any], study: dict[str, dict[str, Any]], curve_rows: list[dict[str, Any]],
               trained_density: float, cfg: dict[str, Any]) -> None:
    """The study's keys in ``ours`` (issue 20), its pairs and runs, and the density curve rows."""
    def entry(s: dict[str, Any]) -> dict[str, Any] | None:
        if not s["matched"]:
            return None
        return {"mean_diff": s["mean_diff"], "ci95": [s["ci_lo"], s["ci_hi"]], "n": s["n"], "wins": s["wins"],
                "losses": s["losses"], "sign_test_p": s["sign_test_p"], "nnz_ratio": s["nnz_ratio"],
                "widths": {"signed": s["width_a"], "binary": s["width_b"]},
                "acc": {"signed": s["acc_a"], "binary": s["acc_b"]}}

    ours = result["ours"]
    main = {f"{d}/{a}": study[f"{d}/{a}/{POLICY}"] for d, a in STUDY_CASES}
    ours["signed_minus_binary_at_matched_nnz"] = {k: entry(v["summary"]) for k, v in main.items()}
    ours["signed_minus_binary_ci95"] = {k: ([v["summary"]["ci_lo"], v["summary"]["ci_hi"]] if v["summary"]["matched"]
                                            else None) for k, v in main.items()}
    ours["signed_minus_binary_policy"] = (f"{POLICY}: the first layer (reading the raw input) FP32, threshold 0.05 "
                                          "x max|W_f|, constant scale 1 (BatchNorm after), raw inputs")
    ours["signed_ge_binary_everywhere"] = all(e is not None and e["mean_diff"] >= 0
                                              for e in ours["signed_minus_binary_at_matched_nnz"].values())
    ablations = {"/".join(c): entry(study["/".join(c)]["summary"]) for c in cfg["ablations"]}
    if ablations:
        ours["signed_minus_binary_ablations"] = ablations
    at = min(curve_rows, key=lambda r: abs(r["density"] - trained_density))
    ours["kernel_speedup_vs_fp32_blas_at_trained_density"] = at["speedup_vs_fp32_blas"]
    ours["kernel_speedup_vs_binary_at_trained_density"] = at["speedup_vs_binary"]
    ours["kernel_density_curve"] = {"shape_MxKxN": list(cfg["curve_shape"]), "trained_density": trained_density,
                                    "points": [{"density": r["density"], **{f"speedup_{k}": r[f"speedup_{k}"] for k in
                                                ("vs_fp32_blas", "vs_binary", "vs_dense_pm1", "vs_ternary")}}
                                               for r in curve_rows]}
    result["rows"] += curve_rows
    result["study"] = {k: {"summary": {kk: vv for kk, vv in v["summary"].items() if kk != "pairs"},
                           "pairs": v["summary"]["pairs"]} for k, v in study.items()}
    result["study_runs"] = [r for v in study.values() for r in v["runs"]]
    result["config"]["study"] = {"policy": POLICY, "cases": [list(c) for c in STUDY_CASES],
                                 "ablations": [list(c) for c in cfg["ablations"]], "seeds": cfg["study_seeds"],
                                 "epochs": cfg["study_epochs"], "widths": cfg["study_widths"],
                                 "subset": cfg["subset"],
                                 "architectures": "mlp (models.mlp); resnet (models.resnet: stem + 2 basic blocks, "
                                                  "Conv2d on digits, Conv1d on MNIST-1D)"}
