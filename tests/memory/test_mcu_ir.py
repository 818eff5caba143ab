"""`memory/ir.py` and the analytic MobileNetV2 builder: tensor table, rows, IB blocks."""

from __future__ import annotations

from dnninfer.memory.ir import IRBuilder
from dnninfer.memory.models import make_divisible, mobilenet_v2_ir


def test_tensor_table_uses_inclusive_tflm_lifetimes():
    b = IRBuilder("toy", 8, 8, 3)
    x1 = b.conv(0, 8, 3)  # layer 0
    x2 = b.dw(x1, 3)  # layer 1
    x3 = b.conv(x2, 8, 1)  # layer 2 (pw)
    b.add(x1, x3)  # layer 3 reads x1 again
    ir = b.build()
    spans = {t.name: (t.first, t.last, t.size) for t in ir.tensors}
    assert spans["input"] == (0, 0, 192)
    assert spans["conv0"] == (0, 3, 512)  # produced by layer 0, last read by the add
    assert spans["dw1"] == (1, 2, 512)
    assert spans["add3"] == (3, 3, 512)  # the graph output lives to the end
    assert ir.layers[2].kind == "pw"


def test_needed_rows_and_first_needed_follow_stride_and_padding():
    b = IRBuilder("toy", 9, 9, 2)
    b.conv(0, 4, 3, s=2, p=1)
    layer = b.build().layers[0]
    assert layer.hout == 5
    assert [layer.needed_rows(t) for t in range(5)] == [(0, 2), (1, 4), (3, 6), (5, 8), (7, 9)]
    assert [layer.first_needed(t) for t in range(5)] == [0, 1, 3, 5, 7]


def test_mobilenet_v2_ir_follows_the_builder_rules():
    ir = mobilenet_v2_ir(0.35, 144)
    assert ir.layers[0].cout == make_divisible(32 * 0.35) == 16
    assert ir.layers[-3].cout == 1280  # last conv 1280 * max(1, width)
    assert ir.layers[-1].kind == "fc" and ir.layers[-1].cout == 1000
    assert ir.layers[-2].kind == "pool" and ir.layers[-2].hout == 1
    assert len(ir.blocks) == 17
    assert ir.blocks[0].expand is None and not ir.blocks[0].residual  # t = 1: dw -> project
    assert sum(b.residual for b in ir.blocks) == 10  # stride 1 and Cin == Cout
    for blk in ir.blocks:
        assert ir.layers[blk.dw].kind == "dw" and ir.layers[blk.project].kind == "pw"
        assert blk.last == (blk.add if blk.residual else blk.project)


def test_ib_blocks_need_private_intermediates():
    b = IRBuilder("toy", 8, 8, 4)
    e = b.conv(0, 16, 1)
    d = b.dw(e, 3)
    p = b.conv(d, 4, 1)
    b.add(e, b.conv(p, 16, 1))  # the expanded tensor is read again: it cannot stay virtual
    ir = b.build()
    assert all(blk.expand is None for blk in ir.blocks)
