"""Capture a model once: trace it, run it on example inputs, annotate every node.

torch.fx symbolic tracing first (it keeps nn.Module boundaries, so nodes read like the model);
torch.export where tracing fails on Python control flow (shapes are then specialised to the
example inputs, which is what a partitioner needs anyway).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import fx, nn
from torch.utils import _pytree as pytree

from dnninfer.errors import UserError
from dnninfer.graph.core import Graph, NodeInfo
from dnninfer.graph.flops import OpCall, Rule, find_rule, op_name

META_KEY = "dnninfer"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:200]


def trace(model: nn.Module, example_inputs: Sequence[Any]) -> tuple[fx.GraphModule, str]:
    """Return (GraphModule, method). Raises UserError naming both failures if neither works."""
    try:
        return fx.symbolic_trace(model), "fx"
    except Exception as fx_err:  # any tracing failure means "try export"
        try:
            with _quiet_torch_logs():
                gm = torch.export.export(model, tuple(example_inputs), strict=False).module()
        except Exception as ex_err:
            raise UserError(
                f"model {type(model).__name__}: cannot be captured: torch.fx symbolic_trace failed "
                f"({_first_line(fx_err)}) and torch.export failed ({_first_line(ex_err)})"
            ) from None
        _drop_guards(gm)
        return gm, "export"


@contextlib.contextmanager
def _quiet_torch_logs() -> Iterator[None]:
    """torch.export logs and prints its failed guesses; a failed capture must stay one line."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        logger.setLevel(level)


def _drop_guards(gm: fx.GraphModule) -> None:
    """torch.export's unlifted module checks input shapes in a `_guards_fn` node; it computes
    nothing and returns None, so it must not become a stage's work."""
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and str(node.target).startswith("_guards_fn") and not node.users:
            gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.recompile()


def _tensor_meta(value: Any) -> tuple[tuple[int, ...] | None, str | None, int]:
    leaves = [v for v in pytree.tree_leaves(value) if isinstance(v, torch.Tensor)]
    if not leaves:
        return None, None, 0
    first = leaves[0]
    nbytes = sum(t.numel() * t.element_size() for t in leaves)
    return tuple(first.shape), str(first.dtype).removeprefix("torch."), nbytes


def _module_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


class _Annotator(fx.Interpreter):
    """Runs the graph on real inputs and writes a NodeInfo into each node's meta (ShapeProp mould)."""

    def __init__(self, gm: fx.GraphModule, rules: Mapping[Any, Rule] | None) -> None:
        super().__init__(gm)
        self.rules = rules

    def run_node(self, n: fx.Node) -> Any:
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        try:
            out = getattr(self, n.op)(n.target, args, kwargs)
        except Exception as e:  # the model itself failed on these inputs: say where
            raise UserError(f"model failed at node {n.name!r} ({n.format_node()}): {_first_line(e)}") from None
        n.meta[META_KEY] = self._info(n, args, kwargs, out)
        return out

    def _info(self, n: fx.Node, args: tuple, kwargs: dict, out: Any) -> NodeInfo:
        shape, dtype, out_bytes = _tensor_meta(out)
        module = self.fetch_attr(n.target) if n.op == "call_module" else None
        param_bytes = _module_bytes(module) if module is not None else 0
        param_bytes += sum(
            _tensor_meta(self.env[a])[2] for a in n.all_input_nodes if a.op == "get_attr"
        )
        if n.op == "placeholder":
            kind, flops, target = "input", 0, str(n.target)
        elif n.op == "output":
            kind, flops, target = "output", 0, "output"
        elif n.op == "get_attr":
            kind, flops, target, param_bytes = "param", 0, str(n.target), out_bytes
        else:
            target = type(module).__name__ if module is not None else op_name(n.op, n.target)
            rule = find_rule(n.op, n.target, module, self.rules)
            if rule is None:
                raise UserError(
                    f"node {n.name!r}: no FLOPs rule for op {target!r}; "
                    f"pass flops_rules={{{target!r}: Rule(kind, fn)}} to capture()"
                )
            kind = rule.kind
            flops = int(rule.flops(OpCall(module, args, kwargs, out)))
        return NodeInfo(
            name=n.name, op=n.op, target=target, kind=kind,
            inputs=tuple(a.name for a in n.all_input_nodes),
            shape=shape, dtype=dtype, out_bytes=out_bytes, param_bytes=param_bytes, flops=flops,
        )


def capture(
    model: nn.Module,
    example_inputs: Sequence[Any] | torch.Tensor,
    *,
    flops_rules: Mapping[Any, Rule] | None = None,
    name: str | None = None,
) -> Graph:
    """Trace `model` and annotate every node with shape, dtype, bytes, parameter bytes and FLOPs.

    `flops_rules` maps a module type, function or op name to a `Rule(kind, flops_fn)` and takes
    precedence over the built-in table (graph/flops.py).
    """
    if not isinstance(model, nn.Module):
        raise UserError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    example_inputs = tuple(example_inputs)
    model.eval()  # inference graphs: BN uses running stats, dropout is off (the graph shares modules)
    gm, method = trace(model, example_inputs)
    flat_inputs = pytree.tree_leaves(example_inputs) if method == "export" else list(example_inputs)
    return annotate(gm, flat_inputs, flops_rules=flops_rules, method=method,
                    name=name or type(model).__name__, param_count=sum(p.numel() for p in model.parameters()))


def annotate(
    gm: fx.GraphModule,
    example_inputs: Sequence[Any],
    *,
    flops_rules: Mapping[Any, Rule] | None = None,
    method: str = "fx",
    name: str = "model",
    param_count: int | None = None,
) -> Graph:
    """Annotate an existing GraphModule without re-tracing it, so node names survive.

    For graph rewrites (partition/tiles.py builds a spatially tiled copy of a model): the
    rewritten module keeps the original node names, so plans can refer to them.
    """
    if method == "fx":  # exported modules refuse eval(); they are already inference graphs
        gm.eval()
    with torch.no_grad():
        _Annotator(gm, flops_rules).run(*example_inputs)
    nodes = {n.name: n.meta[META_KEY] for n in gm.graph.nodes}
    if param_count is None:
        param_count = sum(p.numel() for p in gm.parameters())
    return Graph(gm, nodes, list(example_inputs), method=method, param_count=param_count, name=name)
