"""``deploy_graph(model)``: any fx-traceable conv net on the add-only kernels, through the captured Graph.

``engine.deploy`` lowers an ``nn.Sequential`` op by op; a net with residuals, branches, depthwise or
grouped convolutions has no such order, so it is lowered from its captured Graph (graph/capture.py)
instead: every node becomes a NumPy function of its inputs' values, evaluated in the graph's
topological order (an fx interpreter over NumPy arrays).

The quantised layers (``QuantConv2d``/``QuantLinear``/``QuantConv1d``) compute their weights with
Python code that fx would trace into dozens of nodes, so the model is captured as a *deploy view*: a
copy whose quantised layers are replaced by plain ``nn.Conv*``/``nn.Linear`` holding the quantised
weights (torch.nn modules are fx leaves). The view computes exactly what the quantised model
computes in eval mode; each of its conv/linear nodes is packed (``kernels.pack``) from the original
layer's quantised weight and run on that method's kernel. A grouped (e.g. depthwise) convolution is
one kernel per group (the filters of a group see only that group's input channels); a BatchNorm
that is the only reader of a conv/linear output is folded into that kernel's per-output
``scale``/``shift``, so the packed weights stay signed binary.

Supported nodes: Conv1d/Conv2d (any groups and stride, numeric zero padding, dilation 1), Linear,
BatchNorm, ReLU/ReLU6, max/average pooling (module or functional, ``ceil_mode=False``), adaptive
average pooling to sizes that divide the input, Flatten, Identity, Dropout (eval), additions,
multiplications, concatenation, ``view``/``reshape``/``size``; anything else is refused with the
node's name. ``deploy_graph(model)(x)`` matches the PyTorch eval-mode forward of the quantised model
(tests/quant/test_graph_deploy.py, allclose).
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from dnninfer.errors import UserError
from dnninfer.graph import Graph, capture
from dnninfer.graph.ops import bn_scale_shift, folds_into
from dnninfer.quant.calibrate import warn_if_nonfinite
from dnninfer.quant.engine import im2col_t
from dnninfer.quant.kernels import Kernel, PackedWeights, make_kernel, pack

__all__ = ["GraphDeployedModel", "deploy_graph", "needs_graph_deploy"]

_CONV = (nn.Conv1d, nn.Conv2d)
_PASS_MODULES = (nn.Identity, nn.Dropout)


def needs_graph_deploy(model: nn.Module) -> bool:
    """Whether ``engine.deploy`` must hand ``model`` to the graph path: a network that is not an
    ``nn.Sequential``, or one with a grouped convolution (the Sequential path runs groups=1 only)."""
    if not isinstance(model, nn.Sequential):
        return any(True for _ in model.children())  # a bare layer is no network: the Sequential path refuses it
    return any(isinstance(m, _CONV) and m.groups != 1 for m in model.modules())


# -- the deploy view -----------------------------------------------------------------------------------
def _is_quant(m: nn.Module) -> bool:
    return callable(getattr(m, "quantized_weight", None)) and isinstance(getattr(m, "method", None), str)


def _weight_and_method(layer: nn.Module) -> tuple[np.ndarray, str]:
    with torch.no_grad():
        if _is_quant(layer):
            return layer.quantized_weight().float().numpy(), layer.method  # type: ignore[operator]
        return layer.weight.float().numpy(), "fp32"  # type: ignore[union-attr]


def _plain(layer: nn.Module) -> nn.Module:
    """A torch.nn copy of a quantised layer whose weight is the quantised weight (an fx leaf)."""
    w = torch.from_numpy(_weight_and_method(layer)[0])
    if isinstance(layer, nn.Linear):
        new: nn.Module = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    else:
        assert isinstance(layer, _CONV)
        cls = nn.Conv2d if isinstance(layer, nn.Conv2d) else nn.Conv1d
        new = cls(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,  # type: ignore[arg-type]
                  padding=layer.padding, dilation=layer.dilation, groups=layer.groups,  # type: ignore[arg-type]
                  bias=layer.bias is not None, padding_mode=layer.padding_mode)
    with torch.no_grad():
        new.weight.copy_(w)
        if layer.bias is not None:
            new.bias.copy_(layer.bias.detach())  # type: ignore[union-attr, operator]
    return new


def deploy_view(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with every quantised layer swapped for its plain twin."""
    view = copy.deepcopy(model).eval()
    for name, m in list(view.named_modules()):
        if name and _is_quant(m):
            view.set_submodule(name, _plain(m))
    return view


