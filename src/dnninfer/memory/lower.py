"""Lower a captured float model (`dnninfer.graph.capture`) to the MCU layer IR, with float weights.

The IR is the int8 NHWC layer list of `dnninfer.memory.ir`; this pass walks the fx graph once, in
order, and maps each node onto it (torch.fx frontend style: a table from op to converter):

* ``Conv2d`` (groups 1 -> conv, or 1x1 stride 1 unpadded -> pw; groups = C_in = C_out -> dw), with a
  following ``BatchNorm2d`` folded into its weights and bias (graph/ops.py `foldable_bn`, `fold_bn`);
* ``ReLU`` / ``ReLU6`` (module or function, ``hardtanh(0, 6)``) become the producing layer's clamp
  (applied in requantisation on the MCU);
* residual ``add``; ``AdaptiveAvgPool2d(1)`` / ``mean`` over H, W (global average pool);
  ``AvgPool2d`` (unpadded), ``MaxPool2d``; ``flatten`` (free in NHWC: the next ``Linear``'s weight
  columns are permuted from CHW to HWC order); ``Dropout`` / ``Identity`` / ``contiguous``
  (inference no-ops: graph/ops.py `passes_through`); ``Linear``.

Anything else is a `UserError` naming the op and node. `run_float` evaluates the lowered IR in
float64 with torch.nn.functional; it must equal the model, and it is what calibration observes.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from dnninfer.errors import UserError
from dnninfer.graph.core import Graph
from dnninfer.graph.flops import op_name
from dnninfer.graph.ops import call_args, fold_bn, foldable_bn, passes_through
from dnninfer.memory.ir import IR, FloatParams, IRBuilder, Layer

SUPPORTED = ("Conv2d (groups 1 or depthwise), BatchNorm2d after Conv2d, ReLU, ReLU6, add, AdaptiveAvgPool2d(1), "
             "mean over H and W, AvgPool2d (no padding), MaxPool2d, flatten, Dropout, Identity, Linear")
_ADD = (operator.add, operator.iadd, torch.add)
_FLATTEN_NAMES = ("flatten", "view", "reshape")


@dataclass(frozen=True)
class _Val:
    """A lowered value: an IR tensor, possibly viewed flat as (1, h*w*c) in torch's CHW order."""

    tensor: int
    flat: bool = False


def _unsupported(node: fx.Node, target: str, detail: str = "") -> UserError:
    extra = f"{detail}; " if detail else ""
    return UserError(f"op {target} at node {node.name} is not supported by the MCU IR ({extra}supported: {SUPPORTED})")


def _pair(v: Any, node: fx.Node, target: str, what: str) -> int:
    if isinstance(v, (tuple, list)):
        if len(set(v)) != 1:
            raise _unsupported(node, target, f"non-square {what} {tuple(v)}")
        v = v[0]
    return int(v)


