"""Import an ONNX file as a torch.fx GraphModule of plain torch ops, so every dnninfer system can
work on models that only exist as ``.onnx`` files.

Why not run them through onnxruntime or onnx2torch: capture, partitioning and FLOPs counting need
a torch.fx graph whose nodes are ordinary torch calls and layers (``nn.Conv2d``, ``nn.Linear``,
``torch.matmul`` ...), and onnx2torch fails on what ``torch.onnx.export`` writes. So this module
reads the file with the ``onnx`` package and emits the fx graph directly, one small converter per
ONNX op (`OPS`, documented in docs/onnx.md). Nothing from onnx or onnxruntime is called when the
GraphModule runs.

How values are represented while importing:

* a ``torch.Tensor``: known at import time (initializers, ``Constant`` nodes and anything computed
  from them only: such nodes are folded, so ``Shape -> Gather -> Concat -> Reshape`` chains on
  static shapes become plain Python ints);
* an ``fx.Node``: a run-time tensor;
* a `_Dims`: a shape vector with some entries only known at run time (``x.size()[i]`` nodes), for
  graphs exported with dynamic axes.

Initializers become parameters (floating point) or buffers (integers) of the root module. A Conv
or Gemm with constant weights becomes an ``nn.Conv{1,2,3}d`` / ``nn.Linear`` submodule, so layer
transforms that swap modules by type (``dnninfer.quantize``, ``dnninfer.rnsify``) work on imported
models as on torch ones; ``MatMul`` by a constant 2-D weight (plus a following bias ``Add``) becomes
an ``nn.Linear`` too, and
``ReduceMean`` over H, W becomes ``F.adaptive_avg_pool2d``, so FLOPs rules (graph/flops.py) see
the same op kinds as on the original torch model.
"""

from __future__ import annotations

import contextlib
import keyword
import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import fx, nn

from dnninfer.errors import UserError

__all__ = ["OPS", "import_onnx", "supported_ops"]

_DTYPES: dict[int, torch.dtype] = {
    TensorProto.FLOAT: torch.float32, TensorProto.DOUBLE: torch.float64, TensorProto.FLOAT16: torch.float16,
    TensorProto.BFLOAT16: torch.bfloat16, TensorProto.INT64: torch.int64, TensorProto.INT32: torch.int32,
    TensorProto.INT16: torch.int16, TensorProto.INT8: torch.int8, TensorProto.UINT8: torch.uint8,
    TensorProto.BOOL: torch.bool,
}  # fmt: skip
_BIG = 2**62  # ONNX Slice uses INT64_MAX / INT64_MIN for "to the end"
_STANDARD_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class _Dims:
    """A shape vector (or a scalar taken from one) with entries known only at run time: each item
    is a Python int or an fx node that yields one (``x.size()[i]``)."""

    items: tuple[int | fx.Node, ...]
    scalar: bool = False


Value = fx.Node | torch.Tensor | _Dims
Converter = Callable[["_Importer", onnx.NodeProto], "Value | Sequence[Value | None]"]


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0].strip()}"[:200] if lines else type(e).__name__


def _sanitize(name: str) -> str:
    """A valid, readable Python identifier for an ONNX value or node name."""
    s = re.sub(r"\W+", "_", name.removeprefix("onnx::")).strip("_")
    if not s or s[0].isdigit():
        s = f"v_{s}"
    return f"{s}_" if keyword.iskeyword(s) else s


def _has_node(x: Any) -> bool:
    if isinstance(x, fx.Node):
        return True
    if isinstance(x, (list, tuple)):
        return any(_has_node(v) for v in x)
    if isinstance(x, dict):
        return any(_has_node(v) for v in x.values())
    if isinstance(x, slice):
        return _has_node((x.start, x.stop, x.step))
    return False