# -- lowering --------------------------------------------------------------------------------------------
def _fold(layer: nn.Module, bn: nn.Module | None) -> tuple[np.ndarray, np.ndarray]:
    n = layer.weight.shape[0]  # type: ignore[union-attr]
    if bn is None:
        bias = layer.bias.detach().numpy() if layer.bias is not None else np.zeros(n)  # type: ignore[union-attr]
        return np.ones(n, np.float32), np.asarray(bias, np.float32)
    s, shift = bn_scale_shift(bn, layer.bias)  # type: ignore[arg-type]
    return s.float().numpy(), shift.float().numpy()


@dataclass
class _Layer:
    """One conv/linear node lowered to its kernels (one per group)."""

    kernels: list[Kernel]
    packed: list[PackedWeights]


def _lower_layer(name: str, layer: nn.Module, bn: nn.Module | None, kind: str | None
                 ) -> tuple[Callable[[np.ndarray], np.ndarray], _Layer]:
    w, method = _weight_and_method(layer)
    scale, shift = _fold(layer, bn)
    kind = kind if method != "fp32" else None
    if isinstance(layer, nn.Linear):
        p = pack(w, method)
        kernel = make_kernel(p, scale, shift, kind=kind)

        def linear(x: np.ndarray) -> np.ndarray:
            lead = x.shape[:-1]
            return kernel(np.ascontiguousarray(x.reshape(-1, x.shape[-1]))).reshape(*lead, -1)

        return linear, _Layer([kernel], [p])
    assert isinstance(layer, _CONV)
    if any(d != 1 for d in layer.dilation) or layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        raise UserError(f"deploy: {name}: only dilation=1 and numeric zero padding are supported")
    one_d = isinstance(layer, nn.Conv1d)
    g, n = layer.groups, layer.out_channels
    ng, cg = n // g, layer.in_channels // g
    packs = [pack(w[i * ng:(i + 1) * ng], method) for i in range(g)]
    kernels = [make_kernel(p, scale[i * ng:(i + 1) * ng], shift[i * ng:(i + 1) * ng], kind=kind)
               for i, p in enumerate(packs)]
    kh, kw = (1, layer.kernel_size[0]) if one_d else layer.kernel_size
    stride = (1, layer.stride[0]) if one_d else tuple(layer.stride)
    padding = (0, layer.padding[0]) if one_d else tuple(layer.padding)  # type: ignore[index]

    def conv(x: np.ndarray) -> np.ndarray:
        x4 = x[:, :, None, :] if one_d else x
        b = x4.shape[0]
        outs = []
        for i, kernel in enumerate(kernels):
            cols, oh, ow = im2col_t(x4[:, i * cg:(i + 1) * cg], kh, kw, stride, padding)  # type: ignore[arg-type]
            out = np.empty((ng, cols.shape[1]), np.float32)
            kernel.run_t(cols, out)
            outs.append(out.reshape(ng, b, oh, ow))
        y = np.ascontiguousarray(np.concatenate(outs).transpose(1, 0, 2, 3))
        return y[:, :, 0, :] if one_d else y

    return conv, _Layer(kernels, packs)


def _bn(name: str, bn: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    if getattr(bn, "running_mean", None) is None:
        raise UserError(f"deploy: {name}: BatchNorm without running statistics (track_running_stats=False)")
    s, t = (v.float().numpy() for v in bn_scale_shift(bn))

    def run(x: np.ndarray) -> np.ndarray:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return (x * s.reshape(shape) + t.reshape(shape)).astype(np.float32)

    return run


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[-1]))


def _pool(x: np.ndarray, k: Any, s: Any, p: Any, reduce: str, *, count_include_pad: bool = True,
          divisor: int | None = None) -> np.ndarray:
    """Max / average pooling over the last two axes (``ceil_mode=False``, dilation 1)."""
    (kh, kw), (ph, pw) = _pair(k), _pair(p)
    sh, sw = _pair(s if s not in (None, []) else k)
    if ph or pw:
        fill = -np.inf if reduce == "max" else 0.0
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    if reduce == "max":
        return np.ascontiguousarray(win.max(axis=(4, 5)))
    total = win.sum(axis=(4, 5), dtype=np.float32)
    if divisor is not None:
        return total / np.float32(divisor)
    if count_include_pad or not (ph or pw):
        return total / np.float32(kh * kw)
    ones = np.pad(np.ones((x.shape[2] - 2 * ph, x.shape[3] - 2 * pw), np.float32), ((ph, ph), (pw, pw)))
    counts = np.lib.stride_tricks.sliding_window_view(ones, (kh, kw))[::sh, ::sw].sum(axis=(2, 3))
    return total / counts


