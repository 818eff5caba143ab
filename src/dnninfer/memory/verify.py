"""Plans proven by execution: the shadow-checked byte-pool executor and the generated C.

A planner's byte count is only a claim until the plan runs inside exactly those bytes and gives
the reference output; ``execute_checked`` runs it with shadow memory (so a clobbered byte that
leaves the output unchanged is still caught) and ``c_checks`` compiles the generated C, runs it
and compares it byte for byte with the Python executor, then sizes Cortex-M builds;
``qemu_checks`` links each plan's C into firmware whose SRAM is pool + scratch + stack and runs it
on an emulated Cortex-M4 (`firmware`), byte for byte against the Python executor again.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from dnninfer.bench.output import make_progress

__all__ = ["arm_summary", "c_checks", "execute_checked", "qemu_checks", "qemu_summary"]

CPUS = ("cortex-m4", "cortex-m7")


def execute_checked(ir: Any, p: Any, xs: list[np.ndarray], refs: list[np.ndarray]) -> dict[str, Any]:
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


def c_checks(irs: dict[str, Any], plans: dict[str, dict[str, Any]], inputs: dict[str, np.ndarray], *,
             c_models: tuple[str, ...], c_planners: tuple[str, ...], arm_models: tuple[str, ...],
             ) -> tuple[list[dict[str, Any]], str, list[dict[str, Any]], str]:
    """gcc bit-exactness of ``c_models`` x ``c_planners`` (those a model has a plan for: ``patch`` needs
    a patchable prefix) and Cortex-M section sizes of ``arm_models`` (tinyengine and vmcu_fused); each
    note says "ok" or why a toolchain step was skipped."""
    from dnninfer.errors import UserError
    from dnninfer.memory import codegen, run

    c_rows: list[dict[str, Any]] = []
    arm_rows: list[dict[str, Any]] = []
    c_note, arm_note = "ok", "ok"
    have_cc = codegen.host_compiler() is not None
    if not have_cc:
        c_note = "no host C compiler (gcc/cc) on PATH"
    gcc, size = codegen.arm_toolchain()
    if gcc is None or size is None:
        arm_note = "arm-none-eabi-gcc / arm-none-eabi-size not on PATH"
    todo = {(m, p) for m in c_models for p in c_planners if p in plans[m]} if have_cc else set()
    if arm_note == "ok":
        todo |= {(m, p) for m in arm_models for p in ("tinyengine", "vmcu_fused")}
    with tempfile.TemporaryDirectory(prefix="dnninfer-vmcu-bench-") as tmp, make_progress() as bar:
        task = bar.add_task("vmcu: C builds", total=len(todo))
        for model, planner in sorted(todo, key=lambda mp: (list(plans).index(mp[0]), list(plans[mp[0]]).index(mp[1]))):
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


def arm_summary(arm_rows: list[dict[str, Any]]) -> dict[str, Any]:
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


def qemu_checks(cases: list[tuple[str, Any, np.ndarray, list[Any]]], *, board: str = "mps2-an386",
                timeout: float = 600.0) -> tuple[list[dict[str, Any]], str]:
    """Firmware of every ``(model, ir, x, plans)`` case on QEMU (`firmware.check_qemu`): one row per
    plan with the SRAM linked, the instructions ``model_invoke`` executed and ``bit_exact`` (QEMU ==
    `executor.run`); a plan that does not link or does not run to its end is a row with
    ``bit_exact`` False and the error. The note says "ok" or why nothing ran (toolchain or qemu missing)."""
    from dnninfer.errors import UserError
    from dnninfer.memory import firmware

    ok, why = firmware.tools()
    if not ok:
        return [], why
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dnninfer-vmcu-qemu-") as tmp, make_progress() as bar:
        task = bar.add_task("vmcu: firmware on QEMU", total=sum(len(c[3]) for c in cases))
        for model, ir, x, plans in cases:
            for p in plans:
                start = time.perf_counter()
                try:
                    row = firmware.check_qemu(ir, p, x, Path(tmp) / model / p.planner, board=board, timeout=timeout)
                except UserError as e:  # LinkError, FirmwareError: a result to report, never a pass
                    row = {"planner": p.planner, "peak_bytes": p.peak_bytes, "scratch_bytes": p.scratch_bytes,
                           "bit_exact": False, "error": str(e)}
                row.pop("elf", None)
                wall = round(time.perf_counter() - start, 2)
                rows.append({"model": model, "ir": ir.name, **row, "build_run_s": wall})
                bar.advance(task)
    return rows, "ok"


def qemu_summary(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """``{model: {planner: row[key]}}`` of `qemu_checks` rows (None where a row lacks the key)."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        out.setdefault(r["model"], {})[r["planner"]] = r.get(key)
    return out


def patch_figures(patch_plans: dict[str, Any]) -> dict[str, Any]:
    """The bench's patch keys: peak (KiB and bytes), MAC overhead and the setting chosen, per model."""
    from dnninfer.memory.patch import describe

    return {"patch_peak_kib": {m: round(q.peak_bytes / 1024, 1) for m, q in patch_plans.items()},
            "patch_peak_bytes": {m: q.peak_bytes for m, q in patch_plans.items()},
            "patch_mac_overhead": {m: round(q.patch.mac_overhead, 4) for m, q in patch_plans.items()},
            "patch_setting": {m: describe(q) for m, q in patch_plans.items()}}


def qemu_figures(q_rows: list[dict[str, Any]], q_note: str, q_224: str | None) -> dict[str, Any]:
    """The bench's QEMU keys, per model and planner."""
    return {
        "qemu_bit_exact": qemu_summary(q_rows, "bit_exact") or None,
        "qemu_all_bit_exact": all(r["bit_exact"] for r in q_rows) if q_rows else None,
        "qemu_sram_bytes": qemu_summary(q_rows, "sram_bytes") or None,
        "qemu_instructions": qemu_summary(q_rows, "instructions") or None,
        "qemu_note": (f"{q_note}: firmware on qemu-system-arm mps2-an386 (Cortex-M4), SRAM linked = pool + scratch "
                      "(patch: inside the pool) + static stack bound; instructions = CMSDK timer ticks under -icount "
                      "shift=0 x 40" + (f"; MobileNetV2-1.0/224: {q_224}" if q_224 else "")),
    }


def qemu_224_case(seed: int, planners: tuple[str, ...],
                  max_overhead: float) -> tuple[str, tuple[str, Any, np.ndarray, list[Any]] | None]:
    """The int8 MobileNetV2-1.0/224 (seeded random weights) with its tinyengine, vmcu_fused and patch
    plans for QEMU, or the next width whose code + weights fit the board's flash (`firmware`); and a
    note saying which ran."""
    import tempfile

    from dnninfer.errors import UserError
    from dnninfer.memory import example_input, firmware, plan
    from dnninfer.memory.patch import search

    if not firmware.tools()[0]:
        return firmware.tools()[1], None
    with tempfile.TemporaryDirectory(prefix="dnninfer-vmcu-flash-") as tmp:
        try:
            ir, notes = firmware.mobilenet_v2_fitting(1.0, 224, tmp, seed=seed)
        except UserError as e:
            return str(e), None
    plans = [search(ir, max_overhead=max_overhead) if p == "patch" else plan(ir, p) for p in planners]
    note = f"{ir.name} ({'; '.join(notes) or 'fits the flash'})"
    return note, ("mbv2-1.0-224", ir, example_input(ir, seed=seed), [p for p in plans if p is not None])
