"""`dnninfer mcu plan|run|codegen|qemu MODEL`: plan activation memory, execute inside the pool, emit C.

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
* ``plan --budget 256KiB`` / ``run --budget ...``: search every planner and patch setting (the first
  steps run patch by patch, MCUNetV2 in the vMCU pool, `dnninfer.memory.patch`) and keep the plan
  that fits with the least MAC overhead, or fail with one line naming the smallest peak reachable
  and the layer that sets it;
* ``patches``: peak bytes and MAC overhead of each patch setting (n leading steps, p x q patches);
* ``codegen``: write ``model.c``/``model.h`` (`dnninfer.memory.codegen`); ``--check`` compiles with
  gcc and compares with the Python executor; Cortex-M section sizes when arm-none-eabi-gcc exists.
* ``qemu``: link each plan's C into bare-metal firmware whose SRAM is pool + scratch + stack, run it on
  ``qemu-system-arm`` (mps2-an386 / mps2-an500), compare its output bytes with the Python executor and
  count the instructions ``model_invoke`` executed (`dnninfer.memory.firmware`).

``--planner patch`` (every command but ``patches``) is the patch setting with the smallest peak within
``--max-mac-overhead`` (default 1.15x); ``--budget`` works for plan, run, codegen and qemu.
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

PLANNER_HELP = ("naive, tflm, tinyengine, vmcu, vmcu_fused, patch (the patch setting with the smallest peak "
                "within --max-mac-overhead, default 1.15x), or all")
#: ``--planner patch`` without a budget: MCUNetV2's bar, at most 15 % more MACs than layer by layer
PATCH_MAX_OVERHEAD = 1.15
_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1 << 20, "mib": 1 << 20, "mb": 1000 * 1000}


def byte_size(text: str) -> int:
    """``262144``, ``256KiB``, ``256K`` (1024 B), ``200kB`` (1000 B), ``1MiB``, ``1MB``: whole bytes >= 1."""
    import argparse
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = m[2].lower() if m else ""
    if m is None or unit not in _UNITS or float(m[1]) * _UNITS[unit] < 1:
        raise argparse.ArgumentTypeError(f"expected a size in bytes such as 262144, 256KiB, 200kB or 1MiB, "
                                         f"got {text!r}")
    return int(float(m[1]) * _UNITS[unit])


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

    def budget(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--budget", type=byte_size, default=None, metavar="SIZE",
                        help="RAM for activations + scratch (262144, 256KiB, 200kB): search the planners (--planner; "
                             "'patch' for patch settings only) and patch settings, keep the plan that fits with the "
                             "least MAC overhead")
        sp.add_argument("--max-mac-overhead", type=at.bounded_float(1.0, 1e6), default=None, metavar="X",
                        help="patch settings only up to X times the layer-by-layer MACs (default: any)")

    sp = msub.add_parser("plan", help="peak activation memory and per-layer live bytes under each planner")
    common(sp, "all")
    budget(sp)
    sp.set_defaults(func=cmd_plan)

    sp = msub.add_parser("patches", help="patch-based execution (MCUNetV2 in the vMCU pool): peak bytes and MAC "
                                         "overhead per setting (n leading steps, p x q patches)")
    model_args(sp)
    sp.add_argument("--n", type=at.positive_int, nargs="+", default=None,
                    help="leading steps run patch by patch (default: every n that can be)")
    sp.add_argument("--p", type=at.positive_int, nargs="+", default=None,
                    help="patch rows (default: 1-8 and those giving bands of 1-8 rows)")
    sp.add_argument("--q", type=at.positive_int, nargs="+", default=None,
                    help="patch columns (default: q = p, square grids)")
    sp.add_argument("--max-mac-overhead", type=at.bounded_float(1.0, 1e6), default=None, metavar="X",
                    help="only settings within X times the layer-by-layer MACs")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_patches)

    sp = msub.add_parser("run", help="execute inside the planned pool; check bit-exactness against the reference")
    common(sp, "all")
    budget(sp)
    sp.add_argument("--pool-bytes", type=at.nonneg_int, default=None,
                    help="run in a pool of this size (default: the plan's)")
    sp.add_argument("--scratch-bytes", type=at.nonneg_int, default=None, help="scratch size (default: the plan's)")
    sp.set_defaults(func=cmd_run)

    sp = msub.add_parser("codegen", help="write a self-contained C file (one static pool); --check compiles and runs")
    common(sp, "vmcu_fused")
    budget(sp)
    sp.add_argument("-o", "--out", required=True, help="output directory (DIR/<planner>/ with --planner all)")
    sp.add_argument("--check", action="store_true", help="compile with gcc -Wall -Werror, run, compare bytes")
    sp.add_argument("--cpu", nargs="*", default=["cortex-m4", "cortex-m7"],
                    help="Cortex-M targets for section sizes (none: skip the ARM build)")
    sp.set_defaults(func=cmd_codegen)

    sp = msub.add_parser("qemu", help="link each plan's C into Cortex-M firmware with SRAM = pool + scratch + stack, "
                                      "run it on QEMU, compare bytes with the Python executor")
    common(sp, "all")
    budget(sp)
    sp.add_argument("--board", default="mps2-an386", help="mps2-an386 (Cortex-M4, default) or mps2-an500 (Cortex-M7)")
    sp.add_argument("-o", "--out", default=None, help="keep each firmware under DIR/<planner>/ (default: a temp dir)")
    sp.add_argument("--timeout", type=at.positive_float, default=600.0, help="seconds per QEMU run (default 600)")
    sp.set_defaults(func=cmd_qemu)


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
    """The layer-wise planners ``--planner`` names; none for ``patch`` (patch settings only)."""
    from dnninfer.memory import PLANNERS

    if choice == "all":
        return list(PLANNERS)
    if choice == "patch":
        return []
    if choice not in PLANNERS:
        raise UserError(f"--planner: expected one of {', '.join(PLANNERS)}, patch, all; got {choice!r}")
    return [choice]


def make_plans(ir: Any, args: argparse.Namespace) -> list[Any]:
    """Plan under each chosen planner; with ``all``, a planner that cannot plan this IR is skipped.
    With ``--budget``: the one plan `fit_budget` picks among them and the patch settings. ``patch``
    without a budget: the patch setting with the smallest peak within ``--max-mac-overhead`` (1.15x)."""
    from dnninfer.memory import fit_budget, plan, planner_options
    from dnninfer.memory.patch import search

    if getattr(args, "budget", None) is not None:
        names = planner_names(args.planner)
        return [fit_budget(ir, args.budget, planners=names, max_overhead=args.max_mac_overhead,
                           who=f"mcu {args.mcu_command} --budget")]
    if args.planner == "patch":
        bound = getattr(args, "max_mac_overhead", None) or PATCH_MAX_OVERHEAD
        best = search(ir, max_overhead=bound)
        if best is None:
            raise UserError(f"mcu {args.mcu_command} --planner patch: no patch setting of {ir.name!r} within MAC "
                            f"overhead x{bound:g} (it must start with a chain of conv/depthwise/pointwise/pool steps)")
        return [best]
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
    if p.patch is not None:
        row.update(patches=f"n={p.patch.n} {p.patch.p}x{p.patch.q}", mac_overhead=round(p.patch.mac_overhead, 4))
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

def _budget_line(args: argparse.Namespace, p: Any) -> str:
    from dnninfer.memory.patch import describe

    return (f"budget {args.budget} bytes: {describe(p)}, {p.total_bytes} bytes "
            f"({'scratch inside the pool' if p.patch is not None else f'{p.scratch_bytes} of them scratch'})")


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
    if args.budget is not None:
        out.update(budget_bytes=args.budget, chosen=rows[0])
    if args.json:
        emit(args, out, "")
        return
    if args.budget is not None:
        print(_budget_line(args, plans[0]))
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
    if args.budget is not None:
        print(_budget_line(args, plans[0]))
    print(f"all bit-exact vs reference: {out['bit_exact']}; all safe (shadow memory: every pool byte read "
          f"was last written by its tensor's producer): {out['safe']}")


def cmd_patches(args: argparse.Namespace) -> None:
    from dnninfer.memory.patch import prefix_lengths, search_rows

    ir, _, desc = load_ir(args, int8=False)
    if not prefix_lengths(ir):
        raise UserError(f"mcu patches: {ir.name!r} does not start with a chain of conv/depthwise/pointwise/pool "
                        "steps, so no prefix can run patch by patch")
    rows = search_rows(ir, args.n, args.p, args.q, square=args.q is None, max_overhead=args.max_mac_overhead)
    if not rows:
        within = f" within MAC overhead x{args.max_mac_overhead:g}" if args.max_mac_overhead is not None else ""
        raise UserError(f"mcu patches: no setting of {ir.name!r}{within} (p <= the exit's rows, q <= its columns)")
    best = min(rows, key=lambda r: (r["peak_bytes"], r["mac_overhead"]))
    out = {"model": args.model, "ir": ir.name, "description": desc, "settings": rows, "smallest_peak": best,
           "accounting": "peak = the one pool: input, exit tensor, patch buffers and every kernel's scratch; "
                         "MAC overhead = MACs with halos recomputed / MACs layer by layer"}
    if args.json:
        emit(args, out, "")
        return
    emit(args, out, f"{ir.name}: patch settings ({desc})", rows)
    print(f"smallest peak: {best['peak_bytes']} bytes with the first {best['n']} steps as {best['p']}x{best['q']} "
          f"patches (MAC x{best['mac_overhead']})")


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


def cmd_qemu(args: argparse.Namespace) -> None:
    """Firmware per plan on an emulated Cortex-M (`dnninfer.memory.firmware`); an analytic MobileNetV2
    benchmark runs as the int8 model of the same shape (seeded random weights), at the next width whose
    code + weights fit the board's flash where it does not."""
    import re
    import tempfile

    from dnninfer.memory import BENCHMARKS, example_input, firmware

    planner_names(args.planner)
    board = firmware.board_named(args.board)
    ok, why = firmware.tools()
    if not ok:
        raise UserError(f"mcu qemu: {why}")
    with tempfile.TemporaryDirectory(prefix="dnninfer-fw-") as tmp:
        base = Path(args.out) if args.out else Path(tmp)
        analytic = re.fullmatch(r"mbv2-([\d.]+)-(\d+)", args.model)
        notes: list[str] = []
        if args.model in BENCHMARKS and not BENCHMARKS[args.model][1] and analytic:
            ir, notes = firmware.mobilenet_v2_fitting(float(analytic[1]), int(analytic[2]), base, board=board,
                                                      seed=args.seed)
            x, desc = example_input(ir, seed=args.seed), f"{ir.name}, int8 (seeded random weights, calibrated)"
        else:
            ir, x, desc = load_ir(args, int8=True)
        rows = []
        for p in make_plans(ir, args):
            try:
                row = firmware.check_qemu(ir, p, x, base / p.planner, board=board, timeout=args.timeout)
            except firmware.LinkError as e:  # the plan does not fit the board: a result, not a failure
                row = {"planner": p.planner, "peak_bytes": p.peak_bytes, "scratch_bytes": p.scratch_bytes,
                       "links": False, "error": str(e)}
            if not args.out:
                row.pop("elf", None)
            rows.append(row)
    ran = [r for r in rows if "bit_exact" in r]
    out = {"model": args.model, "ir": ir.name, "description": desc, "board": board.name, "cpu": board.cpu,
           "notes": notes, "runs": rows, "bit_exact": bool(ran) and all(r["bit_exact"] for r in ran),
           "instructions": "ticks of the 25 MHz CMSDK timer under qemu -icount shift=0 (1 ns per instruction) x 40",
           "sram": "pool + scratch + stack (static call-graph bound + 4 B canary, rounded to 8); nothing else in RAM"}
    if args.json:
        emit(args, out, "")
        return
    for note in notes:
        print(note)
    cols = [c for c in ("planner", "peak_bytes", "scratch_bytes", "stack_bytes", "sram_bytes", "flash_bytes",
                        "instructions", "stack_used", "bit_exact", "equals_reference", "error")
            if any(c in r for r in rows)]
    emit(args, out, f"{ir.name} on QEMU {board.name} ({board.cpu}): {desc}", rows, cols)
    print(f"QEMU output bit-exact vs the Python executor for every plan that linked: {out['bit_exact']}")
