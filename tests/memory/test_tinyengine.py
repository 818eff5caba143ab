"""`memory/tinyengine.py`: in-place depthwise merging, its scratch plane, first-fit and the shrink option."""

from __future__ import annotations

from dnninfer.memory.ir import IRBuilder
from dnninfer.memory.models import mobilenet_v2_ir
from dnninfer.memory.planners import plan
from dnninfer.memory.tinyengine import Rect, first_fit


def _block_ir():
    b = IRBuilder("blk", 16, 16, 8)
    e = b.conv(0, 48, 1)  # pw expand
    d = b.dw(e, 3, s=2)  # dw s2: input dies here -> in place
    b.conv(d, 8, 1)
    return b.build()


def test_depthwise_output_shares_its_input_buffer_and_charges_a_plane():
    ir = _block_ir()
    p = plan(ir, "tinyengine")
    assert p.offsets[2] == p.offsets[1]  # dw output (tensor 2) on top of its input (tensor 1)
    assert [s.kind for s in p.steps] == ["layer", "inplace_dw", "layer"]
    assert p.scratch_bytes == (16 + 2) * (16 + 2)
    # without in-place the dw input and output cannot overlap: TFLM-like peak
    assert plan(ir, "tinyengine", inplace_dw=False).peak_bytes == plan(ir, "tflm").peak_bytes


def test_stride2_shrink_frees_three_quarters_after_the_layer():
    ir = _block_ir()
    full = plan(ir, "tinyengine")
    shrunk = plan(ir, "tinyengine", stride2_shrink=True)
    assert full.peak_bytes == 16 * 16 * 48 + 16 * 16 * 8  # expand output + block input
    assert shrunk.peak_bytes == full.peak_bytes
    # after the dw the merged buffer holds only 8x8x48 bytes, so the project output fits beside it
    assert shrunk.live_per_layer[2] == 8 * 8 * 48 + 8 * 8 * 8
    assert full.live_per_layer[2] == 16 * 16 * 48 + 8 * 8 * 8


def test_first_fit_respects_every_segment_of_a_shrinking_buffer():
    big_then_small = Rect(((0, 1, 100), (2, 4, 25)))
    other = Rect(((2, 3, 70),))
    offs = first_fit([big_then_small, other])
    assert offs == [0, 25]  # fits above the shrunk part, overlapping the bytes freed after time 1


def test_mobilenet_v2_peak_is_the_expansion_in_block_two():
    """MCUNetV2's 1372 kB: the 16->96 expansion at 112x112, input 200,704 B + output 1,204,224 B."""
    p = plan(mobilenet_v2_ir(1.0, 224), "tinyengine")
    assert p.peak_bytes == 200_704 + 1_204_224 == 1372 * 1024
    assert max(p.live_per_layer) == p.peak_bytes
    assert p.scratch_bytes == 114 * 114  # the 112x112 depthwise plane with padding 1
