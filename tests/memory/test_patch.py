"""`memory/patch.py`: patch-based execution (MCUNetV2) inside the one vMCU pool, and fit-to-budget.

Patched prefixes must equal layer-by-layer execution bit for bit (odd and non-square sizes, strides,
padding, max/avg pools, residual blocks, random nets), pass the shadow-memory check, and be
refused when a byte they still need is overwritten (exit over the input, an in-patch shift one
byte short, scratch on a live buffer, a halo too small) or a buffer or scratch run leaves the
pool. The budget search returns the fitting plan with the least MAC overhead (brute force on a
small model) or one line naming the smallest peak reachable and the layer that sets it.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from random_nets import odd_net, random_ir  # tests/memory/random_nets.py

from dnninfer.cli import main
from dnninfer.errors import UserError
from dnninfer.graph.receptive import required_ranges, window_need
from dnninfer.memory import patch as patch_mod
from dnninfer.memory.executor import SCRATCH, PlanUnsafe, required_bytes, run
from dnninfer.memory.ir import IR, IRBuilder
from dnninfer.memory.kernels import reference
from dnninfer.memory.models import DigitsVmcuCNN, benchmark_ir, example_input, mobilenet_v2_ir
from dnninfer.memory.patch import (
    candidates,
    fit_budget,
    network_macs,
    pixel_macs,
    plan_patch,
    prefix_lengths,
    search,
)
from dnninfer.memory.plan import MemoryPlan
from dnninfer.memory.planners import PLANNERS, plan
from dnninfer.memory.vmcu import chain_units


@functools.cache
def case(name: str) -> tuple[IR, np.ndarray, np.ndarray]:
    ir = benchmark_ir(name, seed=0)
    x = example_input(ir, seed=1)
    return ir, x, reference(ir, x)


def exit_of(ir: IR, n: int):
    return ir.tensors[chain_units(ir, fused=True)[n - 1].output]


def with_spec(p: MemoryPlan, **changes) -> MemoryPlan:
    return dataclasses.replace(p, patch=dataclasses.replace(p.patch, **changes))


# -- the shared receptive-field walk --------------------------------------------------------------------

@given(st.lists(st.tuples(st.sampled_from([1, 2, 3, 5]), st.sampled_from([1, 2]), st.integers(0, 2)),
                min_size=1, max_size=4), st.integers(9, 40), st.data())
@settings(max_examples=60, deadline=None)
def test_receptive_walk_equals_brute_force_on_chains(ops, h, data):
    """A chain of windows (kernel, stride, padding): the walk's band of every tensor covers the rows
    some requested output row depends on (brute force over output rows), and is exactly their span
    when windows overlap (stride <= kernel) and padding is smaller than the kernel."""
    heights = [h]
    for k, s, p in ops:
        heights.append((heights[-1] + 2 * p - k) // s + 1)
    if min(heights) < 1:
        return
    lo = data.draw(st.integers(0, heights[-1] - 1))
    hi = data.draw(st.integers(lo + 1, heights[-1]))
    got = required_ranges(range(1, len(ops) + 1), {len(ops): (lo, hi)}, lambda v: (v - 1,),
                          lambda v, u, a, b: window_need(a, b, ops[v - 1][0], ops[v - 1][1], ops[v - 1][2]),
                          lambda u: heights[u])
    dense = all(s <= k and p < k for k, s, p in ops)
    rows = set(range(lo, hi))
    for v in range(len(ops), 0, -1):
        k, s, p = ops[v - 1]
        rows = {r for o in rows for r in range(o * s - p, o * s - p + k) if 0 <= r < heights[v - 1]}
        a, b = got[v - 1]
        assert 0 <= a < b <= heights[v - 1] and rows <= set(range(a, b))
        if dense:
            assert (a, b) == (min(rows), max(rows) + 1)


# -- patched prefixes equal layer-by-layer execution -----------------------------------------------------

def test_odd_net_every_prefix_and_grid_is_bit_exact_and_shadow_checked():
    ir = odd_net()
    x = np.random.default_rng(1).integers(-128, 128, size=(13, 11, 3)).astype(np.int8)
    ref = reference(ir, x)
    assert prefix_lengths(ir) == [1, 2, 3, 4, 5, 6]
    for n in prefix_lengths(ir):
        e = exit_of(ir, n)
        for p, q in {(1, 1), (2, 3), (e.h, 1), (1, e.w), (e.h, e.w), (min(3, e.h), 2)}:
            pl = plan_patch(ir, n=n, p=p, q=q)
            stats: dict = {}
            assert np.array_equal(run(ir, pl, x, stats=stats), ref), (n, p, q)
            assert stats["shadow_checked"] and stats["bytes_checked"] > 0


@given(st.data())
@settings(max_examples=25, deadline=None)
def test_random_networks_patched_equal_layer_by_layer(data):
    ir = random_ir(data.draw)
    ns = prefix_lengths(ir)
    if not ns:
        return
    n = data.draw(st.sampled_from(ns))
    e = exit_of(ir, n)
    p, q = data.draw(st.integers(1, e.h)), data.draw(st.integers(1, e.w))
    x = np.random.default_rng(0).integers(-128, 128, size=ir.tensors[0].shape).astype(np.int8)
    assert np.array_equal(run(ir, plan_patch(ir, n=n, p=p, q=q), x), reference(ir, x)), (n, p, q)


@pytest.mark.parametrize("model", ["digits-cnn", "mbv2-0.35-48"])
def test_benchmark_models_run_bit_exact(model):
    ir, x, ref = case(model)
    for n in prefix_lengths(ir)[:4]:
        e = exit_of(ir, n)
        pl = plan_patch(ir, n=n, p=min(3, e.h), q=min(4, e.w))
        assert np.array_equal(run(ir, pl, x), ref), n
        assert pl.scratch_bytes == 0 and pl.total_bytes == pl.peak_bytes  # scratch is inside the pool


def test_mac_overhead_counts_the_macs_the_kernels_execute(monkeypatch):
    """Independent of the planner's band arithmetic: count output pixels of every prefix kernel call."""
    ir, x, _ = case("mbv2-0.35-48")
    pl = plan_patch(ir, n=3, p=3, q=4)
    counted = [0]
    real = patch_mod.layer_row

    def counting(layer, t, *args):
        y = real(layer, t, *args)
        counted[0] += y.shape[0] * pixel_macs(layer)
        return y

    monkeypatch.setattr(patch_mod, "layer_row", counting)
    run(ir, pl, x)
    tail = sum(pixel_macs(ir.layers[i]) * ir.layers[i].hout * ir.layers[i].wout
               for u in chain_units(ir, fused=True)[3:] for i in u.layers)
    assert counted[0] + tail == pl.patch.macs
    assert pl.patch.base_macs == network_macs(ir) and pl.patch.mac_overhead > 1.0
    assert plan_patch(ir, n=3, p=1, q=1).patch.mac_overhead == 1.0  # one patch: no halo


