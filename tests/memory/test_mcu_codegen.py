"""Generated C (`dnninfer.memory.codegen`): compiles with -Wall -Werror, equals the Python pool executor
bit for bit (also when a plan is deliberately unsafe, so C really follows the planned addresses),
keeps every activation in one static pool, and builds for Cortex-M with less RAM under vMCU."""

from __future__ import annotations

import functools
import re
import shutil

import numpy as np
import pytest
import torch

from dnninfer.errors import UserError
from dnninfer.memory import codegen
from dnninfer.memory.codegen import arm_sizes, compile_and_run, generate, generate_source
from dnninfer.memory.executor import PlanUnsafe, run
from dnninfer.memory.ir import FloatParams, IRBuilder
from dnninfer.memory.kernels import reference
from dnninfer.memory.models import benchmark_ir, example_input, mobilenet_v2_ir
from dnninfer.memory.planners import PLANNERS, plan
from dnninfer.memory.quantize import quantize_ir

needs_gcc = pytest.mark.skipif(codegen.host_compiler() is None, reason="no host C compiler (gcc/cc) on PATH")
needs_arm = pytest.mark.skipif(None in codegen.arm_toolchain(), reason="arm-none-eabi-gcc / -size not on PATH")


@functools.cache
def case(name: str):
    ir = benchmark_ir(name, seed=0)
    x = example_input(ir, seed=2)
    ref = reference(ir, x)
    assert np.unique(ref).size > 1
    return ir, x, ref


def c_equals_python(ir, p, x, tmp_path, shadow: bool = True) -> tuple[np.ndarray, np.ndarray]:
    c_path = generate(ir, p, tmp_path / p.planner)
    return compile_and_run(c_path, x), run(ir, p, x, shadow=shadow).ravel()


@needs_gcc
@pytest.mark.parametrize("planner", sorted(PLANNERS))
def test_digits_cnn_c_is_bit_exact_under_every_planner(planner, tmp_path):
    ir, x, ref = case("digits-cnn")
    c, py = c_equals_python(ir, plan(ir, planner), x, tmp_path)
    assert np.array_equal(c, py) and np.array_equal(c, ref.ravel())


@needs_gcc
@pytest.mark.parametrize("planner", ["tinyengine", "vmcu_fused"])
def test_mobilenet_v2_c_is_bit_exact(planner, tmp_path):
    ir, x, ref = case("mbv2-0.35-48")
    c, py = c_equals_python(ir, plan(ir, planner), x, tmp_path)
    assert c.shape == (1000,)
    assert np.array_equal(c, py) and np.array_equal(c, ref.ravel())


@needs_gcc
def test_unsafe_shift_gives_the_same_wrong_bytes_in_c_and_python(tmp_path):
    """Negative control: a fused residual block one output row short of its safe shift clobbers input rows.
    C must reproduce the executor's (wrong) output exactly: it addresses the same circular bytes."""
    ir, x, ref = case("mbv2-0.35-48")
    good = plan(ir, "vmcu_fused")
    blocks = {b.first: b for b in ir.blocks}
    j, step = next((j, s) for j, s in enumerate(good.steps)
                   if s.kind == "fused_ib" and blocks[s.layers[0]].residual and blocks[s.layers[0]].expand is not None)
    row = ir.tensors[ir.layers[step.layers[-1]].output].row_bytes
    bad = plan(ir, "vmcu_fused", shifts={j: step.shift - row})
    with pytest.raises(PlanUnsafe):  # the checked executor refuses it; unchecked, it shows what C computes
        run(ir, bad, x)
    c, py = c_equals_python(ir, bad, x, tmp_path, shadow=False)
    assert not np.array_equal(py, ref.ravel())
    assert np.array_equal(c, py)


