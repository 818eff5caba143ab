"""Firmware on an emulated Cortex-M (`dnninfer.memory.firmware`): the generated C, linked into exactly
pool + scratch + stack bytes of SRAM, runs on QEMU and prints the Python executor's bytes; one byte
less RAM (or one byte more plan) fails to link; a wrong or garbled output is caught."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from random_nets import benchmark_case  # tests/memory/random_nets.py

from dnninfer.cli import main
from dnninfer.memory import firmware
from dnninfer.memory.executor import PlanUnsafe, run
from dnninfer.memory.firmware import FirmwareError, LinkError, build_firmware, check_qemu, parse_output, run_qemu
from dnninfer.memory.kernels import reference
from dnninfer.memory.planners import PLANNERS, plan

TOOLS_OK, TOOLS_WHY = firmware.tools()
needs_tools = pytest.mark.skipif(not TOOLS_OK, reason=TOOLS_WHY)
MODELS = ("digits-cnn", "mbv2-0.35-48")


def case(name: str):
    return benchmark_case(name)  # shared with test_patch_codegen (one build per session)


@needs_tools
@pytest.mark.parametrize("planner", sorted(PLANNERS))
@pytest.mark.parametrize("model", MODELS)
def test_qemu_output_equals_python_bit_for_bit(model, planner, tmp_path):
    ir, x = case(model)
    p = plan(ir, planner)
    row = check_qemu(ir, p, x, tmp_path, board="mps2-an386")
    assert row["bit_exact"] and row["equals_reference"]
    # RAM granted is the plan's pool + scratch + the stack, and nothing else
    assert row["pool_bytes"] == p.peak_bytes and row["scratch_bytes"] == p.scratch_bytes
    assert row["sram_bytes"] == p.peak_bytes + p.scratch_bytes + row["stack_bytes"]
    assert row["stack_used"] <= row["stack_bytes"] - firmware.STACK_CANARY
    macs = sum(layer.hout * layer.wout * layer.cout * layer.k * layer.kw * (layer.cin if layer.kind != "dw" else 1)
               for layer in ir.layers if layer.kind in ("conv", "pw", "dw"))
    assert row["instructions"] > macs  # the timer really ran across model_invoke


@needs_tools
def test_cortex_m7_board_is_bit_exact_too(tmp_path):
    ir, x = case("digits-cnn")
    row = check_qemu(ir, plan(ir, "vmcu_fused"), x, tmp_path, board="mps2-an500")
    assert row["cpu"] == "cortex-m7" and row["bit_exact"] and row["equals_reference"]


@needs_tools
@pytest.mark.parametrize("planner", ["tflm", "vmcu_fused"])
def test_sram_one_byte_short_fails_to_link(planner, tmp_path):
    """Negative control: the RAM region is exactly what the plan needs; one byte less does not link."""
    ir, x = case("digits-cnn")
    p = plan(ir, planner)
    fw = build_firmware(ir, p, tmp_path / "exact", x)
    assert fw.sram_bytes == fw.pool_bytes + fw.scratch_bytes + fw.stack_bytes
    with pytest.raises(LinkError) as err:
        build_firmware(ir, p, tmp_path / "short", x, sram_bytes=fw.sram_bytes - 1)
    assert err.value.region == "RAM" and err.value.overflow == 1
    assert "exceed the RAM granted" in str(err.value)


@needs_tools
def test_plan_one_byte_too_large_fails_to_link(tmp_path):
    ir, x = case("digits-cnn")
    p = plan(ir, "tflm")
    fw = build_firmware(ir, p, tmp_path / "fits", x)
    bigger = dataclasses.replace(p, peak_bytes=p.peak_bytes + 1)
    with pytest.raises(LinkError, match="overflowed by 1 byte"):
        build_firmware(ir, bigger, tmp_path / "big", x, sram_bytes=fw.sram_bytes)


@needs_tools
def test_weights_beyond_the_boards_flash_fail_to_link(tmp_path):
    ir, x = case("mbv2-0.35-48")
    small = dataclasses.replace(firmware.BOARDS["mps2-an386"], flash_bytes=1 << 20)
    with pytest.raises(LinkError) as err:
        build_firmware(ir, plan(ir, "vmcu_fused"), tmp_path, x, board=small)
    assert err.value.region == "FLASH" and err.value.overflow > 0


@needs_tools
def test_a_mobilenet_too_big_for_flash_steps_down_to_the_next_width(tmp_path):
    board = dataclasses.replace(firmware.BOARDS["mps2-an386"], flash_bytes=1_900_000)  # 0.35/48 needs ~1.78 MB
    ir, notes = firmware.mobilenet_v2_fitting(0.5, 48, tmp_path, board=board)
    assert ir.meta["width"] == 0.35
    assert "MobileNetV2-0.5/48" in notes[0] and "exceed" in notes[0] and "0.35" in notes[-1]


@needs_tools
def test_corrupted_or_truncated_output_is_caught(tmp_path):
    ir, x = case("digits-cnn")
    p = plan(ir, "vmcu")
    fw = build_firmware(ir, p, tmp_path, x)
    res = run_qemu(fw)
    py = run(ir, p, x).ravel()
    assert np.array_equal(res.output, py)
    lines = res.text.splitlines()
    k = next(i for i, line in enumerate(lines) if line.startswith("out "))
    flipped = lines[k][:4] + ("0" if lines[k][4] != "0" else "1") + lines[k][5:]
    bad, *_ = parse_output("\n".join([*lines[:k], flipped, *lines[k + 1:]]), fw.output_bytes)
    assert not np.array_equal(bad, py)  # one flipped nibble is a mismatch
    with pytest.raises(FirmwareError, match="output bytes"):
        parse_output("\n".join(lines[:k] + lines[k + 1:]), fw.output_bytes)
    with pytest.raises(FirmwareError, match="did not finish"):
        parse_output("\n".join(line for line in lines if line != "done"), fw.output_bytes)


@needs_tools
@pytest.mark.parametrize(("stack", "caught"), [(300, "canary"), (64, "faulted")])
def test_a_stack_below_the_static_bound_is_caught(stack, caught, monkeypatch, tmp_path):
    """Negative control for the stack reservation: with less than the call-graph bound (about 330 B here) the
    run either overwrites the canary word or runs off the bottom of RAM and faults; never a pass."""
    ir, x = case("digits-cnn")
    monkeypatch.setattr(firmware, "stack_bound", lambda ci: (stack, ("Reset_Handler",), set()))
    with pytest.raises(FirmwareError, match=caught):
        run_qemu(build_firmware(ir, plan(ir, "tflm"), tmp_path, x), timeout=60)


@needs_tools
def test_unsafe_plan_gives_the_same_wrong_bytes_on_qemu(tmp_path):
    """Negative control: a fused residual block one output row short of its safe shift clobbers input rows;
    the firmware reproduces the executor's wrong bytes, so QEMU really follows the planned addresses."""
    ir, x = case("mbv2-0.35-48")
    good = plan(ir, "vmcu_fused")
    blocks = {b.first: b for b in ir.blocks}
    j, step = next((j, s) for j, s in enumerate(good.steps)
                   if s.kind == "fused_ib" and blocks[s.layers[0]].residual and blocks[s.layers[0]].expand is not None)
    row = ir.tensors[ir.layers[step.layers[-1]].output].row_bytes
    bad = plan(ir, "vmcu_fused", shifts={j: step.shift - row})
    with pytest.raises(PlanUnsafe):
        run(ir, bad, x)
    res = run_qemu(build_firmware(ir, bad, tmp_path, x))
    assert np.array_equal(res.output, run(ir, bad, x, shadow=False).ravel())
    assert not np.array_equal(res.output, reference(ir, x).ravel())


