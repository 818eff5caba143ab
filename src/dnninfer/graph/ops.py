"""Op facts as rules on the captured Graph, written once for every area that asks them.

Areas used to keep private lists of what an op does (two in-place sets, three alias/pass-through
lists, BatchNorm folding twice, a receptive-field table in the tiler, a hook-based GEMM count that
missed the attention matmuls). Each fact is here, keyed on an fx node's target or module type:

* **writes / aliases**: `mutated_input` / `is_inplace` (graph/inplace.py, the one in-place table),
  `may_alias` (the output may share memory with the first input), `passes_through` (the output
  equals the input at inference: Identity, eval-mode dropout, ``contiguous``...).
* **row-local** (`row_local`): a node that can compute any band of its output rows (dim 2 of NCHW)
  from a band of its inputs' rows plus a halo, with the `Window` arithmetic that sizes the halo.
* **foldable BatchNorm**: `bn_is_affine`, `folds_into`, `foldable_bn`, and the one folding
  function, `bn_scale_shift` / `fold_bn`.
* **GEMMs** (`matmuls`): the matrix products a node performs (conv, linear, matmul/bmm/``@``,
  scaled-dot-product and multi-head attention), for workload models that price GEMMs.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.utils import _pair

from dnninfer.graph.core import Graph
from dnninfer.graph.flops import find_rule, op_name
from dnninfer.graph.inplace import _submodule, is_inplace, mutated_input

__all__ = [
    "ALIAS_KINDS", "MatMul", "Param", "RowLocal", "Window", "bn_is_affine", "bn_scale_shift", "call_args",
    "conv_rows", "fold_bn", "foldable_bn", "folds_into", "is_inplace", "matmuls", "may_alias",
    "mutated_input", "passes_through", "row_local",
]


def call_args(node: fx.Node, names: Sequence[str], defaults: dict[str, Any]) -> dict[str, Any]:
    """Positional + keyword arguments of a call node by parameter name (`defaults` fill the rest)."""
    got = dict(defaults)
    got.update(zip(names, node.args, strict=False))
    got.update(node.kwargs)
    return got


def _module(node: fx.Node, module: nn.Module | None) -> nn.Module | None:
    return module if module is not None or node.op != "call_module" else _submodule(node)


def _kind(node: fx.Node, module: nn.Module | None) -> str | None:
    rule = find_rule(node.op, node.target, module)
    return rule.kind if rule is not None else None


# -- writes and aliases ------------------------------------------------------------------------
#: Kinds whose output may be (or always is) a view of their first input. An in-place write into a
#: view writes the base, so hazards are tracked per alias group; over-approximating only adds
#: ordering edges, never removes a needed one.
ALIAS_KINDS = frozenset({"reshape", "getitem", "dropout", "identity"})

#: Functions and methods whose output holds exactly the values of their input.
_IDENTITY_NAMES = frozenset({"contiguous", "clone", "detach", "alias"})


def may_alias(node: fx.Node, module: nn.Module | None = None, kind: str | None = None) -> bool:
    """Whether `node`'s output may share memory with its first input: an in-place write (it returns
    what it wrote) or a view-like kind (`ALIAS_KINDS`). `kind` skips the rule lookup when known."""
    if node.op not in ("call_module", "call_function", "call_method"):
        return False
    module = _module(node, module)
    if is_inplace(node, module):
        return True
    return (kind if kind is not None else _kind(node, module)) in ALIAS_KINDS


def passes_through(node: fx.Node, module: nn.Module | None = None) -> bool:
    """Whether `node` returns its first input's values unchanged: ``Identity``, dropout that is not
    training (module in eval mode, or ``training=False``), ``contiguous`` / ``clone`` / ``detach``."""
    if node.op == "call_module":
        module = _module(node, module)
        kind = _kind(node, module)
        return kind == "identity" or (kind == "dropout" and not module.training)
    if node.op not in ("call_function", "call_method"):
        return False
    name = op_name(node.op, node.target)
    if name in _IDENTITY_NAMES:
        return True
    if _kind(node, None) != "dropout" or name == "native_dropout":  # native_dropout returns (out, mask)
        return False
    a = call_args(node, ("input", "p", "training", "inplace"), {"training": True})
    return a.get("train", a["training"]) is False


# -- BatchNorm ---------------------------------------------------------------------------------
def bn_is_affine(bn: nn.Module) -> bool:
    """A BatchNorm that normalises with running statistics (eval mode): a per-channel affine map."""
    return isinstance(bn, nn.modules.batchnorm._BatchNorm) and not bn.training and bn.running_mean is not None


_BN_FOR = ((nn.Linear, (nn.BatchNorm1d,)), (nn.Conv1d, (nn.BatchNorm1d,)), (nn.Conv2d, (nn.BatchNorm2d,)),
           (nn.Conv3d, (nn.BatchNorm3d,)))


def folds_into(layer: nn.Module, bn: nn.Module) -> bool:
    """Whether `bn`, applied to `layer`'s output, can be folded into the layer's weight and bias: a
    BatchNorm of the layer's dimensionality over its output channels, with running statistics.

    The training flag is the caller's: a captured graph is in eval mode; `deploy` reads eval mode.
    """
    weight = getattr(layer, "weight", None)
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or bn.running_mean is None or weight is None:
        return False
    ok = next((types for cls, types in _BN_FOR if isinstance(layer, cls)), ())
    transposed = isinstance(layer, nn.modules.conv._ConvTransposeNd)
    return isinstance(bn, ok) and not transposed and bn.num_features == weight.shape[0]


def foldable_bn(graph: Graph, name: str) -> str | None:
    """The conv/linear node that BatchNorm node `name` can be folded into, or None.

    Foldable: an eval-mode BatchNorm module (`bn_is_affine`) whose input, through nodes that pass
    it through (`passes_through`), is a Conv/Linear module that `folds_into` accepts and that no
    other node reads (folding changes the layer's output for every reader).
    """
    nodes = {n.name: n for n in graph.gm.graph.nodes}
    node = nodes.get(name)
    if node is None or node.op != "call_module":
        return None
    bn = graph.gm.get_submodule(str(node.target))
    if not bn_is_affine(bn) or not node.args or not isinstance(node.args[0], fx.Node):
        return None
    src, reader = node.args[0], node
    while passes_through(src) and len(src.users) == 1 and src.args and isinstance(src.args[0], fx.Node):
        src, reader = src.args[0], src
    if src.op != "call_module" or set(src.users) != {reader}:
        return None
    return src.name if folds_into(graph.gm.get_submodule(str(src.target)), bn) else None


def bn_scale_shift(bn: nn.Module, bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(scale, shift)`` with ``bn(y + bias) == y * scale + shift`` in eval mode (float64).

    ``scale = gamma / sqrt(running_var + eps)``, ``shift = (bias - running_mean) * scale + beta``:
    the folding arithmetic, written once (quant/engine.py keeps scale apart from packed weights,
    memory/lower.py and `fold_bn` multiply it into the weights).
    """
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or bn.running_mean is None:
        raise ValueError(f"{type(bn).__name__}: folding needs a BatchNorm with running statistics")
    with torch.no_grad():
        mean, var = bn.running_mean.double(), bn.running_var.double()
        gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)
        beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
        b = bias.detach().double() if bias is not None else torch.zeros_like(mean)
        scale = gamma / torch.sqrt(var + bn.eps)
        return scale, (b - mean) * scale + beta


def fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.Module, *,
            axis: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w, b)`` of the layer followed by `bn` (eval mode) as one layer; `axis` is the weight's
    output-channel axis (0 for torch conv/linear weights). Computed in float64, so the folded layer
    rounds once; returned in the weight's dtype."""
    scale, shift = bn_scale_shift(bn, bias)
    view = [1] * weight.dim()
    view[axis] = -1
    w = weight.detach().double() * scale.reshape(view)
    return w.to(weight.dtype), shift.to(weight.dtype)


# -- row-local ops -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """A module's parameter by qualified name (a row-local conv module becomes ``F.conv2d`` on it)."""

    target: str


def conv_rows(h: int, k: int, s: int, d: int, top: int, bottom: int, ceil: bool) -> int:
    """PyTorch's output height of a conv/pool over `h` rows (the ceil_mode rule included: a ceil-mode
    pool whose window overhangs the input still has one row); 0 where torch refuses the shape."""
    num = h + top + bottom - d * (k - 1) - 1
    out = (num + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= h + top:
        out -= 1
    return max(out, 0)


@dataclass(frozen=True)
class Window:
    """A conv/pool along rows: output row o reads input rows [o*s - top, o*s - top + d*(k-1) + 1).

    ``fn(x, *args, **kwargs)`` computes it on an input whose rows outside the image are already
    padded (with `fill`; zero row padding in `args`); `wpad` is column padding that must go into
    that explicit pad too (asymmetric ``padding='same'``).
    """

    k: int
    s: int
    d: int
    top: int
    bottom: int
    ceil: bool
    fill: float  # value of rows outside the image: 0 for conv/avg, -inf for max
    fn: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    wpad: tuple[int, int] = (0, 0)

    def need(self, lo: int, hi: int) -> tuple[int, int]:
        """Input rows [a, b) that output rows [lo, hi) read (may reach outside the image)."""
        return lo * self.s - self.top, (hi - 1) * self.s - self.top + self.d * (self.k - 1) + 1

    def rows(self, h: int) -> int:
        """Output rows from `h` input rows."""
        return conv_rows(h, self.k, self.s, self.d, self.top, self.bottom, self.ceil)


@dataclass(frozen=True)
class RowLocal:
    """How a node computes a band of its output rows."""

    inputs: tuple[str, ...]  # inputs that carry rows (a window's data input only)
    window: Window | None  # None: output row r needs row r of every input
    inplace: bool  # writes into its first input (tiles give it a private copy of a shared view)


def _conv_padding(padding: Any, k: tuple[int, int], d: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) from an int/tuple/'valid'/'same' conv padding."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        out = []
        for kk, dd in zip(k, d, strict=True):
            total = dd * (kk - 1)
            out.append((total // 2, total - total // 2))
        return out[0], out[1]
    ph, pw = _pair(padding)
    return (ph, ph), (pw, pw)


def _conv_window(weight: Any, bias: Any, kernel: tuple[int, int], stride: Any, padding: Any, dilation: Any,
                 groups: int) -> Window:
    (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
    (top, bottom), (left, right) = _conv_padding(padding, kernel, (dh, dw))
    sym = left == right
    args = (weight, bias, (sh, sw), (0, left if sym else 0), (dh, dw), groups)
    return Window(kernel[0], sh, dh, top, bottom, False, 0.0, F.conv2d, args, {}, (0, 0) if sym else (left, right))


def _stride(p: dict[str, Any]) -> Any:
    return p["stride"] if p["stride"] not in (None, [], ()) else p["kernel_size"]


def _max_pool_window(p: dict[str, Any]) -> Window | str:
    if p["return_indices"]:
        return "max pool returns indices"
    (kh, kw), (sh, sw) = _pair(p["kernel_size"]), _pair(_stride(p))
    (ph, pw), (dh, dw) = _pair(p["padding"]), _pair(p["dilation"])
    ceil = bool(p["ceil_mode"])
    return Window(kh, sh, dh, ph, ph, ceil, -math.inf, F.max_pool2d, ((kh, kw), (sh, sw), (0, pw), (dh, dw), ceil), {})


def _avg_pool_window(p: dict[str, Any]) -> Window | str:
    """Exact per stripe only without border divisors that depend on the stripe; a ceil-mode partial
    last window shows up as a row count the window (ceil=False) does not predict."""
    (kh, kw), (sh, sw), (ph, pw) = _pair(p["kernel_size"]), _pair(_stride(p)), _pair(p["padding"])
    if not p["count_include_pad"] and ph:
        return "avg pool with count_include_pad=False and row padding (border divisors differ per tile)"
    args = ((kh, kw), (sh, sw), (0, pw), bool(p["ceil_mode"]), bool(p["count_include_pad"]), p["divisor_override"])
    return Window(kh, sh, 1, ph, ph, False, 0.0, F.avg_pool2d, args, {})


_MAX_POOL = (("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
             {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False})
_AVG_POOL = (("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
             {"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True, "divisor_override": None})
_CONV = (("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
         {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1})
_SAME_MODULE_KINDS = ("act", "identity")
_SAME_FUNCTION_KINDS = ("act", "add", "mul")


def _module_window(node: fx.Node, mod: nn.Module) -> Window | str | None:
    """The window of a Conv2d / MaxPool2d / AvgPool2d module (None: not one of them)."""
    if isinstance(mod, nn.Conv2d):
        if type(mod).forward is not nn.Conv2d.forward:
            return f"{type(mod).__name__} overrides Conv2d.forward"
        if mod.padding_mode != "zeros":
            return f"conv padding_mode {mod.padding_mode!r} (only 'zeros' is row-local)"
        bias = Param(f"{node.target}.bias") if mod.bias is not None else None
        return _conv_window(Param(f"{node.target}.weight"), bias, mod.kernel_size, mod.stride, mod.padding,
                            mod.dilation, mod.groups)
    if isinstance(mod, nn.MaxPool2d):
        return _max_pool_window({k: getattr(mod, k) for k in _MAX_POOL[0][1:]})
    if isinstance(mod, nn.AvgPool2d):
        return _avg_pool_window({k: getattr(mod, k) for k in _AVG_POOL[0][1:]})
    return None


def _function_window(graph: Graph, node: fx.Node) -> tuple[Any, Window | str] | None:
    """(data input, window) of ``F.conv2d`` / ``F.max_pool2d`` / ``F.avg_pool2d`` (None: not one)."""
    target = node.target
    if target is F.conv2d or target is torch.conv2d:
        p = call_args(node, *_CONV)
        weight = p["weight"]
        if not isinstance(weight, fx.Node) or weight.op != "get_attr":
            return p["input"], "conv weight is not a parameter"
        shape = graph.nodes[weight.name].shape
        if shape is None or len(shape) != 4:
            return p["input"], "conv weight is not 4-D"
        return p["input"], _conv_window(weight, p["bias"], shape[2:], p["stride"], p["padding"], p["dilation"],
                                        p["groups"])
    if target is F.max_pool2d or target is torch.max_pool2d:
        p = call_args(node, *_MAX_POOL)
        return p.get("input"), _max_pool_window(p)
    if target is F.avg_pool2d:
        p = call_args(node, *_AVG_POOL)
        return p.get("input"), _avg_pool_window(p)
    return None


def _nodes_in(value: Any) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg(value, lambda n: found.append(n) or n)
    return found


def _windowed(graph: Graph, h: int, data: Any, w: Window | str) -> RowLocal | str:
    if isinstance(w, str):
        return w
    if not isinstance(data, fx.Node) or data.op == "get_attr":
        return "input is not a graph tensor"
    s_in = graph.nodes[data.name].shape
    if s_in is None or len(s_in) != 4:
        return f"input {data.name!r} is not a 4-D tensor"
    if any(n.op != "get_attr" for n in _nodes_in((w.args, w.kwargs))):
        return "window parameters are graph values"
    if min(w.k, w.s, w.d) < 1 or w.top < 0 or w.bottom < 0:
        return "unsupported kernel/stride/padding"
    expect = w.rows(s_in[2])
    if expect != h:
        return f"output has {h} rows, expected {expect} from its window"
    return RowLocal((data.name,), w, False)


def _same_rows(graph: Graph, node: fx.Node, *, cat: bool = False, inplace: bool = False) -> RowLocal | str:
    """Output row r from row r of every tensor input (element-wise, or a channel concatenation)."""
    out = graph.nodes[node.name].shape
    rows = []
    for src in node.all_input_nodes:
        s = graph.nodes[src.name].shape
        if src.op == "get_attr":  # a constant: fine if it broadcasts over rows
            if s is not None and len(s) >= 2 and s[-2] != 1:
                return f"constant {src.name!r} varies along rows"
            continue
        if s is None or len(s) != 4:
            return f"input {src.name!r} is not a 4-D tensor"
        if cat:
            if (s[0], s[2], s[3]) != (out[0], out[2], out[3]):
                return f"input {src.name!r} has shape {s}, output {out}"
        elif s != out:
            return f"input {src.name!r} has shape {s}, output {out} (broadcasting)"
        rows.append(src.name)
    if not rows:
        return "no tensor input"
    return RowLocal(tuple(dict.fromkeys(rows)), None, inplace)


def row_local(graph: Graph, node: fx.Node) -> RowLocal | str:
    """How `node` computes a band of output rows from bands of its inputs, or why it cannot.

    Row-local: 2-D conv (zeros padding), max/avg pool (when exact per stripe), eval-mode BN and
    dropout, element-wise activations, same-shape add/mul and channel concatenation, on 4-D tensors.
    """
    info = graph.nodes.get(node.name)
    if info is None:
        return "unknown node"
    if not info.is_compute:
        return f"not a compute node ({info.op})"
    if info.shape is None or len(info.shape) != 4:
        return f"output is not a 4-D tensor (shape {info.shape})"
    h = info.shape[2]
    if h == 0:
        return "output has no rows"
    if node.op == "call_module":
        mod = graph.gm.get_submodule(str(node.target))
        w = _module_window(node, mod)
        if w is not None:
            return _windowed(graph, h, node.args[0] if node.args else None, w)
        kind = _kind(node, mod)
        if kind == "bn" and not bn_is_affine(mod):
            return "batch norm uses batch statistics (training mode or no running stats)"
        if kind == "dropout" and not passes_through(node, mod):
            return "dropout in training mode"
        if kind not in ("bn", "dropout", *_SAME_MODULE_KINDS):
            return f"{type(mod).__name__} is not row-local"
        return _same_rows(graph, node, inplace=is_inplace(node, mod))
    if node.op not in ("call_function", "call_method"):
        return f"{node.op} is not row-local"
    got = _function_window(graph, node)
    if got is not None:
        return _windowed(graph, h, *got)
    target = node.target
    if target in (torch.cat, torch.concat, torch.concatenate):
        p = call_args(node, ("tensors", "dim"), {"dim": 0})
        if not isinstance(p.get("tensors"), (list, tuple)) or p["dim"] not in (1, -3):
            return "cat is not along channels (dim 1)"
        if not all(isinstance(t, fx.Node) for t in p["tensors"]):
            return "cat of non-graph values"
        return _same_rows(graph, node, cat=True)
    kind = _kind(node, None)
    if kind == "dropout" and not passes_through(node):
        return "dropout in training mode"
    if kind == "bn" and target is F.batch_norm:
        p = call_args(node, ("input", "running_mean", "running_var", "weight", "bias", "training"),
                      {"training": False})
        if p["training"] is not False or p["running_mean"] is None:
            return "batch norm uses batch statistics"
        return _same_rows(graph, node)
    if kind == "dropout" or kind in _SAME_FUNCTION_KINDS:
        return _same_rows(graph, node, inplace=is_inplace(node))
    name = str(target) if node.op == "call_method" else getattr(target, "__name__", "")
    return f"{name or target} is not row-local"


# -- GEMMs -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MatMul:
    """One matrix product a node performs: `count` independent ``(m x k) @ (k x n)`` products.

    ``a`` / ``b`` name the graph values each operand is computed from (a node's own name for a
    value made inside it, such as attention scores; ``()`` for a module's own weight);
    ``a_param`` / ``b_param`` say the operand is a parameter (its gradient is a weight gradient).
    `batched` names the dimension the node's batch multiplies, ``"m"`` (conv pixels, linear rows)
    or ``"count"`` (batched matmuls), so a batch-1 capture can be rescaled (`scaled`).
    """

    m: int
    k: int
    n: int
    count: int
    a: tuple[str, ...]
    b: tuple[str, ...]
    a_param: bool = False
    b_param: bool = False
    batched: str = "m"

    @property
    def macs(self) -> int:
        return self.m * self.k * self.n * self.count

    def scaled(self, batch: int) -> MatMul:
        """The same product with its batch multiplied by `batch` (for shapes from a batch-1 pass)."""
        if self.batched == "count":
            return replace(self, count=self.count * batch)
        return replace(self, m=self.m * batch)


def _is_param(node: Any) -> bool:
    """A parameter, or a view of one (``W.t()``, ``W.reshape(...)``); buffers are constants."""
    while isinstance(node, fx.Node) and node.op != "get_attr":
        if not may_alias(node) or not node.args or not isinstance(node.args[0], fx.Node):
            return False
        node = node.args[0]
    if not isinstance(node, fx.Node) or node.graph.owning_module is None:
        return False
    try:
        return isinstance(node.graph.owning_module.get_parameter(str(node.target)), nn.Parameter)
    except AttributeError:
        return False


def _operand(node: Any) -> tuple[str, ...]:
    return (node.name,) if isinstance(node, fx.Node) else ()


def _product(graph: Graph, a: Any, b: Any) -> MatMul | None:
    """``a @ b`` with torch.matmul's broadcasting; a weight-like 2-D `b` folds a's batch into m."""
    sa = graph.nodes[a.name].shape if isinstance(a, fx.Node) else None
    sb = graph.nodes[b.name].shape if isinstance(b, fx.Node) else None
    if not sa or not sb:
        return None
    ops = {"a": _operand(a), "b": _operand(b), "a_param": _is_param(a), "b_param": _is_param(b)}
    k = sa[-1]
    n = sb[-1] if len(sb) > 1 else 1
    if len(sb) <= 2:  # one matrix shared by every row of a
        return MatMul(math.prod(sa[:-1]), k, n, 1, **ops, batched="m")
    m = sa[-2] if len(sa) > 1 else 1
    batch = torch.broadcast_shapes(tuple(sa[:-2]), tuple(sb[:-2]))
    return MatMul(m, k, n, math.prod(batch), **ops, batched="count")


def _conv(shape_out: Sequence[int], weight_shape: Sequence[int], groups: int, transposed: bool,
          a: tuple[str, ...], b: tuple[str, ...], shape_in: Sequence[int]) -> MatMul:
    """A conv as ``groups`` GEMMs (im2col); a transposed conv as one per input pixel (col2im)."""
    if transposed:  # weight (C_in, C_out/g, *k): each input pixel scatters C_out/g x prod(k) values
        m = shape_in[0] * math.prod(shape_in[2:])
        return MatMul(m, weight_shape[0] // groups, math.prod(weight_shape[1:]), groups, a, b, b_param=True)
    m = shape_out[0] * math.prod(shape_out[2:])
    return MatMul(m, math.prod(weight_shape[1:]), weight_shape[0] // groups, groups, a, b, b_param=True)


def _attention(name: str, q: Sequence[int], k: Sequence[int], v: Sequence[int], srcs: tuple[str, ...],
               heads: int = 1) -> list[MatMul]:
    """Q K^T and P V of scaled dot-product attention; q (..., L, E), k (..., S, E), v (..., S, Ev)."""
    length, embed, source, ev = q[-2], q[-1] // heads, k[-2], v[-1] // heads
    count = math.prod(q[:-2]) * heads
    batched = "count" if len(q) > 2 else "m"
    qk = MatMul(length, embed, source, count, srcs[:1], srcs[1:2], batched=batched)
    pv = MatMul(length, source, ev, count, (*srcs[:2], name), srcs[2:3], batched=batched)
    return [qk, pv]


def _mha(graph: Graph, node: fx.Node, m: nn.MultiheadAttention) -> list[MatMul]:
    """In-projections, attention per head and out-projection of ``nn.MultiheadAttention``."""
    args = call_args(node, ("query", "key", "value"), {})
    shapes = [graph.nodes[args[x].name].shape for x in ("query", "key", "value")]
    q, k, v = ([*s[1:2], *s[0:1], *s[2:]] if not m.batch_first and len(s) == 3 else list(s) for s in shapes)
    srcs = tuple(args[x].name for x in ("query", "key", "value"))
    e = m.embed_dim
    tokens_q, tokens_kv = math.prod(q[:-1]), math.prod(k[:-1])
    proj = [MatMul(tokens_q, q[-1], e, 1, srcs[:1], (), b_param=True),
            MatMul(tokens_kv, k[-1], e, 1, srcs[1:2], (), b_param=True),
            MatMul(tokens_kv, v[-1], e, 1, srcs[2:3], (), b_param=True)]
    inner = (node.name,) * 3  # the projected q, k, v are made inside the node
    # projected q, k, v: (N, L, E), split into heads of E/heads (count = N x heads)
    att = _attention(node.name, [*q[:-1], e], [*k[:-1], e], [*v[:-1], e], inner, heads=m.num_heads)
    return [*proj, *att, MatMul(tokens_q, e, e, 1, (node.name,), (), b_param=True)]


def matmuls(graph: Graph, name: str) -> list[MatMul]:
    """The matrix products node `name` performs, in execution order; empty for other ops.

    Covers conv (any dimensionality, grouped, transposed), linear, matmul / mm / bmm / ``@`` /
    addmm / baddbmm, ``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention``. For conv,
    linear and matmul, ``2 x sum(macs)`` equals the node's FLOPs (graph/flops.py's convention).
    """
    node = next((n for n in graph.gm.graph.nodes if n.name == name), None)
    if node is None or node.op not in ("call_module", "call_function", "call_method"):
        return []
    info = graph.nodes[name]
    shape_of = graph.nodes

    def shape(x: Any) -> Sequence[int] | None:
        return shape_of[x.name].shape if isinstance(x, fx.Node) else None

    x = node.args[0] if node.args else None
    if node.op == "call_module":
        mod = graph.gm.get_submodule(str(node.target))
        if isinstance(mod, nn.modules.conv._ConvNd) and info.shape and shape(x):
            transposed = isinstance(mod, nn.modules.conv._ConvTransposeNd)
            return [_conv(info.shape, mod.weight.shape, mod.groups, transposed, _operand(x), (), shape(x))]
        if isinstance(mod, nn.Linear) and info.shape:
            return [MatMul(math.prod(info.shape[:-1]), mod.in_features, mod.out_features, 1, _operand(x), (),
                           b_param=True)]
        if isinstance(mod, nn.MultiheadAttention):
            return _mha(graph, node, mod)
        return []
    fname = op_name(node.op, node.target)
    if fname in ("conv1d", "conv2d", "conv3d", "convolution") and info.shape:
        if fname == "convolution":
            p = call_args(node, ("input", "weight", "bias", "stride", "padding", "dilation", "transposed",
                                 "output_padding", "groups"), {"transposed": False, "groups": 1})
        else:
            p = {"transposed": False, **call_args(node, *_CONV)}
        w, s_in = shape(p["weight"]), shape(p["input"])
        if w is None or s_in is None:
            return []
        return [_conv(info.shape, w, int(p["groups"]), bool(p["transposed"]), _operand(p["input"]),
                      _operand(p["weight"]), s_in)]
    if fname == "linear" and info.shape:
        p = call_args(node, ("input", "weight", "bias"), {})
        w = shape(p["weight"])
        if w is None:
            return []
        return [MatMul(math.prod(info.shape[:-1]), w[-1], w[0], 1, _operand(p["input"]), _operand(p["weight"]),
                       a_param=_is_param(p["input"]), b_param=_is_param(p["weight"]))]
    if fname in ("matmul", "mm", "bmm") or node.target is operator.matmul:
        got = _product(graph, *node.args[:2]) if len(node.args) >= 2 else None
        return [got] if got is not None else []
    if fname in ("addmm", "baddbmm", "addbmm") and len(node.args) >= 3:
        got = _product(graph, node.args[1], node.args[2])
        return [got] if got is not None else []
    if fname == "scaled_dot_product_attention":
        p = call_args(node, ("query", "key", "value"), {})
        q, k, v = (shape(p[a]) for a in ("query", "key", "value"))
        if q is None or k is None or v is None:
            return []
        return _attention(name, q, k, v, tuple(p[a].name for a in ("query", "key", "value")))
    return []
