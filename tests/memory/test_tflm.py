"""`memory/tflm.py`: the GreedyMemoryPlanner port against hand-computed offsets and invariants."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnninfer.memory.ir import IRBuilder
from dnninfer.memory.plan import align_up
from dnninfer.memory.planners import plan
from dnninfer.memory.tflm import Buffer, greedy_offsets
from dnninfer.memory.tinyengine import Rect, first_fit


@pytest.mark.parametrize(
    ("buffers", "alignment", "offsets"),
    [
        # A(100)[0,0] B(200)[0,1] C(50)[1,1]: B first at 0; A and C both conflict with B -> after it.
        ([(100, 0, 0), (200, 0, 1), (50, 1, 1)], 1, [200, 0, 200]),
        # same with 16-byte alignment: sizes 112, 208, 64.
        ([(100, 0, 0), (200, 0, 1), (50, 1, 1)], 16, [208, 0, 208]),
        # A(100)[0,1] B(80)[1,2] C(60)[0,0] D(30)[2,2]: D fits the gap below B where A has died.
        ([(100, 0, 1), (80, 1, 2), (60, 0, 0), (30, 2, 2)], 1, [0, 100, 100, 0]),
        ([(100, 0, 1), (80, 1, 2), (60, 0, 0), (30, 2, 2)], 16, [0, 112, 112, 0]),
        # T0(64)[0,1] T1(32)[1,2] T2(48)[2,3] T3(16)[3,3] T4(8)[0,3]
        ([(64, 0, 1), (32, 1, 2), (48, 2, 3), (16, 3, 3), (8, 0, 3)], 1, [0, 64, 0, 48, 96]),
        # ties keep insertion order (stable sort): both 40-byte buffers overlap, the first gets 0.
        ([(40, 0, 1), (40, 1, 2), (10, 2, 2)], 1, [0, 40, 0]),
    ],
)
def test_greedy_matches_hand_computed_offsets(buffers, alignment, offsets):
    bufs = [Buffer(align_up(s, alignment), f, last) for s, f, last in buffers]
    assert greedy_offsets(bufs) == offsets


def test_plan_on_a_small_chain_with_alignment():
    b = IRBuilder("chain", 4, 4, 1)  # input 16 B
    x = b.conv(0, 3, 3)  # 48 B
    x = b.conv(x, 2, 3)  # 32 B
    b.fc(x, 5)  # 5 B
    ir = b.build()
    p1 = plan(ir, "tflm")
    # sizes 16, 48, 32, 5 over [0,0], [0,1], [1,2], [2,3]: conv0 @0, conv1 @48, input @48, fc @0
    assert dict(p1.offsets) == {0: 48, 1: 0, 2: 48, 3: 0}
    assert p1.peak_bytes == 80
    p16 = plan(ir, "tflm", alignment=16)
    assert dict(p16.offsets) == {0: 48, 1: 0, 2: 48, 3: 0} and p16.peak_bytes == 80
    assert p16.accounting["alignment"] == 16


buffer_lists = st.lists(
    st.tuples(st.integers(1, 300), st.integers(0, 8), st.integers(0, 4)).map(lambda t: (t[0], t[1], t[1] + t[2])),
    min_size=1, max_size=12,
)


@given(buffer_lists)
@settings(max_examples=150, deadline=None)
def test_greedy_never_overlaps_live_buffers_and_is_lowest_first_fit(raw):
    bufs = [Buffer(*b) for b in raw]
    offs = greedy_offsets(bufs)
    for i, a in enumerate(bufs):
        for j, b in enumerate(bufs[:i]):
            if not (a.first > b.last or b.first > a.last):
                assert offs[i] + a.size <= offs[j] or offs[j] + b.size <= offs[i]
    # TFLM's gap walk picks the lowest feasible offset: the same as a plain first-fit in the same order
    assert offs == first_fit([Rect(((b.first, b.last, b.size),)) for b in bufs])