def _adaptive_avg(name: str, x: np.ndarray, size: Any) -> np.ndarray:
    oh, ow = _pair(size) if size is not None else x.shape[2:]
    oh, ow = oh or x.shape[2], ow or x.shape[3]
    h, w = x.shape[2:]
    if h % oh or w % ow:
        raise UserError(f"deploy: {name}: adaptive average pooling {h}x{w} -> {oh}x{ow}: expected an output "
                        "size that divides the input")
    return x.reshape(*x.shape[:2], oh, h // oh, ow, w // ow).mean(axis=(3, 5), dtype=np.float32)


def _flatten(x: np.ndarray, start: int = 0, end: int = -1) -> np.ndarray:
    end = end % x.ndim
    return x.reshape(*x.shape[:start], -1, *x.shape[end + 1:])


def _relu(x: np.ndarray, *_: Any, **__: Any) -> np.ndarray:
    return np.maximum(x, np.float32(0.0))


def _module_fn(name: str, m: nn.Module) -> Callable[..., np.ndarray] | None:
    """A NumPy function for a leaf module other than conv/linear (which are lowered to kernels)."""
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return _bn(name, m)
    if isinstance(m, nn.ReLU):
        return _relu
    if isinstance(m, nn.ReLU6):
        return lambda x: np.clip(x, 0.0, 6.0)
    if isinstance(m, _PASS_MODULES):
        return lambda x: x
    if isinstance(m, nn.Flatten):
        return lambda x: _flatten(x, m.start_dim, m.end_dim)
    if isinstance(m, nn.MaxPool2d):
        if m.ceil_mode or m.dilation not in (1, (1, 1)):
            raise UserError(f"deploy: {name}: only MaxPool2d with ceil_mode=False and dilation=1 is supported")
        return lambda x: _pool(x, m.kernel_size, m.stride, m.padding, "max")
    if isinstance(m, nn.AvgPool2d):
        if m.ceil_mode:
            raise UserError(f"deploy: {name}: only AvgPool2d with ceil_mode=False is supported")
        return lambda x: _pool(x, m.kernel_size, m.stride, m.padding, "avg", count_include_pad=m.count_include_pad,
                               divisor=m.divisor_override)
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return lambda x: _adaptive_avg(name, x, m.output_size)
    return None


def _max_pool_f(x: np.ndarray, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                ceil_mode: bool = False, return_indices: bool = False) -> np.ndarray:
    if ceil_mode or return_indices or _pair(dilation) != (1, 1):
        raise UserError("deploy: max_pool2d: only ceil_mode=False, dilation=1, no indices are supported")
    return _pool(x, kernel_size, stride, padding, "max")


def _avg_pool_f(x: np.ndarray, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                count_include_pad: bool = True, divisor_override: int | None = None) -> np.ndarray:
    if ceil_mode:
        raise UserError("deploy: avg_pool2d: only ceil_mode=False is supported")
    return _pool(x, kernel_size, stride, padding, "avg", count_include_pad=count_include_pad,
                 divisor=divisor_override)


def _cat(xs: Sequence[np.ndarray], dim: int = 0) -> np.ndarray:
    return np.concatenate(list(xs), axis=dim)


def _reshape(x: np.ndarray, *shape: Any) -> np.ndarray:
    dims = shape[0] if len(shape) == 1 and isinstance(shape[0], tuple | list) else shape
    return x.reshape(tuple(int(d) for d in dims))


def _size(x: np.ndarray, dim: int | None = None) -> Any:
    return x.shape if dim is None else x.shape[dim]


_FUNCTIONS: dict[Any, Callable[..., Any]] = {
    operator.add: operator.add, operator.iadd: operator.add, torch.add: np.add,
    operator.mul: operator.mul, operator.imul: operator.mul, torch.mul: np.multiply,
    operator.getitem: operator.getitem,
    torch.relu: _relu, F.relu: _relu, torch.flatten: _flatten, torch.cat: _cat,
    F.max_pool2d: _max_pool_f, F.avg_pool2d: _avg_pool_f, torch.max_pool2d: _max_pool_f,
    F.adaptive_avg_pool2d: lambda x, size: _adaptive_avg("adaptive_avg_pool2d", x, size),
    F.dropout: lambda x, *a, **k: x, torch.reshape: _reshape,
}
_METHODS: dict[str, Callable[..., Any]] = {
    "relu": _relu, "relu_": _relu, "flatten": _flatten, "view": _reshape, "reshape": _reshape, "size": _size,
    "add": np.add, "add_": np.add, "mul": np.multiply, "contiguous": lambda x: x,
}


@dataclass
class _Node:
    name: str
    kind: str
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    layer: _Layer | None = None


@dataclass
class GraphDeployedModel:
    """A model lowered from its captured Graph: ``__call__(x) -> np.ndarray``; ``nodes`` in topological
    order, each naming the fx node it came from (``graph`` is kept for inspection)."""

    graph: Graph | None
    nodes: list[_Node] = field(default_factory=list)
    output: Any = None
    build: Callable[[Sequence[Any]], tuple[Graph, list[_Node], Any]] | None = None

    def lower(self, example_inputs: Sequence[Any] | torch.Tensor) -> GraphDeployedModel:
        """Capture and lower now (``deploy_graph`` does it at the first call otherwise)."""
        if self.graph is None:
            assert self.build is not None
            xs = (example_inputs,) if isinstance(example_inputs, torch.Tensor | np.ndarray) else example_inputs
            self.graph, self.nodes, self.output = self.build(tuple(x[:1] for x in xs))
        return self

    def _run(self, inputs: Sequence[Any], stop_at_nonfinite: bool = False) -> tuple[Any, str | None]:
        self.lower(inputs)
        assert self.graph is not None
        env: dict[str, Any] = {}
        names = self.graph.input_names
        if len(inputs) != len(names):
            raise UserError(f"deploy: expected {len(names)} input(s), got {len(inputs)}")
        for name, x in zip(names, inputs, strict=True):
            x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
            env[name] = np.asarray(x, dtype=np.float32)
            if stop_at_nonfinite and not np.isfinite(env[name]).all():
                return None, "<input>"

        def load(a: Any) -> Any:
            return fx.node.map_aggregate(a, lambda v: env[v] if isinstance(v, _Ref) else v)

        for node in self.nodes:
            env[node.name] = node.fn(*load(node.args), **load(node.kwargs))
            y = env[node.name]
            if stop_at_nonfinite and isinstance(y, np.ndarray) and not np.isfinite(y).all():
                return None, node.name
        return load(self.output), None

    def __call__(self, *inputs: Any) -> Any:
        y, _ = self._run(inputs)
        if isinstance(y, np.ndarray) and not np.isfinite(y).all():
            warn_if_nonfinite(y, "deploy", self.first_nonfinite(*inputs))
        return y

    def first_nonfinite(self, *inputs: Any) -> str | None:
        """The name of the first node whose output is inf/NaN (``"<input>"``), or ``None``."""
        return self._run(inputs, stop_at_nonfinite=True)[1]

    @property
    def weight_bytes(self) -> int:
        return sum(p.nbytes for n in self.nodes if n.layer for p in n.layer.packed)

    def summary(self) -> list[dict[str, Any]]:
        out = []
        for n in self.nodes:
            row: dict[str, Any] = {"op": n.name, "kind": n.kind}
            if n.layer:
                k = n.layer.kernels[0]
                row.update(kernel=k.name, shape=list(k.shape), groups=len(n.layer.kernels),
                           adds_per_output=round(float(np.mean([kk.adds_per_output() for kk in n.layer.kernels])), 2),
                           weight_bytes=sum(p.nbytes for p in n.layer.packed))
            out.append(row)
        return out


class _Ref(str):
    """A reference to another node's value (kept apart from string constants in node args)."""


def _refs(a: Any) -> Any:
    return fx.node.map_arg(a, lambda n: _Ref(n.name))


def _folded_bn(graph: Graph, node: fx.Node, layer: nn.Module) -> fx.Node | None:
    """The BatchNorm node that reads only ``node`` and may be folded into ``layer``, if any."""
    if len(node.users) != 1:
        return None
    (user,) = node.users
    if user.op != "call_module":
        return None
    bn = graph.gm.get_submodule(str(user.target))
    return user if folds_into(layer, bn) else None


def deploy_graph(model: nn.Module, example_inputs: Sequence[Any] | torch.Tensor | None = None, *,
                 kernels: dict[str, str] | None = None) -> GraphDeployedModel:
    """Lower any fx-traceable conv net to the add-only kernels through its captured Graph.

    ``example_inputs`` only shape the capture (one sample is enough; the deployed model takes any
    batch); without them the graph is captured at the first call, on that call's first sample. The
    model is snapshotted now (a later change to it does not reach the deployed one) and not
    modified. ``kernels`` maps a method to a kernel variant as in ``engine.deploy``; BatchNorm is
    read with its running statistics (eval mode).
    """
    snapshot = copy.deepcopy(model).eval()
    deployed = GraphDeployedModel(None, build=lambda xs: _lower(snapshot, xs, kernels or {}))
    if example_inputs is not None:
        deployed.lower(example_inputs)
    return deployed


def _lower(model: nn.Module, example_inputs: Sequence[Any] | torch.Tensor, kernels: dict[str, str]
           ) -> tuple[Graph, list[_Node], Any]:
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    inputs = tuple(torch.as_tensor(np.asarray(x, np.float32)) if not isinstance(x, torch.Tensor) else x
                   for x in example_inputs)
    view = deploy_view(model)
    graph = capture(view, inputs, name=type(model).__name__)
    if graph.method != "fx":
        raise UserError(f"deploy: model {type(model).__name__}: expected an fx-traceable model (symbolic_trace "
                        "failed, so the graph came from torch.export, whose ATen ops deploy does not lower)")
    nodes: list[_Node] = []
    alias: dict[str, str] = {}  # folded BatchNorm node -> the conv/linear node that now produces its value
    out: Any = None
    for node in graph.gm.graph.nodes:
        if node.op == "placeholder":
            continue
        if node.op == "output":
            out = fx.node.map_arg(node.args[0], lambda n: _Ref(alias.get(n.name, n.name)))
            continue
        args = fx.node.map_arg(node.args, lambda n: _Ref(alias.get(n.name, n.name)))
        kwargs = fx.node.map_arg(node.kwargs, lambda n: _Ref(alias.get(n.name, n.name)))
        if node.name in alias:
            continue
        if node.op == "call_module":
            target = str(node.target)
            m = graph.gm.get_submodule(target)
            if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d) and type(m) in (nn.Linear, nn.Conv1d, nn.Conv2d):
                orig = model.get_submodule(target)
                bn_node = _folded_bn(graph, node, m)
                bn = graph.gm.get_submodule(str(bn_node.target)) if bn_node is not None else None
                method = orig.method if _is_quant(orig) else "fp32"
                fn, layer = _lower_layer(target, orig, bn, kernels.get(method))
                if bn_node is not None:
                    alias[bn_node.name] = node.name
                kind = "linear" if isinstance(m, nn.Linear) else f"conv{'1' if isinstance(m, nn.Conv1d) else '2'}d"
                nodes.append(_Node(node.name, kind, fn, args, kwargs, layer))
                continue
            fn_m = _module_fn(target, m)
            if fn_m is None:
                raise UserError(f"deploy: node {node.name} ({type(m).__name__}) is not supported; expected Conv1d/2d, "
                                "Linear, BatchNorm, ReLU, pooling, Flatten, Identity or Dropout")
            nodes.append(_Node(node.name, type(m).__name__.lower(), fn_m, args, kwargs))
        elif node.op == "call_function":
            fn_f = _FUNCTIONS.get(node.target)
            if fn_f is None:
                raise UserError(f"deploy: node {node.name} ({getattr(node.target, '__name__', node.target)}) is not "
                                "supported; expected add, mul, cat, relu, flatten, pooling or reshape")
            nodes.append(_Node(node.name, getattr(node.target, "__name__", str(node.target)), fn_f, args, kwargs))
        elif node.op == "call_method":
            fn_c = _METHODS.get(str(node.target))
            if fn_c is None:
                raise UserError(f"deploy: node {node.name} (Tensor.{node.target}) is not supported; expected one of "
                                f"{', '.join(_METHODS)}")
            nodes.append(_Node(node.name, str(node.target), fn_c, args, kwargs))
        else:  # get_attr: a parameter or buffer used directly (not through a module)
            raise UserError(f"deploy: node {node.name} reads tensor {node.target} directly; expected tensors only "
                            "inside Conv/Linear/BatchNorm modules")
    return graph, nodes, out