def _ci(nodes: dict[str, int], edges: list[tuple[str, str]]) -> str:
    """A gcc ``-fcallgraph-info=su`` file with these frames and calls."""
    lines = ['graph: { title: "a.c"']
    lines += [f'node: {{ title: "{n}" label: "{n}\\na.c:1:1\\n{b} bytes (static)" }}' for n, b in nodes.items()]
    lines += [f'edge: {{ sourcename: "{a}" targetname: "{b}" label: "a.c:2:3" }}' for a, b in edges]
    return "\n".join([*lines, "}"]) + "\n"


def test_stack_bound_is_the_heaviest_call_chain(tmp_path):
    ci = tmp_path / "a.ci"
    frames = {"Reset_Handler": 8, "a.c:f": 40, "a.c:g": 16}
    ci.write_text(_ci(frames, [("Reset_Handler", "a.c:f"), ("Reset_Handler", "a.c:g"), ("a.c:g", "__aeabi_ldivmod")]))
    assert firmware.stack_bound([ci]) == (8 + 16 + firmware.LIBGCC_STACK, ("Reset_Handler", "g", "__aeabi_ldivmod"),
                                          {"__aeabi_ldivmod"})
    ci.write_text(_ci(frames, [("Reset_Handler", "a.c:f"), ("a.c:f", "a.c:g"), ("a.c:g", "a.c:f")]))
    with pytest.raises(FirmwareError, match="recursion"):
        firmware.stack_bound([ci])
    ci.write_text(_ci(frames, [("Reset_Handler", "a.c:h")]))
    with pytest.raises(FirmwareError, match=r"no stack frame recorded for a\.c:h"):
        firmware.stack_bound([ci])


def test_missing_tools_are_reported(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    ok, why = firmware.tools()
    assert not ok and "qemu-system-arm" in why and "arm-none-eabi-gcc" in why
    ir, x = case("digits-cnn")
    with pytest.raises(FirmwareError, match="make sysdeps"):
        build_firmware(ir, plan(ir, "tflm"), tmp_path, x)


@needs_tools
def test_cli_qemu_json(capsys, tmp_path):
    code = main(["mcu", "qemu", "digits-cnn", "--planner", "tinyengine", "--board", "mps2-an500", "-o",
                 str(tmp_path), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    obj = json.loads(out)
    assert obj["bit_exact"] and obj["cpu"] == "cortex-m7"
    (r,) = obj["runs"]
    assert r["planner"] == "tinyengine" and r["instructions"] > 0 and (tmp_path / "tinyengine" / "fw.elf").exists()


def test_cli_qemu_unknown_board_is_a_user_error(capsys):
    code = main(["mcu", "qemu", "digits-cnn", "--board", "mps2-an505"])
    _, err = capsys.readouterr()
    assert code == 2 and err.strip().startswith("dnninfer: error: ") and "mps2-an386" in err
