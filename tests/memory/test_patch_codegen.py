"""Patch plans as C (`codegen`) and as firmware on QEMU (`firmware`): per-patch tables (bands of every
prefix tensor, patch-buffer starts in the nested arc, scratch runs in the pool), kernels computing a column
range of an output row from a strided, edge-padded sub-region, and the tail as circular steps. The host C
and the QEMU run must equal the Python executor (`executor.run`) bit for bit; the firmware links with SRAM =
the plan's peak + stack (no separate scratch); a halo one row short in the emitted tables is a mismatch, and
an unsafe plan gives on the host exactly the wrong bytes the unchecked executor gives (the C really follows
the planned addresses)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from random_nets import benchmark_case, odd_net, random_ir  # tests/memory/random_nets.py

from dnninfer.cli import main
from dnninfer.memory import codegen, firmware
from dnninfer.memory.executor import PlanUnsafe, run
from dnninfer.memory.firmware import LinkError, build_firmware, check_qemu
from dnninfer.memory.kernels import reference
from dnninfer.memory.patch import plan_patch, prefix_lengths, search
from dnninfer.memory.vmcu import chain_units

TOOLS_OK, TOOLS_WHY = firmware.tools()
needs_qemu = pytest.mark.skipif(not TOOLS_OK, reason=TOOLS_WHY)
needs_cc = pytest.mark.skipif(codegen.host_compiler() is None, reason="no host C compiler (gcc/cc) on PATH")


def case(name: str):
    return benchmark_case(name)  # built once per session, shared with test_firmware


def exit_of(ir, n: int):
    return ir.tensors[chain_units(ir, fused=True)[n - 1].output]


def host_c(ir, pl, x, tmp_path) -> np.ndarray:
    return codegen.compile_and_run(codegen.generate(ir, pl, tmp_path), x)


# -- host C equals the Python executor --------------------------------------------------------------------

@needs_cc
@pytest.mark.parametrize(("model", "n", "p", "q"), [
    ("digits-cnn", 3, 3, 4),  # conv, then two fused blocks without expansion; uneven bands
    ("digits-cnn", 1, 8, 8),  # one-pixel patches
    ("mbv2-0.35-48", 3, 3, 6),  # the 1.15x search's choice: stem, t=1 block, strided expansion block
    ("mbv2-0.35-48", 4, 2, 3),  # a residual block inside the prefix
    ("mbv2-0.35-48", 2, 24, 24),  # one output row and column per patch
])
def test_host_c_of_a_patch_plan_equals_python(model, n, p, q, tmp_path):
    ir, x = case(model)
    pl = plan_patch(ir, n=n, p=p, q=q)
    y = run(ir, pl, x).ravel()
    assert np.array_equal(host_c(ir, pl, x, tmp_path), y)
    assert np.array_equal(y, reference(ir, x).ravel())
    src = (tmp_path / "model.c").read_text()
    assert "#define SCRATCH_BYTES 0" in src and "static int8_t scratch[" not in src  # scratch inside the pool
    assert f"PATCH_ROWS[{p}]" in src and f"PATCH_SCRATCH[{p * q}][{n}]" in src


@needs_cc
def test_odd_net_every_prefix_as_c():
    """Odd sizes, a padded strided conv, a padded max pool, a 5x5 depthwise, a residual block, a valid conv
    and a 2x2 average pool: every prefix length, patch grids with uneven bands and one-pixel patches."""
    ir = odd_net()
    x = np.random.default_rng(1).integers(-128, 128, size=(13, 11, 3)).astype(np.int8)
    ref = reference(ir, x).ravel()
    for n in prefix_lengths(ir):
        e = exit_of(ir, n)
        for p, q in {(min(2, e.h), min(3, e.w)), (e.h, e.w)}:
            res = codegen.check(ir, plan_patch(ir, n=n, p=p, q=q), x)
            assert res["bit_exact"] and np.array_equal(res["c"], ref), (n, p, q)


@needs_cc
@given(st.data())
@settings(max_examples=6, deadline=None)
def test_random_networks_as_patch_c_equal_python(data):
    ir = random_ir(data.draw)
    ns = prefix_lengths(ir)
    if not ns:
        return
    n = data.draw(st.sampled_from(ns))
    e = exit_of(ir, n)
    p, q = data.draw(st.integers(1, e.h)), data.draw(st.integers(1, e.w))
    x = np.random.default_rng(0).integers(-128, 128, size=ir.tensors[0].shape).astype(np.int8)
    assert codegen.check(ir, plan_patch(ir, n=n, p=p, q=q), x)["bit_exact"], (n, p, q)


# -- negative controls ------------------------------------------------------------------------------------

@needs_cc
@pytest.mark.parametrize("model", ["digits-cnn", "mbv2-0.35-48"])
def test_a_halo_one_row_short_in_the_emitted_tables_is_a_mismatch(model, monkeypatch, tmp_path):
    """The first step's output band of patch row 0 loses its last halo row in the C tables only: the next
    step reads that row from a patch buffer nobody wrote it to, and the bytes differ from Python's."""
    ir, x = case(model)
    pl = plan_patch(ir, n=3, p=3, q=4)
    py = run(ir, pl, x).ravel()
    assert np.array_equal(host_c(ir, pl, x, tmp_path / "good"), py)  # positive control
    real = codegen.patch_tables
    first = chain_units(ir, fused=True)[0].output

    def short(ir_, plan_):
        tab = real(ir_, plan_)
        m = tab.tensors.index(first)
        rows = [list(r) for r in tab.rows]
        lo, hi = rows[0][m]
        assert lo < hi - 1 < ir_.tensors[first].h  # row hi - 1 is a real row, and not the band's only one
        rows[0][m] = (lo, hi - 1)
        return dataclasses.replace(tab, rows=tuple(map(tuple, rows)))

    monkeypatch.setattr(codegen, "patch_tables", short)
    assert not np.array_equal(host_c(ir, pl, x, tmp_path / "short"), py)


