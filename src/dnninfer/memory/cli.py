"""`dnninfer mcu plan|run|codegen MODEL`: plan activation memory, execute inside the pool, emit C.

MODEL is a memory benchmark (`dnninfer.memory.BENCHMARKS`: ``mbv2-1.0-224``, ``mbv2-0.35-144``
(shapes only), ``mbv2-0.35-48``, ``mbv2-0.5-64``, ``digits-cnn``), or any zoo model / ``model.py`` /
``.pt`` that lowers to the MCU IR. A zoo or file model is lowered for ``plan`` and, for ``run`` and
``codegen``, quantised to int8 with its example input as the calibration batch (and run on it).

* ``plan``: peak activation bytes, scratch, accounting and per-layer live bytes under one planner
  or all of them;
* ``run``: execute every plan inside exactly its bytes and check it bit for bit against the
  reference (``--pool-bytes``/``--scratch-bytes`` shrink the arena: a too-small one is refused);
  every pool read is shadow-checked, so a plan that overwrites a live byte is refused even when
  its output is bit-equal (`executor.PlanUnsafe`);
* ``codegen``: write ``model.c``/``model.h`` (`dnninfer.memory.codegen`); ``--check`` compiles with
  gcc and compares with the Python executor; Cortex-M section sizes when arm-none-eabi-gcc exists.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from dnninfer import argtypes as at
from dnninfer.cliutil import emit, load_graph, model_args, stdout
from dnninfer.errors import UserError

PLANNER_HELP = "naive, tflm, tinyengine, vmcu, vmcu_fused, or all"


def add_commands(sub: Any) -> None:
    p = sub.add_parser("mcu", help="MCU int8 inference: vMCU / TinyEngine / TFLM memory plans, pool execution, C")
    msub = p.add_subparsers(dest="mcu_command", required=True)

    def common(sp: argparse.ArgumentParser, default_planner: str) -> None:
        model_args(sp)
        sp.add_argument("--planner", default=default_planner, help=f"{PLANNER_HELP} (default: {default_planner})")
        sp.add_argument("--alignment", type=at.bounded_int(1, 4096), default=None,
                        help="byte alignment (naive, tflm, tinyengine)")
        sp.add_argument("--segment-bytes", type=at.bounded_int(1, 1 << 30), default=None,
                        help="vMCU segment size (vmcu, vmcu_fused)")
        sp.add_argument("--json", action="store_true")

    sp = msub.add_parser("plan", help="peak activation memory and per-layer live bytes under each planner")
    common(sp, "all")
    sp.set_defaults(func=cmd_plan)

    sp = msub.add_parser("run", help="execute inside the planned pool; check bit-exactness against the reference")
    common(sp, "all")
    sp.add_argument("--pool-bytes", type=at.nonneg_int, default=None,
                    help="run in a pool of this size (default: the plan's)")
    sp.add_argument("--scratch-bytes", type=at.nonneg_int, default=None, help="scratch size (default: the plan's)")
    sp.set_defaults(func=cmd_run)

    sp = msub.add_parser("codegen", help="write a self-contained C file (one static pool); --check compiles and runs")
    common(sp, "vmcu_fused")
    sp.add_argument("-o", "--out", required=True, help="output directory (DIR/<planner>/ with --planner all)")
    sp.add_argument("--check", action="store_true", help="compile with gcc -Wall -Werror, run, compare bytes")
    sp.add_argument("--cpu", nargs="*", default=["cortex-m4", "cortex-m7"],
                    help="Cortex-M targets for section sizes (none: skip the ARM build)")
    sp.set_defaults(func=cmd_codegen)


# -- model and plans --------------------------------------------------------------------------------

def load_ir(args: argparse.Namespace, *, int8: bool) -> tuple[Any, Any, str]:
    """(IR, int8 input or None, description) for MODEL; ``int8`` asks for an executable IR."""
    from dnninfer import zoo
    from dnninfer.memory import BENCHMARKS, benchmark_ir, example_input, lower, quantize, quantize_input

    spec = args.model
    if spec in BENCHMARKS:
        _, executable, desc = BENCHMARKS[spec]
        if int8 and not executable:
            runnable = ", ".join(n for n, b in BENCHMARKS.items() if b[1])
            raise UserError(f"mcu {args.mcu_command}: benchmark {spec!r} is analytic (shapes only, no weights); "
                            f"plan it, or run one of: {runnable}")
        ir = benchmark_ir(spec, seed=args.seed)
        return ir, (example_input(ir, seed=args.seed) if executable else None), desc
    if spec not in zoo.names() and Path(spec.split(":")[0]).suffix not in (".py", ".pt", ".pth", ".pt2", ".onnx"):
        raise UserError(f"mcu model: expected a memory benchmark ({', '.join(BENCHMARKS)}), a zoo name "
                        f"({', '.join(zoo.names())}) or a .py/.pt2/.onnx/.pt file, got {spec!r}")

    loaded, g = load_graph(args)
    if not int8:
        return lower(g, name=loaded.name), None, f"{loaded.name}, lowered (shapes and float weights)"
    x = loaded.inputs[0]
    ir = quantize(g, x, name=loaded.name)
    return ir, quantize_input(ir, x[:1]), f"{loaded.name}, int8 (calibrated on its example input)"


def planner_names(choice: str) -> list[str]:
    from dnninfer.memory import PLANNERS

    if choice == "all":
        return list(PLANNERS)
    if choice not in PLANNERS:
        raise UserError(f"--planner: expected one of {', '.join(PLANNERS)}, all; got {choice!r}")
    return [choice]


def make_plans(ir: Any, args: argparse.Namespace) -> list[Any]:
    """Plan under each chosen planner; with ``all``, a planner that cannot plan this IR is skipped."""
    from dnninfer.memory import plan, planner_options

    names = planner_names(args.planner)
    plans = []
    for name in names:
        known = planner_options(name)
        opts = {}
        for key, value in (("alignment", args.alignment), ("segment_bytes", args.segment_bytes)):
            if value is not None and (key in known or len(names) == 1):
                opts[key] = value
        try:
            plans.append(plan(ir, name, **opts))
        except UserError as e:
            if len(names) == 1:
                raise
            print(f"dnninfer: {name}: skipped: {e}", file=sys.stderr)
    if not plans:
        raise UserError(f"mcu: no planner could plan {ir.name!r}")
    return plans


def _accounting_text(acc: dict[str, Any]) -> str:
    return (f"input {'included' if acc.get('input_included') else 'excluded'}, scratch separate "
            f"({acc.get('scratch')}), alignment {acc.get('alignment', 1)}, KiB = 1024 B, weights in flash")


def plan_row(p: Any, ref_total: int | None = None) -> dict[str, Any]:
    row = {"planner": p.planner, "mode": p.mode, "peak_bytes": p.peak_bytes, "scratch_bytes": p.scratch_bytes,
           "total_bytes": p.total_bytes, "peak_kib": round(p.peak_kib, 1), "scratch_kib": round(p.scratch_kib, 1),
           "steps": len(p.steps)}
    if ref_total:
        row["vs_tinyengine"] = round(p.total_bytes / ref_total, 3)
    return row


def _layer_rows(ir: Any, plans: list[Any]) -> list[dict[str, Any]]:
    step_of = {}
    for p in plans[:1]:
        for st in p.steps:
            for li in st.layers:
                step_of[li] = st
    rows = []
    for i, layer in enumerate(ir.layers):
        row: dict[str, Any] = {"layer": i, "name": layer.name, "kind": layer.kind,
                               "out": f"{layer.hout}x{layer.wout}x{layer.cout}"}
        for p in plans:
            row[p.planner if len(plans) > 1 else "live_bytes"] = p.live_per_layer[i]
        if len(plans) == 1:
            st = step_of[i]
            row.update(step=st.kind, shift=st.shift, footprint=st.footprint, step_scratch=st.scratch)
        rows.append(row)
    return rows


def _ref_total(plans: list[Any], ir: Any) -> int | None:
    from dnninfer.memory import plan

    te = next((p for p in plans if p.planner == "tinyengine"), None)
    if te is None:
        try:
            te = plan(ir, "tinyengine")
        except UserError:
            return None
    return te.total_bytes


# -- commands ---------------------------------------------------------------------------------------

def cmd_plan(args: argparse.Namespace) -> None:
    planner_names(args.planner)  # a bad name fails before the model is built
    ir, _, desc = load_ir(args, int8=False)
    plans = make_plans(ir, args)
    ref = _ref_total(plans, ir)
    rows = [plan_row(p, ref) for p in plans]
    layers = _layer_rows(ir, plans)
    out = {"model": args.model, "ir": ir.name, "description": desc, "layers": len(ir.layers),
           "plans": [p.to_dict() for p in plans], "summary": rows, "per_layer": layers,
           "accounting": {p.planner: _accounting_text(dict(p.accounting)) for p in plans}}
    if args.json:
        emit(args, out, "")
        return
    emit(args, out, f"{ir.name}: activation memory per planner ({desc})", rows)
    emit(args, out, "live bytes per layer", layers)
    console = stdout()
    for p in plans:
        console.print(f"{p.planner}: {_accounting_text(dict(p.accounting))}", markup=False)


def cmd_run(args: argparse.Namespace) -> None:
    import numpy as np

    from dnninfer.memory import reference, run

    planner_names(args.planner)
    ir, x, desc = load_ir(args, int8=True)
    plans = make_plans(ir, args)
    ref = reference(ir, x)
    rows = []
    for p in plans:
        stats: dict[str, Any] = {}
        start = time.perf_counter()
        # shadow-checked: a plan that overwrites a live byte is refused (PlanUnsafe, exit 2) even if
        # its output happens to be bit-equal
        y = run(ir, p, x, pool_bytes=args.pool_bytes, scratch_bytes=args.scratch_bytes, stats=stats)
        wall = time.perf_counter() - start
        rows.append({**plan_row(p), "bit_exact": bool(np.array_equal(y, ref)),
                     "shadow_checked": stats["shadow_checked"], "safe": stats["shadow_checked"],
                     "bytes_checked": stats["bytes_checked"],
                     "argmax": int(np.argmax(y.ravel())), "wall_ms": round(wall * 1e3, 1)})
    out = {"model": args.model, "ir": ir.name, "description": desc, "runs": rows,
           "bit_exact": all(r["bit_exact"] for r in rows), "safe": all(r["safe"] for r in rows),
           "reference_argmax": int(np.argmax(ref.ravel()))}
    if args.json:
        emit(args, out, "")
        return
    emit(args, out, f"{ir.name}: executed inside each plan's pool ({desc})", rows)
    print(f"all bit-exact vs reference: {out['bit_exact']}; all safe (shadow memory: every pool byte read "
          f"was last written by its tensor's producer): {out['safe']}")


def cmd_codegen(args: argparse.Namespace) -> None:
    import numpy as np

    from dnninfer.memory import codegen, reference, run

    planner_names(args.planner)
    for cpu in args.cpu:
        if cpu not in codegen.ARM_CPUS:
            raise UserError(f"--cpu: expected one of {', '.join(codegen.ARM_CPUS)}, got {cpu!r}")
    ir, x, desc = load_ir(args, int8=True)
    plans = make_plans(ir, args)
    base = Path(args.out)
    ref = reference(ir, x).ravel() if args.check else None
    rows = []
    arm_note = None
    for p in plans:
        target = base / p.planner if len(plans) > 1 else base
        c_path = codegen.generate(ir, p, target)
        row: dict[str, Any] = {**plan_row(p), "c_path": str(c_path), "c_bytes": c_path.stat().st_size}
        if args.check:
            c_out = codegen.compile_and_run(c_path, x)
            py = run(ir, p, x).ravel()
            row["c_equals_python"] = bool(np.array_equal(c_out, py))
            row["c_equals_reference"] = bool(np.array_equal(c_out, ref))
        for cpu in args.cpu:
            sizes, why = codegen.arm_sizes(c_path, cpu)
            if sizes is None:
                arm_note = why
                break
            short = cpu.removeprefix("cortex-")
            row[f"{short}_ram"] = sizes["ram"]
            row[f"{short}_flash"] = sizes["flash"]
            row[f"{short}_bss"] = sizes["bss"]
            row[f"{short}_data"] = sizes["data"]
        rows.append(row)
    out = {"model": args.model, "ir": ir.name, "description": desc, "outputs": rows,
           "arm": arm_note or ("ok" if args.cpu else "skipped (--cpu given no targets)"),
           "note": "ARM RAM = .data + .bss (pool + scratch + newlib's data); flash = text (code + weights) + .data"}
    if args.check:
        out["bit_exact"] = all(r["c_equals_python"] and r["c_equals_reference"] for r in rows)
    if args.json:
        emit(args, out, "")
        return
    cols = [c for c in ("planner", "peak_bytes", "scratch_bytes", "c_bytes", "c_equals_python", "c_equals_reference",
                        "m4_ram", "m4_flash", "m7_ram", "m7_flash") if any(c in r for r in rows)]
    emit(args, out, f"{ir.name}: generated C ({desc})", rows, cols)
    for r in rows:
        print(f"{r['planner']}: {r['c_path']}")
    if arm_note:
        print(f"ARM sizes: {arm_note}")
    if args.check:
        print(f"C output bit-exact vs Python executor and reference: {out['bit_exact']}")
