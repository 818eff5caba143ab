"""The vMCU report section: paper-vs-ours lines, the two plots, the per-planner tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dnninfer.bench.claims import Claim, lookup
from dnninfer.bench.figures import Figures
from dnninfer.report.section import ReportSection, Table, build_section

CLAIMS = (
    Claim("whole-network bottleneck reduction vs TinyEngine (MobileNetV2 1.0/224)", "61.5%",
          "network_reduction_vs_tinyengine", target=0.615, fmt=".1%",
          note=lambda r: "best vMCU plan, scratch counted on both sides; activations only: "
                         f"{lookup(r, 'network_reduction_vs_tinyengine_activations_only'):.1%}"),
    Claim("single-layer RAM reduction", "12.0-49.5%",
          lambda r: "{:.1%}-{:.1%}".format(*lookup(r, "single_layer_reduction_range")),
          note=lambda r: f"standard layer set; FC at batch 1: {lookup(r, 'single_layer_fc_batch1_reduction'):.1%} "
                         "by construction"),
    Claim("MobileNetV2 1.0/224 TinyEngine peak", "1372 kB (MCUNetV2)",
          lambda r: f"{lookup(r, 'tinyengine_mbv2_224_kib')} KiB", note="input image included, scratch separate"),
    Claim("MobileNetV2 1.0/224 patch-based peak (MCUNetV2 inside the vMCU pool, MAC overhead <= 1.15x)",
          "172 kB (8x below 1372 kB)", lambda r: lookup(r, "patch_peak_bytes")["mbv2-1.0-224"] / 1000,
          target=172.0, better="lower", fmt=".1f",
          note=lambda r: f"kB (1000 B); {lookup(r, 'patch_setting')['mbv2-1.0-224']}; input, patch buffers and "
                         "kernel scratch all in the one pool; "
                         f"{lookup(r, 'mbv2_224_patch_factor_vs_tinyengine')}x below our TinyEngine port "
                         "(scratch counted on both sides); the input alone is 150,528 B"),
    Claim("MobileNetV2 0.35/144 TinyEngine peak", "308 kB (STM32F746)",
          lambda r: f"{lookup(r, 'tinyengine_mbv2_035_144_kib')} KiB", note="board figure includes runtime buffers"),
    Claim("every executed plan bit-exact", ours="bit_exact", target=True,
          note=lambda r: f"{lookup(r, 'plans_executed')} plans"),
    Claim("every executed plan safe (shadow memory)", ours="safe", target=True,
          note="every pool byte read was last written by its tensor's producer (exact, every byte)"),
    Claim("generated C bit-exact (gcc -Wall -Werror)", ours="c_bit_exact", target=True,
          note=lambda r: ", ".join(lookup(r, "c_checked")) or lookup(r, "c_note")),
    Claim("firmware on an emulated Cortex-M4 (QEMU) bit-exact, every plan incl. patch", ours="qemu_all_bit_exact",
          target=True, note=lambda r: _qemu_note(r)),
    Claim("int8 post-training quantisation accuracy, held-out digits (digits CNN)",
          ours=lambda r: f"{lookup(r, 'digits_int8_accuracy'):.1%} (float {lookup(r, 'digits_float_accuracy'):.1%})",
          note=lambda r: (f"int8 and float agree on {lookup(r, 'digits_int8_agreement'):.1%} of "
                          f"{lookup(r, 'digits_accuracy')['test_images']} held-out images (trained, seeded)"
                          if lookup(r, "digits_int8_agreement") is not None else "skipped (--smoke)")),
    Claim("energy 20.6-53.0% lower", "20.6-53.0%", note="needs a Cortex-M board"),
)


def _qemu_note(result: dict[str, Any]) -> str:
    by_model = lookup(result, "qemu_bit_exact")
    if not by_model:
        return str(lookup(result, "qemu_note"))
    return "; ".join(f"{m}: {len(by)} plans" for m, by in by_model.items()) + "; SRAM linked = pool + scratch + stack"



def plots(result: dict[str, Any], outdir: Path) -> Figures:
    """Per-layer live memory on MobileNetV2 (1.0, 224) under each planner, and total bytes per model."""
    figs = Figures(outdir)
    model = "mbv2-1.0-224"
    if per := result["per_layer"].get(model):
        with figs.plot("vmcu_live_per_layer.png", "Live activation bytes per layer, MobileNetV2 1.0/224, every "
                       "planner.", figsize=(11, 4.8)) as (_, ax):
            for planner, live in per.items():
                naive = planner == "naive"
                ax.plot(range(len(live)), [v / 1024 for v in live], lw=1.6, drawstyle="steps-mid",
                        label=("naive (same live bytes as tflm; differs in peak)" if naive else
                               "patch (scratch included)" if planner == "patch" else planner),
                        ls=(0, (2, 3)) if naive else "-", zorder=3 if naive else 2)
            ax.set(yscale="log", xlabel="layer index (MobileNetV2 1.0 / 224, 64 layers)",
                   ylabel="live activation KiB (log)",
                   title="Live activation memory per layer (input included; scratch excluded but for patch)")
            te = result["ours"]["peak_bytes"][model]["tinyengine"] / 1024
            ax.axhline(te, color="grey", lw=0.8, ls=":")
            ax.text(0, te * 1.05, f"TinyEngine peak {te:.0f} KiB (MCUNetV2: 1372 kB)", fontsize=8, color="grey")
            ax.legend(fontsize=8, ncol=5)
    rows = result["rows"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    planners = list(dict.fromkeys(r["planner"] for r in rows))
    with figs.plot("vmcu_peak_per_model.png", "Activations + scratch per planner relative to TinyEngine, every "
                   "model.", figsize=(11, 4.5)) as (_, ax):
        width = 0.8 / len(planners)
        for i, planner in enumerate(planners):
            vals = [next((r["total_vs_tinyengine"] for r in rows if r["model"] == m and r["planner"] == planner),
                         float("nan")) for m in models]
            ax.bar([j + i * width for j in range(len(models))], vals, width, label=planner)
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.axhline(1 - result["paper"]["network_bottleneck_reduction"], color="red", lw=0.8, ls="--",
                   label="paper: -61.5% vs state of the art")
        ticks = [0.25, 0.5, 1, 2, 4, 8]
        ax.set(yscale="log", ylim=(0.2, 10), ylabel="activations + scratch vs TinyEngine (log)",
               title="Peak RAM per planner relative to TinyEngine (scratch counted on both sides)")
        ax.set_yticks(ticks, [f"{t:g}x" for t in ticks])
        ax.minorticks_off()
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(models))], models)
        ax.legend(fontsize=8, ncol=6, loc="upper center")
    return figs


def report_section(result: dict[str, Any], outdir: Path) -> ReportSection:
    ours = result["ours"]
    table = []
    for m, by in ours["peak_bytes"].items():
        row = {"model": m, **{p: f"{v / 1024:.1f} (+{ours['scratch_bytes'][m][p] / 1024:.1f})" for p, v in by.items()}}
        row["vMCU vs TinyEngine"] = f"{-ours['network_reduction_vs_tinyengine_by_model'][m]:+.1%}"
        if m in ours.get("patch_peak_bytes", {}):
            row["patch"] = f"{ours['patch_peak_bytes'][m] / 1024:.1f} (x{ours['patch_mac_overhead'][m]:.3f} MACs)"
        row["fit 256 KiB"] = ", ".join(ours.get("fits_256kib", {}).get(m, [])) or "none"
        table.append(row)
    arm = [{k: r[k] for k in ("model", "planner", "cpu", "ram", "flash", "bss", "data", "pool", "scratch",
                              "stack_upper")} for r in result.get("arm") or []]
    parts: list[Any] = [
        Table(table, "Peak activation memory per planner (patch: scratch inside the pool, MAC overhead <= 1.15x)"),
        Table(result["single_layers"], "Single layers (input + output vs vMCU footprint + one output-row tile)"),
    ]
    if arm:
        parts.append(Table(arm, "Cortex-M builds (arm-none-eabi-gcc -Os; RAM = .data + .bss, flash = text + .data)"))
    qemu = [{k: r.get(k) for k in ("model", "planner", "peak_bytes", "scratch_bytes", "stack_bytes", "sram_bytes",
                                   "flash_bytes", "instructions", "stack_used", "bit_exact", "error") if k in r}
            for r in result.get("qemu") or []]
    if qemu:
        parts.append(Table(qemu, "Firmware on QEMU mps2-an386 (Cortex-M4): SRAM linked = pool + scratch + stack; "
                                 "instructions = timer ticks under -icount x 40; output vs the Python executor"))
    parts += [plots(result, outdir), Table(result["rows"], "All plans")]
    return build_section("vMCU: segment-level MCU memory pool", result, outdir, claims=CLAIMS, parts=parts,
                         intro=f"Accounting: {ours['accounting']}. Cells are activation KiB (+ scratch KiB).")
