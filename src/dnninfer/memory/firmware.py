"""Firmware on an emulated Cortex-M: a plan's generated C, linked into exactly its RAM, run on QEMU.

The host build (`codegen.check`) proves the generated C computes what the Python executor does; this
module proves it does so on an M-class core inside the plan's bytes (issue 18, item 3):

* `build_firmware` writes ``model.c``/``model.h`` (`codegen.generate`), the input as a flash array
  (``fw_input.c``) and links them with ``firmware_rt.c`` (own vector table and reset handler: copy
  .data, zero .bss, paint the stack, run; ARM semihosting through ``bkpt 0xAB``; no C library) under
  ``firmware.ld`` for an MPS2 board (`BOARDS`: ``mps2-an386`` Cortex-M4, ``mps2-an500`` Cortex-M7).
  The RAM region granted is ``pool + scratch + stack`` bytes and nothing more (a ``patch`` plan keeps its
  scratch inside the pool, so it links with ``peak + stack``): the stack is the
  worst path of the static call graph (gcc ``-fcallgraph-info=su``; `LIBGCC_STACK` for a libgcc
  helper on it) plus a 4-byte canary that must stay painted, rounded up to 8 (AAPCS); the runtime
  adds no .data or .bss (checked after the link). So a plan one byte larger than the RAM granted
  fails to link (`LinkError`), as does code + weights larger than the board's flash.
* `run_qemu` runs the ELF under ``qemu-system-arm -M <board> -nographic -semihosting-config
  enable=on,target=native -icount shift=0`` and parses what it printed: the output bytes (hex), the
  CMSDK APB timer ticks around ``model_invoke`` and the stack high-water mark.
* Cost proxy: under ``-icount shift=0`` each guest instruction advances virtual time by exactly 1 ns
  and the MPS2 timer counts at 25 MHz, so ``instructions = ticks * 40`` (to within one tick, 40
  instructions). Debian's qemu 7.2 ships no TCG plugins (no exact insn counter), and it does not model
  the DWT cycle counter (DWT_CYCCNT reads 0): the timer under icount is what can be read.
* `check_qemu`: one plan end to end, compared byte for byte with `executor.run` and `kernels.reference`.
* `mobilenet_v2_fitting`: where a MobileNetV2's code + int8 weights exceed the board's flash, say so
  and take the next narrower width that links.

The board's "flash" is the 4 MiB ZBT SSRAM1 at 0x0 where MPS2 images keep code (QEMU maps it as
RAM; the linker script puts only code, weights and constants there); its SRAM is the 4 MiB ZBT
SSRAM2/3 at 0x20000000, of which the firmware is granted only what the plan needs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dnninfer.errors import UserError
from dnninfer.memory import codegen
from dnninfer.memory.ir import IR
from dnninfer.memory.plan import MemoryPlan

MIB = 1024 * 1024
RUNTIME_C = Path(__file__).with_name("firmware_rt.c")
LINKER_SCRIPT = Path(__file__).with_name("firmware.ld")
ICOUNT_SHIFT = 0  # one instruction = 2**shift ns of virtual time
#: stack charged for a libgcc helper: its 64-bit division (__aeabi_ldivmod 16 B -> __udivmoddi4 32 B, a
#: leaf: 48 B, read from thumb/v7e-m/nofp libgcc.a's disassembly), with room to spare
LIBGCC_STACK = 128
#: bytes below the static stack bound that must stay painted: a run that overwrote them overflowed
STACK_CANARY = 4
FW_CFLAGS = ("-Os", "-std=c99", "-Wall", "-Werror", "-mthumb", "-ffreestanding", "-ffunction-sections",
             "-fdata-sections", "-fno-tree-loop-distribute-patterns", "-fcallgraph-info=su")


@dataclass(frozen=True)
class Board:
    """An MPS2 FPGA image as QEMU models it: CPU, code memory ("flash"), SRAM, timer clock."""

    name: str
    cpu: str
    flash_origin: int
    flash_bytes: int
    sram_origin: int
    sram_bytes: int
    timer_hz: int = 25_000_000

    @property
    def instructions_per_tick(self) -> int:
        """Guest instructions per CMSDK timer tick under ``-icount shift=ICOUNT_SHIFT``."""
        return 10**9 // (self.timer_hz * 2**ICOUNT_SHIFT)


BOARDS: dict[str, Board] = {
    "mps2-an386": Board("mps2-an386", "cortex-m4", 0x0, 4 * MIB, 0x2000_0000, 4 * MIB),
    "mps2-an500": Board("mps2-an500", "cortex-m7", 0x0, 4 * MIB, 0x2000_0000, 4 * MIB),
}


class FirmwareError(UserError):
    """The firmware could not be built or did not run to its end on QEMU."""


class LinkError(FirmwareError):
    """The link failed: ``region`` ("RAM" or "FLASH") overflowed by ``overflow`` bytes (0 if unknown)."""

    def __init__(self, message: str, *, region: str, overflow: int) -> None:
        super().__init__(message)
        self.region, self.overflow = region, overflow


@dataclass(frozen=True)
class Firmware:
    """A linked ELF and what it was granted (bytes)."""

    elf: Path
    board: Board
    planner: str
    pool_bytes: int
    scratch_bytes: int
    stack_bytes: int  # reserved: the static bound
    sram_bytes: int  # the RAM region's length (pool + scratch + stack unless overridden)
    flash_used: int  # .text (code, weights, constants, vector table) + .data load image
    output_bytes: int
    stack_path: tuple[str, ...] = ()
    commands: tuple[tuple[str, ...], ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class QemuRun:
    """What the firmware printed: the output bytes, timer ticks around model_invoke, stack high-water."""

    output: np.ndarray
    ticks: int
    instructions: int
    stack_used: int
    stack_reserved: int
    wall_s: float
    command: tuple[str, ...]
    text: str = field(default="", repr=False)  # everything the firmware printed


def board_named(board: str | Board) -> Board:
    if isinstance(board, Board):
        return board
    try:
        return BOARDS[board]
    except KeyError:
        raise UserError(f"firmware: board expected one of {', '.join(BOARDS)}, got {board!r}") from None


def tools() -> tuple[bool, str]:
    """Whether arm-none-eabi-gcc and qemu-system-arm are on PATH, and if not, which is missing."""
    missing = [t for t in ("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-nm", "qemu-system-arm")
               if shutil.which(t) is None]
    if missing:
        return False, f"{', '.join(missing)} not on PATH (install with `make sysdeps`)"
    return True, "ok"


def _require(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise FirmwareError(f"firmware: {', '.join(missing)} not on PATH; install with `make sysdeps`")


# -- building ---------------------------------------------------------------------------------------

def _input_source(x: np.ndarray, n: int) -> str:
    raw = np.ascontiguousarray(x, dtype=np.int8).ravel()
    if raw.size != n:
        raise UserError(f"firmware: input expected {n} int8 values, got {raw.size}")
    body = ",\n    ".join(", ".join(map(str, raw[i: i + 32].tolist())) for i in range(0, n, 32))
    return ('#include <stdint.h>\n#include "model.h"\n/* the model input (HWC int8), in flash */\n'
            f"const int8_t fw_input[MODEL_INPUT_BYTES] = {{\n    {body}\n}};\n")


_CI_NODE = re.compile(r'node: \{ title: "([^"]+)" label: "[^"]*?\\n[^"]*?\\n(\d+) bytes \(([^)]+)\)"')
_CI_EDGE = re.compile(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"')


def stack_bound(ci_files: list[Path], root: str = "Reset_Handler") -> tuple[int, tuple[str, ...], set[str]]:
    """Worst-case stack bytes of the call tree under `root`, from gcc ``-fcallgraph-info=su`` files.

    Nothing recurses, so the bound is the heaviest root-to-leaf path of static frame sizes. A libgcc
    helper (a callee named ``__*`` with no frame on record, e.g. ``__aeabi_ldivmod``) is charged
    `LIBGCC_STACK`; any other callee without a frame, a dynamic frame or recursion is refused rather
    than guessed. Returns ``(bytes, the heaviest chain, the libgcc helpers charged)``.
    """
    frames: dict[str, int] = {}
    calls: dict[str, set[str]] = {}
    for ci in ci_files:
        text = ci.read_text()
        for name, size, kind in _CI_NODE.findall(text):
            if kind != "static":
                raise FirmwareError(f"firmware: {name} has a {kind} stack frame; the stack cannot be bounded")
            frames[name] = int(size)
        for src, dst in _CI_EDGE.findall(text):
            calls.setdefault(src, set()).add(dst)
    memo: dict[str, tuple[int, tuple[str, ...]]] = {}
    helpers: set[str] = set()

    def worst(fn: str, chain: tuple[str, ...]) -> tuple[int, tuple[str, ...]]:
        if fn in chain:
            raise FirmwareError(f"firmware: recursion through {fn}; the stack cannot be bounded")
        if fn not in memo:
            if fn not in frames:
                if not fn.startswith("__"):
                    raise FirmwareError(f"firmware: no stack frame recorded for {fn} (called from {chain[-1]})")
                helpers.add(fn)
                return LIBGCC_STACK, (fn,)
            best = max((worst(c, (*chain, fn)) for c in sorted(calls.get(fn, ()))), default=(0, ()))
            memo[fn] = (frames[fn] + best[0], (fn.rsplit(":", 1)[-1], *best[1]))
        return memo[fn]

    total, chain = worst(root, ())
    return total, chain, helpers


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)


def _symbol_sizes(nm: str, path: Path) -> dict[str, int]:
    syms = {}
    for line in _run([nm, "-S", str(path)], path.parent).stdout.splitlines():
        parts = line.split()
        if len(parts) == 4:
            syms[parts[3]] = int(parts[1], 16)
    return syms


def _link_error(stderr: str, out: Path) -> LinkError:
    lines = [ln.split("ld: ", 1)[-1].replace(f"{out}/", "") for ln in stderr.strip().splitlines()
             if "collect2" not in ln]
    m = re.search(r"region `(\w+)' overflowed by (\d+) bytes?", stderr)
    region = m.group(1) if m else ("FLASH" if "flash" in stderr.lower() else "RAM")
    overflow = int(m.group(2)) if m else 0
    return LinkError("firmware: link failed: " + "; ".join(lines), region=region, overflow=overflow)


def build_firmware(ir: IR, plan: MemoryPlan, out_dir: str | os.PathLike[str], x: np.ndarray | None = None, *,
                   board: str | Board = "mps2-an386", sram_bytes: int | None = None) -> Firmware:
    """Generate, compile and link `plan`'s firmware into `out_dir`/fw.elf (see the module docstring).

    `x` is the int8 input baked into flash (default: `models.example_input(ir)`). `sram_bytes`
    overrides the RAM granted (default: pool + scratch + stack, the least that links); a smaller
    value raises `LinkError`, which is how an over-budget plan shows.
    """
    _require("arm-none-eabi-gcc", "arm-none-eabi-nm", "arm-none-eabi-size")
    b = board_named(board)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if x is None:
        from dnninfer.memory.models import example_input

        x = example_input(ir)
    codegen.generate(ir, plan, out)
    (out / "fw_input.c").write_text(_input_source(x, ir.tensors[ir.input].size))
    gcc, nm, size = (shutil.which(t) or t for t in ("arm-none-eabi-gcc", "arm-none-eabi-nm", "arm-none-eabi-size"))
    commands: list[tuple[str, ...]] = []
    objects = []
    for src in (out / "model.c", out / "fw_input.c", RUNTIME_C):
        obj = out / (src.stem + ".o")
        cmd = [gcc, f"-mcpu={b.cpu}", *FW_CFLAGS, "-I", str(out), "-c", str(src), "-o", str(obj)]
        proc = _run(cmd, out)
        if proc.returncode != 0:
            raise FirmwareError(f"firmware: arm-none-eabi-gcc failed on {src.name}: "
                                f"{codegen._first_error(proc.stderr)}")
        commands.append(tuple(cmd))
        objects.append(obj)
    syms = _symbol_sizes(nm, out / "model.o")
    pool, scratch = syms.get("pool", 0), syms.get("scratch", 0)
    stack, path, helpers = stack_bound([out / (o.stem + ".ci") for o in objects])
    defined = {ln.split()[-1] for o in objects for ln in _run([nm, "--defined-only", str(o)], out).stdout.splitlines()
               if ln.strip()}
    undefined = {ln.split()[-1] for o in objects for ln in _run([nm, "-u", str(o)], out).stdout.splitlines()
                 if ln.strip()}
    script = set(re.findall(r"\b(__\w+)\s*=", LINKER_SCRIPT.read_text()))  # symbols the linker script defines
    if undefined - defined - helpers - script:  # libgcc helpers no recorded edge calls: charge them too
        stack += LIBGCC_STACK
        path = (*path, "+libgcc")
    stack = -(-(stack + STACK_CANARY) // 8) * 8
    need = pool + scratch + stack
    granted = need if sram_bytes is None else int(sram_bytes)
    if granted > b.sram_bytes:
        raise LinkError(f"firmware: {plan.planner} needs {need} B of SRAM (pool {pool} + scratch {scratch} + stack "
                        f"{stack}); {b.name} has {b.sram_bytes}", region="RAM", overflow=granted - b.sram_bytes)
    elf = out / "fw.elf"
    link = [gcc, f"-mcpu={b.cpu}", "-mthumb", "-nostdlib", "-T", str(LINKER_SCRIPT), "-Wl,--gc-sections",
            f"-Wl,--defsym=__flash_origin={b.flash_origin:#x}", f"-Wl,--defsym=__flash_bytes={b.flash_bytes}",
            f"-Wl,--defsym=__sram_origin={b.sram_origin:#x}", f"-Wl,--defsym=__sram_bytes={granted}",
            f"-Wl,--defsym=__stack_bytes={stack}", *map(str, objects), "-lgcc", "-o", str(elf)]
    commands.append(tuple(link))
    (out / "build.sh").write_text("#!/bin/sh\nset -e\n" + "".join(" ".join(c) + "\n" for c in commands))
    elf.unlink(missing_ok=True)
    proc = _run(link, out)
    if proc.returncode != 0:
        raise _link_error(proc.stderr, out)
    sections = {}
    for line in _run([size, "-A", str(elf)], out).stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].startswith(".") and parts[1].isdigit():
            sections[parts[0]] = int(parts[1])
    if sections.get(".data", 0) or sections.get(".bss", 0) != pool + scratch or sections.get(".stack") != stack:
        raise FirmwareError(f"firmware: RAM holds more than pool + scratch + stack: {sections}")
    flash_used = sections.get(".text", 0) + sections.get(".ARM.exidx", 0) + sections.get(".data", 0)
    return Firmware(elf=elf, board=b, planner=plan.planner, pool_bytes=pool, scratch_bytes=scratch,
                    stack_bytes=stack, sram_bytes=granted, flash_used=flash_used,
                    output_bytes=ir.tensors[ir.output].size, stack_path=path, commands=tuple(commands))


# -- running ----------------------------------------------------------------------------------------

def qemu_command(fw: Firmware) -> list[str]:
    return [shutil.which("qemu-system-arm") or "qemu-system-arm", "-M", fw.board.name, "-nographic",
            "-monitor", "none", "-semihosting-config", "enable=on,target=native",
            "-icount", f"shift={ICOUNT_SHIFT}", "-kernel", str(fw.elf)]


def parse_output(text: str, output_bytes: int) -> tuple[np.ndarray, int, int, int]:
    """``(output int8, ticks, stack used, stack reserved)`` from the firmware's lines; anything missing,
    malformed or of the wrong length is a `FirmwareError` (a truncated or garbled run is never a pass)."""
    hexits, ticks, stack = [], None, None
    lines = text.replace("\r", "").splitlines()
    if "fault" in lines:
        raise FirmwareError("firmware: the CPU faulted (HardFault/MemManage/BusFault/UsageFault handler ran)")
    if "done" not in lines:
        raise FirmwareError(f"firmware: the run did not finish (no 'done'); last output: {lines[-3:]!r}")
    for line in lines:
        if line.startswith("out "):
            hexits.append(line[4:])
        elif line.startswith("ticks "):
            ticks = int(line.split()[1])
        elif line.startswith("stack "):
            stack = tuple(int(v) for v in line.split()[1:3])
    if ticks is None or stack is None:
        raise FirmwareError("firmware: the run printed no 'ticks' or 'stack' line")
    try:
        raw = bytes.fromhex("".join(hexits))
    except ValueError as e:
        raise FirmwareError(f"firmware: malformed output hex ({e})") from None
    if len(raw) != output_bytes:
        raise FirmwareError(f"firmware: printed {len(raw)} output bytes, expected {output_bytes}")
    return np.frombuffer(raw, dtype=np.int8).copy(), ticks, stack[0], stack[1]


def run_qemu(fw: Firmware, *, timeout: float = 300.0) -> QemuRun:
    """Run `fw` on its board under QEMU (``-icount shift=0``); return what it printed.

    A fault, a stack that reached its canary, a non-zero exit or no end within `timeout` seconds is a
    `FirmwareError`.
    """
    _require("qemu-system-arm")
    cmd = qemu_command(fw)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise FirmwareError(f"firmware: qemu did not finish within {timeout:g} s ({fw.elf})") from None
    wall = time.perf_counter() - start
    # with no semihosting chardev, qemu 7.2 writes the guest's SYS_WRITE0 text to its stderr
    text = proc.stdout + proc.stderr
    out, ticks, used, reserved = parse_output(text, fw.output_bytes)
    if proc.returncode != 0:
        raise FirmwareError(f"firmware: qemu exited {proc.returncode}: {proc.stderr.strip()[-200:]}")
    if used > reserved - STACK_CANARY:
        raise FirmwareError(f"firmware: the stack reached its canary ({used} of {reserved} reserved bytes): overflow")
    return QemuRun(output=out, ticks=ticks, instructions=ticks * fw.board.instructions_per_tick, stack_used=used,
                   stack_reserved=reserved, wall_s=wall, command=tuple(cmd), text=text)


def check_qemu(ir: IR, plan: MemoryPlan, x: np.ndarray, out_dir: str | os.PathLike[str], *,
               board: str | Board = "mps2-an386", timeout: float = 300.0) -> dict[str, Any]:
    """Build and run one plan's firmware; compare its output byte for byte with the Python executor.

    Returns a row: planner, the RAM figures linked (``sram_bytes = pool + scratch + stack``), flash used,
    instructions executed by ``model_invoke`` (ticks * 40), the stack high-water mark, and
    ``bit_exact`` (QEMU == `executor.run`) / ``equals_reference`` (QEMU == `kernels.reference`).
    """
    from dnninfer.memory.executor import run
    from dnninfer.memory.kernels import reference

    fw = build_firmware(ir, plan, out_dir, x, board=board)
    res = run_qemu(fw, timeout=timeout)
    py = run(ir, plan, x).ravel()
    ref = reference(ir, x).ravel()
    return {"planner": plan.planner, "board": fw.board.name, "cpu": fw.board.cpu, "peak_bytes": plan.peak_bytes,
            "pool_bytes": fw.pool_bytes, "scratch_bytes": fw.scratch_bytes, "stack_bytes": fw.stack_bytes,
            "sram_bytes": fw.sram_bytes, "flash_bytes": fw.flash_used, "stack_used": res.stack_used,
            "ticks": res.ticks, "instructions": res.instructions,
            "bit_exact": bool(np.array_equal(res.output, py)),
            "equals_reference": bool(np.array_equal(res.output, ref)),
            "argmax": int(np.argmax(res.output)), "qemu_wall_s": round(res.wall_s, 2), "elf": str(fw.elf)}


def weight_bytes(ir: IR) -> int:
    """Bytes of int8 weights (the bulk of flash; biases and multipliers come on top)."""
    return sum(layer.quant.weight.size for layer in ir.layers if layer.quant is not None and
               layer.quant.weight is not None)


#: MobileNetV2 widths tried, widest first, when a width's code + int8 weights exceed the board's flash
MBV2_WIDTHS = (1.4, 1.0, 0.75, 0.5, 0.35)


def mobilenet_v2_fitting(width: float, resolution: int, out_dir: str | os.PathLike[str], *,
                         board: str | Board = "mps2-an386", seed: int = 0) -> tuple[IR, list[str]]:
    """The executable int8 MobileNetV2-`width`/`resolution` (`models.mobilenet_v2_int8`), or where its
    firmware (code + int8 weights + constants) exceeds the board's flash, the next narrower width of
    `MBV2_WIDTHS` that fits; the notes say which widths did not fit and by how much. The flash test is a
    real link (``vmcu_fused`` plan, under `out_dir`/flash-<width>)."""
    from dnninfer.memory.models import mobilenet_v2_int8
    from dnninfer.memory.planners import plan

    b = board_named(board)
    notes: list[str] = []
    for w in (width, *(w for w in MBV2_WIDTHS if w < width)):
        ir = mobilenet_v2_int8(w, resolution, seed)
        try:
            build_firmware(ir, plan(ir, "vmcu_fused"), Path(out_dir) / f"flash-{w:g}", board=b)
        except LinkError as e:
            if e.region != "FLASH":
                raise
            notes.append(f"MobileNetV2-{w:g}/{resolution}: code + {weight_bytes(ir)} B of int8 weights exceed "
                         f"{b.name}'s {b.flash_bytes} B flash by {e.overflow} B")
            continue
        if w != width:
            notes.append(f"running the next width that fits: MobileNetV2-{w:g}/{resolution}")
        return ir, notes
    raise FirmwareError(f"firmware: no MobileNetV2 width <= {width:g} at {resolution} fits {b.name}'s flash: "
                        + "; ".join(notes))
