"""`memory/vmcu.py`: the segment-overlap shift, footprints, single-layer reductions, chain checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnninfer.errors import UserError
from dnninfer.memory.ir import IRBuilder
from dnninfer.memory.models import mobilenet_v2_ir
from dnninfer.memory.planners import plan
from dnninfer.memory.vmcu import fused_ib_shift, layer_shift, single_layer_reduction, standard_single_layers

# §1.2 item 6: (in + out, F + tile) per layer of the standard set.
TABLE = {
    "pw expand 16->96 @56x56": (351_232, 306_432),
    "pw project 96->24 @28x28": (94_080, 75_936),
    "conv3x3 s1 32->32 @40x40": (102_400, 53_760),
    "conv3x3 s2 3->16 @144x144 (stem)": (145_152, 84_240),
    "conv3x3 s1 64->128 @20x20": (76_800, 53_760),
    "dw3x3 s1 96 @56x56": (602_112, 311_808),
    "fc 1024->1000, batch 1": (2_024, 2_024),
}


def test_single_layer_table_is_reproduced_exactly():
    got = {r["layer"]: (r["baseline_bytes"], r["vmcu_bytes"]) for r in map(single_layer_reduction,
                                                                         standard_single_layers())}
    assert got == TABLE


def test_single_layer_reductions_bracket_the_papers_range():
    """vMCU abstract: 12.0-49.5 % less RAM on single layers; FC at batch 1 cannot overlap (0 %)."""
    red = {r["layer"]: r["reduction"] for r in map(single_layer_reduction, standard_single_layers())}
    convs = [v for k, v in red.items() if not k.startswith("fc")]
    assert all(0.12 <= v <= 0.50 for v in convs)
    assert min(convs) == pytest.approx(0.1276, abs=1e-3) and max(convs) == pytest.approx(0.4821, abs=1e-3)
    assert red["fc 1024->1000, batch 1"] == 0


@given(st.integers(3, 12), st.integers(1, 6), st.integers(1, 6), st.sampled_from([(1, 1), (3, 1), (3, 2), (5, 2)]))
@settings(max_examples=100, deadline=None)
def test_shift_is_the_smallest_safe_one(h, cin, cout, ks):
    """d* is safe for every row and one byte less breaks some row (brute force over t)."""
    k, s = ks
    b = IRBuilder("one", h, h, cin)
    b.conv(0, cout, k, s=s)
    layer = b.build().layers[0]
    d, f, tile = layer_shift(layer)

    def safe(shift: int) -> bool:
        return all((t + 1) * layer.so - shift <= layer.first_needed(t + 1) * layer.si for t in range(layer.hout - 1))

    assert safe(d)
    assert d == 0 or not safe(d - 1)
    assert f == max(layer.in_bytes + d, layer.out_bytes) and tile == layer.so


def test_segment_size_rounds_shifts_up():
    layer = standard_single_layers()[2]  # conv3x3 s1: d* = one output row = 1280 B
    assert layer_shift(layer)[0] == 1280
    assert layer_shift(layer, segment_bytes=512)[0] == 1536
    p = plan(mobilenet_v2_ir(0.35, 144), "vmcu", segment_bytes=256)
    assert p.peak_bytes % 256 == 0 and p.peak_bytes >= plan(mobilenet_v2_ir(0.35, 144), "vmcu").peak_bytes


def test_fused_block_scratch_is_line_buffer_plus_rows():
    ir = mobilenet_v2_ir(1.0, 224)
    blk = ir.blocks[1]  # 16 -> 96 -> 24 at 112x112, stride 2
    d, f, scratch = fused_ib_shift(ir, blk)
    assert scratch == 3 * 112 * 96 + 56 * 96 + 56 * 24
    assert f == max(ir.tensors[blk.block_input].size + d, 56 * 56 * 24)


def test_layerwise_pins_skip_tensors_inside_residual_blocks():
    p = plan(mobilenet_v2_ir(1.0, 224), "vmcu")
    ir = mobilenet_v2_ir(1.0, 224)
    blk = next(b for b in ir.blocks if b.residual)
    inside = [s for s in p.steps if blk.first <= s.layers[0] <= blk.last]
    assert all(s.pinned == ir.tensors[blk.block_input].size for s in inside)
    # the nested arc excludes the pinned skip: its length is P - |skip|
    out = ir.layers[blk.project].output
    assert p.arcs[out][1] == p.peak_bytes - ir.tensors[blk.block_input].size


def test_non_chain_graphs_are_refused_with_a_reason():
    b = IRBuilder("branchy", 8, 8, 4)
    x = b.conv(0, 4, 3)
    y = b.conv(x, 4, 3)
    z = b.conv(x, 4, 1)  # a second branch from x (projection shortcut)
    b.add(y, z)
    ir = b.build()
    with pytest.raises(UserError, match="not a chain"):
        plan(ir, "vmcu")
    assert plan(ir, "tflm").peak_bytes > 0  # greedy planners take any DAG


def test_live_per_layer_peaks_at_the_pool_size():
    for name in ("vmcu", "vmcu_fused"):
        p = plan(mobilenet_v2_ir(0.35, 144), name)
        assert max(p.live_per_layer) == p.peak_bytes
        assert len(p.live_per_layer) == len(mobilenet_v2_ir(0.35, 144).layers)
        assert np.all(np.array(p.live_per_layer) > 0)
