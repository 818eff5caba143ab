"""In-place operators: the one table of what writes into its input, and the pass that removes them.

Why: every partition runs a graph in pieces (`Graph.split` stages, Opara lanes, row tiles). An op
that writes into a value another op reads makes the result depend on the order the pieces run in
(issue 14: ``y2 = relu_(y)`` in stage 0 changed the ``y`` that stage 1's ``c2`` read). Capture
therefore rewrites every in-place op into its out-of-place twin under the *same node name*, and
points the nodes after it that read the written value at the rewritten node (the value after the
write). The graph is then functional by construction: no node mutates a value another node reads.

What a static rewrite cannot see (the written tensor is also a view that another node reads later)
is caught when the graph is annotated (`MutationHazard`); capture then falls back to torch.export
and its functionalisation, which replays views.

`mutated_input` / `is_inplace` are the canonical in-place predicate for any fx node (fx or aten).
"""

from __future__ import annotations

import copy
import inspect
import operator
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from dnninfer.errors import UserError

#: fx meta keys set on a rewritten node: what it was, and which value it used to write into.
META_ORIGINAL = "dnninfer_inplace"
META_WRITES = "dnninfer_inplace_of"

#: Python's augmented-assignment operators and their out-of-place twins.
INPLACE_OPERATORS: Mapping[Callable[..., Any], Callable[..., Any]] = {
    operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
    operator.imatmul: operator.matmul, operator.itruediv: operator.truediv,
    operator.ifloordiv: operator.floordiv, operator.imod: operator.mod, operator.ipow: operator.pow,
    operator.iand: operator.and_, operator.ior: operator.or_, operator.ixor: operator.xor,
    operator.ilshift: operator.lshift, operator.irshift: operator.rshift,
}

#: ``xxx_`` methods that change no tensor data (flags and bookkeeping only).
NOT_MUTATING = frozenset({"requires_grad_", "share_memory_", "retain_grad_", "record_stream_"})

#: ``xxx_`` methods whose ``xxx`` exists but means something else: rewritten as clone + ``xxx_``.
NO_TWIN = frozenset({"bernoulli_", "resize_", "resize_as_"})

#: Where a function-valued ``xxx_`` target may live; its twin ``xxx`` is looked up in the same place.
_NAMESPACES: tuple[Any, ...] = (torch, F, torch.Tensor, torch.special, torch.nn.init, torch._C._nn)


class MutationHazard(UserError):
    """A write the rewrite cannot make safe (e.g. into a view other nodes read): capture falls back."""


def _is_inplace_name(name: str) -> bool:
    return name.endswith("_") and not name.endswith("__") and not name.startswith("_") \
        and name not in NOT_MUTATING


def _first_input(node: fx.Node) -> fx.Node | None:
    if node.args and isinstance(node.args[0], fx.Node):
        return node.args[0]
    nodes = node.all_input_nodes
    return nodes[0] if nodes else None


def _submodule(node: fx.Node) -> nn.Module | None:
    owner = node.graph.owning_module
    if owner is None:
        return None
    try:
        return owner.get_submodule(str(node.target))
    except AttributeError:
        return None


def _without_inplace(node: fx.Node) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """(args, kwargs) with ``inplace=False`` when a Python function is called with ``inplace=True``
    (keyword, or positional where its signature says so); None otherwise."""
    if node.kwargs.get("inplace") is True:
        return node.args, {**node.kwargs, "inplace": False}
    if not any(a is True for a in node.args[1:]):
        return None
    try:
        bound = inspect.signature(node.target).bind(*node.args, **node.kwargs)
    except (TypeError, ValueError):  # builtins without a signature, or a call that does not bind
        return None
    if bound.arguments.get("inplace") is not True:
        return None
    bound.arguments["inplace"] = False
    return tuple(bound.args), dict(bound.kwargs)