class _Importer:
    """One import: the ONNX graph, the fx graph being built and the values known so far."""

    def __init__(self, model: onnx.ModelProto, path: Path) -> None:
        self.path = path
        self.onnx = model
        self.opset = next((o.version for o in model.opset_import if o.domain in _STANDARD_DOMAINS), 1)
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.env: dict[str, Value] = {}
        self.shapes: dict[str, tuple[int | None, ...]] = {}
        self.types: dict[str, int] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        self.absorbed: set[int] = set()  # ids of nodes a converter already emitted (bias Add after MatMul)
        self.outputs = {o.name for o in model.graph.output}
        self.node: onnx.NodeProto | None = None
        self.hint = "v"
        self._lifted: dict[int, tuple[torch.Tensor, fx.Node]] = {}
        self._preferred: dict[int, str] = {}
        self._sizes: dict[fx.Node, fx.Node] = {}
        self._memo: dict[tuple[str, int], torch.Tensor] = {}
        self._taken = set(dir(fx.GraphModule))
        self.meta: dict[fx.Node, Any] = {}  # run-time values on the meta device: ranks where inference has none
        for vi in (*model.graph.input, *model.graph.value_info, *model.graph.output):
            tt = vi.type.tensor_type
            if tt.elem_type:
                self.types[vi.name] = tt.elem_type
            if tt.HasField("shape"):
                self.shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
        for n in model.graph.node:
            for name in n.input:
                self.consumers.setdefault(name, []).append(n)

    # -- errors ----------------------------------------------------------------------------------
    def _label(self, node: onnx.NodeProto) -> str:
        return node.name or (node.output[0] if node.output else "")

    def unsupported(self, node: onnx.NodeProto | None = None) -> UserError:
        node = node or self.node
        return UserError(f"{self.path.name}: ONNX op {node.op_type!r} (node {self._label(node)!r}) is not "
                         "supported; supported: see docs/onnx.md")

    def bad(self, what: str, why: str = "") -> UserError:
        """An attribute value (or input form) this importer cannot express in torch ops."""
        node = self.node
        tail = f" ({why})" if why else ""
        return UserError(f"{self.path.name}: ONNX op {node.op_type!r} (node {self._label(node)!r}): {what} is not "
                         f"supported{tail}; supported: see docs/onnx.md")

    # -- reading the current node ----------------------------------------------------------------
    def attr(self, name: str, default: Any = None) -> Any:
        for a in self.node.attribute:
            if a.name == name:
                v = helper.get_attribute_value(a)
                if isinstance(v, bytes):
                    return v.decode()
                if isinstance(v, TensorProto):
                    return _tensor(v)
                if isinstance(v, list):
                    return [x.decode() if isinstance(x, bytes) else x for x in v]
                return v
        return default

    def name(self, i: int) -> str:
        return self.node.input[i] if i < len(self.node.input) else ""

    def inp(self, i: int) -> Value | None:
        """Input `i` of the current node (None when absent or named '')."""
        name = self.name(i)
        return self.env[name] if name else None

    def const(self, i: int) -> torch.Tensor | None:
        v = self.inp(i)
        return v if isinstance(v, torch.Tensor) else None

    def ints(self, i: int, what: str) -> list[int] | None:
        """Input `i` as static ints (None when absent); a run-time value is unsupported."""
        return self._static(i, what, int, "it must be a constant or a static shape")

    def floats(self, i: int, what: str) -> list[float] | None:
        return self._static(i, what, float, "it must be a constant")

    def _static(self, i: int, what: str, cast: Callable[[Any], Any], fix: str) -> list[Any] | None:
        v = self.inp(i)
        if v is None:
            return None
        if isinstance(v, torch.Tensor):
            return [cast(x) for x in v.reshape(-1).tolist()]
        raise self.bad(f"input {what!r} computed at run time", fix)

    def shape(self, i: int) -> tuple[int | None, ...] | None:
        """What is known of input `i`'s shape before it runs (None: not even the rank)."""
        v = self.inp(i)
        if isinstance(v, torch.Tensor):
            return tuple(v.shape)
        if isinstance(v, _Dims):
            return () if v.scalar else (len(v.items),)
        known = self.shapes.get(self.name(i))
        if known is None and isinstance(self.meta.get(v), torch.Tensor):
            return (None,) * self.meta[v].dim()
        return known

    def rank(self, i: int) -> int:
        s = self.shape(i)
        if s is None:
            raise self.bad(f"input {self.name(i)!r} of unknown rank", "run onnx shape inference first")
        return len(s)

    def dtype(self, i: int) -> torch.dtype | None:
        v = self.inp(i)
        if isinstance(v, torch.Tensor):
            return v.dtype
        if isinstance(v, _Dims):
            return torch.int64
        return _DTYPES.get(self.types.get(self.name(i), 0))

    def dims(self, i: int) -> list[int | fx.Node]:
        """Input `i` used as a shape argument (Reshape, Expand, ConstantOfShape ...): Python ints,
        with run-time entries as fx nodes."""
        v = self.inp(i)
        if isinstance(v, _Dims):
            return list(v.items)
        if isinstance(v, torch.Tensor):
            return [int(x) for x in v.reshape(-1).tolist()]
        raise self.bad(f"shape input {self.name(i)!r} computed from tensor data at run time")

    def size(self, i: int, dim: int) -> int | fx.Node:
        """Dimension `dim` of input `i`: a Python int when static, else an ``x.size()[dim]`` node."""
        s = self.shape(i)
        if s is not None and s[dim] is not None:
            return int(s[dim])
        x = self.inp(i)
        if isinstance(x, torch.Tensor):
            return int(x.shape[dim])
        if x not in self._sizes:
            self._sizes[x] = self._track(self.graph.create_node("call_method", "size", (x,), name=f"{self.hint}_size"),
                                         lambda m: m.size(), (x,), {})
        item = self.graph.create_node("call_function", operator.getitem, (self._sizes[x], dim), name=self.hint)
        return self._track(item, operator.getitem, (self._sizes[x], dim), {})

    # -- emitting ----------------------------------------------------------------------------------
    def lift(self, t: torch.Tensor) -> fx.Node:
        """A get_attr node for a constant: a parameter when floating point, else a buffer."""
        hit = self._lifted.get(id(t))
        if hit is not None:
            return hit[1]
        base = self._preferred.get(id(t)) or f"c_{self.hint}"
        name, k = base, 1
        while name in self._taken:
            name, k = f"{base}_{k}", k + 1
        self._taken.add(name)
        if t.is_floating_point():
            self.root.register_parameter(name, nn.Parameter(t, requires_grad=False))
        else:
            self.root.register_buffer(name, t)
        node = self.graph.get_attr(name)
        self._lifted[id(t)] = (t, node)
        return node

    def _lift_all(self, x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return self.lift(x)
        if isinstance(x, _Dims):
            raise self.bad("a run-time shape used as tensor data")
        if isinstance(x, tuple):
            return tuple(self._lift_all(v) for v in x)
        if isinstance(x, list):
            return [self._lift_all(v) for v in x]
        if isinstance(x, dict):
            return {k: self._lift_all(v) for k, v in x.items()}
        return x

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Emit ``fn(*args, **kwargs)``; computed now (folded) when no argument is a run-time value."""
        if not _has_node((args, kwargs)):
            with torch.no_grad():
                return fn(*args, **kwargs)
        node = self.graph.create_node("call_function", fn, self._lift_all(args), self._lift_all(kwargs), name=self.hint)
        return self._track(node, fn, args, kwargs)

    def method(self, name: str, obj: Any, *args: Any) -> Any:
        if not _has_node((obj, args)):
            with torch.no_grad():
                return getattr(obj, name)(*args)
        node = self.graph.create_node("call_method", name, self._lift_all((obj, *args)), name=self.hint)
        return self._track(node, lambda o, *a: getattr(o, name)(*a), (obj, *args), {})

    def module(self, mod: nn.Module, x: Value) -> fx.Node:
        name, k = f"m_{self.hint}", 1
        while name in self._taken:
            name, k = f"m_{self.hint}_{k}", k + 1
        self._taken.add(name)
        self.root.add_module(name, mod.eval())
        node = self.graph.create_node("call_module", name, (self._lift_all(x),), name=self.hint)
        return self._track(node, lambda m: torch.func.functional_call(mod, {k: v.to("meta") for k, v in
                                                                           mod.state_dict().items()}, (m,)), (x,), {})

    def _to_meta(self, x: Any) -> Any:
        if isinstance(x, fx.Node):
            if x not in self.meta:
                raise LookupError(x)
            return self.meta[x]
        if isinstance(x, torch.Tensor):
            return x.to("meta")
        if isinstance(x, (list, tuple)):
            return type(x)(self._to_meta(v) for v in x)
        if isinstance(x, dict):
            return {k: self._to_meta(v) for k, v in x.items()}
        if isinstance(x, slice):
            return slice(*(self._to_meta(v) for v in (x.start, x.stop, x.step)))
        return x

    def _track(self, node: fx.Node, fn: Callable[..., Any], args: Any, kwargs: Any) -> fx.Node:
        """Run `fn` on meta tensors (shapes of the example sizes) to learn the node's rank; only a
        fallback for ops that need a rank ONNX shape inference could not give."""
        try:
            with torch.no_grad():
                self.meta[node] = fn(*self._to_meta(args), **self._to_meta(kwargs))
        except Exception:  # no meta kernel, or an input without meta: the rank stays unknown
            pass
        return node

    def memo(self, key: str, t: torch.Tensor, make: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """A derived constant (a transposed weight), made once per source tensor."""
        k = (key, id(t))
        if k not in self._memo:
            self._memo[k] = make(t).contiguous()
            if id(t) in self._preferred:
                self._preferred[id(self._memo[k])] = f"{self._preferred[id(t)]}_{key}"
        return self._memo[k]

    def sole_consumer(self, name: str) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in self.outputs else None

    # -- the whole graph ---------------------------------------------------------------------------
    def run(self) -> tuple[fx.GraphModule, tuple[str, ...]]:
        g = self.onnx.graph
        for t in g.initializer:
            value = _tensor(t)
            self.env[t.name] = value
            self._preferred[id(value)] = _sanitize(t.name)
        inputs = tuple(i.name for i in g.input if i.name not in self.env)
        for name in inputs:
            self.env[name] = node = self.graph.placeholder(_sanitize(name))
            dtype = _DTYPES.get(self.types.get(name, 0))
            if dtype is not None and name in self.shapes:
                dims = [1 if d is None else d for d in self.shapes[name]]
                self.meta[node] = torch.empty(dims, dtype=dtype, device="meta")
        for node in g.node:
            if node.domain not in _STANDARD_DOMAINS or node.op_type not in OPS:
                raise self.unsupported(node)
        for node in g.node:
            if id(node) in self.absorbed:
                continue
            self.node, self.hint = node, _sanitize(node.name or node.output[0])
            try:
                out = OPS[node.op_type](self, node)
            except UserError:
                raise
            except Exception as e:  # a malformed model (mismatched shapes, bad values): say where
                raise UserError(f"{self.path.name}: ONNX op {node.op_type!r} (node {self._label(node)!r}) "
                                f"cannot be imported: {_first_line(e)}") from None
            outs = list(out) if isinstance(out, (list, tuple)) else [out]
            for name, v in zip(node.output, outs, strict=False):
                if name:
                    if v is None:
                        raise self.bad(f"output {name!r}", "this output is not computed")
                    self.env[name] = v
        results = []
        for o in g.output:
            v = self.env[o.name]
            if isinstance(v, _Dims):
                v = self.call(torch.tensor, list(v.items))
            results.append(self.lift(v) if isinstance(v, torch.Tensor) else v)
        self.graph.output(results[0] if len(results) == 1 else tuple(results))
        gm = fx.GraphModule(self.root, self.graph, class_name=_sanitize(g.name or self.path.stem))
        gm.graph.eliminate_dead_code()  # e.g. size() nodes whose shapes turned out static
        gm.graph.lint()
        gm.recompile()
        return gm.eval(), inputs


def _tensor(t: TensorProto) -> torch.Tensor:
    arr = numpy_helper.to_array(t)
    if arr.dtype == object:
        raise UserError(f"ONNX tensor {t.name!r}: string tensors are not supported")
    return torch.from_numpy(np.array(arr, copy=True))


# ================================================================================================
# Converters: one small function per ONNX op. Each reads the current node through `c` and returns
# its output value(s). Attribute defaults follow the ONNX operator specification.
# ================================================================================================

def _norm_axes(axes: Sequence[int], rank: int) -> list[int]:
    return [a + rank if a < 0 else a for a in axes]


def _pads_to_torch(pads: Sequence[int]) -> list[int]:
    """ONNX [x1_begin, x2_begin, ..., x1_end, x2_end, ...] -> F.pad order (last axis first)."""
    k = len(pads) // 2
    out: list[int] = []
    for axis in reversed(range(k)):
        out += [int(pads[axis]), int(pads[axis + k])]
    while len(out) > 2 and out[-1] == 0 and out[-2] == 0:  # F.pad may leave leading axes alone
        out = out[:-2]
    return out


def _spatial_pads(c: _Importer, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]) -> list[int]:
    """The pads of a Conv/Pool node, resolving auto_pad (SAME_* needs static spatial sizes)."""
    k = len(kernel)
    auto = c.attr("auto_pad", "NOTSET")
    if auto == "NOTSET":
        return list(c.attr("pads", [0] * (2 * k)))
    if auto == "VALID":
        return [0] * (2 * k)
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise c.bad(f"auto_pad={auto!r}")
    shape = c.shape(0)
    if shape is None or any(d is None for d in shape[2:]):
        raise c.bad(f"auto_pad={auto!r} with dynamic spatial sizes")
    begin, end = [], []
    for size, kk, s, d in zip(shape[2:], kernel, strides, dilations, strict=True):
        total = max(0, (math.ceil(size / s) - 1) * s + (kk - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return begin + end


def _conv(c: _Importer, n: onnx.NodeProto) -> Value:
    x, w, b = c.inp(0), c.inp(1), c.inp(2)
    wshape = c.shape(1)
    if wshape is None:
        raise c.bad("a weight of unknown rank")
    k = len(wshape) - 2
    if k not in (1, 2, 3):
        raise c.bad(f"a {k}-D convolution")
    kernel = c.attr("kernel_shape", list(wshape[2:]))
    strides = c.attr("strides", [1] * k)
    dilations = c.attr("dilations", [1] * k)
    pads = _spatial_pads(c, kernel, strides, dilations)
    if pads[:k] != pads[k:]:
        x, pads = c.call(F.pad, x, _pads_to_torch(pads)), [0] * (2 * k)
    groups = c.attr("group", 1)
    if isinstance(x, fx.Node) and isinstance(w, torch.Tensor) and (b is None or isinstance(b, torch.Tensor)):
        cls = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[k - 1]
        mod = cls(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=tuple(strides),
                  padding=tuple(pads[:k]), dilation=tuple(dilations), groups=groups, bias=b is not None)
        return _layer(c, mod, x, w, b)
    fn = (F.conv1d, F.conv2d, F.conv3d)[k - 1]
    return c.call(fn, x, w, b, tuple(strides), tuple(pads[:k]), tuple(dilations), groups)


def _layer(c: _Importer, mod: nn.Module, x: Value, w: torch.Tensor, b: torch.Tensor | None) -> fx.Node:
    """A constant-weight conv / linear as the nn layer a torch author would write: layer-swapping
    transforms (quantize, rnsify) find layers by module type, as in any torch model."""
    with torch.no_grad():
        mod.weight.copy_(w)
        if b is not None:
            mod.bias.copy_(b)
    return c.module(mod, x)


def _linear(c: _Importer, x: Value, weight: torch.Tensor, bias: torch.Tensor | None = None) -> Value:
    """``F.linear(x, weight, bias)`` with a constant (N, K) weight, as an ``nn.Linear``."""
    if isinstance(x, fx.Node) and weight.dim() == 2 and (bias is None or bias.dim() == 1):
        return _layer(c, nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None), x, weight, bias)
    return c.call(F.linear, x, weight, bias)


def _conv_transpose(c: _Importer, n: onnx.NodeProto) -> Value:
    """A torch.nn.ConvTranspose module: graph/flops.py counts transposed convs by module only."""
    w, b = c.const(1), c.const(2)
    if w is None or (c.inp(2) is not None and b is None):
        raise c.bad("a weight or bias computed at run time")
    k = w.dim() - 2
    if k not in (1, 2, 3):
        raise c.bad(f"a {k}-D transposed convolution")
    if c.attr("output_shape") is not None:
        raise c.bad("attribute output_shape", "give pads and output_padding instead")
    if c.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise c.bad(f"auto_pad={c.attr('auto_pad')!r}")
    kernel = c.attr("kernel_shape", list(w.shape[2:]))
    if list(kernel) != list(w.shape[2:]):
        raise c.bad(f"kernel_shape={kernel} different from the weight's")
    strides = c.attr("strides", [1] * k)
    dilations = c.attr("dilations", [1] * k)
    pads = c.attr("pads", [0] * (2 * k)) if c.attr("auto_pad", "NOTSET") == "NOTSET" else [0] * (2 * k)
    if pads[:k] != pads[k:]:
        raise c.bad(f"asymmetric pads={pads}")
    groups = c.attr("group", 1)
    cls = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[k - 1]
    mod = cls(w.shape[0], w.shape[1] * groups, tuple(kernel), stride=tuple(strides), padding=tuple(pads[:k]),
              output_padding=tuple(c.attr("output_padding", [0] * k)), groups=groups, bias=b is not None,
              dilation=tuple(dilations))
    with torch.no_grad():
        mod.weight.copy_(w)
        if b is not None:
            mod.bias.copy_(b)
    mod.requires_grad_(False)
    return c.module(mod, c.inp(0))


def _linear_weight(c: _Importer, w: torch.Tensor) -> torch.Tensor:
    """(K, N) MatMul/Gemm weight -> (N, K) as F.linear wants it, made once per tensor."""
    return c.memo("T", w, lambda t: t.t())


def _bias_add(c: _Importer, out: str, features: int) -> tuple[onnx.NodeProto, torch.Tensor] | None:
    """The ``Add(matmul, b)`` right after a MatMul, when b is a constant vector of `features`."""
    add = c.sole_consumer(out)
    if add is None or add.op_type != "Add" or len(add.input) != 2:
        return None
    other = add.input[1] if add.input[0] == out else add.input[0]
    b = c.env.get(other)
    if isinstance(b, torch.Tensor) and b.is_floating_point() and b.numel() == features and b.shape[-1:] == (features,):
        return add, b if b.dim() == 1 else b.reshape(features)
    return None


def _matmul(c: _Importer, n: onnx.NodeProto) -> Value:
    x, w = c.inp(0), c.inp(1)
    if isinstance(x, fx.Node) and isinstance(w, torch.Tensor) and w.dim() == 2:
        fused = _bias_add(c, n.output[0], w.shape[1])
        if fused is None:
            return _linear(c, x, _linear_weight(c, w))
        add, bias = fused
        c.absorbed.add(id(add))  # the Add's output is this node's: its converter is skipped
        c.env[add.output[0]] = out = _linear(c, x, _linear_weight(c, w), bias)
        return out
    return c.call(torch.matmul, x, w)


def _gemm(c: _Importer, n: onnx.NodeProto) -> Value:
    a, b, bias = c.inp(0), c.inp(1), c.inp(2)
    alpha, beta = c.attr("alpha", 1.0), c.attr("beta", 1.0)
    if c.attr("transA", 0):
        a = c.call(torch.transpose, a, 0, 1)
    if isinstance(b, torch.Tensor) and (bias is None or isinstance(bias, torch.Tensor)):
        weight = b if c.attr("transB", 0) else _linear_weight(c, b)
        if alpha != 1.0:
            weight = weight * alpha
        if bias is not None:
            bias = bias * beta if beta != 1.0 else bias
            if bias.numel() == weight.shape[0] and bias.dim() <= 2 and (bias.dim() < 2 or bias.shape[0] == 1):
                return _linear(c, a, weight, bias.reshape(-1))
            out = _linear(c, a, weight)
            return c.call(torch.add, out, bias)
        return _linear(c, a, weight)
    if c.attr("transB", 0):
        b = c.call(torch.transpose, b, 0, 1)
    if bias is None:
        out = c.call(torch.matmul, a, b)
        return out if alpha == 1.0 else c.call(torch.mul, out, alpha)
    return c.call(torch.addmm, bias, a, b, beta=beta, alpha=alpha)


def _pool(c: _Importer, n: onnx.NodeProto) -> Value:
    is_max = n.op_type == "MaxPool"
    if is_max and len(n.output) > 1 and n.output[1]:
        raise c.bad("the Indices output")
    kernel = c.attr("kernel_shape")
    if kernel is None:
        raise c.bad("a missing kernel_shape")
    k = len(kernel)
    if k not in (1, 2, 3):
        raise c.bad(f"a {k}-D pool")
    strides = c.attr("strides", [1] * k)
    dilations = c.attr("dilations", [1] * k)
    pads = _spatial_pads(c, kernel, strides, dilations)
    ceil = bool(c.attr("ceil_mode", 0))
    x = c.inp(0)
    fits = pads[:k] == pads[k:] and all(p <= kk // 2 for p, kk in zip(pads[:k], kernel, strict=True))
    if is_max:
        if not fits:
            x, pads = c.call(F.pad, x, _pads_to_torch(pads), value=-math.inf), [0] * (2 * k)
        fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[k - 1]
        return c.call(fn, x, tuple(kernel), tuple(strides), tuple(pads[:k]), tuple(dilations), ceil)
    if any(d != 1 for d in dilations):
        raise c.bad(f"dilations={dilations}")
    include = bool(c.attr("count_include_pad", 0))
    if not fits:
        if not include:
            raise c.bad(f"pads={pads} with count_include_pad=0", "torch pads symmetrically, at most half a kernel")
        x, pads = c.call(F.pad, x, _pads_to_torch(pads)), [0] * (2 * k)
    fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[k - 1]
    return c.call(fn, x, tuple(kernel), tuple(strides), tuple(pads[:k]), ceil, include)


def _global_pool(c: _Importer, n: onnx.NodeProto) -> Value:
    k = c.rank(0) - 2
    if k not in (1, 2, 3):
        raise c.bad(f"a {k}-D global pool")
    if n.op_type == "GlobalAveragePool":
        fn = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[k - 1]
    else:
        fn = (F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d)[k - 1]
    return c.call(fn, c.inp(0), 1)


def _batch_norm(c: _Importer, n: onnx.NodeProto) -> Value:
    if c.attr("training_mode", 0) or any(o for o in n.output[1:]):
        raise c.bad("training mode (running statistics outputs)")
    x, scale, bias, mean, var = (c.inp(i) for i in range(5))
    return c.call(F.batch_norm, x, mean, var, scale, bias, False, 0.0, c.attr("epsilon", 1e-5))


def _layer_norm(c: _Importer, n: onnx.NodeProto) -> Value:
    if any(o for o in n.output[1:]):
        raise c.bad("the Mean / InvStdDev outputs")
    rank = c.rank(0)
    axis = _norm_axes([c.attr("axis", -1)], rank)[0]
    shape = c.shape(0)[axis:]
    scale, bias = c.inp(1), c.inp(2)
    if any(d is None for d in shape):
        wshape = c.shape(1)
        if wshape is None or len(wshape) != rank - axis or any(d is None for d in wshape):
            raise c.bad("a dynamic normalized shape")
        shape = wshape
    shape = tuple(int(d) for d in shape)
    if isinstance(scale, torch.Tensor) and tuple(scale.shape) != shape:
        scale = scale.expand(shape).contiguous()
    if isinstance(bias, torch.Tensor) and tuple(bias.shape) != shape:
        bias = bias.expand(shape).contiguous()
    return c.call(F.layer_norm, c.inp(0), shape, scale, bias, c.attr("epsilon", 1e-5))


def _softmax(c: _Importer, n: onnx.NodeProto) -> Value:
    fn = F.softmax if n.op_type == "Softmax" else F.log_softmax
    axis = c.attr("axis", -1 if c.opset >= 13 else 1)
    rank = c.rank(0)
    axis = _norm_axes([axis], rank)[0]
    if c.opset >= 13 or axis == rank - 1:
        return c.call(fn, c.inp(0), axis)
    shape = c.shape(0)  # opset < 13: softmax over all axes from `axis` on, jointly
    if any(d is None for d in shape):
        raise c.bad(f"axis={axis} with dynamic shape in opset {c.opset}")
    flat = c.call(torch.flatten, c.inp(0), axis)
    return c.call(torch.reshape, c.call(fn, flat, -1), list(shape))


# -- element-wise ----------------------------------------------------------------------------------

def _unary(fn: Callable[..., Any]) -> Converter:
    def convert(c: _Importer, n: onnx.NodeProto) -> Value:
        return c.call(fn, c.inp(0))

    convert.__doc__ = f"-> {fn.__module__}.{fn.__name__}"
    return convert


def _operand(c: _Importer, v: Value, other_rank: int | None) -> Any:
    """A one-element constant becomes a Python scalar when that cannot change the result shape."""
    if not isinstance(v, torch.Tensor) or v.numel() != 1:
        return v
    if v.dim() == 0 or (other_rank is not None and v.dim() <= other_rank):
        return v.item()
    return v


def _dims_binary(c: _Importer, fn: Callable[[Any, Any], Any], a: Value, b: Value) -> Value:
    """Arithmetic on run-time shape vectors (Shape -> Gather -> Mul -> Concat chains)."""
    def items(v: Value) -> tuple[list[Any], bool]:
        if isinstance(v, _Dims):
            return list(v.items), v.scalar
        if isinstance(v, torch.Tensor) and not v.is_floating_point() and v.dim() <= 1:
            return [int(x) for x in v.reshape(-1).tolist()], v.dim() == 0
        raise c.bad("arithmetic mixing a run-time shape with tensor data")

    (xa, sa), (xb, sb) = items(a), items(b)
    if len(xa) == 1 and len(xb) > 1:
        xa = xa * len(xb)
    if len(xb) == 1 and len(xa) > 1:
        xb = xb * len(xa)
    out = [fn(p, q) if not isinstance(p, fx.Node) and not isinstance(q, fx.Node) else
           c.graph.create_node("call_function", fn, (p, q), name=c.hint) for p, q in zip(xa, xb, strict=True)]
    return _Dims(tuple(out), sa and sb)


_SHAPE_ARITH = {"Add": operator.add, "Sub": operator.sub, "Mul": operator.mul, "Div": operator.floordiv}


def _binary(fn: Callable[..., Any], commutative: bool = False) -> Converter:
    def convert(c: _Importer, n: onnx.NodeProto) -> Value:
        a, b = c.inp(0), c.inp(1)
        if isinstance(a, _Dims) or isinstance(b, _Dims):
            if n.op_type not in _SHAPE_ARITH:
                raise c.bad(f"{n.op_type} on a run-time shape")
            return _dims_binary(c, _SHAPE_ARITH[n.op_type], a, b)
        f = fn
        if n.op_type == "Mod":
            f = torch.fmod if c.attr("fmod", 0) else torch.remainder
        sa, sb = c.shape(0), c.shape(1)
        if isinstance(a, torch.Tensor) and isinstance(b, fx.Node) and commutative:
            a, b, sa, sb = b, a, sb, sa
        if isinstance(a, fx.Node):
            b = _operand(c, b, None if sa is None else len(sa))
        return c.call(f, a, b)

    convert.__doc__ = f"-> {fn.__module__}.{fn.__name__}"
    return convert


def _div(c: _Importer, n: onnx.NodeProto) -> Value:
    """Float division, or truncating division for integers (ONNX semantics)."""
    a, b = c.inp(0), c.inp(1)
    if isinstance(a, _Dims) or isinstance(b, _Dims):
        return _dims_binary(c, operator.floordiv, a, b)
    dt = c.dtype(0)
    sa = c.shape(0)
    if isinstance(a, fx.Node):
        b = _operand(c, b, None if sa is None else len(sa))
    if dt is not None and not dt.is_floating_point:
        return c.call(torch.div, a, b, rounding_mode="trunc")
    return c.call(torch.div, a, b)


def _variadic(fn: Callable[..., Any]) -> Converter:
    def convert(c: _Importer, n: onnx.NodeProto) -> Value:
        vals = [c.inp(i) for i in range(len(n.input))]
        out = vals[0]
        for v in vals[1:]:
            out = c.call(fn, out, v)
        if n.op_type == "Mean":
            out = c.call(torch.div, out, float(len(vals)))
        return out

    convert.__doc__ = f"-> {fn.__module__}.{fn.__name__}"
    return convert


def _clip(c: _Importer, n: onnx.NodeProto) -> Value:
    if c.opset < 11:
        lo, hi = c.attr("min"), c.attr("max")
    else:
        lo, hi = c.inp(1), c.inp(2)
        lo = lo.item() if isinstance(lo, torch.Tensor) and lo.numel() == 1 else lo
        hi = hi.item() if isinstance(hi, torch.Tensor) and hi.numel() == 1 else hi
    return c.call(torch.clamp, c.inp(0), lo, hi)


def _leaky_relu(c: _Importer, n: onnx.NodeProto) -> Value:
    return c.call(F.leaky_relu, c.inp(0), c.attr("alpha", 0.01))


def _elu(c: _Importer, n: onnx.NodeProto) -> Value:
    return c.call(F.elu, c.inp(0), c.attr("alpha", 1.0))


def _selu(c: _Importer, n: onnx.NodeProto) -> Value:
    alpha, gamma = c.attr("alpha", 1.67326319217681884765625), c.attr("gamma", 1.05070102214813232421875)
    if abs(alpha - 1.6732632) > 1e-6 or abs(gamma - 1.0507010) > 1e-6:
        raise c.bad(f"alpha={alpha}, gamma={gamma}", "only the standard SELU constants")
    return c.call(F.selu, c.inp(0))


def _hard_sigmoid(c: _Importer, n: onnx.NodeProto) -> Value:
    alpha, beta = c.attr("alpha", 0.2), c.attr("beta", 0.5)
    if abs(alpha - 1 / 6) < 1e-6 and abs(beta - 0.5) < 1e-6:
        return c.call(F.hardsigmoid, c.inp(0))
    return c.call(torch.clamp, c.call(torch.add, c.call(torch.mul, c.inp(0), alpha), beta), 0.0, 1.0)


def _prelu(c: _Importer, n: onnx.NodeProto) -> Value:
    slope = c.const(1)
    if slope is not None and (slope.numel() == 1 or (slope.dim() >= 1 and slope.numel() == slope.shape[0])):
        return c.call(F.prelu, c.inp(0), slope.reshape(-1))
    x = c.inp(0)
    return c.call(torch.where, c.call(torch.ge, x, 0), x, c.call(torch.mul, x, c.inp(1)))


def _gelu(c: _Importer, n: onnx.NodeProto) -> Value:
    return c.call(F.gelu, c.inp(0), approximate=c.attr("approximate", "none"))


def _where(c: _Importer, n: onnx.NodeProto) -> Value:
    return c.call(torch.where, c.inp(0), c.inp(1), c.inp(2))


def _identity(c: _Importer, n: onnx.NodeProto) -> Value:
    return c.inp(0)


def _dropout(c: _Importer, n: onnx.NodeProto) -> Value:
    training = c.const(2)
    if (training is not None and bool(training.item())) or isinstance(c.inp(2), fx.Node):
        raise c.bad("training_mode", "imported graphs are for inference")
    if len(n.output) > 1 and n.output[1]:
        raise c.bad("the mask output")
    return c.inp(0)


def _cast_dtype(c: _Importer, to: int) -> torch.dtype:
    dtype = _DTYPES.get(to)
    if dtype is None:
        raise c.bad(f"to={helper.tensor_dtype_to_string(to) if to else to}")
    return dtype


def _cast_to(c: _Importer, dtype: torch.dtype) -> Value:
    x = c.inp(0)
    if isinstance(x, _Dims):
        if dtype.is_floating_point or dtype == torch.bool:
            raise c.bad(f"a run-time shape cast to {dtype}")
        return x
    return c.method("to", x, dtype)


def _cast(c: _Importer, n: onnx.NodeProto) -> Value:
    return _cast_to(c, _cast_dtype(c, c.attr("to", 0)))


def _cast_like(c: _Importer, n: onnx.NodeProto) -> Value:
    dtype = c.dtype(1)
    if dtype is None:
        raise c.bad("a target of unknown type")
    return _cast_to(c, dtype)


# -- shapes and data movement -------------------------------------------------------------------------

def _constant(c: _Importer, n: onnx.NodeProto) -> Value:
    for key, dtype in (("value_float", torch.float32), ("value_int", torch.int64),
                       ("value_floats", torch.float32), ("value_ints", torch.int64)):
        v = c.attr(key)
        if v is not None:
            return torch.tensor(v, dtype=dtype)
    v = c.attr("value")
    if isinstance(v, torch.Tensor):
        return v
    raise c.bad("a Constant without a dense tensor value (sparse or string)")


def _shape(c: _Importer, n: onnx.NodeProto) -> Value:
    rank = c.rank(0)
    start, end = c.attr("start", 0), c.attr("end", rank)
    start, end = max(0, start + rank if start < 0 else start), min(rank, end + rank if end < 0 else end)
    items = tuple(c.size(0, d) for d in range(start, end))
    if all(isinstance(i, int) for i in items):
        return torch.tensor(items, dtype=torch.int64)
    return _Dims(items)


def _size(c: _Importer, n: onnx.NodeProto) -> Value:
    s = c.shape(0)
    if s is not None and all(d is not None for d in s):
        return torch.tensor(math.prod(s), dtype=torch.int64)
    return _Dims((c.method("numel", c.inp(0)),), scalar=True)


def _flatten(c: _Importer, n: onnx.NodeProto) -> Value:
    axis = c.attr("axis", 1)
    x = c.inp(0)
    if axis < 0:
        axis += c.rank(0)
    if axis == 0:
        return c.call(torch.reshape, x, [1, -1])
    out = c.call(torch.flatten, x, axis)
    return out if axis == 1 else c.call(torch.flatten, out, 0, axis - 1)


def _reshape(c: _Importer, n: onnx.NodeProto) -> Value:
    shape = c.dims(1)
    if not c.attr("allowzero", 0):
        shape = [c.size(0, i) if isinstance(d, int) and d == 0 else d for i, d in enumerate(shape)]
    return c.call(torch.reshape, c.inp(0), shape)


def _transpose(c: _Importer, n: onnx.NodeProto) -> Value:
    perm = c.attr("perm")
    if perm is None:
        perm = list(reversed(range(c.rank(0))))
    return c.call(torch.permute, c.inp(0), list(perm))


def _as_dims(v: Value) -> _Dims | None:
    if isinstance(v, _Dims):
        return v
    if isinstance(v, torch.Tensor) and not v.is_floating_point() and v.dim() <= 1:
        return _Dims(tuple(int(x) for x in v.reshape(-1).tolist()), v.dim() == 0)
    return None


def _concat(c: _Importer, n: onnx.NodeProto) -> Value:
    vals = [c.inp(i) for i in range(len(n.input)) if n.input[i]]
    if any(isinstance(v, _Dims) for v in vals):
        parts = [_as_dims(v) for v in vals]
        if any(p is None for p in parts):
            raise c.bad("a run-time shape concatenated with tensor data")
        return _Dims(tuple(i for p in parts for i in p.items))
    return c.call(torch.cat, vals, c.attr("axis"))


def _split(c: _Importer, n: onnx.NodeProto) -> list[Value]:
    rank = c.rank(0)
    axis = _norm_axes([c.attr("axis", 0)], rank)[0]
    sizes = c.ints(1, "split") if c.opset >= 13 else c.attr("split")
    if sizes is None:
        total = c.size(0, axis)
        if not isinstance(total, int):
            raise c.bad("an even split of a dynamic axis")
        parts = c.attr("num_outputs", len(n.output))
        each = math.ceil(total / parts)
        sizes = [min(each, total - i * each) for i in range(parts)]
    pieces = c.call(torch.split, c.inp(0), list(sizes), axis)
    return [c.call(operator.getitem, pieces, i) for i in range(len(n.output))]


def _slice_index(starts: Sequence[int], ends: Sequence[int], axes: Sequence[int], steps: Sequence[int],
                 rank: int | None) -> tuple[Any, ...] | None:
    def clip(v: int) -> int | None:
        return None if abs(v) >= _BIG else v

    if rank is None:
        if any(a >= 0 for a in axes):
            return None
        lo = -min(axes)
        index: list[Any] = [Ellipsis] + [slice(None)] * lo
        for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
            index[1 + lo + a] = slice(clip(s), clip(e), st)
        return tuple(index)
    index = [slice(None)] * rank
    for s, e, a, st in zip(starts, ends, _norm_axes(axes, rank), steps, strict=True):
        index[a] = slice(clip(s), clip(e), st)
    return tuple(index)


def _slice(c: _Importer, n: onnx.NodeProto) -> Value:
    if c.opset < 10:
        starts, ends, axes, steps = c.attr("starts"), c.attr("ends"), c.attr("axes"), None
    else:
        starts, ends = c.ints(1, "starts"), c.ints(2, "ends")
        axes, steps = c.ints(3, "axes"), c.ints(4, "steps")
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    x = c.inp(0)
    if isinstance(x, _Dims):
        s = _slice_index(starts, ends, axes, steps, 1)[0]
        return _Dims(tuple(x.items[s]))
    if isinstance(x, torch.Tensor) and any(st < 0 for st in steps):
        s = _slice_index(starts, ends, axes, steps, x.dim())
        return torch.from_numpy(np.ascontiguousarray(x.numpy()[s]))
    if any(st < 0 for st in steps):
        raise c.bad(f"steps={steps}", "negative steps need a constant input")
    shape = c.shape(0)
    index = _slice_index(starts, ends, axes, steps, None if shape is None else len(shape))
    if index is None:
        raise c.bad("non-negative axes on an input of unknown rank")
    return c.call(operator.getitem, x, index)


def _gather(c: _Importer, n: onnx.NodeProto) -> Value:
    data, idx = c.inp(0), c.inp(1)
    axis = c.attr("axis", 0)
    dims = _as_dims(data) if isinstance(data, _Dims) else None
    if dims is not None:
        if not isinstance(idx, torch.Tensor) or idx.dim() > 1:
            raise c.bad("a run-time index into a shape")
        picked = tuple(dims.items[int(i)] for i in idx.reshape(-1).tolist())
        out = _Dims(picked, idx.dim() == 0)
        return out if any(isinstance(i, fx.Node) for i in picked) else torch.tensor(
            picked[0] if out.scalar else list(picked), dtype=torch.int64)
    rank = c.rank(0)
    axis = _norm_axes([axis], rank)[0]
    if isinstance(data, torch.Tensor) and data.dim() == 2 and axis == 0 and isinstance(idx, fx.Node):
        return c.call(F.embedding, idx, data)  # an embedding table looked up by token ids
    if isinstance(idx, _Dims):
        raise c.bad("indices computed from a run-time shape")
    if isinstance(idx, torch.Tensor) and idx.dim() <= 1:
        size = c.size(0, axis)
        if bool((idx < 0).any()):
            if not isinstance(size, int):
                raise c.bad("negative indices into a dynamic axis")
            idx = torch.where(idx < 0, idx + size, idx)
        if idx.dim() == 0:
            return c.call(torch.select, data, axis, int(idx))
        return c.call(torch.index_select, data, axis, idx)
    return c.call(operator.getitem, data, (slice(None),) * axis + (idx,))


def _gather_nd(c: _Importer, n: onnx.NodeProto) -> Value:
    """``data[i0, i1, ...]`` with the index tuple taken from the last axis of `indices`."""
    if c.attr("batch_dims", 0):
        raise c.bad(f"batch_dims={c.attr('batch_dims')}")
    idx = c.inp(1)
    if not isinstance(idx, torch.Tensor):
        raise c.bad("run-time indices")
    return c.call(operator.getitem, c.inp(0), tuple(idx[..., j].contiguous() for j in range(idx.shape[-1])))


def _gather_elements(c: _Importer, n: onnx.NodeProto) -> Value:
    return c.call(torch.gather, c.inp(0), _norm_axes([c.attr("axis", 0)], c.rank(0))[0], c.inp(1))


def _axes(c: _Importer, n: onnx.NodeProto, since: int) -> list[int] | None:
    return c.ints(1, "axes") if c.opset >= since else c.attr("axes")


def _unsqueeze(c: _Importer, n: onnx.NodeProto) -> Value:
    axes = _axes(c, n, 13)
    x = c.inp(0)
    if isinstance(x, _Dims) and x.scalar and axes in ([0], [-1]):
        return _Dims(x.items)
    rank = c.rank(0) + len(axes)
    for a in sorted(_norm_axes(axes, rank)):
        x = c.call(torch.unsqueeze, x, a)
    return x


def _squeeze(c: _Importer, n: onnx.NodeProto) -> Value:
    axes = _axes(c, n, 13)
    x = c.inp(0)
    if isinstance(x, _Dims) and len(x.items) == 1 and axes in (None, [0], [-1]):
        return _Dims(x.items, scalar=True)
    if not axes:
        return c.call(torch.squeeze, x)
    return c.call(torch.squeeze, x, tuple(_norm_axes(axes, c.rank(0))))


def _constant_of_shape(c: _Importer, n: onnx.NodeProto) -> Value:
    value = c.attr("value")
    if value is None:
        value = torch.zeros(1, dtype=torch.float32)
    return c.call(torch.full, c.dims(0), value.reshape(-1)[0].item(), dtype=value.dtype)


def _expand(c: _Importer, n: onnx.NodeProto) -> Value:
    shape = c.dims(1)
    x = c.inp(0)
    if isinstance(x, torch.Tensor) and all(isinstance(d, int) for d in shape):
        return torch.broadcast_to(x, torch.broadcast_shapes(x.shape, tuple(shape))).contiguous()
    rank = c.rank(0)
    if rank > len(shape):
        shape = [1] * (rank - len(shape)) + shape
    # Bidirectional broadcast: a 1 in `shape` keeps the input's size (-1 to torch's expand).
    target = [-1 if isinstance(d, int) and d == 1 and i >= len(shape) - rank else d for i, d in enumerate(shape)]
    return c.method("expand", x, target)


def _tile(c: _Importer, n: onnx.NodeProto) -> Value:
    return c.method("repeat", c.inp(0), c.dims(1))


def _pad(c: _Importer, n: onnx.NodeProto) -> Value:
    mode = c.attr("mode", "constant")
    if c.opset < 11:
        pads, value, axes = c.attr("pads"), c.attr("value", 0.0), None
    else:
        pads, axes = c.ints(1, "pads"), c.ints(3, "axes")
        value = c.floats(2, "constant_value")
        value = value[0] if value else 0.0
    if axes is not None:
        rank = c.rank(0)
        full = [0] * (2 * rank)
        for j, a in enumerate(_norm_axes(axes, rank)):
            full[a], full[a + rank] = pads[j], pads[j + len(axes)]
        pads = full
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}.get(mode)
    if torch_mode is None:
        raise c.bad(f"mode={mode!r}")
    if torch_mode == "constant":
        return c.call(F.pad, c.inp(0), _pads_to_torch(pads), "constant", value)
    return c.call(F.pad, c.inp(0), _pads_to_torch(pads), torch_mode)


_RESIZE_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _resize(c: _Importer, n: onnx.NodeProto) -> Value:
    mode = c.attr("mode", "nearest")
    ctm = c.attr("coordinate_transformation_mode", "half_pixel" if c.opset >= 11 else "asymmetric")
    nearest = c.attr("nearest_mode", "round_prefer_floor")
    if c.attr("antialias", 0) or c.attr("exclude_outside", 0) or c.attr("axes") is not None:
        raise c.bad("antialias / exclude_outside / axes")
    if c.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise c.bad(f"keep_aspect_ratio_policy={c.attr('keep_aspect_ratio_policy')!r}")
    rank = c.rank(0)
    k = rank - 2
    if mode == "nearest":
        if ctm == "asymmetric" and nearest == "floor":
            kwargs: dict[str, Any] = {"mode": "nearest"}
        elif (ctm, nearest) in (("half_pixel", "round_prefer_ceil"), ("tf_half_pixel_for_nn", "floor")):
            kwargs = {"mode": "nearest-exact"}
        else:
            raise c.bad(f"mode='nearest' with coordinate_transformation_mode={ctm!r}, nearest_mode={nearest!r}")
    elif mode in ("linear", "cubic"):
        if ctm not in ("half_pixel", "pytorch_half_pixel", "align_corners"):
            raise c.bad(f"mode={mode!r} with coordinate_transformation_mode={ctm!r}")
        if mode == "cubic" and (k != 2 or abs(c.attr("cubic_coeff_a", -0.75) + 0.75) > 1e-6):
            raise c.bad("cubic other than 2-D with cubic_coeff_a=-0.75")
        kwargs = {"mode": "bicubic" if mode == "cubic" else _RESIZE_MODES.get(k, "linear"),
                  "align_corners": ctm == "align_corners"}
    else:
        raise c.bad(f"mode={mode!r}")
    scales_at, sizes_at = (1, None) if c.opset < 11 else (2, 3)
    if sizes_at is not None and c.inp(sizes_at) is not None:
        sizes = c.dims(sizes_at)
        out, how = (sizes[2:] if len(sizes) == rank else sizes), {"size": sizes[2:] if len(sizes) == rank else sizes}
    else:
        scales = c.floats(scales_at, "scales")
        if not scales or len(scales) != rank or scales[:2] != [1.0, 1.0]:
            raise c.bad(f"scales={scales}", "only spatial axes may be scaled")
        shape = c.shape(0) or (None,) * rank
        out = [None if d is None else math.floor(d * s) for d, s in zip(shape[2:], scales[2:], strict=True)]
        how = {"scale_factor": tuple(scales[2:])}
    if ctm == "pytorch_half_pixel" and any(isinstance(d, int) and d == 1 for d in out):
        # ONNX samples coordinate 0 on a length-1 axis; torch samples the input's centre.
        raise c.bad("coordinate_transformation_mode='pytorch_half_pixel' resizing an axis to length 1")
    return c.call(F.interpolate, c.inp(0), **how, **kwargs)


def _range(c: _Importer, n: onnx.NodeProto) -> Value:
    def scalar(i: int) -> Any:
        v = c.inp(i)
        if isinstance(v, _Dims) and v.scalar:
            return v.items[0]
        if isinstance(v, torch.Tensor):
            return v.item()
        raise c.bad("a Range bound computed from tensor data")

    dtype = c.dtype(0) or torch.int64
    return c.call(torch.arange, scalar(0), scalar(1), scalar(2), dtype=dtype)


def _einsum(c: _Importer, n: onnx.NodeProto) -> Value:
    return c.call(torch.einsum, c.attr("equation"), *[c.inp(i) for i in range(len(n.input))])


def _cumsum(c: _Importer, n: onnx.NodeProto) -> Value:
    axis = c.ints(1, "axis")[0]
    x = c.inp(0)
    if c.attr("reverse", 0):
        x = c.call(torch.flip, x, [axis])
    out = c.call(torch.cumsum, x, axis)
    if c.attr("exclusive", 0):
        out = c.call(torch.sub, out, x)
    return c.call(torch.flip, out, [axis]) if c.attr("reverse", 0) else out


def _reduce(fn: Callable[..., Any], axes_input_since: int) -> Converter:
    def convert(c: _Importer, n: onnx.NodeProto) -> Value:
        axes = c.ints(1, "axes") if c.opset >= axes_input_since else c.attr("axes")
        keep = bool(c.attr("keepdims", 1))
        x = c.inp(0)
        if not axes:
            if c.attr("noop_with_empty_axes", 0):
                return x
            axes = list(range(c.rank(0)))
        rank = c.rank(0)
        axes = sorted(_norm_axes(axes, rank))
        if fn is torch.mean and keep and rank == 4 and axes == [2, 3]:
            return c.call(F.adaptive_avg_pool2d, x, 1)  # global average pool, as torch models write it
        if fn is torch.prod:
            for a in reversed(axes):
                x = c.call(torch.prod, x, a, keepdim=keep)
            return x
        return c.call(fn, x, tuple(axes), keepdim=keep)

    convert.__doc__ = f"-> {fn.__module__}.{fn.__name__}"
    return convert


def _arg(fn: Callable[..., Any]) -> Converter:
    def convert(c: _Importer, n: onnx.NodeProto) -> Value:
        if c.attr("select_last_index", 0):
            raise c.bad("select_last_index=1")
        return c.call(fn, c.inp(0), c.attr("axis", 0), keepdim=bool(c.attr("keepdims", 1)))

    return convert


def _trilu(c: _Importer, n: onnx.NodeProto) -> Value:
    k = c.ints(1, "k")
    fn = torch.triu if c.attr("upper", 1) else torch.tril
    return c.call(fn, c.inp(0), k[0] if k else 0)


#: ONNX op type (default domain) -> converter. docs/onnx.md lists the same table.
OPS: dict[str, Converter] = {
    # convolution, matrix products and normalisation
    "Conv": _conv, "ConvTranspose": _conv_transpose, "Gemm": _gemm, "MatMul": _matmul, "Einsum": _einsum,
    "BatchNormalization": _batch_norm, "LayerNormalization": _layer_norm,
    "MaxPool": _pool, "AveragePool": _pool, "GlobalAveragePool": _global_pool, "GlobalMaxPool": _global_pool,
    "Softmax": _softmax, "LogSoftmax": _softmax,
    # activations and element-wise math
    "Relu": _unary(F.relu), "Sigmoid": _unary(torch.sigmoid), "Tanh": _unary(torch.tanh),
    "Erf": _unary(torch.erf), "Sqrt": _unary(torch.sqrt), "Neg": _unary(torch.neg), "Exp": _unary(torch.exp),
    "Log": _unary(torch.log), "Abs": _unary(torch.abs), "Reciprocal": _unary(torch.reciprocal),
    "Sin": _unary(torch.sin), "Cos": _unary(torch.cos), "Floor": _unary(torch.floor), "Ceil": _unary(torch.ceil),
    "Not": _unary(torch.logical_not), "Softplus": _unary(F.softplus), "HardSwish": _unary(F.hardswish),
    "Clip": _clip, "LeakyRelu": _leaky_relu, "Elu": _elu, "Selu": _selu, "HardSigmoid": _hard_sigmoid,
    "PRelu": _prelu, "Gelu": _gelu,
    "Add": _binary(torch.add, commutative=True), "Sub": _binary(torch.sub), "Mul": _binary(torch.mul, commutative=True),
    "Div": _div, "Pow": _binary(torch.pow), "Mod": _binary(torch.remainder),
    "Equal": _binary(torch.eq), "Less": _binary(torch.lt), "Greater": _binary(torch.gt),
    "LessOrEqual": _binary(torch.le), "GreaterOrEqual": _binary(torch.ge),
    "And": _binary(torch.logical_and), "Or": _binary(torch.logical_or),
    "Max": _variadic(torch.maximum), "Min": _variadic(torch.minimum), "Sum": _variadic(torch.add),
    "Mean": _variadic(torch.add), "Where": _where,
    "ReduceMean": _reduce(torch.mean, 18), "ReduceSum": _reduce(torch.sum, 13), "ReduceMax": _reduce(torch.amax, 18),
    "ReduceMin": _reduce(torch.amin, 18), "ReduceProd": _reduce(torch.prod, 18),
    "ArgMax": _arg(torch.argmax), "ArgMin": _arg(torch.argmin), "CumSum": _cumsum,
    # shapes, constants and data movement
    "Constant": _constant, "ConstantOfShape": _constant_of_shape, "Shape": _shape, "Size": _size,
    "Identity": _identity, "Dropout": _dropout, "Cast": _cast, "CastLike": _cast_like,
    "Flatten": _flatten, "Reshape": _reshape, "Transpose": _transpose, "Concat": _concat, "Split": _split,
    "Slice": _slice, "Gather": _gather, "GatherElements": _gather_elements, "GatherND": _gather_nd,
    "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Expand": _expand, "Tile": _tile, "Pad": _pad,
    "Resize": _resize, "Range": _range, "Trilu": _trilu,
}  # fmt: skip


def supported_ops() -> list[str]:
    """The ONNX op types `import_onnx` converts (default domain), sorted."""
    return sorted(OPS)


# ================================================================================================
# Example inputs
# ================================================================================================

def _index_bound(model: onnx.ModelProto, name: str) -> int | None:
    """Smallest first dimension of an initializer that input `name` indexes (Gather), following the
    value through shape-only and offset ops, so random ids stay valid for embedding tables."""
    inits = {t.name: t for t in model.graph.initializer}
    consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
    passthrough = {"Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Transpose", "Slice",
                   "Concat", "Add", "Expand", "Split"}
    seen, todo, bounds = {name}, [name], []
    while todo:
        v = todo.pop()
        for n in model.graph.node:
            if v not in n.input:
                continue
            if n.op_type == "Gather" and len(n.input) > 1 and n.input[1] == v:
                table = inits.get(n.input[0])
                axis = next((a.i for a in n.attribute if a.name == "axis"), 0)
                if table is not None:
                    bounds.append(int(table.dims[axis]))
                elif n.input[0] in consts:
                    bounds.append(int(_tensor(consts[n.input[0]].attribute[0].t).shape[axis]))
            elif n.op_type in passthrough:
                for o in n.output:
                    if o and o not in seen:
                        seen.add(o)
                        todo.append(o)
    return min(bounds) if bounds else None


def _example_inputs(model: onnx.ModelProto, names: Sequence[str], input_shape: Sequence[int] | None,
                    batch: int, seed: int, path: Path) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    by_name = {i.name: i for i in model.graph.input}
    out = []
    for k, name in enumerate(names):
        tt = by_name[name].type.tensor_type
        dtype = _DTYPES.get(tt.elem_type)
        if dtype is None:
            raise UserError(f"{path.name}: input {name!r} has element type "
                            f"{helper.tensor_dtype_to_string(tt.elem_type) if tt.elem_type else 'unknown'}, "
                            "which is not supported")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        shape = [d if d is not None else (batch if i == 0 else 1) for i, d in enumerate(dims)]
        if k == 0 and input_shape is not None:
            given = [int(d) for d in input_shape]
            clash = len(given) != len(dims) or any(d is not None and d != g for d, g in zip(dims, given, strict=False))
            if clash:
                declared = ",".join("?" if d is None else str(d) for d in dims)
                raise UserError(f"{path.name}: input_shape {','.join(map(str, given))} does not fit the declared "
                                f"input {name!r} of shape ({declared}); only dynamic (?) dims can be chosen")
            shape = given
        if dtype.is_floating_point:
            out.append(torch.randn(shape, generator=gen, dtype=dtype))
        elif dtype == torch.bool:
            out.append(torch.randint(0, 2, shape, generator=gen).bool())
        else:
            bound = _index_bound(model, name)
            high = min(bound, 100) if bound is not None else 2
            out.append(torch.randint(0, high, shape, generator=gen, dtype=dtype))
    return tuple(out)


# ================================================================================================
# Entry point
# ================================================================================================

def _load(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise UserError(f"{path}: ONNX file not found" if not path.exists() else f"{path}: not a regular file")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # a truncated / random / non-protobuf file
        raise UserError(f"{path.name}: not an ONNX model ({_first_line(e)})") from None
    if not model.HasField("graph") or not model.opset_import or not (model.graph.node or model.graph.output):
        raise UserError(f"{path.name}: not an ONNX model (no graph or opset in the file)")
    if model.functions:
        try:
            from onnx import inliner

            model = inliner.inline_local_functions(model)
        except Exception as e:
            raise UserError(f"{path.name}: its local functions cannot be inlined ({_first_line(e)})") from None
    with contextlib.suppress(Exception):  # inference is only a help: converters fall back to run-time sizes
        model = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    return model


def import_onnx(
    path: str | Path, input_shape: Sequence[int] | None = None, batch: int = 1, seed: int = 0
) -> tuple[fx.GraphModule, tuple[torch.Tensor, ...]]:
    """Convert the ONNX model at `path` to (GraphModule in eval mode, example inputs).

    The GraphModule calls only torch ops, so capture, partitioners and FLOPs rules treat it like
    a model written in PyTorch. Example inputs follow the graph's declared input shapes and
    dtypes; a dynamic dim becomes `batch` at position 0 and 1 elsewhere, unless `input_shape`
    (for the first input) says otherwise. Integer inputs get ids in 0..min(table rows, 100)-1 of
    the smallest table they index (0..1 when none), so Gathers on embeddings stay in range.
    Every problem with the file is a one-line `UserError`.
    """
    path = Path(path)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise UserError(f"batch: expected a positive integer, got {batch!r}")
    model = _load(path)
    gm, names = _Importer(model, path).run()
    return gm, _example_inputs(model, names, input_shape, batch, seed, path)