class _Lowering:
    def __init__(self, graph: Graph, name: str) -> None:
        self.graph = graph
        self.gm = graph.gm
        self.name = name
        self.b: IRBuilder | None = None
        self.vals: dict[str, _Val | None] = {}
        self.nodes_of: dict[int, list[fx.Node]] = {}  # fx nodes whose value is this tensor (incl. aliases)
        self.output: int | None = None

    # -- helpers ---------------------------------------------------------------------------------
    def val(self, arg: Any, node: fx.Node, target: str) -> _Val:
        v = self.vals.get(arg.name) if isinstance(arg, fx.Node) else None
        if v is None:
            raise _unsupported(node, target, f"argument {arg!r} is not an activation tensor")
        return v

    def spatial(self, v: _Val, node: fx.Node, target: str) -> int:
        if v.flat:
            h, w, _ = self.b.shape(v.tensor)
            if h * w != 1:
                raise _unsupported(node, target, "input is a flattened feature map")
        return v.tensor

    def emit(self, node: fx.Node, tensor: int, flat: bool = False) -> None:
        self.vals[node.name] = _Val(tensor, flat)
        self.nodes_of.setdefault(tensor, []).append(node)

    def fusable(self, v: _Val, node: fx.Node, target: str, what: str) -> Layer:
        """The layer producing `v`, if `node` is the only reader so `what` can be folded into it."""
        nodes = self.nodes_of.get(v.tensor, [])
        readers = sum(len(n.users) for n in nodes) - (len(nodes) - 1)  # aliases read their source once
        if v.tensor == 0 or readers != 1:
            raise _unsupported(node, target, f"{what} must directly follow a layer whose output has no other user")
        return self.b.layers[v.tensor - 1]

    def set_layer(self, tensor: int, layer: Layer) -> None:
        self.b.layers[tensor - 1] = layer

    # -- converters ------------------------------------------------------------------------------
    def placeholder(self, node: fx.Node) -> None:
        shape = self.graph.nodes[node.name].shape
        if self.b is not None or shape is None or len(shape) != 4 or shape[0] != 1:
            raise UserError(f"MCU IR lowering: expected one image input of shape (1, C, H, W), "
                            f"got {shape} at node {node.name}")
        _, c, h, w = shape
        self.b = IRBuilder(self.name, h, w, c)
        self.emit(node, 0)

    def conv(self, node: fx.Node, m: nn.Conv2d) -> None:
        target = "Conv2d"
        x = self.spatial(self.val(node.args[0], node, target), node, target)
        if m.padding_mode != "zeros":
            raise _unsupported(node, target, f"padding_mode {m.padding_mode!r}")
        if tuple(m.dilation) != (1, 1):
            raise _unsupported(node, target, f"dilation {tuple(m.dilation)}")
        k = _pair(m.kernel_size, node, target, "kernel")
        s = _pair(m.stride, node, target, "stride")
        if isinstance(m.padding, str):
            if m.padding == "valid" or k == 1:
                p = 0
            elif s == 1 and k % 2 == 1:
                p = (k - 1) // 2
            else:
                raise _unsupported(node, target, f"padding {m.padding!r}")
        else:
            p = _pair(m.padding, node, target, "padding")
        w = m.weight.detach().double().numpy()
        bias = m.bias.detach().double().numpy() if m.bias is not None else np.zeros(m.out_channels)
        if m.groups == 1:
            pw = k == 1 and s == 1 and p == 0
            wt = w[:, :, 0, 0].T.copy() if pw else w.transpose(2, 3, 1, 0).copy()
            out = self.b.conv(x, m.out_channels, k, s, p, name=node.name, weights=FloatParams(wt, bias))
        elif m.groups == m.in_channels == m.out_channels:
            wt = w[:, 0].transpose(1, 2, 0).copy()
            out = self.b.dw(x, k, s, p, name=node.name, weights=FloatParams(wt, bias))
        else:
            raise _unsupported(node, target, f"groups={m.groups} (only 1 or depthwise)")
        self.emit(node, out)

    def batchnorm(self, node: fx.Node, m: nn.BatchNorm2d) -> None:
        target = type(m).__name__
        v = self.val(node.args[0], node, target)
        layer = self.fusable(v, node, target, "BatchNorm2d")
        if layer.kind not in ("conv", "dw", "pw") or layer.act != "none" or foldable_bn(self.graph, node.name) is None:
            raise _unsupported(node, target, "BatchNorm2d is folded only into a preceding Conv2d")
        w, b = (torch.from_numpy(a) for a in (layer.weights.weight, layer.weights.bias))
        wt, bias = fold_bn(w, b, m, axis=-1)  # output channels are the last axis in every layout
        self.set_layer(v.tensor, replace(layer, weights=FloatParams(wt.numpy(), bias.numpy())))
        self.emit(node, v.tensor, v.flat)

    def activation(self, node: fx.Node, act: str, target: str) -> None:
        v = self.val(node.args[0], node, target)
        layer = self.fusable(v, node, target, target)
        merged = "relu6" if "relu6" in (layer.act, act) else act
        self.set_layer(v.tensor, replace(layer, act=merged))
        self.emit(node, v.tensor, v.flat)

    def add(self, node: fx.Node, target: str) -> None:
        if len(node.args) != 2 or node.kwargs.get("alpha", 1) != 1:
            raise _unsupported(node, target, "only x + y of two activations")
        a, c = (self.val(arg, node, target) for arg in node.args)
        if self.b.shape(a.tensor) != self.b.shape(c.tensor) or a.flat != c.flat:
            raise _unsupported(node, target, "operands must have the same shape (no broadcasting)")
        self.emit(node, self.b.add(a.tensor, c.tensor, name=node.name), a.flat)

    def gap(self, node: fx.Node, target: str, flat: bool = False) -> None:
        x = self.spatial(self.val(node.args[0], node, target), node, target)
        self.emit(node, self.b.gap(x, name=node.name), flat)

    def pool(self, node: fx.Node, kind: str, target: str, k: Any, s: Any, p: Any, ceil_mode: bool,
             dilation: Any = 1) -> None:
        x = self.spatial(self.val(node.args[0], node, target), node, target)
        k = _pair(k, node, target, "kernel")
        s = k if s is None or s == [] or s == () else _pair(s, node, target, "stride")
        p = _pair(p, node, target, "padding")
        if ceil_mode or _pair(dilation, node, target, "dilation") != 1:
            raise _unsupported(node, target, "ceil_mode / dilation")
        if kind == "avg" and p:
            raise _unsupported(node, target, "average pooling with padding")
        self.emit(node, self.b.pool(x, kind, k, s, p, name=node.name))

    def linear(self, node: fx.Node, m: nn.Linear) -> None:
        target = "Linear"
        v = self.val(node.args[0], node, target)
        h, w, c = self.b.shape(v.tensor)
        if not v.flat and h * w != 1:
            raise _unsupported(node, target, "Linear needs a flattened input")
        weight = m.weight.detach().double()
        if weight.shape[1] != h * w * c:
            raise _unsupported(node, target, f"in_features {weight.shape[1]} != {h * w * c}")
        # torch flattens CHW; the IR stores HWC: permute the weight columns once, here.
        wt = weight.reshape(-1, c, h, w).permute(0, 2, 3, 1).reshape(weight.shape[0], -1).T.numpy().copy()
        bias = m.bias.detach().double().numpy() if m.bias is not None else np.zeros(m.out_features)
        self.emit(node, self.b.fc(v.tensor, m.out_features, name=node.name, weights=FloatParams(wt, bias)), True)

    def flatten(self, node: fx.Node, target: str) -> None:
        v = self.val(node.args[0], node, target)
        h, w, c = self.b.shape(v.tensor)
        shape = self.graph.nodes[node.name].shape
        if shape is None or tuple(shape) != (1, h * w * c):
            raise _unsupported(node, target, f"only flattening to (1, C*H*W), got {shape}")
        self.emit(node, v.tensor, True)

    # -- dispatch --------------------------------------------------------------------------------
    def run(self) -> IR:
        if self.graph.method != "fx":
            raise UserError(f"MCU IR lowering: model {self.graph.name!r} was captured with torch.export; "
                            "lowering needs a torch.fx-traceable model")
        for node in self.gm.graph.nodes:
            self.node(node)
        if self.output is None or not self.b.layers:
            raise UserError(f"MCU IR lowering: model {self.graph.name!r} has no layers to lower")
        return self.b.build(self.output, meta={"source": f"lowered from {self.graph.name}"})

    def node(self, node: fx.Node) -> None:
        info = self.graph.nodes.get(node.name)
        if node.op == "placeholder":
            return self.placeholder(node)
        if node.op == "output":
            arg = node.args[0]
            if isinstance(arg, (tuple, list)) and len(arg) == 1:
                arg = arg[0]
            v = self.val(arg, node, "output")
            h, w, _ = self.b.shape(v.tensor)
            if v.flat and h * w != 1:
                raise _unsupported(node, "output", "a flattened feature map as the model output")
            if v.tensor == 0:
                raise UserError("MCU IR lowering: the model output is its input")
            self.output = v.tensor
            return None
        if node.op == "get_attr":
            raise _unsupported(node, f"get_attr {node.target}", "parameters used outside modules")
        if info is not None and info.shape is None:  # sizes and other Python values ride along
            self.vals[node.name] = None
            return None
        if node.op == "call_module":
            return self.module(node, self.gm.get_submodule(str(node.target)))
        return self.function(node, op_name(node.op, node.target))

    def module(self, node: fx.Node, m: nn.Module) -> None:
        target = type(m).__name__
        if isinstance(m, nn.Conv2d):
            return self.conv(node, m)
        if isinstance(m, nn.BatchNorm2d):
            return self.batchnorm(node, m)
        if isinstance(m, nn.ReLU6) or (isinstance(m, nn.Hardtanh) and (m.min_val, m.max_val) == (0.0, 6.0)):
            return self.activation(node, "relu6", target)
        if isinstance(m, nn.ReLU):
            return self.activation(node, "relu", target)
        if passes_through(node, m):
            v = self.val(node.args[0], node, target)
            return self.emit(node, v.tensor, v.flat)
        if isinstance(m, nn.Flatten):
            return self.flatten(node, target)
        if isinstance(m, nn.AdaptiveAvgPool2d):
            return self._adaptive(node, m.output_size, target)
        if isinstance(m, nn.AvgPool2d):
            if m.divisor_override is not None:
                raise _unsupported(node, target, "divisor_override")
            return self.pool(node, "avg", target, m.kernel_size, m.stride, m.padding, m.ceil_mode)
        if isinstance(m, nn.MaxPool2d):
            if m.return_indices:
                raise _unsupported(node, target, "return_indices")
            return self.pool(node, "max", target, m.kernel_size, m.stride, m.padding, m.ceil_mode, m.dilation)
        if isinstance(m, nn.Linear):
            return self.linear(node, m)
        raise _unsupported(node, target)

    def _adaptive(self, node: fx.Node, size: Any, target: str) -> None:
        """Global average pool for output 1x1; a no-op when the input already has the output size."""
        if size in (1, (1, 1), [1, 1]):
            return self.gap(node, target)
        v = self.val(node.args[0], node, target)
        h, w, _ = self.b.shape(v.tensor)
        size = (size, size) if isinstance(size, int) else tuple(size)
        if not v.flat and size == (h, w):
            return self.emit(node, v.tensor)
        raise _unsupported(node, target, f"output size {size} from {h}x{w} (only 1x1, or the input size)")

    def function(self, node: fx.Node, name: str) -> None:
        if node.target in _ADD or (node.op == "call_method" and name in ("add", "add_")):
            return self.add(node, name)
        if name in ("relu", "relu_"):
            return self.activation(node, "relu", name)
        if name in ("relu6",):
            return self.activation(node, "relu6", name)
        if name in ("hardtanh", "hardtanh_", "clamp", "clip"):
            a = call_args(node, ("input", "min_val", "max_val"), {"min_val": -1.0, "max_val": 1.0})
            lo = a.get("min", a["min_val"])
            hi = a.get("max", a["max_val"])
            if (lo, hi) == (0, 6):
                return self.activation(node, "relu6", name)
            raise _unsupported(node, name, f"clamp range ({lo}, {hi})")
        if passes_through(node):
            v = self.val(node.args[0], node, name)
            return self.emit(node, v.tensor, v.flat)
        if name in _FLATTEN_NAMES:
            return self.flatten(node, name)
        if name == "adaptive_avg_pool2d":
            a = call_args(node, ("input", "output_size"), {})
            return self._adaptive(node, a["output_size"], name)
        if name == "mean":
            a = call_args(node, ("input", "dim", "keepdim"), {"keepdim": False})
            dims = a.get("dim")
            dims = tuple(d % 4 for d in (dims if isinstance(dims, (tuple, list)) else [dims]))
            if sorted(dims) != [2, 3]:
                raise _unsupported(node, name, f"mean over dims {a.get('dim')} (only H and W)")
            return self.gap(node, name, flat=not a["keepdim"])
        if name in ("avg_pool2d", "max_pool2d"):
            names = ("input", "kernel_size", "stride", "padding")
            names += ("ceil_mode", "count_include_pad", "divisor_override") if name == "avg_pool2d" else (
                "dilation", "ceil_mode", "return_indices")
            a = call_args(node, names, {"stride": None, "padding": 0, "ceil_mode": False, "dilation": 1,
                                    "return_indices": False, "divisor_override": None})
            if a.get("return_indices") or a.get("divisor_override") is not None:
                raise _unsupported(node, name, "return_indices / divisor_override")
            kind = "avg" if name == "avg_pool2d" else "max"
            return self.pool(node, kind, name, a["kernel_size"], a["stride"], a["padding"], a["ceil_mode"],
                             a.get("dilation", 1))
        target = self.graph.nodes[node.name].target if node.name in self.graph.nodes else name
        raise _unsupported(node, target)


