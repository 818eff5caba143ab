"""A hypothesis-drawn random int8 chain shared by the executor and shadow-memory tests, and `odd_net`
(odd sizes, strides, padding, pools, a residual block) shared by the patch tests."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st

from dnninfer.memory.ir import IR, FloatParams, IRBuilder
from dnninfer.memory.quantize import quantize_ir


def random_ir(draw: Callable[[Any], Any]) -> IR:
    """A random int8 chain: convs, depthwise, pools and residual inverted bottlenecks, quantised."""
    h, c = draw(st.integers(5, 12)), draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    b = IRBuilder("random", h, h, c)
    x = 0
    for _ in range(draw(st.integers(1, 5))):
        hh, _, cc = b.shape(x)
        op = draw(st.sampled_from(["conv", "dw", "pw", "pool", "ib"]))
        act = draw(st.sampled_from(["none", "relu", "relu6"]))
        if op == "conv":
            k, s, co = draw(st.sampled_from([3, 5])), draw(st.sampled_from([1, 2])), draw(st.integers(1, 6))
            if k <= hh + 2 * ((k - 1) // 2):
                x = b.conv(x, co, k, s, act=act, weights=FloatParams.random(rng, k, k, cc, co))
        elif op == "dw":
            k, s = draw(st.sampled_from([3, 5])), draw(st.sampled_from([1, 2]))
            x = b.dw(x, k, s, act=act, weights=FloatParams.random(rng, k, k, cc))
        elif op == "pw":
            co = draw(st.integers(1, 6))
            x = b.conv(x, co, 1, act=act, weights=FloatParams.random(rng, cc, co))
        elif op == "pool" and hh >= 2:
            x = b.pool(x, draw(st.sampled_from(["avg", "max"])), 2)
        elif op == "ib":
            e = b.conv(x, cc * 3, 1, act="relu6", weights=FloatParams.random(rng, cc, cc * 3))
            d = b.dw(e, 3, 1, act="relu6", weights=FloatParams.random(rng, 3, 3, cc * 3))
            x = b.add(x, b.conv(d, cc, 1, weights=FloatParams.random(rng, cc * 3, cc)), act=act)
    if not b.layers or draw(st.booleans()):
        g = b.gap(x)
        x = b.fc(g, 4, weights=FloatParams.random(rng, b.shape(g)[2], 4))
    return quantize_ir(b.build(), torch.randn(3, c, h, h, generator=torch.Generator().manual_seed(h)))


@functools.cache
def odd_net() -> IR:
    """13x11 input (odd, non-square); padded strided conv, padded max pool, a 5x5 depthwise, a residual
    inverted bottleneck, a valid (unpadded) conv, a 2x2 average pool, then GAP + FC."""
    rng = np.random.default_rng(7)
    b = IRBuilder("odd", 13, 11, 3)
    x = b.conv(0, 8, 3, s=2, act="relu", weights=FloatParams.random(rng, 3, 3, 3, 8))  # 7x6
    x = b.pool(x, "max", 3, s=1, p=1)
    x = b.dw(x, 5, act="relu6", weights=FloatParams.random(rng, 5, 5, 8))
    e = b.conv(x, 24, 1, act="relu6", weights=FloatParams.random(rng, 8, 24))
    d = b.dw(e, 3, act="relu6", weights=FloatParams.random(rng, 3, 3, 24))
    x = b.add(x, b.conv(d, 8, 1, weights=FloatParams.random(rng, 24, 8)))
    x = b.conv(x, 6, 3, p=0, act="relu", weights=FloatParams.random(rng, 3, 3, 8, 6))  # 5x4
    x = b.pool(x, "avg", 2, s=1)  # 4x3
    g = b.gap(x)
    b.fc(g, 5, weights=FloatParams.random(rng, 6, 5))
    return quantize_ir(b.build(), torch.randn(3, 3, 13, 11, generator=torch.Generator().manual_seed(3)))


@functools.cache
def benchmark_case(name: str) -> tuple[IR, np.ndarray]:
    """A benchmark IR (seed 0) and its example input (seed 2), built once per session: building the int8
    MobileNetV2 takes seconds, and the firmware and patch-codegen tests share it."""
    from dnninfer.memory.models import benchmark_ir, example_input

    ir = benchmark_ir(name, seed=0)
    return ir, example_input(ir, seed=2)