def test_plan_round_trips_through_json_and_still_runs():
    ir, x, ref = case("mbv2-0.35-48")
    pl = plan_patch(ir, n=3, p=2, q=3)
    back = MemoryPlan.from_dict(json.loads(json.dumps(pl.to_dict())))
    assert back == pl
    assert np.array_equal(run(ir, back, x), ref)


# -- MobileNetV2-1.0/224: the goal ------------------------------------------------------------------

def test_mbv2_224_patch_peak_under_mcunetv2s_172kb_within_1_15x_macs():
    ir = mobilenet_v2_ir(1.0, 224)
    best = search(ir, max_overhead=1.15)
    assert best.peak_bytes <= 172_000 and best.patch.mac_overhead <= 1.15
    assert best.peak_bytes == 157_136 and (best.patch.n, best.patch.p, best.patch.q) == (3, 28, 28)
    te = plan(ir, "tinyengine")
    assert te.total_bytes / best.total_bytes > 8  # MCUNetV2's 8x, scratch counted on both sides
    # the stretch goal (<= 150,000 B) is out of reach while the input (224*224*3 B) is in the pool
    assert all(c.lower_bound > ir.tensors[0].size == 150_528 for c in candidates(ir, ns=[3]))
    assert plan_patch(ir, n=3, p=8, q=8).peak_bytes == 169_184  # 8x8 patches: 1.027x MACs


# -- negative controls: the shadow check catches unsafe patch plans ----------------------------------------

def test_exit_written_over_the_input_is_refused():
    ir, x, ref = case("mbv2-0.35-48")
    good = plan_patch(ir, n=3, p=3, q=3)
    ex = good.patch.exit
    bad = dataclasses.replace(good, offsets={**good.offsets, ex: 0})  # d = 0: exit row 0 on input row 0
    with pytest.raises(PlanUnsafe) as info:
        run(ir, bad, x)
    assert (info.value.tensor, info.value.clobber) == (ir.input, ex), str(info.value)
    assert "patch (0, 1)" in str(info.value)  # the next patch of the first row reads it
    assert np.array_equal(run(ir, good, x), ref)


