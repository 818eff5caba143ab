"""Precompiled operator calls of an fx GraphModule, over a flat environment list.

Both executors (CPU lanes, CUDA streams) run the same operators outside `fx.Interpreter`: every
node becomes one closure ``call(env) -> value`` with its argument slots resolved once, so the
per-operator host cost is one Python call plus the op itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import fx
from torch.fx.node import map_arg

from dnninfer.graph.core import COMPUTE_OPS

__all__ = ["OpTable"]

Env = list[Any]


def _has_node(a: Any) -> bool:
    found = False

    def mark(n: fx.Node) -> fx.Node:
        nonlocal found
        found = True
        return n

    map_arg(a, mark)
    return found


def _method(name: str) -> Callable[..., Any]:
    def call(obj: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(obj, name)(*args, **kwargs)

    return call


class OpTable:
    """Slots, constants and one bound call per compute node of ``gm``."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        nodes = list(gm.graph.nodes)
        self.slot: dict[str, int] = {n.name: i for i, n in enumerate(nodes)}
        self.size = len(nodes)
        self.input_slots = [self.slot[n.name] for n in nodes if n.op == "placeholder"]
        self.consts = [(self.slot[n.name], _fetch_attr(gm, str(n.target))) for n in nodes if n.op == "get_attr"]
        self.calls: dict[str, Callable[[Env], Any]] = {}
        out_node = None
        for n in nodes:
            if n.op in COMPUTE_OPS:
                self.calls[n.name] = self._bind(n)
            elif n.op == "output":
                out_node = n
        if out_node is None:
            raise ValueError("graph has no output node")
        self.output_names = [a.name for a in out_node.all_input_nodes]
        out_arg = out_node.args[0]
        slot = self.slot
        self._output: Callable[[Env], Any] = lambda env: map_arg(out_arg, lambda a: env[slot[a.name]])

    def _bind(self, n: fx.Node) -> Callable[[Env], Any]:
        if n.op == "call_module":
            fn: Callable[..., Any] = self.gm.get_submodule(str(n.target))
        elif n.op == "call_method":
            fn = _method(str(n.target))
        else:
            fn = n.target  # type: ignore[assignment]
        args, kwargs, slot = n.args, dict(n.kwargs), self.slot
        if any(_has_node(v) for v in kwargs.values()) or any(
            not isinstance(a, fx.Node) and _has_node(a) for a in args
        ):  # nested node arguments (torch.cat([...])): resolve with map_arg each call
            def nested(env: Env) -> Any:
                a = map_arg(args, lambda x: env[slot[x.name]])
                k = map_arg(kwargs, lambda x: env[slot[x.name]])
                return fn(*a, **k)

            return nested
        spec = [(isinstance(a, fx.Node), slot[a.name] if isinstance(a, fx.Node) else a) for a in args]
        if all(is_node for is_node, _ in spec):
            idx = tuple(i for _, i in spec)
            if len(idx) == 1:
                (i0,) = idx
                return lambda env: fn(env[i0], **kwargs)
            return lambda env: fn(*[env[i] for i in idx], **kwargs)
        return lambda env: fn(*[env[x] if is_node else x for is_node, x in spec], **kwargs)

    def new_env(self, inputs: Sequence[Any]) -> Env:
        if len(inputs) != len(self.input_slots):
            raise ValueError(f"expected {len(self.input_slots)} inputs, got {len(inputs)}")
        env: Env = [None] * self.size
        for i, x in zip(self.input_slots, inputs, strict=True):
            env[i] = x
        for i, v in self.consts:
            env[i] = v
        return env

    def output(self, env: Env) -> Any:
        return self._output(env)


def _fetch_attr(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj
