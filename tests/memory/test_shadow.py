"""The executor's shadow memory: a plan one byte short of safe is refused even when its output is bit-equal.

For every planner: its valid plans pass, and the same plan moved by one byte at its tightest place
(two adjacent live tensors, an in-place buffer, or a vMCU shift of d* - 1) is refused, naming the
tensor read and the tensor that clobbered it. The places are chosen from lifetimes and shifts
alone, never by asking the checker.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from random_nets import random_ir  # tests/memory/random_nets.py

from dnninfer.errors import UserError
from dnninfer.memory.executor import PlanUnsafe, Shadow, run
from dnninfer.memory.ir import IR, IRBuilder
from dnninfer.memory.kernels import reference
from dnninfer.memory.models import benchmark_ir, example_input, mobilenet_v2_int8
from dnninfer.memory.plan import MemoryPlan
from dnninfer.memory.planners import PLANNERS, plan
from dnninfer.memory.verify import execute_checked as _execute

MODELS = ("digits-cnn", "mbv2-0.35-48")
LINEAR = ("naive", "tflm", "tinyengine")
CIRCULAR = ("vmcu", "vmcu_fused")


@functools.cache
def case(name: str) -> tuple[IR, np.ndarray, np.ndarray]:
    ir = benchmark_ir(name, seed=0)
    x = example_input(ir, seed=1)
    return ir, x, reference(ir, x)


def with_offsets(p: MemoryPlan, **moved: int) -> MemoryPlan:
    offsets = dict(p.offsets)
    for t, delta in moved.items():
        offsets[int(t)] += delta
    return MemoryPlan(**{**p.__dict__, "offsets": offsets})


def _reads_last_row(ir: IR, t: int, layers: Iterable[int]) -> bool:
    """Whether any of `layers` reads tensor t's last row (a strided pool may never read it)."""
    h = ir.tensors[t].h
    return any(t in ir.layers[i].inputs and ir.layers[i].needed_rows(ir.layers[i].hout - 1)[1] >= h for i in layers)


def one_byte_short(ir: IR, p: MemoryPlan) -> Iterator[tuple[MemoryPlan, int, int]]:
    """(plan, victim, clobberer): adjacent live tensors of a linear plan, one moved 1 byte onto the other.

    Tensor ``t`` is produced before ``u`` and ``u`` sits right against it (gap 0). Moving ``u`` one
    byte onto ``t`` is unsafe when t's clobbered byte is still read after ``u`` writes it: ``u``
    above ``t`` (its element 0 lands on t's last byte) and t's last row read by a later layer (or t
    is the network output), or by ``u``'s own producer streaming rows (more than one output row:
    row 0 is stored before t's last row is read); ``u`` below ``t`` (its last byte on t's first)
    and t read by a later layer. A tensor sharing its offset with a live one (an in-place pair)
    is not moved.
    """
    tensors = ir.tensors
    for t in tensors:
        for u in tensors[t.id + 1:]:
            if any(v.id != u.id and p.offsets[v.id] == p.offsets[u.id] and v.first <= u.last and u.first <= v.last
                   for v in tensors):
                continue
            k = u.id - 1  # u's producer
            producer = ir.layers[k]
            later = range(k + 1, len(ir.layers))
            last_read_later = _reads_last_row(ir, t.id, later) or t.id == ir.output
            streaming = not producer.whole_input and producer.hout > 1 and _reads_last_row(ir, t.id, [k])
            if p.offsets[u.id] == p.offsets[t.id] + t.size and (last_read_later or streaming):
                yield with_offsets(p, **{str(u.id): -1}), t.id, u.id
            elif p.offsets[u.id] + u.size == p.offsets[t.id] and t.last > u.first:
                yield with_offsets(p, **{str(u.id): +1}), t.id, u.id


def refusal(ir: IR, p: MemoryPlan, x: np.ndarray) -> PlanUnsafe:
    with pytest.raises(PlanUnsafe) as info:
        run(ir, p, x)
    return info.value


# -- valid plans pass ---------------------------------------------------------------------------------

@pytest.mark.parametrize("planner", sorted(PLANNERS))
@pytest.mark.parametrize("model", MODELS)
def test_valid_plans_pass_the_shadow_check(model, planner):
    ir, x, ref = case(model)
    stats: dict = {}
    assert np.array_equal(run(ir, plan(ir, planner), x, stats=stats), ref)
    assert stats["shadow_checked"] and stats["bytes_checked"] > 0


@pytest.mark.parametrize("planner", ("naive", "tflm", "vmcu"))
def test_every_byte_read_is_checked(planner):
    """Not sampled: one layer per step, so the bytes checked are exactly the bytes the kernels read."""
    ir, x, _ = case("digits-cnn")
    want = ir.tensors[ir.output].size  # the final output read
    for layer in ir.layers:
        for t in range(layer.hout):
            lo, hi = layer.needed_rows(t)
            want += sum((hi - lo) * ir.tensors[i].row_bytes for i in layer.inputs)
    stats: dict = {}
    run(ir, plan(ir, planner), x, stats=stats)
    assert stats["bytes_checked"] == want
    run(ir, plan(ir, planner), x, shadow=False, stats=stats)
    assert stats == {"shadow_checked": False, "reads_checked": 0, "bytes_checked": 0}


# -- one byte short of safe is refused, for every planner ---------------------------------------------

@pytest.mark.parametrize("planner", LINEAR)
def test_linear_plan_one_byte_short_is_refused(planner):
    checked = 0
    for model in MODELS:
        ir, x, _ = case(model)
        for bad, victim, clobber in one_byte_short(ir, plan(ir, planner)):
            e = refusal(ir, bad, x)
            assert (e.tensor, e.clobber) == (victim, clobber), str(e)
            checked += 1
    assert checked > 0, f"{planner}: no adjacent live tensors to test"


@pytest.mark.parametrize("model", MODELS)
def test_tinyengine_inplace_depthwise_one_byte_off_is_refused(model):
    """The in-place buffer is TinyEngine's tightest place: the output one byte off its input's offset
    writes channel c over a channel (c + 1, or C - 1 of the previous pixel) not yet copied out."""
    ir, x, ref = case(model)
    good = plan(ir, "tinyengine")
    inplace = [ir.layers[s.layers[0]] for s in good.steps if s.kind == "inplace_dw"]
    assert inplace
    checked = []
    for layer in inplace:
        src, dst = layer.inputs[0], layer.output
        for delta in (+1, -1):
            try:
                bad = with_offsets(good, **{str(dst): delta})
            except ValueError:  # the buffer ends at the top (or starts at 0) of the pool
                continue
            e = refusal(ir, bad, x)
            assert (e.tensor, e.clobber) == (src, dst), str(e)
            checked.append(delta)
    assert checked
    assert np.array_equal(run(ir, good, x), ref)  # positive control: the shared offset is safe


@pytest.mark.parametrize("planner", CIRCULAR)
@pytest.mark.parametrize("model", MODELS)
def test_vmcu_shift_one_byte_short_is_refused(model, planner):
    """d* - 1: output row t's last byte lands on the first byte of the input row row t + 1 still needs."""
    ir, x, ref = case(model)
    good = plan(ir, planner)
    steps = [(j, s) for j, s in enumerate(good.steps) if s.shift > 0]
    assert steps
    for j, step in steps:
        main, out = ir.layers[step.layers[0]].inputs[0], ir.layers[step.layers[-1]].output
        e = refusal(ir, plan(ir, planner, shifts={j: step.shift - 1}), x)
        assert (e.tensor, e.clobber) == (main, out), str(e)
        assert np.array_equal(run(ir, plan(ir, planner, shifts={j: step.shift}), x), ref)


def test_issue_repro_bit_equal_output_yet_refused():
    """Issue 14: MobileNetV2-0.35/144, vmcu_fused, shifts={1: 575} (d* = 576) clobbers one live byte."""
    ir = mobilenet_v2_int8(0.35, 144)
    x = example_input(ir, seed=0)
    ref = reference(ir, x)
    good = plan(ir, "vmcu_fused")
    assert good.steps[1].shift == 576
    bad = plan(ir, "vmcu_fused", shifts={1: 575})
    assert np.array_equal(run(ir, bad, x, shadow=False), ref)  # what the old bit-exact check saw
    e = refusal(ir, bad, x)
    assert isinstance(e, UserError)
    assert (e.tensor, e.element, e.clobber, e.clobber_element) == (1, 0, 3, 575)
    msg = str(e)
    assert "\n" not in msg
    for needle in ("unsafe", "features_1_conv", repr(ir.tensors[1].name), repr(ir.tensors[3].name),
                   f"pool offset {e.offset}", "refusing the plan"):
        assert needle in msg, msg
    assert np.array_equal(run(ir, good, x), ref)