def lower(graph: Graph, *, name: str | None = None) -> IR:
    """The MCU IR of a captured model, float weights attached (`FloatParams`); see the module docstring."""
    return _Lowering(graph, name or graph.name).run()


def run_float(ir: IR, x: torch.Tensor | np.ndarray) -> dict[int, torch.Tensor]:
    """Evaluate a lowered IR in float64 on a batch ``(N, C, H, W)``; returns every tensor (NCHW).

    fc outputs are ``(N, K, 1, 1)``. Needs `FloatParams` on conv/dw/pw/fc layers.
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    if x.dim() == 3:
        x = x[None]
    vals: dict[int, torch.Tensor] = {ir.input: x}
    for layer in ir.layers:
        a = vals[layer.inputs[0]]
        wp = layer.weights
        if layer.kind in ("conv", "dw", "pw", "fc") and wp is None:
            raise ValueError(f"run_float: layer {layer.name} has no float weights")
        if layer.kind == "fc":
            flat = a.permute(0, 2, 3, 1).reshape(a.shape[0], -1)
            y = (flat @ torch.from_numpy(wp.weight) + torch.from_numpy(wp.bias))[:, :, None, None]
        elif layer.kind in ("conv", "pw", "dw"):
            w = torch.from_numpy(wp.weight)
            if layer.kind == "pw":
                wt, groups = w.T[:, :, None, None], 1
            elif layer.kind == "dw":
                wt, groups = w.permute(2, 0, 1)[:, None], layer.cin
            else:
                wt, groups = w.permute(3, 2, 0, 1), 1
            y = F.conv2d(a, wt, torch.from_numpy(wp.bias), stride=layer.s, padding=layer.p, groups=groups)
        elif layer.kind == "add":
            y = a + vals[layer.inputs[1]]
        elif layer.pool == "avg":
            y = F.avg_pool2d(a, (layer.k, layer.kw), layer.s)
        else:
            y = F.max_pool2d(a, (layer.k, layer.kw), layer.s, layer.p)
        if layer.act == "relu":
            y = y.clamp_min(0.0)
        elif layer.act == "relu6":
            y = y.clamp(0.0, 6.0)
        vals[layer.output] = y
    return vals
