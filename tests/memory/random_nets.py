"""A hypothesis-drawn random int8 chain shared by the executor and shadow-memory tests."""

from __future__ import annotations

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