def test_bit_equal_unsafe_linear_plan_is_reported_unsafe_by_the_bench():
    """The bench's bit_exact column alone would pass this plan; its safe column does not."""
    ir, x, ref = case("digits-cnn")
    bad = next(b for b, victim, clobber in one_byte_short(ir, plan(ir, "tflm")) if (victim, clobber) == (3, 4))
    assert np.array_equal(run(ir, bad, x, shadow=False), ref)
    row = _execute(ir, bad, [x], [ref])
    assert row["bit_exact"] is True and row["safe"] is False
    assert "tensor" in row["unsafe"] and "unsafe" in row["unsafe"]
    good = _execute(ir, plan(ir, "tflm"), [x], [ref])
    assert good["bit_exact"] is True and good["safe"] is True and good["shadow_checked"] is True


def test_harmless_overlap_is_accepted():
    """Precision: a global pool reads its whole input before it stores its one output row, so its
    output one byte onto its input's last byte is safe, and the checker accepts it."""
    ir, x, ref = case("digits-cnn")
    p = plan(ir, "naive")
    gap = next(i for i, layer in enumerate(ir.layers) if layer.kind == "pool")
    out = ir.layers[gap].output
    bad = with_offsets(p, **{str(out): -1})
    assert np.array_equal(run(ir, bad, x), ref)


# -- the Shadow record itself -------------------------------------------------------------------------

def _tiny_ir() -> IR:
    b = IRBuilder("tiny", 2, 2, 1)
    b.conv(0, 1, 1)
    return b.build()


def test_shadow_names_the_clobbering_tensor_and_never_written_bytes():
    sh = Shadow(_tiny_ir(), "hand", 8)
    sh.write(0, slice(0, 4), np.arange(4))
    sh.check("layer 'a'", 0, slice(0, 4), np.arange(4))
    with pytest.raises(PlanUnsafe, match="byte 2 of tensor 'input'"):  # right tensor, wrong element
        sh.check("layer 'a'", 0, slice(0, 2), np.arange(2, 4))
    sh.write(1, slice(3, 5), np.arange(2))
    with pytest.raises(PlanUnsafe) as info:
        sh.check("layer 'b'", 0, slice(0, 4), np.arange(4))
    e = info.value
    assert (e.layer, e.tensor, e.element, e.offset, e.clobber, e.clobber_element) == ("layer 'b'", 0, 3, 3, 1, 0)
    assert "overwritten by tensor 'pw0' (#1) byte 0" in str(e)
    with pytest.raises(PlanUnsafe, match="no tensor ever wrote it") as info:
        sh.check("layer 'b'", 1, slice(5, 6), np.arange(2, 3))
    assert info.value.clobber is None


# -- random networks ----------------------------------------------------------------------------------

@given(st.data())
@settings(max_examples=12, deadline=None)
def test_random_networks_one_byte_short_is_refused_under_every_planner(data):
    ir = random_ir(data.draw)
    x = np.random.default_rng(0).integers(-128, 128, size=ir.tensors[0].shape).astype(np.int8)
    ref = reference(ir, x)
    for name in LINEAR:
        good = plan(ir, name)
        assert np.array_equal(run(ir, good, x), ref), name
        for bad, victim, clobber in one_byte_short(ir, good):
            e = refusal(ir, bad, x)
            assert (e.tensor, e.clobber) == (victim, clobber), (name, str(e))
    for name in CIRCULAR:
        good = plan(ir, name)
        assert np.array_equal(run(ir, good, x), ref), name
        for j, step in enumerate(good.steps):
            if step.shift > 0:
                refusal(ir, plan(ir, name, shifts={j: step.shift - 1}), x)