def test_in_patch_shift_one_byte_short_is_refused():
    """vMCU's shift inside a patch's chain: output one byte closer to its input than min_shift allows."""
    ir, x, ref = case("mbv2-0.35-48")
    good = plan_patch(ir, n=3, p=3, q=3)
    spec = good.patch
    sb = spec.local_arc[1]
    units = chain_units(ir, fused=True)
    k, u = next((k, u) for k, vas in enumerate(spec.local_va) for u in range(1, len(vas))
                if (vas[u - 1] - vas[u]) % sb > 0)
    vas = list(spec.local_va[k])
    vas[u:] = [(v + 1) % sb for v in vas[u:]]  # only step u's shift changes (by -1)
    bad = with_spec(good, local_va=(*spec.local_va[:k], tuple(vas), *spec.local_va[k + 1:]))
    with pytest.raises(PlanUnsafe) as info:
        run(ir, bad, x)
    assert (info.value.tensor, info.value.clobber) == (units[u].main, units[u].output), str(info.value)
    assert np.array_equal(run(ir, good, x), ref)  # positive control: the planned shift is safe


def test_scratch_on_a_live_buffer_is_refused():
    ir, x, _ = case("mbv2-0.35-48")
    good = plan_patch(ir, n=3, p=2, q=2)
    spec = good.patch
    base, _ = spec.local_arc
    at = [list(a) for a in spec.scratch_at]
    at[0][1] = base + spec.local_va[0][0]  # step 1's scratch on its own input patch buffer
    with pytest.raises(PlanUnsafe, match="kernel scratch") as info:
        run(ir, with_spec(good, scratch_at=tuple(map(tuple, at))), x)
    assert info.value.clobber == SCRATCH and info.value.tensor == chain_units(ir, fused=True)[1].main
    first = good.steps[1].scratch  # the first tail step's scratch over the exit's first byte
    tail = (min(good.offsets[spec.exit], good.peak_bytes - first), *spec.tail_scratch_at[1:])
    with pytest.raises(PlanUnsafe) as info:
        run(ir, with_spec(good, tail_scratch_at=tail), x)
    assert (info.value.tensor, info.value.clobber) == (spec.exit, SCRATCH)


def test_a_halo_one_row_short_is_caught(monkeypatch):
    """Wrong receptive fields do not go unnoticed: with every window one row and column short, a
    kernel reads patch-buffer bytes its producer never wrote there, and the run is refused."""
    ir, x, _ = case("mbv2-0.35-48")

    def short(lo, hi, k, s, top, d=1):
        a, b = window_need(lo, hi, k, s, top, d)
        return a, b - 1 if k > 1 else b

    monkeypatch.setattr(patch_mod, "window_need", short)
    with pytest.raises(PlanUnsafe, match="patch \\(0, 0\\)"):
        run(ir, plan_patch(ir, n=3, p=3, q=3), x)


def test_a_pool_one_byte_small_or_a_run_outside_the_pool_is_refused():
    ir, x, _ = case("digits-cnn")
    pl = plan_patch(ir, n=2, p=2, q=2)
    with pytest.raises(UserError, match="refusing to run"):
        run(ir, pl, x, pool_bytes=pl.peak_bytes - 1)
    assert required_bytes(ir, pl) == (pl.peak_bytes, 0)  # scratch inside the pool (what codegen allocates)
    at = [list(a) for a in pl.patch.scratch_at]
    at[-1][-1] = pl.peak_bytes - 1  # the last patch's last scratch run hangs over the pool's end
    with pytest.raises(UserError, match=r"patch \(1, 1\) step .* outside the \d+-byte pool"):
        required_bytes(ir, with_spec(pl, scratch_at=tuple(map(tuple, at))))
    with pytest.raises(UserError, match="patch-buffer arc"):
        required_bytes(ir, with_spec(pl, local_arc=(pl.patch.local_arc[0], pl.peak_bytes)))


def test_bad_settings_are_user_errors():
    ir, _, _ = case("digits-cnn")
    with pytest.raises(UserError, match=r"expected n .* in 1\.\.3, got 4"):
        plan_patch(ir, n=4, p=2)
    with pytest.raises(UserError, match=r"1 <= p <= 8 and 1 <= q <= 8"):
        plan_patch(ir, n=1, p=9)
    b = IRBuilder("branchy", 8, 8, 4)
    y = b.conv(0, 4, 3)
    b.add(b.conv(y, 4, 3), b.conv(y, 4, 1))
    assert prefix_lengths(b.build()) == []


