"""The MCU layer IR: int8, NHWC, batch 1 (research report §4 "Data model").

Every planner, kernel and executor in `dnninfer.memory` works on this one record type. A network is
a topologically ordered tuple of `Layer`s; layer ``i`` always writes tensor ``i + 1`` and tensor 0
is the graph input, so the tensor table (`Tensor`: size, first, last) follows from the layer list.
Rows are the unit of work (§1.2 item 2: kernels produce output rows in order), so a layer knows
which input rows each output row needs (`Layer.needed_rows`).

Lifetimes use TFLite Micro's convention (§1.3): times are layer indices, inclusive; the graph input
is first used at time 0, a layer's output at its own index, and the graph output lives to the end.
`IBBlock` marks an inverted-bottleneck block (expand 1x1 -> depthwise kxk -> project 1x1 [+ add])
that the fused vMCU kernel runs as one unit (§1.2 item 5).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dnninfer.errors import UserError

KINDS = ("conv", "dw", "pw", "fc", "add", "pool")
ACTS = ("none", "relu", "relu6")
POOLS = ("avg", "max")


@dataclass(frozen=True, eq=False)
class FloatParams:
    """Float weights of a lowered layer (BatchNorm already folded).

    Layouts (shared with `QuantParams.weight`): conv ``(k, kw, cin, cout)``; pw ``(cin, cout)``;
    dw ``(k, kw, c)``; fc ``(K, N)`` with K in HWC order of the input tensor.
    """

    weight: np.ndarray
    bias: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator, *shape: int) -> FloatParams:
        """Fan-in-scaled Gaussian weights of `shape` (output channels last) and a small bias: a
        synthetic layer whose int8 activations neither vanish nor saturate."""
        return cls(rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1])), rng.standard_normal(shape[-1]) * 0.1)


@dataclass(frozen=True, eq=False)
class QuantParams:
    """Integer parameters of an int8 layer; the arithmetic is in `dnninfer.memory.kernels`.

    conv/dw/pw/fc: ``weight`` int8 (layout as `FloatParams`), ``bias`` int32 per output channel,
    ``multiplier``/``shift`` per output channel (`fixedpoint.requantize`).
    add: ``multiplier``/``shift`` = ``[input 1, input 2, output]`` (TFLite int8 ADD, left shift 20).
    pool: no weights, no multipliers (output has the input's scale and zero point).
    ``in_zp`` has one zero point per input; ``act_min``/``act_max`` clamp the int8 output (fused ReLU/6).
    """

    weight: np.ndarray | None
    bias: np.ndarray | None
    multiplier: np.ndarray
    shift: np.ndarray
    in_zp: tuple[int, ...]
    out_zp: int
    act_min: int = -128
    act_max: int = 127


@dataclass(frozen=True, eq=False)
class Layer:
    """One kernel call. Shapes are (rows, columns, channels) of its first input and its output.

    ``k``/``kw`` kernel rows/columns, ``s`` stride, ``p`` zero padding (same on all sides);
    fc has ``hout = wout = 1, cout = N``; a global average pool is ``pool="avg", k=hin, kw=win``.
    """

    name: str
    kind: str
    inputs: tuple[int, ...]
    output: int
    hin: int
    win: int
    cin: int
    hout: int
    wout: int
    cout: int
    k: int = 1
    s: int = 1
    p: int = 0
    kw: int = 0  # 0 means "same as k"
    pool: str = ""
    act: str = "none"
    weights: FloatParams | None = None
    quant: QuantParams | None = None

    def __post_init__(self) -> None:
        if self.kw == 0:
            object.__setattr__(self, "kw", self.k)
        if self.kind not in KINDS:
            raise ValueError(f"Layer {self.name}: kind {self.kind!r} not in {KINDS}")
        if self.act not in ACTS:
            raise ValueError(f"Layer {self.name}: act {self.act!r} not in {ACTS}")
        if self.kind == "pool" and self.pool not in POOLS:
            raise ValueError(f"Layer {self.name}: pool {self.pool!r} not in {POOLS}")
        if self.kind == "pool" and self.pool == "avg" and self.p:
            raise ValueError(f"Layer {self.name}: average pooling with padding is not supported")
        if self.kind == "add" and len(self.inputs) != 2:
            raise ValueError(f"Layer {self.name}: add needs two inputs")

    @property
    def in_bytes(self) -> int:
        """Bytes of the (first) input tensor."""
        return self.hin * self.win * self.cin

    @property
    def out_bytes(self) -> int:
        return self.hout * self.wout * self.cout

    @property
    def si(self) -> int:
        """Bytes per input row (§1.2 item 3)."""
        return self.win * self.cin

    @property
    def so(self) -> int:
        """Bytes per output row."""
        return self.wout * self.cout

    @property
    def whole_input(self) -> bool:
        """True when every output row needs every input row (fc, global pool)."""
        return self.kind == "fc" or (self.hout == 1 and self.k >= self.hin)

    def needed_rows(self, t: int) -> tuple[int, int]:
        """Input rows ``[lo, hi)`` that output row ``t`` reads (clipped to the tensor)."""
        if self.whole_input:
            return 0, self.hin
        if self.kind == "add":
            return t, t + 1
        top = t * self.s - self.p
        return max(0, top), min(self.hin, top + self.k)

    def first_needed(self, t: int) -> int:
        """``fn(t)`` of §1.2 item 3: the first input row output row ``t`` needs, clamped to [0, H]."""
        if self.whole_input:
            return 0
        if self.kind == "add":
            return min(t, self.hin)
        return max(0, min(self.hin, t * self.s - self.p))


@dataclass(frozen=True)
class Tensor:
    """An activation tensor (NHWC, int8, batch 1) with its inclusive lifetime in layer indices."""

    id: int
    name: str
    h: int
    w: int
    c: int
    first: int
    last: int
    scale: float | None = None
    zp: int | None = None

    @property
    def size(self) -> int:
        return self.h * self.w * self.c

    @property
    def row_bytes(self) -> int:
        return self.w * self.c

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.h, self.w, self.c)


@dataclass(frozen=True)
class IBBlock:
    """An inverted-bottleneck block fused by `vmcu_fused` (§1.2 item 5), as layer indices.

    ``first..last`` is the contiguous run of layers; ``expand`` is None for blocks without an
    expansion (MobileNetV2's t=1 block: depthwise then project); ``add`` is the residual add or None.
    """

    first: int
    last: int
    residual: bool
    block_input: int  # tensor id
    expand: int | None
    dw: int
    project: int
    add: int | None


@dataclass(frozen=True, eq=False)
class IR:
    """A whole network: layers in execution order, the tensor table and the fusible blocks."""

    name: str
    layers: tuple[Layer, ...]
    tensors: tuple[Tensor, ...]
    blocks: tuple[IBBlock, ...]
    output: int
    meta: Mapping[str, Any] = field(default_factory=dict)

    input: int = 0

    @property
    def quantized(self) -> bool:
        return all(layer.quant is not None for layer in self.layers) and self.tensors[0].scale is not None

    def consumers(self, tensor: int) -> tuple[int, ...]:
        """Indices of the layers that read `tensor` (a layer reading it twice counts once)."""
        return tuple(i for i, layer in enumerate(self.layers) if tensor in layer.inputs)

    def producer(self, tensor: int) -> int | None:
        return None if tensor == self.input else tensor - 1

    def with_layers(self, layers: tuple[Layer, ...], tensors: tuple[Tensor, ...] | None = None) -> IR:
        """A copy with new layer records (same structure), e.g. after quantisation."""
        return IR(self.name, layers, tensors or self.tensors, self.blocks, self.output, dict(self.meta))

    def require_quantized(self, who: str) -> None:
        if not self.quantized:
            raise UserError(f"{who}: IR {self.name!r} has no int8 parameters; quantise it first "
                            "(dnninfer.memory.quantize) or use an executable benchmark model")


def tensor_table(layers: tuple[Layer, ...], input_shape: tuple[int, int, int], output: int) -> tuple[Tensor, ...]:
    """Sizes and inclusive lifetimes: tensor 0 is the input, tensor i+1 the output of layer i."""
    n = len(layers)
    last_use = [0] * (n + 1)
    for i, layer in enumerate(layers):
        for t in layer.inputs:
            last_use[t] = max(last_use[t], i)
    shapes = [input_shape] + [(lay.hout, lay.wout, lay.cout) for lay in layers]
    names = ["input"] + [lay.name for lay in layers]
    tensors = []
    for t in range(n + 1):
        first = max(0, t - 1)
        last = n - 1 if t == output else max(first, last_use[t])
        tensors.append(Tensor(t, names[t], *shapes[t], first=first, last=last))
    return tuple(tensors)


def find_ib_blocks(layers: tuple[Layer, ...], output: int) -> tuple[IBBlock, ...]:
    """Detect inverted-bottleneck blocks: [expand pw ->] dw -> project pw [-> add(block input)].

    Each intermediate tensor must feed only the next layer of the block, and the block input only
    the block (and its residual add): then the fused kernel can consume it row by row. Scans left to
    right, so a pw already used as a project is never reused as the next block's expansion.
    """
    users: dict[int, list[int]] = {}
    for i, layer in enumerate(layers):
        for t in set(layer.inputs):
            users.setdefault(t, []).append(i)

    def only_user(tensor: int, layer_index: int) -> bool:
        return tensor != output and users.get(tensor, []) == [layer_index]

    blocks: list[IBBlock] = []
    taken = -1
    for i, dw in enumerate(layers):
        if dw.kind != "dw" or i + 1 >= len(layers) or dw.s > dw.k:
            continue
        proj = layers[i + 1]
        if proj.kind != "pw" or proj.inputs != (dw.output,) or not only_user(dw.output, i + 1):
            continue
        expand = None
        prev = layers[i - 1] if i > 0 else None
        if (prev is not None and i - 1 > taken and prev.kind == "pw" and dw.inputs == (prev.output,)
                and only_user(prev.output, i)):
            expand = i - 1
        first = expand if expand is not None else i
        block_input = layers[first].inputs[0]
        add = None
        if i + 2 < len(layers):
            cand = layers[i + 2]
            if (cand.kind == "add" and set(cand.inputs) == {proj.output, block_input}
                    and proj.output != block_input and only_user(proj.output, i + 2)
                    and sorted(users.get(block_input, [])) == [first, i + 2]):
                add = i + 2
        if add is None and users.get(block_input, []) != [first]:
            continue  # the block input is needed elsewhere: its rows cannot die inside the block
        last = add if add is not None else i + 1
        blocks.append(IBBlock(first, last, add is not None, block_input, expand, i, i + 1, add))
        taken = last
    return tuple(blocks)


class IRBuilder:
    """Appends layers and computes output shapes; `build()` adds the tensor table and IB blocks.

    Every method takes tensor ids and returns the new tensor id (``= layer index + 1``).
    """

    def __init__(self, name: str, h: int, w: int, c: int) -> None:
        self.name = name
        self.input_shape = (h, w, c)
        self.layers: list[Layer] = []
        self._shapes: list[tuple[int, int, int]] = [(h, w, c)]

    def shape(self, t: int) -> tuple[int, int, int]:
        return self._shapes[t]

    def _add(self, kind: str, inputs: tuple[int, ...], out: tuple[int, int, int], name: str | None,
             **kw: Any) -> int:
        h, w, c = self._shapes[inputs[0]]
        idx = len(self.layers)
        layer = Layer(name or f"{kind}{idx}", kind, inputs, idx + 1, h, w, c, *out, **kw)
        self.layers.append(layer)
        self._shapes.append(out)
        return idx + 1

    def conv(self, x: int, cout: int, k: int, s: int = 1, p: int | None = None, act: str = "none",
             name: str | None = None, weights: FloatParams | None = None) -> int:
        """A full convolution; a 1x1 stride-1 unpadded one is recorded as kind ``pw``."""
        p = (k - 1) // 2 if p is None else p
        h, w, _ = self._shapes[x]
        out = ((h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1, cout)
        kind = "pw" if k == 1 and s == 1 and p == 0 else "conv"
        return self._add(kind, (x,), out, name, k=k, s=s, p=p, act=act, weights=weights)

    def dw(self, x: int, k: int, s: int = 1, p: int | None = None, act: str = "none",
           name: str | None = None, weights: FloatParams | None = None) -> int:
        p = (k - 1) // 2 if p is None else p
        h, w, c = self._shapes[x]
        out = ((h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1, c)
        return self._add("dw", (x,), out, name, k=k, s=s, p=p, act=act, weights=weights)

    def fc(self, x: int, n: int, act: str = "none", name: str | None = None,
           weights: FloatParams | None = None) -> int:
        h, w, _ = self._shapes[x]
        return self._add("fc", (x,), (1, 1, n), name, k=h, kw=w, act=act, weights=weights)

    def add(self, x: int, y: int, act: str = "none", name: str | None = None) -> int:
        if self._shapes[x] != self._shapes[y]:
            raise ValueError(f"add: shapes differ {self._shapes[x]} vs {self._shapes[y]}")
        return self._add("add", (x, y), self._shapes[x], name, act=act)

    def pool(self, x: int, pool: str, k: int, s: int | None = None, p: int = 0, act: str = "none",
             name: str | None = None, kw: int | None = None) -> int:
        s = k if s is None else s
        kw = k if kw is None else kw
        h, w, c = self._shapes[x]
        out = ((h + 2 * p - k) // s + 1, (w + 2 * p - kw) // s + 1, c)
        return self._add("pool", (x,), out, name, k=k, kw=kw, s=s, p=p, pool=pool, act=act)

    def gap(self, x: int, name: str | None = None) -> int:
        """Global average pool: one output row (its vMCU footprint has no overlap, §1.2 item 3)."""
        h, w, _ = self._shapes[x]
        return self.pool(x, "avg", k=h, s=1, kw=w, name=name)

    def build(self, output: int | None = None, meta: Mapping[str, Any] | None = None) -> IR:
        layers = tuple(self.layers)
        out = len(layers) if output is None else output
        tensors = tensor_table(layers, self.input_shape, out)
        return IR(self.name, layers, tensors, find_ib_blocks(layers, out), out, dict(meta or {}))