def _aten_written(node: fx.Node, op: torch._ops.OpOverload) -> fx.Node | None:
    """The argument an aten op's schema marks as written (``Tensor(a!)``), if it is a graph value."""
    if not op._schema.is_mutable:
        return None
    for i, arg in enumerate(op._schema.arguments):
        if arg.alias_info is not None and arg.alias_info.is_write:
            value = node.args[i] if i < len(node.args) and not arg.kwarg_only else node.kwargs.get(arg.name)
            return value if isinstance(value, fx.Node) else None
    return None


def mutated_input(node: fx.Node, module: nn.Module | None = None) -> fx.Node | None:
    """The graph value `node` writes into, or None if it is functional.

    Covers modules with ``inplace=True``, functions called with ``inplace=True``, ``out=`` graph
    values, ``xxx_`` methods and functions (``relu_``, ``add_``, ``torch.relu_``...), the augmented
    operators (``operator.iadd``...) and aten ops whose schema writes an argument (``aten.add_``).
    """
    out = node.kwargs.get("out")
    if isinstance(out, fx.Node) and node.op in ("call_function", "call_method"):
        return out
    if node.op == "call_module":
        module = module if module is not None else _submodule(node)
        return _first_input(node) if getattr(module, "inplace", False) is True else None
    if node.op == "call_method":
        name = str(node.target)
        is_tensor_method = callable(getattr(torch.Tensor, name, None))
        return _first_input(node) if _is_inplace_name(name) and is_tensor_method else None
    if node.op != "call_function":
        return None
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return _aten_written(node, target)
    if target in INPLACE_OPERATORS:
        return _first_input(node)
    if getattr(target, "__module__", None) in ("operator", "_operator"):
        return None  # operator.and_ / or_ are not in-place
    if _without_inplace(node) is not None or _torch_inplace_function(target):
        return _first_input(node)
    return None


def _torch_inplace_function(target: Any) -> bool:
    """``torch.relu_``, ``F.leaky_relu_``, ``torch.nn.init.zeros_``...: torch's own ``xxx_`` functions
    (a user's function that merely ends in ``_`` is not assumed to write)."""
    name = getattr(target, "__name__", "")
    return _is_inplace_name(name) and any(getattr(ns, name, None) is target for ns in _NAMESPACES)


def is_inplace(node: fx.Node, module: nn.Module | None = None) -> bool:
    """Whether `node` writes into one of its inputs (see `mutated_input`)."""
    return mutated_input(node, module) is not None


# -- the rewrite -------------------------------------------------------------------------------
def _function_twin(target: Any) -> Any:
    """``torch.relu_`` -> ``torch.relu``; None if the twin is missing (or means something else)."""
    name = getattr(target, "__name__", "")
    if not _is_inplace_name(name) or name in NO_TWIN:
        return None
    for ns in _NAMESPACES:
        if getattr(ns, name, None) is target:
            twin = getattr(ns, name[:-1], None)
            return twin if callable(twin) else None
    return None


def _aten_twin(op: torch._ops.OpOverload) -> Any:
    packet = op._overloadpacket.__name__
    if not packet.endswith("_") or packet in NO_TWIN:
        return None
    ns = getattr(torch.ops, op.namespace)
    twin_packet = getattr(ns, packet[:-1], None)
    twin = getattr(twin_packet, op._overloadname, None) if twin_packet is not None else None
    if twin is None or twin._schema.is_mutable:
        return None
    return twin


def _install(gm: fx.GraphModule, node: fx.Node, module: nn.Module) -> None:
    """Point `node` at a copy of `module` with ``inplace=False``; the user's module is untouched.

    fx builds fresh ``nn.Module`` containers along each submodule path, so the copy replaces the
    leaf under the same path; if a container is a user object, the copy gets its own name.
    """
    functional = copy.copy(module)
    functional.inplace = False
    *prefix, leaf = str(node.target).split(".")
    parent: nn.Module = gm
    for item in prefix:
        parent = getattr(parent, item)
        if type(parent) is not nn.Module:  # a user object: do not edit it
            name = str(node.target).replace(".", "_") + "_functional"
            while hasattr(gm, name):
                name += "_"
            gm.add_submodule(name, functional)
            node.target = name
            return
    setattr(parent, leaf, functional)