# -- fit to a budget ---------------------------------------------------------------------------------------

def test_budget_search_returns_the_least_mac_overhead_plan_that_fits():
    """Brute force on the digits CNN: every layer-wise plan and every patch setting the search knows."""
    ir, x, ref = case("digits-cnn")
    layerwise = [plan(ir, name) for name in PLANNERS]
    patched = [plan_patch(ir, n=c.n, p=c.p, q=c.q) for c in candidates(ir)]
    budget = min(p.total_bytes for p in layerwise) - 1  # no layer-wise planner fits
    fitting = [p for p in patched if p.peak_bytes <= budget]
    got = fit_budget(ir, budget)
    assert got.total_bytes <= budget and got.mode == "patch"
    assert got.patch.mac_overhead == pytest.approx(min(p.patch.mac_overhead for p in fitting))
    assert np.array_equal(run(ir, got, x), ref)
    roomy = fit_budget(ir, 10**6)  # everything fits: a layer-wise plan, the smallest
    assert roomy.planner == min(layerwise, key=lambda p: p.total_bytes).planner


def test_budget_too_small_names_the_smallest_peak_and_its_layer():
    ir, _, _ = case("digits-cnn")
    everything = [plan(ir, name) for name in PLANNERS] + [plan_patch(ir, n=c.n, p=c.p, q=c.q)
                                                           for c in candidates(ir)]
    smallest = min(p.total_bytes for p in everything)
    with pytest.raises(UserError) as info:
        fit_budget(ir, smallest - 1)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"smallest peak reachable is {smallest} bytes" in msg and f"over the budget of {smallest - 1}" in msg
    assert any(f"layer {layer.name!r}" in msg for layer in ir.layers), msg
    assert fit_budget(ir, smallest).total_bytes == smallest  # and exactly that budget fits


def test_plan_memory_with_a_budget():
    import dnninfer

    model, inputs = DigitsVmcuCNN().eval(), torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    roomy = dnninfer.plan_memory(model, inputs)
    budget = min(plan(roomy.ir, name).total_bytes for name in PLANNERS) - 1  # only a patch plan fits
    got = dnninfer.plan_memory(model, inputs, budget_bytes=budget)
    assert got.plan.total_bytes <= budget and got.plan.mode == "patch"
    assert torch.equal(got.run(inputs[:1]), roomy.run(inputs[:1]))  # same int8 output, fewer bytes
    with pytest.raises(UserError, match=r"over the budget of 100; the peak is set by layer '\S+'"):
        dnninfer.plan_memory(model, inputs, budget_bytes=100)
    patched = dnninfer.plan_memory(model, inputs, planner="patch")  # smallest peak within 1.15x MACs
    assert patched.plan.mode == "patch" and patched.plan.patch.mac_overhead <= 1.15
    assert torch.equal(patched.run(inputs[:1]), roomy.run(inputs[:1]))  # int8 bit-exact: same dequantised output


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_budget_plan_run_and_patch_table(capsys):
    code, out, err = run_cli(capsys, "mcu", "plan", "mbv2-1.0-224", "--budget", "256KiB", "--json")
    assert code == 0, err
    obj = json.loads(out)
    assert obj["budget_bytes"] == 262144 and obj["chosen"]["total_bytes"] <= 262144
    assert obj["chosen"]["planner"] == "patch" and obj["chosen"]["mac_overhead"] < 1.01
    code, out, err = run_cli(capsys, "mcu", "plan", "mbv2-1.0-224", "--budget", "150000")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "smallest peak reachable is 154344 bytes" in lines[0] and "set by layer 'features." in lines[0]
    code, out, err = run_cli(capsys, "mcu", "plan", "digits-cnn", "--budget", "12x")
    assert code == 2 and "256KiB" in err
    code, out, err = run_cli(capsys, "mcu", "run", "digits-cnn", "--budget", "2000", "--json")
    assert code == 0, err
    obj = json.loads(out)
    assert obj["bit_exact"] and obj["safe"] and obj["runs"][0]["total_bytes"] <= 2000
    code, out, err = run_cli(capsys, "mcu", "patches", "digits-cnn", "--json")
    assert code == 0, err
    obj = json.loads(out)
    assert {(r["n"], r["p"]) for r in obj["settings"]} >= {(1, 1), (2, 2), (3, 4)}
    assert all(r["p"] == r["q"] for r in obj["settings"])
    assert obj["smallest_peak"]["peak_bytes"] == min(r["peak_bytes"] for r in obj["settings"])