@needs_cc
def test_an_unsafe_patch_plan_gives_the_executors_wrong_bytes_in_c(tmp_path):
    """A step inside a patch's chain one byte closer to its input than vMCU's shift allows: the shadow check
    refuses it, and the C computes exactly the bytes the unchecked executor does (not the reference's)."""
    ir, x = case("mbv2-0.35-48")
    good = plan_patch(ir, n=3, p=3, q=6)
    spec = good.patch
    sb = spec.local_arc[1]
    k, u = next((k, u) for k, vas in enumerate(spec.local_va) for u in range(1, len(vas))
                if (vas[u - 1] - vas[u]) % sb > 0)
    vas = list(spec.local_va[k])
    vas[u:] = [(v + 1) % sb for v in vas[u:]]
    bad = dataclasses.replace(good, patch=dataclasses.replace(
        spec, local_va=(*spec.local_va[:k], tuple(vas), *spec.local_va[k + 1:])))
    with pytest.raises(PlanUnsafe):
        run(ir, bad, x)
    wrong = run(ir, bad, x, shadow=False).ravel()
    assert not np.array_equal(wrong, reference(ir, x).ravel())
    assert np.array_equal(host_c(ir, bad, x, tmp_path), wrong)


# -- firmware on QEMU ---------------------------------------------------------------------------------------

@needs_qemu
@pytest.mark.parametrize(("model", "setting"), [("digits-cnn", (3, 3, 4)), ("mbv2-0.35-48", None)])
def test_qemu_runs_a_patch_plan_bit_exact_in_peak_plus_stack(model, setting, tmp_path):
    ir, x = case(model)
    pl = plan_patch(ir, n=setting[0], p=setting[1], q=setting[2]) if setting else search(ir, max_overhead=1.15)
    row = check_qemu(ir, pl, x, tmp_path)
    assert row["planner"] == "patch" and row["bit_exact"] and row["equals_reference"]
    assert row["pool_bytes"] == pl.peak_bytes and row["scratch_bytes"] == 0
    assert row["sram_bytes"] == pl.peak_bytes + row["stack_bytes"]
    assert row["stack_used"] <= row["stack_bytes"] - firmware.STACK_CANARY
    assert row["instructions"] > pl.patch.macs  # the timer ran across model_invoke


@needs_qemu
def test_patch_firmware_one_byte_short_of_sram_fails_to_link(tmp_path):
    ir, x = case("digits-cnn")
    pl = plan_patch(ir, n=3, p=3, q=4)
    fw = build_firmware(ir, pl, tmp_path / "exact", x)
    assert fw.sram_bytes == pl.peak_bytes + fw.stack_bytes and fw.scratch_bytes == 0
    with pytest.raises(LinkError) as err:
        build_firmware(ir, pl, tmp_path / "short", x, sram_bytes=fw.sram_bytes - 1)
    assert err.value.region == "RAM" and err.value.overflow == 1


@needs_qemu
def test_cli_qemu_with_a_budget_runs_the_patch_plan(capsys):
    code = main(["mcu", "qemu", "digits-cnn", "--budget", "2000", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    obj = json.loads(out)
    (r,) = obj["runs"]
    assert obj["bit_exact"] and r["planner"] == "patch" and r["peak_bytes"] <= 2000
    assert r["sram_bytes"] == r["peak_bytes"] + r["stack_bytes"]


@needs_cc
def test_cli_codegen_planner_patch_checks_bit_exact(capsys, tmp_path):
    code = main(["mcu", "codegen", "digits-cnn", "--planner", "patch", "--check", "--cpu", "-o", str(tmp_path),
                 "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    obj = json.loads(out)
    (r,) = obj["outputs"]
    assert obj["bit_exact"] and r["planner"] == "patch" and r["mac_overhead"] <= 1.15 and r["scratch_bytes"] == 0
    code = main(["mcu", "plan", "digits-cnn", "--planner", "pach"])
    _, err = capsys.readouterr()
    assert code == 2 and "patch" in err and "pach" in err
