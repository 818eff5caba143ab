"""`memory/executor.py`: every plan runs bit-exact inside exactly its bytes; broken plans are caught."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from random_nets import random_ir

from dnninfer.errors import UserError
from dnninfer.memory import executor
from dnninfer.memory.executor import Arc, PlanUnsafe, run
from dnninfer.memory.kernels import reference
from dnninfer.memory.models import benchmark_ir, example_input
from dnninfer.memory.plan import MemoryPlan
from dnninfer.memory.planners import PLANNERS, plan

MODELS = ("digits-cnn", "mbv2-0.35-48", "mbv2-0.5-64")


@functools.cache
def case(name: str):
    ir = benchmark_ir(name, seed=0)
    x = example_input(ir, seed=1)
    ref = reference(ir, x)
    assert np.unique(ref).size > 1, "reference output must not be constant (saturation pitfall)"
    return ir, x, ref


@pytest.mark.parametrize("planner", sorted(PLANNERS))
@pytest.mark.parametrize("model", MODELS)
def test_every_planner_runs_bit_exact(model, planner):
    ir, x, ref = case(model)
    p = plan(ir, planner)
    assert np.array_equal(run(ir, p, x), ref)


def test_circular_plans_really_wrap_around_the_pool(monkeypatch):
    ir, x, ref = case("mbv2-0.5-64")
    splits = []
    pieces = Arc._pieces

    def counting(self, va, n):
        runs = list(pieces(self, va, n))
        splits.append(len(runs) > 1)
        return iter(runs)

    monkeypatch.setattr(Arc, "_pieces", counting)
    for planner in ("vmcu", "vmcu_fused"):
        splits.clear()
        assert np.array_equal(run(ir, plan(ir, planner), x), ref)
        assert any(splits), f"{planner}: no access crossed the end of the pool"


@pytest.mark.parametrize("model", MODELS)
def test_layerwise_shift_one_row_short_changes_the_output(model):
    """Negative control: output row t lands on input bytes row t+1 still needs."""
    ir, x, ref = case(model)
    good = plan(ir, "vmcu")
    j, step = next((j, s) for j, s in enumerate(good.steps) if s.shift > 0)
    row = ir.tensors[ir.layers[step.layers[-1]].output].row_bytes
    bad = plan(ir, "vmcu", shifts={j: step.shift - row})
    assert not np.array_equal(run(ir, bad, x, shadow=False), ref)
    with pytest.raises(PlanUnsafe):
        run(ir, bad, x)


@pytest.mark.parametrize("model", ("mbv2-0.35-48", "mbv2-0.5-64"))
def test_fused_residual_block_shift_one_row_short_changes_the_output(model):
    ir, x, ref = case(model)
    good = plan(ir, "vmcu_fused")
    blocks = {b.first: b for b in ir.blocks}
    j, step = next((j, s) for j, s in enumerate(good.steps)
                   if s.kind == "fused_ib" and blocks[s.layers[0]].residual and blocks[s.layers[0]].expand is not None)
    row = ir.tensors[ir.layers[step.layers[-1]].output].row_bytes
    bad = plan(ir, "vmcu_fused", shifts={j: step.shift - row})
    assert not np.array_equal(run(ir, bad, x, shadow=False), ref)
    with pytest.raises(PlanUnsafe):
        run(ir, bad, x)


@pytest.mark.parametrize("planner", sorted(PLANNERS))
def test_pool_one_byte_short_is_refused_before_running(planner, monkeypatch):
    ir, x, _ = case("digits-cnn")
    p = plan(ir, planner)
    calls = []
    monkeypatch.setattr(executor, "layer_row", lambda *a, **k: calls.append(a))
    with pytest.raises(UserError, match="refusing to run"):
        run(ir, p, x, pool_bytes=p.peak_bytes - 1)
    if p.scratch_bytes:
        with pytest.raises(UserError, match="refusing to run"):
            run(ir, p, x, scratch_bytes=p.scratch_bytes - 1)
    assert calls == []


def test_executor_allocates_exactly_the_planned_bytes_once(monkeypatch):
    ir, x, ref = case("mbv2-0.35-48")
    p = plan(ir, "vmcu_fused")
    sizes = []
    zeros = np.zeros

    def recording(shape, dtype=float, *args, **kw):
        if dtype is np.int8:
            sizes.append(shape)
        return zeros(shape, dtype, *args, **kw)

    monkeypatch.setattr(executor.np, "zeros", recording)
    assert np.array_equal(run(ir, p, x), ref)
    assert sizes == [p.peak_bytes + p.scratch_bytes]


def test_greedy_plan_with_overlapping_live_tensors_changes_the_output():
    """Negative control for offset plans: put a layer's output on top of its still-needed input."""
    ir, x, ref = case("mbv2-0.35-48")
    good = plan(ir, "tflm")
    layer = ir.layers[1]  # the first depthwise: its input rows are read after output rows are written
    offsets = dict(good.offsets)
    offsets[layer.output] = offsets[layer.inputs[0]]
    bad = MemoryPlan(**{**good.__dict__, "offsets": offsets})
    assert not np.array_equal(run(ir, bad, x, shadow=False), ref)
    with pytest.raises(PlanUnsafe):
        run(ir, bad, x)


@given(st.data(), st.sampled_from([1, 7, 64]))
@settings(max_examples=30, deadline=None)
def test_random_networks_run_bit_exact_under_every_planner(data, segment):
    ir = random_ir(data.draw)
    x = np.random.default_rng(0).integers(-128, 128, size=ir.tensors[0].shape).astype(np.int8)
    ref = reference(ir, x)
    for name in PLANNERS:
        opts = {"segment_bytes": segment} if name.startswith("vmcu") else {}
        assert np.array_equal(run(ir, plan(ir, name, **opts), x), ref), name
