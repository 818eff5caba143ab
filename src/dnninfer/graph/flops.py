"""Op kinds and FLOP counts, one table for torch.fx and torch.export (aten) graphs.

Convention: FLOPs = 2 x multiply-accumulates for conv, linear and matmul (the count used by
Neurosurgeon, HiDP and most papers that quote GFLOPs); one FLOP per output element for
element-wise ops; data movement (cat, view, getitem) is 0 FLOPs but still has output bytes.

An op missing from the table must not make a model unusable, nor count as a silent zero: capture
gives it `ESTIMATE`, one FLOP per output element. That is what an element-wise op costs: it never
fails (every node has an output size), is never zero (a zero would hide the op's work from FLOP-
balanced partitioners), and does not pretend to know the op's arithmetic; it can under-count a
heavy op, which is why capture marks such a node ``flops_estimated`` and emits one
`UnknownOpWarning` per capture naming every estimated op.
Callers replace estimates (or any table entry) with ``flops_rules=``: keys are a module type, a
function, or a name (an op name such as ``pixel_shuffle`` or a module class name such as
``PixelShuffle``, i.e. a node's ``target`` as `dnninfer inspect` shows it).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class OpCall:
    """What a rule sees: the module (for call_module), positional/keyword args and the output."""

    module: nn.Module | None
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    out: Any


FlopsFn = Callable[[OpCall], int]


@dataclass(frozen=True)
class Rule:
    kind: str
    flops: FlopsFn


class UnknownOpWarning(UserWarning):
    """Some ops had no FLOPs rule and were counted with `ESTIMATE` (one warning per capture)."""


def numel(x: Any) -> int:
    """Total elements of a tensor or of every tensor in a (nested) tuple/list."""
    if isinstance(x, torch.Tensor):
        return x.numel()
    if isinstance(x, (tuple, list)):
        return sum(numel(v) for v in x)
    return 0


def _first_tensor(args: Sequence[Any]) -> torch.Tensor | None:
    for a in args:
        if isinstance(a, torch.Tensor):
            return a
    return None


def _zero(_: OpCall) -> int:
    return 0


def _per_out(k: float) -> FlopsFn:
    return lambda c: int(k * numel(c.out))


def _per_in(k: float) -> FlopsFn:
    def f(c: OpCall) -> int:
        x = _first_tensor(c.args)
        return int(k * (x.numel() if x is not None else 0))

    return f


def per_out(k: float, kind: str = "custom") -> Rule:
    """A rule of `k` FLOPs per output element (what a ``--flops-rules`` YAML/JSON number means)."""
    return Rule(kind, _per_out(k))


def per_in(k: float, kind: str = "custom") -> Rule:
    """A rule of `k` FLOPs per element of the first tensor input (reductions, pools)."""
    return Rule(kind, _per_in(k))


def conv_flops(out: torch.Tensor, weight: torch.Tensor) -> int:
    """2 x N x C_out x prod(out spatial) x (C_in / groups) x prod(kernel)."""
    # weight: (C_out, C_in/groups, *kernel); each output element needs C_in/groups*prod(k) MACs.
    return 2 * out.numel() * math.prod(weight.shape[1:])


def linear_flops(out: torch.Tensor, in_features: int) -> int:
    """2 x (output elements) x in_features."""
    return 2 * out.numel() * in_features


def _conv_module(c: OpCall) -> int:
    return conv_flops(c.out, c.module.weight)


def _conv_fn(c: OpCall) -> int:
    weight = c.args[1] if len(c.args) > 1 else c.kwargs["weight"]
    return conv_flops(c.out, weight)


def _conv_transpose_module(c: OpCall) -> int:
    # Each input element scatters into C_out/groups x prod(k) outputs.
    w = c.module.weight  # (C_in, C_out/groups, *k)
    return 2 * numel(c.args[0]) * math.prod(w.shape[1:])


def _linear_module(c: OpCall) -> int:
    return linear_flops(c.out, c.module.in_features)


def _linear_fn(c: OpCall) -> int:
    weight = c.args[1] if len(c.args) > 1 else c.kwargs["weight"]
    return linear_flops(c.out, weight.shape[-1])


def _matmul(c: OpCall) -> int:
    a = c.args[0]
    return 2 * numel(c.out) * a.shape[-1]


def _addmm(c: OpCall) -> int:
    mat1 = c.args[1]
    return 2 * numel(c.out) * mat1.shape[-1] + numel(c.out)


def _pool(c: OpCall) -> int:
    k = c.module.kernel_size if c.module is not None else (c.args[1] if len(c.args) > 1 else c.kwargs["kernel_size"])
    if isinstance(k, int):
        k = (k,) * max(1, c.out.dim() - 2)
    return numel(c.out) * math.prod(k)


def _sdpa(c: OpCall) -> int:
    q, k = c.args[0], c.args[1]
    # QK^T and PV: 2 x 2 x B x H x L x S x E, plus softmax over the L x S scores.
    length, source, embed = q.shape[-2], k.shape[-2], q.shape[-1]
    batch = math.prod(q.shape[:-2])
    return 4 * batch * length * source * embed + 3 * batch * length * source


def _mha(c: OpCall) -> int:
    m = c.module
    q = c.args[0]
    e = m.embed_dim
    tokens = q.numel() // e
    proj = 2 * tokens * e * e * 4  # q, k, v, out projections
    seq = q.shape[0] if not m.batch_first else q.shape[1]
    attn = 4 * tokens * seq * e + 3 * tokens * seq * m.num_heads
    return proj + attn


def _embedding_bag(c: OpCall) -> int:
    return numel(c.out)


ACT = "act"
ZERO_KINDS = ("reshape", "getitem", "dropout", "cat", "embedding", "shape", "identity", "param")

# call_module rules, matched by isinstance in order.
MODULE_RULES: list[tuple[type[nn.Module], Rule]] = [
    (nn.modules.conv._ConvTransposeNd, Rule("conv", _conv_transpose_module)),
    (nn.modules.conv._ConvNd, Rule("conv", _conv_module)),
    (nn.Linear, Rule("linear", _linear_module)),
    (nn.Bilinear, Rule("linear", lambda c: 2 * numel(c.out) * c.module.in1_features * c.module.in2_features)),
    (nn.modules.batchnorm._BatchNorm, Rule("bn", _per_out(2))),
    (nn.LayerNorm, Rule("norm", _per_out(5))),
    (nn.GroupNorm, Rule("norm", _per_out(5))),
    (nn.modules.instancenorm._InstanceNorm, Rule("norm", _per_out(5))),
    (nn.modules.pooling._MaxPoolNd, Rule("pool", _pool)),
    (nn.modules.pooling._AvgPoolNd, Rule("pool", _pool)),
    (nn.modules.pooling._AdaptiveAvgPoolNd, Rule("pool", _per_in(1))),
    (nn.modules.pooling._AdaptiveMaxPoolNd, Rule("pool", _per_in(1))),
    (nn.MultiheadAttention, Rule("attention", _mha)),
    (nn.Softmax, Rule("softmax", _per_out(3))),
    (nn.LogSoftmax, Rule("softmax", _per_out(3))),
    (nn.Embedding, Rule("embedding", _zero)),
    (nn.EmbeddingBag, Rule("embedding", _embedding_bag)),
    (nn.modules.dropout._DropoutNd, Rule("dropout", _zero)),
    (nn.Identity, Rule("identity", _zero)),
    (nn.Flatten, Rule("reshape", _zero)),
    (nn.Unflatten, Rule("reshape", _zero)),
    (nn.Upsample, Rule("resize", _per_out(1))),
    (nn.ZeroPad2d, Rule("reshape", _zero)),
    (nn.modules.padding._ConstantPadNd, Rule("reshape", _zero)),
]
_ACT_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus,
)
MODULE_RULES += [(t, Rule(ACT, _per_out(1))) for t in _ACT_MODULES]

_ACT_NAMES = (
    "relu", "relu_", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish",
    "sigmoid", "tanh", "hardswish", "hardsigmoid", "hardtanh", "softplus", "prelu", "exp",
    "log", "sqrt", "rsqrt", "neg", "abs", "clamp", "clamp_min", "clamp_max", "pow", "erf",
    "sigmoid_", "tanh_", "hardtanh_", "clip", "reciprocal", "sin", "cos", "square",
)
_ELEMWISE_NAMES = ("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "truediv", "floordiv",
                   "where", "maximum", "minimum", "masked_fill", "rsub", "iadd", "imul", "eq", "ne",
                   "lt", "le", "gt", "ge", "logical_not", "logical_and", "bitwise_and", "fill_")
_REDUCE_NAMES = ("mean", "sum", "amax", "max", "min", "amin", "std", "var", "norm", "logsumexp", "prod",
                 "argmax", "argmin", "cumsum")
_ZERO_NAMES = {
    "reshape": ("view", "reshape", "flatten", "permute", "transpose", "t", "contiguous", "squeeze",
                "unsqueeze", "expand", "expand_as", "repeat", "chunk", "split", "unbind", "narrow",
                "select", "slice", "unflatten", "view_as", "type_as", "to", "float", "half", "int",
                "long", "bool", "type", "clone", "detach", "pad", "constant_pad_nd", "roll", "flip",
                "_unsafe_view", "alias", "zeros_like", "ones_like", "new_zeros", "new_ones", "full_like",
                "arange", "zeros", "ones", "full", "tensor", "stack", "split_with_sizes", "index_select",
                "gather", "movedim", "swapaxes", "masked_select", "tril", "triu", "repeat_interleave",
                "lift_fresh_copy", "_to_copy", "empty_like", "copy_", "as_strided", "channel_shuffle",
                "pixel_shuffle", "index", "_assert_tensor_metadata",
                # the functional twins of in-place writes (`x[i] = v`, `x.fill_(0)`, `x.copy_(y)`)
                "fill", "copy", "index_put", "index_put_", "slice_scatter", "select_scatter",
                "scatter", "index_copy", "masked_scatter", "setitem"),
    "shape": ("size", "dim", "numel", "shape", "getattr", "sym_size", "len", "_assert_async",
              "sym_numel", "sym_stride", "stride"),
    "getitem": ("getitem",),
    "cat": ("cat", "concat", "concatenate"),
    "dropout": ("dropout", "dropout_", "alpha_dropout", "feature_alpha_dropout", "native_dropout"),
    "embedding": ("embedding", "embedding_bag"),
}

# call_function / call_method / aten rules, matched by bare name.
NAME_RULES: dict[str, Rule] = {}
for _n in _ACT_NAMES:
    NAME_RULES[_n] = Rule(ACT, _per_out(1))
for _n in _ELEMWISE_NAMES:
    NAME_RULES[_n] = Rule("add" if _n.startswith(("add", "iadd", "sub", "rsub")) else "mul", _per_out(1))
for _n in _REDUCE_NAMES:
    NAME_RULES[_n] = Rule("reduce", _per_in(1))
for _kind, _names in _ZERO_NAMES.items():
    for _n in _names:
        NAME_RULES[_n] = Rule(_kind, _zero)
NAME_RULES.update({
    "conv1d": Rule("conv", _conv_fn), "conv2d": Rule("conv", _conv_fn), "conv3d": Rule("conv", _conv_fn),
    "convolution": Rule("conv", _conv_fn),
    "linear": Rule("linear", _linear_fn),
    "matmul": Rule("matmul", _matmul), "mm": Rule("matmul", _matmul), "bmm": Rule("matmul", _matmul),
    "baddbmm": Rule("matmul", lambda c: 2 * numel(c.out) * c.args[1].shape[-1]),
    "einsum": Rule("matmul", lambda c: 2 * numel(c.out) * _einsum_contracted(c)),
    "addmm": Rule("matmul", _addmm),
    "batch_norm": Rule("bn", _per_out(2)),
    "_native_batch_norm_legit_no_training": Rule("bn", lambda c: 2 * numel(c.out[0])),
    "layer_norm": Rule("norm", _per_out(5)), "group_norm": Rule("norm", _per_out(5)),
    "native_layer_norm": Rule("norm", lambda c: 5 * numel(c.out[0])),
    "max_pool1d": Rule("pool", _pool), "max_pool2d": Rule("pool", _pool), "avg_pool2d": Rule("pool", _pool),
    "avg_pool1d": Rule("pool", _pool),
    "max_pool2d_with_indices": Rule("pool", lambda c: numel(c.out[0]) * math.prod(c.args[1])),
    "adaptive_avg_pool2d": Rule("pool", _per_in(1)), "adaptive_avg_pool1d": Rule("pool", _per_in(1)),
    "adaptive_max_pool2d": Rule("pool", _per_in(1)), "_adaptive_avg_pool2d": Rule("pool", _per_in(1)),
    "softmax": Rule("softmax", _per_out(3)), "log_softmax": Rule("softmax", _per_out(3)),
    "_softmax": Rule("softmax", _per_out(3)), "_log_softmax": Rule("softmax", _per_out(3)),
    "scaled_dot_product_attention": Rule("attention", _sdpa),
    "interpolate": Rule("resize", _per_out(1)), "upsample_nearest2d": Rule("resize", _per_out(1)),
    "upsample_bilinear2d": Rule("resize", _per_out(4)),
})
#: What an op missing from the table counts: one FLOP per output element (see the module docstring).
ESTIMATE = Rule("unknown", _per_out(1))

_FUNCTION_ALIASES: dict[Any, str] = {
    operator.add: "add", operator.iadd: "iadd", operator.sub: "sub", operator.mul: "mul",
    operator.imul: "imul", operator.truediv: "truediv", operator.floordiv: "floordiv",
    operator.matmul: "matmul", operator.getitem: "getitem", operator.neg: "neg",
    getattr: "getattr", len: "len", F.relu: "relu", torch.flatten: "flatten",
}


def _einsum_contracted(c: OpCall) -> int:
    """Product of the sizes of indices that appear in the inputs but not the output."""
    eq = c.args[0].replace(" ", "")
    ops = c.args[1:] if len(c.args) > 2 or not isinstance(c.args[1], (list, tuple)) else c.args[1]
    lhs, rhs = eq.split("->") if "->" in eq else (eq, "")
    sizes: dict[str, int] = {}
    for term, t in zip(lhs.split(","), ops, strict=False):
        for ch, s in zip(term, t.shape, strict=False):
            sizes[ch] = s
    return math.prod(s for ch, s in sizes.items() if ch not in rhs)


def op_name(op: str, target: Any) -> str:
    """A bare, table-friendly name for an fx node's target (``conv2d``, ``add``, ``view``)."""
    if op == "call_method":
        return str(target)
    if target in _FUNCTION_ALIASES:
        return _FUNCTION_ALIASES[target]
    packet = getattr(target, "_overloadpacket", None)  # aten OpOverload from torch.export
    if packet is not None:
        return packet.__name__.split(".")[-1]
    name = getattr(target, "__name__", str(target))
    return name.split(".")[-1]


def find_rule(
    op: str,
    target: Any,
    module: nn.Module | None,
    extra: Mapping[Any, Rule] | None = None,
) -> Rule | None:
    """The rule for a node: user overrides first (by module type or class name, target or op
    name), then the table; None when neither has one (capture then uses `ESTIMATE`)."""
    extra = extra or {}
    if module is not None:
        for key in (*type(module).__mro__, type(module).__name__):  # a name matches the class itself only
            if key in extra:
                return extra[key]
        for cls, rule in MODULE_RULES:
            if isinstance(module, cls):
                return rule
        return None
    name = op_name(op, target)
    if target in extra:
        return extra[target]
    if name in extra:
        return extra[name]
    return NAME_RULES.get(name)