def _odd_network(seed: int):
    """Kernels the benchmarks lack: 5x5 stride-2 conv, max/avg pooling, relu, a 5x5 stride-2 dw
    IB block without residual, an IB block without expansion, a residual block, GAP + FC."""
    rng = np.random.default_rng(seed)
    b = IRBuilder("odd", 11, 11, 3)
    x = b.conv(0, 6, 5, 2, act="relu", weights=FloatParams.random(rng, 5, 5, 3, 6))  # 6x6x6
    x = b.pool(x, "max", 3, 1, p=1)
    e = b.conv(x, 12, 1, act="relu6", weights=FloatParams.random(rng, 6, 12))
    d = b.dw(e, 5, 2, act="relu6", weights=FloatParams.random(rng, 5, 5, 12))  # 3x3x12
    x = b.conv(d, 8, 1, weights=FloatParams.random(rng, 12, 8))
    d = b.dw(x, 3, 1, act="relu", weights=FloatParams.random(rng, 3, 3, 8))
    x = b.conv(d, 8, 1, weights=FloatParams.random(rng, 8, 8))
    e = b.conv(x, 16, 1, act="relu6", weights=FloatParams.random(rng, 8, 16))
    d = b.dw(e, 3, 1, act="relu6", weights=FloatParams.random(rng, 3, 3, 16))
    x = b.add(x, b.conv(d, 8, 1, weights=FloatParams.random(rng, 16, 8)), act="relu")
    x = b.pool(x, "avg", 2, 1)
    g = b.gap(x)
    b.fc(g, 5, weights=FloatParams.random(rng, 8, 5))
    calib = torch.randn(4, 3, 11, 11, generator=torch.Generator().manual_seed(seed))
    return quantize_ir(b.build(), calib)


@needs_gcc
@pytest.mark.parametrize("seed", [0, 1])
def test_odd_kernels_are_bit_exact_under_every_planner(seed, tmp_path):
    ir = _odd_network(seed)
    assert len(ir.blocks) == 3
    x = np.random.default_rng(seed).integers(-128, 128, size=ir.tensors[0].shape).astype(np.int8)
    ref = reference(ir, x).ravel()
    for name in PLANNERS:
        opts = {"segment_bytes": 7} if name.startswith("vmcu") else {}
        c, py = c_equals_python(ir, plan(ir, name, **opts), x, tmp_path)
        assert np.array_equal(c, py) and np.array_equal(c, ref), name


@pytest.mark.parametrize("planner", sorted(PLANNERS))
def test_one_static_pool_of_the_planned_size(planner):
    ir, _, _ = case("digits-cnn")
    p = plan(ir, planner)
    src = generate_source(ir, p)
    model_part = src.split("#ifdef HOST\nint main")[0]  # the host main's own I/O buffer is not the model's
    assert re.findall(r"static int8_t (\w+)\[", model_part) == (["pool", "scratch"] if p.scratch_bytes else ["pool"])
    assert f"#define POOL_BYTES {p.peak_bytes}\n" in src
    assert f"#define SCRATCH_BYTES {p.scratch_bytes}\n" in src
    assert "malloc" not in src
    assert src.count("model_invoke(void)") == 1


def test_analytic_ir_is_refused():
    with pytest.raises(UserError, match="no int8 parameters"):
        generate_source(mobilenet_v2_ir(0.35, 48), plan(mobilenet_v2_ir(0.35, 48), "tinyengine"))


def test_missing_compilers_are_reported(monkeypatch, tmp_path):
    ir, x, _ = case("digits-cnn")
    c_path = generate(ir, plan(ir, "tflm"), tmp_path)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    sizes, why = arm_sizes(c_path, "cortex-m4")
    assert sizes is None and "arm-none-eabi-gcc" in why
    with pytest.raises(UserError, match="no host C compiler"):
        compile_and_run(c_path, x)
    with pytest.raises(UserError, match="cpu expected one of"):
        arm_sizes(c_path, "cortex-a53")


@needs_arm
def test_arm_build_vmcu_fused_needs_less_ram_than_tinyengine(tmp_path):
    ir, _, _ = case("mbv2-0.35-48")
    sizes = {}
    for planner in ("tinyengine", "vmcu_fused"):
        p = plan(ir, planner)
        c_path = generate(ir, p, tmp_path / planner)
        for cpu in ("cortex-m4", "cortex-m7"):
            s, why = arm_sizes(c_path, cpu)
            assert s is not None, why
            assert all(s[k] > 0 for k in ("text", "data", "bss", "ram", "flash", "rodata", "stack_upper"))
            assert s["ram"] == s["data"] + s["bss"] and s["flash"] == s["text"] + s["data"]
            assert s["pool"] == p.peak_bytes and s["scratch"] == p.scratch_bytes
            assert s["bss"] >= p.total_bytes
            weights = sum(layer.quant.weight.size for layer in ir.layers if layer.quant.weight is not None)
            assert s["rodata"] >= weights  # int8 weights live in flash
            sizes[planner, cpu] = s
    for cpu in ("cortex-m4", "cortex-m7"):
        assert sizes["vmcu_fused", cpu]["ram"] < sizes["tinyengine", cpu]["ram"]
        assert sizes["vmcu_fused", cpu]["runtime_ram"] == sizes["tinyengine", cpu]["runtime_ram"]
