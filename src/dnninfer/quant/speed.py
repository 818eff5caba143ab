"""Kernel speed of signed binary against its rivals, on the same activations, in the same run.

Per shape ``(M, K, N)`` one set of activations goes through fp32 BLAS, dense +-1, binary
"2 x pos - total", ternary and signed-binary kernels (``kernels.make_kernel``), each checked
against ``reference_gemm`` before it is timed. Speedups are ratios of medians of interleaved
rounds (``bench.harness.compare``), with a bootstrap CI, because PLUM's speed claim (26 % faster
than binary, 1.75x faster than ternary) is a ratio measured on one machine.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dnninfer.bench.harness import compare
from dnninfer.bench.output import make_progress
from dnninfer.bench.stats import ratio_ci
from dnninfer.graph.compare import max_abs_diff
from dnninfer.quant.kernels import make_kernel, pack, reference_gemm

__all__ = ["KERNEL_CASES", "density_curve", "synthetic_weights", "time_kernels", "time_shape"]

KERNEL_CASES = ("fp32_blas", "dense_pm1", "binary_2pos", "ternary", "signed")
#: which method's weights each kernel runs
_WEIGHTS_OF = {"fp32_blas": "fp32", "dense_pm1": "binary", "binary_2pos": "binary", "ternary": "ternary",
               "signed": "signed"}


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


def _kernels_for(weights: Mapping[str, np.ndarray]) -> dict[str, Any]:
    pb = pack(weights["binary"], "binary")
    return {
        "fp32_blas": make_kernel(pack(weights["fp32"], "fp32")),
        "dense_pm1": make_kernel(pb, kind="dense_pm1"),
        "binary_2pos": make_kernel(pb, kind="binary_2pos"),
        "ternary": make_kernel(pack(weights["ternary"], "ternary")),
        "signed": make_kernel(pack(weights["signed"], "signed")),
    }


def time_shape(label: str, source: str, x: np.ndarray, weights: Mapping[str, np.ndarray], *, warmup: int,
               repeats: int, seed: int) -> dict[str, Any]:
    """One row: every kernel's median time, add count and the signed kernel's speedup over each rival."""
    kernels = _kernels_for(weights)
    m, k = x.shape
    n = weights["signed"].shape[0]
    xt = np.ascontiguousarray(x.T)
    # One output buffer shared by every kernel: the GEMM loops' speed depends on where ``out`` lies
    # relative to ``xt`` (store/load address aliasing, up to 3x on the dev box), so separate buffers
    # would hand each kernel a different, allocation-dependent handicap.
    out = np.empty((n, m), np.float32)
    errs = []
    for name, kern in kernels.items():  # correctness first (also compiles)
        ref = reference_gemm(x, weights[_WEIGHTS_OF[name]])
        errs.append(max_abs_diff(kern.run_t(xt, out).T, ref) / max(1.0, float(np.abs(ref).max())))
    err = float(np.max(errs))  # NaN-propagating, unlike max()
    cases = {name: (lambda kern=kern: kern.run_t(xt, out)) for name, kern in kernels.items()}
    t = compare(cases, warmup=warmup, repeats=repeats, seed=seed, progress=False, description=f"kernels {label}")
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


def time_kernels(trained: Mapping[str, np.ndarray], x_test: np.ndarray, runs: Sequence[Mapping[str, Any]], *,
                 shapes: Sequence[tuple[int, int, int]], warmup: int, repeats: int,
                 seed: int) -> list[dict[str, Any]]:
    """Kernel rows for (a) the trained first layer (``trained``: each method's own quantised
    weights, ``x_test`` the whole test set as M) and (b) each of ``shapes``, with weights drawn at
    the mean densities the trained ``runs`` reached."""
    rng = np.random.default_rng(seed)
    density = {m: statistics.fmean(r["density"] for r in runs if r["method"] == m) for m in ("ternary", "signed")}
    n, k = trained["signed"].shape
    todo = [(f"trained {x_test.shape[0]}x{k}x{n}", "trained", np.ascontiguousarray(x_test, np.float32), trained)]
    for m, k, n in shapes:
        x = rng.standard_normal((m, k)).astype(np.float32)
        w = {meth: synthetic_weights(n, k, meth, density.get(meth, 1.0), rng)
             for meth in ("binary", "ternary", "signed")}
        w["fp32"] = rng.standard_normal((n, k)).astype(np.float32)
        todo.append((f"{m}x{k}x{n}", "synthetic", x, w))
    rows = []
    with make_progress() as bar:
        task = bar.add_task("signed-binary: kernels", total=len(todo))
        for label, source, x, w in todo:
            rows.append(time_shape(label, source, x, w, warmup=warmup, repeats=repeats, seed=seed))
            bar.advance(task)
    return rows


def density_curve(shape: tuple[int, int, int], densities: Sequence[float], *, warmup: int, repeats: int,
                  seed: int) -> list[dict[str, Any]]:
    """Kernel rows for one shape ``(M, K, N)`` with the signed and ternary weights drawn at each of
    ``densities`` (binary is dense whatever the density; fp32 BLAS is the dense reference), so the
    signed kernel's speedup over each rival can be read as a function of density. The same
    activations and fp32/binary weights serve every density."""
    rng = np.random.default_rng(seed)
    m, k, n = shape
    x = rng.standard_normal((m, k)).astype(np.float32)
    fixed = {"binary": synthetic_weights(n, k, "binary", 1.0, rng),
             "fp32": rng.standard_normal((n, k)).astype(np.float32)}
    rows = []
    with make_progress() as bar:
        task = bar.add_task("signed-binary: density curve", total=len(densities))
        for d in densities:
            w = {**fixed, "ternary": synthetic_weights(n, k, "ternary", d, rng),
                 "signed": synthetic_weights(n, k, "signed", d, rng)}
            row = time_shape(f"{m}x{k}x{n} @ {d:.3g}", "density_curve", x, w, warmup=warmup, repeats=repeats,
                             seed=seed)
            rows.append({**row, "kind": "kernel_density", "density": d})
            bar.advance(task)
    return rows