def _clone_into(graph: fx.Graph, node: fx.Node, written: fx.Node) -> None:
    """No out-of-place twin: give the op a private copy to write into (``clone`` + the same op)."""
    with graph.inserting_before(node):
        if isinstance(node.target, torch._ops.OpOverload):
            private = graph.call_function(torch.ops.aten.clone.default, (written,))
        else:
            private = graph.call_method("clone", (written,))
    node.args = fx.node.map_arg(node.args, lambda n: private if n is written else n)
    node.kwargs = fx.node.map_arg(node.kwargs, lambda n: private if n is written else n)


def _rewrite(gm: fx.GraphModule, node: fx.Node, module: nn.Module | None, written: fx.Node) -> None:
    """Make `node` compute the written value out of place; its name and result stay the same."""
    if isinstance(node.kwargs.get("out"), fx.Node):
        node.kwargs = {k: v for k, v in node.kwargs.items() if k != "out"}
        return
    if node.op == "call_module":
        _install(gm, node, module)
        return
    if node.op == "call_method":
        name = str(node.target)
        twin = getattr(torch.Tensor, name[:-1], None)
        if name not in NO_TWIN and callable(twin):
            node.target = name[:-1]
        else:
            _clone_into(gm.graph, node, written)
        return
    target = node.target
    if target in INPLACE_OPERATORS:
        node.target = INPLACE_OPERATORS[target]
        return
    call = _without_inplace(node)
    if call is not None:
        node.args, node.kwargs = call
        return
    twin = _aten_twin(target) if isinstance(target, torch._ops.OpOverload) else _function_twin(target)
    if twin is not None:
        node.target = twin
    else:
        _clone_into(gm.graph, node, written)


def _describe(node: fx.Node) -> str:
    if node.op == "call_module":
        return f"{node.target} (inplace=True)"
    return str(node.target) if node.op == "call_method" else getattr(node.target, "__name__", str(node.target))


def functionalize(gm: fx.GraphModule) -> dict[str, str]:
    """Rewrite every in-place op of `gm` out of place, in place; returns {node name: what it was}.

    Nodes keep their names (planners key on them), shapes and FLOPs; readers of a written value
    that come after the write read the rewritten node instead. Idempotent.
    """
    graph = gm.graph
    # Find every write first: a module shared by two call sites is replaced at the first rewrite.
    writes = []
    for node in graph.nodes:
        module = _submodule(node) if node.op == "call_module" else None
        if is_inplace(node, module):
            writes.append((node, module))
    done: dict[str, str] = {}
    for node, module in writes:
        written = mutated_input(node, module)  # now, after earlier writes re-pointed its arguments
        assert written is not None
        before = _describe(node)
        _rewrite(gm, node, module, written)
        later: set[fx.Node] = set()
        seen = False
        for n in graph.nodes:
            if seen:
                later.add(n)
            seen = seen or n is node
        written.replace_all_uses_with(node, delete_user_cb=later.__contains__, propagate_meta=False)
        node.meta[META_ORIGINAL] = before
        node.meta[META_WRITES] = written.name
        done[node.name] = before
    if done:
        graph.lint()
        gm.recompile()
    return done


def shared_writes(gm: fx.GraphModule) -> list[str]:
    """Nodes that write into a value another node also reads, or into an input or a weight.

    Empty for every captured graph: the invariant `functionalize` establishes. A write into a
    private value (read by the writer alone, e.g. the ``clone`` that `_clone_into` inserts) is fine.
    """
    bad = []
    for node in gm.graph.nodes:
        written = mutated_input(node)
        if written is not None and (written.op in ("placeholder", "get_attr") or set(written.users) != {node}):
            bad.append(node.name)
    return bad
