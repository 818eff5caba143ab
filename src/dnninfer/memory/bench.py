"""`dnninfer bench vmcu`: vMCU segment-level memory vs TFLite Micro and TinyEngine, proven by execution.

What is measured here, and how (research report §6 (a)):

* Peak activation bytes under five planners (naive, tflm, tinyengine, vmcu, vmcu_fused) for
  MobileNetV2 1.0/224 and 0.35/144 (planned from shapes) and for MobileNetV2 0.35/48, 0.5/64 and
  the digits CNN (int8, planned AND executed): every executed plan runs inside exactly its
  planned bytes (`executor.run`) and must equal the reference bit for bit; the executor's shadow
  memory also checks every byte read, so a plan is reported ``safe`` only if no live byte was
  overwritten (bit equality alone can hide a clobbered byte).
* The same plans as generated C (`codegen`): compiled with gcc ``-Wall -Werror``, run, and compared
  byte for byte with the Python executor; and cross-compiled for Cortex-M4/M7 with
  arm-none-eabi-gcc, where RAM (.data + .bss) and flash (text + .data) come from the ELF.
* Single-layer reductions on the standard layer set (§1.2 item 6): input + output vs vMCU's
  footprint plus one output-row tile.

Accounting (printed next to every number): activation pool with the input image included, kernel
scratch in a separate column, alignment 1, KiB = 1024 B, weights in flash. The paper's figures
come from Cortex-M boards; energy and latency cannot be measured without one and are not claimed.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from dnninfer.bench.output import make_progress
from dnninfer.bench.registry import BenchArgs, register_system
from dnninfer.report.section import ReportSection

PLANNED = ("mbv2-1.0-224", "mbv2-0.35-144")
EXECUTED = ("mbv2-0.35-48", "mbv2-0.5-64", "digits-cnn")
PLANNERS = ("naive", "tflm", "tinyengine", "vmcu", "vmcu_fused")
CPUS = ("cortex-m4", "cortex-m7")
#: --smoke: every planner on every planned model and on one executed MobileNetV2 and the digits CNN; gcc and
#: Cortex-M builds on the digits CNN only (the same code path as the quick run's MobileNetV2 builds)
SMOKE = {"executed": ("mbv2-0.35-48", "digits-cnn"), "c_models": ("digits-cnn",), "arm_models": ("digits-cnn",)}
ACCOUNTING = ("activation pool with the input image included (output too); kernel scratch (in-place depthwise "
              "plane, output-row tile, fused line buffer) in a separate column; alignment 1; KiB = 1024 B; "
              "weights and constants in flash, not counted; im2col not used")
PAPER = {
    "single_layer_reduction_range": [0.120, 0.495],
    "network_bottleneck_reduction": 0.615,
    "energy_reduction_range": [0.206, 0.530],
    "mcunetv2_mbv2_224_kb": 1372,
    "tinyengine_mbv2_035_144_kb": 308,
    "naive_over_shared_max": 10.5,
    "sources": {
        "vmcu": "Zheng, Chen, Li, Ye, Ceze, Liang, 'vMCU: Coordinated Memory Management and Kernel Optimization "
                "for DNN Inference on MCUs', MLSys 2024 (arXiv 2406.06542), abstract: 12.0-49.5% less RAM and "
                "20.6-53.0% less energy on single layers (Cortex-M4/M7), 61.5% smaller memory bottleneck on "
                "whole networks vs the state of the art",
        "mcunetv2": "Lin et al., MCUNetV2 (NeurIPS 2021): MobileNetV2 (1.0, 224) peak 1372 kB with layer-based "
                    "TinyEngine inference",
        "tinyengine": "Lin et al., MCUNet / TinyEngine (NeurIPS 2020): MobileNetV2-w0.35-r144 at 308 kB peak SRAM "
                      "on STM32F746",
        "pisarchyk_lee": "Pisarchyk & Lee 2020 (arXiv 2001.03288): shared-object planning up to 10.5x smaller "
                         "than no sharing",
    },
    "note": "paper figures are measured on Cortex-M boards with the authors' kernels; per-model tables of the "
            "vMCU paper could not be read (only its abstract), see docs/vmcu.md",
}


def _add_arguments(p: Any) -> None:
    p.add_argument("--no-c", action="store_true", help="skip the gcc bit-exactness and ARM size builds")


def _kib(n: int) -> float:
    return round(n / 1024, 1)


@register_system("vmcu", description="vMCU segment-level memory pool vs TinyEngine / TFLite Micro (MCU int8)",
                 report_section=lambda result, outdir: report_section(result, outdir),
                 add_arguments=_add_arguments)
def bench_vmcu(args: BenchArgs) -> dict[str, Any]:
    from dnninfer.memory import (
        BENCHMARKS,
        benchmark_ir,
        example_input,
        plan,
        reference,
        single_layer_reduction,
        standard_single_layers,
    )

    quick = args.quick
    n_inputs = 1 if quick else 3
    rows: list[dict[str, Any]] = []
    plans: dict[str, dict[str, Any]] = {}
    irs: dict[str, Any] = {}
    inputs: dict[str, np.ndarray] = {}
    timings: dict[str, float] = {}
    executed = SMOKE["executed"] if args.smoke else EXECUTED
    models = PLANNED + executed
    with make_progress() as bar:
        task = bar.add_task("vmcu: plan + execute", total=len(models) * len(PLANNERS))
        for name in models:
            start = time.perf_counter()
            ir = benchmark_ir(name, seed=args.seed)
            irs[name] = ir
            executable = BENCHMARKS[name][1]
            xs = [example_input(ir, seed=args.seed + i) for i in range(n_inputs)] if executable else []
            refs = [reference(ir, x) for x in xs]
            if xs:
                inputs[name] = xs[0]
            plans[name] = {}
            for planner in PLANNERS:
                p = plan(ir, planner)
                plans[name][planner] = p
                row: dict[str, Any] = {
                    "model": name, "planner": planner, "mode": p.mode, "peak_bytes": p.peak_bytes,
                    "scratch_bytes": p.scratch_bytes, "total_bytes": p.total_bytes, "peak_kib": _kib(p.peak_bytes),
                    "scratch_kib": _kib(p.scratch_bytes), "executed": executable,
                }
                if executable:
                    row.update(_execute(ir, p, xs, refs))
                rows.append(row)
                bar.advance(task)
            timings[name] = round(time.perf_counter() - start, 3)
    for name in models:
        te = plans[name]["tinyengine"]
        for row in (r for r in rows if r["model"] == name):
            row["total_vs_tinyengine"] = round(row["total_bytes"] / te.total_bytes, 4)

    singles = []
    for layer in standard_single_layers():
        r = single_layer_reduction(layer)
        singles.append({**r, "kind": layer.kind, "reduction": round(float(r["reduction"]), 4)})
    ranged = [s["reduction"] for s in singles if s["kind"] != "fc"]
    fc = [s["reduction"] for s in singles if s["kind"] == "fc"]

    c_rows: list[dict[str, Any]] = []
    arm_rows: list[dict[str, Any]] = []
    c_note = arm_note = "skipped (--no-c)"
    if not args.get("no_c", False):
        c_rows, c_note, arm_rows, arm_note = _c_checks(irs, plans, inputs, quick, smoke=args.smoke)

    def reduction(name: str, activations_only: bool = False) -> float:
        te = plans[name]["tinyengine"]
        best = min((plans[name][p] for p in ("vmcu", "vmcu_fused")),
                   key=lambda q: q.peak_bytes if activations_only else q.total_bytes)
        if activations_only:
            return round(1 - best.peak_bytes / te.peak_bytes, 4)
        return round(1 - best.total_bytes / te.total_bytes, 4)

    executed_rows = [r for r in rows if r["executed"]]
    ours: dict[str, Any] = {
        "accounting": ACCOUNTING,
        "peak_bytes": {m: {p: plans[m][p].peak_bytes for p in PLANNERS} for m in models},
        "scratch_bytes": {m: {p: plans[m][p].scratch_bytes for p in PLANNERS} for m in models},
        "network_reduction_vs_tinyengine": reduction("mbv2-1.0-224"),
        "network_reduction_vs_tinyengine_activations_only": reduction("mbv2-1.0-224", activations_only=True),
        "network_reduction_vs_tinyengine_by_model": {m: reduction(m) for m in models},
        "single_layer_reduction_range": [min(ranged), max(ranged)],
        "single_layer_fc_batch1_reduction": fc[0] if fc else None,
        "bit_exact": all(r["bit_exact"] for r in executed_rows),
        "safe": all(r["safe"] for r in executed_rows),
        "shadow_checked": all(r["shadow_checked"] for r in executed_rows),
        "plans_executed": len(executed_rows),
        "tinyengine_mbv2_224_kib": _kib(plans["mbv2-1.0-224"]["tinyengine"].peak_bytes),
        "tinyengine_mbv2_035_144_kib": _kib(plans["mbv2-0.35-144"]["tinyengine"].peak_bytes),
        "vmcu_fused_mbv2_224_kib": _kib(plans["mbv2-1.0-224"]["vmcu_fused"].peak_bytes),
        "naive_over_tflm": {m: round(plans[m]["naive"].peak_bytes / plans[m]["tflm"].peak_bytes, 2) for m in models},
        "c_bit_exact": all(r["bit_exact"] for r in c_rows) if c_rows else None,
        "c_checked": [f"{r['model']}/{r['planner']}" for r in c_rows],
        "c_note": c_note,
        "arm_sizes": _arm_summary(arm_rows) if arm_rows else None,
        "arm_note": arm_note,
        "build_s": timings,
    }
    result = {
        "paper": PAPER, "ours": ours, "rows": rows, "single_layers": singles, "c_checks": c_rows, "arm": arm_rows,
        "per_layer": {m: {p: list(plans[m][p].live_per_layer) for p in PLANNERS} for m in PLANNED},
        "layer_names": {m: [layer.name for layer in irs[m].layers] for m in PLANNED},
        "config": {"planned": list(PLANNED), "executed": list(executed), "planners": list(PLANNERS),
                   "inputs_per_model": n_inputs, "seed": args.seed, "accounting": ACCOUNTING},
    }
    if args.out:
        plots(result, Path(args.out))
    return result


def _execute(ir: Any, p: Any, xs: list[np.ndarray], refs: list[np.ndarray]) -> dict[str, Any]:
    """Run one plan on every input with the shadow checker: bit-exactness alone does not prove a plan
    safe (a clobbered byte can leave the output unchanged), so ``safe`` is reported beside it; an
    unsafe plan is re-run unchecked only to report what it computes."""
    from dnninfer.memory import run
    from dnninfer.memory.executor import PlanUnsafe

    out: dict[str, Any] = {"shadow_checked": True, "safe": True, "bytes_checked": 0}
    exact = True
    for x, r in zip(xs, refs, strict=True):
        stats: dict[str, Any] = {}
        try:
            y = run(ir, p, x, stats=stats)
            out["bytes_checked"] += stats["bytes_checked"]
        except PlanUnsafe as e:
            out.update(safe=False, unsafe=str(e))
            y = run(ir, p, x, shadow=False)
        exact = exact and bool(np.array_equal(y, r))
    return {"bit_exact": exact, **out, "inputs_checked": len(xs)}


def _c_checks(irs: dict[str, Any], plans: dict[str, dict[str, Any]], inputs: dict[str, np.ndarray],
              quick: bool, *, smoke: bool = False) -> tuple[list[dict[str, Any]], str, list[dict[str, Any]], str]:
    """gcc bit-exactness (quick: 2 models x tinyengine, vmcu_fused; smoke: the digits CNN only) and Cortex-M
    section sizes."""
    from dnninfer.errors import UserError
    from dnninfer.memory import codegen, run

    c_models = ("digits-cnn", "mbv2-0.35-48") if quick else EXECUTED
    c_planners = ("tinyengine", "vmcu_fused") if quick else PLANNERS
    arm_models = ("mbv2-0.35-48",) if quick else ("digits-cnn", "mbv2-0.35-48", "mbv2-0.5-64")
    if smoke:
        c_models, arm_models = SMOKE["c_models"], SMOKE["arm_models"]
    c_rows: list[dict[str, Any]] = []
    arm_rows: list[dict[str, Any]] = []
    c_note, arm_note = "ok", "ok"
    have_cc = codegen.host_compiler() is not None
    if not have_cc:
        c_note = "no host C compiler (gcc/cc) on PATH"
    gcc, size = codegen.arm_toolchain()
    if gcc is None or size is None:
        arm_note = "arm-none-eabi-gcc / arm-none-eabi-size not on PATH"
    todo = {(m, p) for m in c_models for p in c_planners} if have_cc else set()
    if arm_note == "ok":
        todo |= {(m, p) for m in arm_models for p in ("tinyengine", "vmcu_fused")}
    with tempfile.TemporaryDirectory(prefix="dnninfer-vmcu-bench-") as tmp, make_progress() as bar:
        task = bar.add_task("vmcu: C builds", total=len(todo))
        for model, planner in sorted(todo, key=lambda mp: (EXECUTED.index(mp[0]), PLANNERS.index(mp[1]))):
            ir, p, x = irs[model], plans[model][planner], inputs[model]
            c_path = codegen.generate(ir, p, Path(tmp) / model / planner)
            if (model, planner) in {(m, q) for m in c_models for q in c_planners} and have_cc:
                start = time.perf_counter()
                try:
                    c_out = codegen.compile_and_run(c_path, x)
                except UserError as e:
                    c_rows.append({"model": model, "planner": planner, "bit_exact": False, "error": str(e)})
                else:
                    py = run(ir, p, x).ravel()
                    c_rows.append({"model": model, "planner": planner, "bit_exact": bool(np.array_equal(c_out, py)),
                                   "output_bytes": int(c_out.size), "c_source_bytes": c_path.stat().st_size,
                                   "build_run_s": round(time.perf_counter() - start, 2)})
            if arm_note == "ok" and model in arm_models and planner in ("tinyengine", "vmcu_fused"):
                for cpu in CPUS:
                    sizes, why = codegen.arm_sizes(c_path, cpu)
                    if sizes is None:
                        arm_note = why
                        break
                    arm_rows.append({"model": model, "planner": planner, **sizes,
                                     "plan_bytes": p.total_bytes})
            bar.advance(task)
    return c_rows, c_note, arm_rows, arm_note


def _arm_summary(arm_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """{model: {planner: {cpu: {ram, flash, bss, data, pool, scratch}}}, plus vMCU's RAM saving per model/cpu."""
    out: dict[str, Any] = {}
    for r in arm_rows:
        out.setdefault(r["model"], {}).setdefault(r["planner"], {})[r["cpu"]] = {
            k: r[k] for k in ("ram", "flash", "bss", "data", "text", "pool", "scratch", "stack_upper")}
    for by in out.values():
        if "tinyengine" in by and "vmcu_fused" in by:
            by["ram_reduction_vmcu_fused_vs_tinyengine"] = {
                cpu: round(1 - by["vmcu_fused"][cpu]["ram"] / by["tinyengine"][cpu]["ram"], 4)
                for cpu in by["tinyengine"] if cpu in by["vmcu_fused"]}
    return out


# -- report ---------------------------------------------------------------------------------------

def plots(result: dict[str, Any], outdir: Path) -> list[Path]:
    """Per-layer live memory on MobileNetV2 (1.0, 224) under each planner, and total bytes per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    model = "mbv2-1.0-224"
    per = result["per_layer"].get(model)
    if per:
        fig, ax = plt.subplots(figsize=(11, 4.8))
        for planner, live in per.items():
            label = "naive (same live bytes as tflm; differs in peak)" if planner == "naive" else planner
            ax.plot(range(len(live)), [v / 1024 for v in live], label=label, lw=1.6,
                    ls=(0, (2, 3)) if planner == "naive" else "-", drawstyle="steps-mid", zorder=3 if planner ==
                    "naive" else 2)
        ax.set_yscale("log")
        ax.set_xlabel("layer index (MobileNetV2 1.0 / 224, 64 layers)")
        ax.set_ylabel("live activation KiB (log)")
        ax.set_title("Live activation memory per layer (input included, scratch excluded)")
        te = result["ours"]["peak_bytes"][model]["tinyengine"] / 1024
        ax.axhline(te, color="grey", lw=0.8, ls=":")
        ax.text(0, te * 1.05, f"TinyEngine peak {te:.0f} KiB (MCUNetV2: 1372 kB)", fontsize=8, color="grey")
        ax.legend(fontsize=8, ncol=5)
        fig.tight_layout()
        path = outdir / "vmcu_live_per_layer.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    rows = result["rows"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    planners = list(dict.fromkeys(r["planner"] for r in rows))
    fig, ax = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(planners)
    for i, planner in enumerate(planners):
        vals = [next(r["total_vs_tinyengine"] for r in rows if r["model"] == m and r["planner"] == planner)
                for m in models]
        ax.bar([j + i * width for j in range(len(models))], vals, width, label=planner)
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.axhline(1 - PAPER["network_bottleneck_reduction"], color="red", lw=0.8, ls="--",
               label="paper: -61.5% vs state of the art")
    ax.set_yscale("log")
    ticks = [0.25, 0.5, 1, 2, 4, 8]
    ax.set_yticks(ticks, [f"{t:g}x" for t in ticks])
    ax.minorticks_off()
    ax.set_ylim(0.2, 10)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(models))], models)
    ax.set_ylabel("activations + scratch vs TinyEngine (log)")
    ax.set_title("Peak RAM per planner relative to TinyEngine (scratch counted on both sides)")
    ax.legend(fontsize=8, ncol=6, loc="upper center")
    fig.tight_layout()
    path = outdir / "vmcu_peak_per_model.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths


def report_section(result: dict[str, Any], outdir: Path) -> ReportSection:
    from dnninfer.report.html import figure_html, table_html

    images = plots(result, outdir)
    ours = result["ours"]
    lo, hi = ours["single_layer_reduction_range"]
    head = [
        {"figure": "single-layer RAM reduction", "paper": "12.0-49.5%", "ours": f"{lo:.1%}-{hi:.1%}",
         "note": f"standard layer set; FC at batch 1: {ours['single_layer_fc_batch1_reduction']:.1%} by construction"},
        {"figure": "whole-network bottleneck reduction", "paper": "61.5%",
         "ours": f"{ours['network_reduction_vs_tinyengine']:.1%}",
         "note": "MobileNetV2 1.0/224, best vMCU vs TinyEngine, scratch counted on both sides; activations only: "
                 f"{ours['network_reduction_vs_tinyengine_activations_only']:.1%}"},
        {"figure": "MobileNetV2 1.0/224 TinyEngine peak", "paper": "1372 kB (MCUNetV2)",
         "ours": f"{ours['tinyengine_mbv2_224_kib']} KiB", "note": "input image included, scratch separate"},
        {"figure": "MobileNetV2 0.35/144 TinyEngine peak", "paper": "308 kB (STM32F746)",
         "ours": f"{ours['tinyengine_mbv2_035_144_kib']} KiB", "note": "board figure includes runtime buffers"},
        {"figure": "every executed plan bit-exact", "paper": "", "ours": ours["bit_exact"],
         "note": f"{ours['plans_executed']} plans"},
        {"figure": "every executed plan safe (shadow memory)", "paper": "", "ours": ours.get("safe"),
         "note": "every pool byte read was last written by its tensor's producer (exact, every byte)"},
        {"figure": "generated C bit-exact (gcc -Wall -Werror)", "paper": "", "ours": ours["c_bit_exact"],
         "note": ", ".join(ours["c_checked"]) or ours["c_note"]},
        {"figure": "energy 20.6-53.0% lower", "paper": "20.6-53.0%", "ours": "not measured",
         "note": "needs a Cortex-M board"},
    ]
    table = []
    for m, by in ours["peak_bytes"].items():
        row = {"model": m}
        for p, v in by.items():
            row[p] = f"{v / 1024:.1f} (+{ours['scratch_bytes'][m][p] / 1024:.1f})"
        row["vMCU vs TinyEngine"] = f"{-ours['network_reduction_vs_tinyengine_by_model'][m]:+.1%}"
        table.append(row)
    parts = [
        f"<p>Accounting: {ACCOUNTING}. Cells are activation KiB (+ scratch KiB).</p>",
        table_html(head, ["figure", "paper", "ours", "note"]),
        "<h3>Peak activation memory per planner</h3>", table_html(table),
        "<h3>Single layers (input + output vs vMCU footprint + one output-row tile)</h3>",
        table_html(result["single_layers"]),
    ]
    if result.get("arm"):
        arm = [{k: r[k] for k in ("model", "planner", "cpu", "ram", "flash", "bss", "data", "pool", "scratch",
                                  "stack_upper")} for r in result["arm"]]
        parts += ["<h3>Cortex-M builds (arm-none-eabi-gcc -Os; RAM = .data + .bss, flash = text + .data)</h3>",
                  table_html(arm)]
    captions = ["Live activation bytes per layer, MobileNetV2 1.0/224, every planner.",
                "Activations + scratch per planner relative to TinyEngine, every model."]
    parts += [figure_html(p, c, base=outdir) for p, c in zip(images, captions, strict=False)]
    parts += ["<h3>All plans</h3>", table_html(result["rows"])]
    return ReportSection(title="vMCU: segment-level MCU memory pool", html="\n".join(parts), images=images)
