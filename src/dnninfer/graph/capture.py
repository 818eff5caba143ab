"""Capture a model once: trace it, make it functional, run it on example inputs, annotate every node.

torch.fx symbolic tracing first (it keeps nn.Module boundaries, so nodes read like the model);
torch.export where tracing fails on Python control flow (shapes are then specialised to the
example inputs, which is what a partitioner needs anyway). Either graph is then functionalised
(graph/inplace.py): a partition runs it in pieces, so no node may write into a value another
node reads. A write the rewrite cannot make safe falls back to torch.export's functional IR.
Failures caused by the user's model are one-line `UserError`s naming the model and the node.
"""

from __future__ import annotations

import contextlib
import io
import logging
import numbers
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import fx, nn
from torch.utils import _pytree as pytree

from dnninfer.errors import UserError
from dnninfer.graph.core import COMPUTE_OPS, Graph, NodeInfo
from dnninfer.graph.flops import ESTIMATE, OpCall, Rule, UnknownOpWarning, find_rule, op_name
from dnninfer.graph.inplace import META_WRITES, MutationHazard, functionalize

META_KEY = "dnninfer"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0].strip() if text else ''}"[:200]


def _export(model: nn.Module, example_inputs: Sequence[Any]) -> torch.export.ExportedProgram:
    with _quiet_torch_logs():
        return torch.export.export(model, tuple(example_inputs), strict=False)


def _unlift(program: torch.export.ExportedProgram, *, functional: bool = False) -> fx.GraphModule:
    """The exported program as a GraphModule; `functional` runs torch's functionalisation
    (``run_decompositions({})``: views replayed, no decompositions), for writes into views."""
    with _quiet_torch_logs():
        if functional:
            program = program.run_decompositions({})
        gm = program.module()
    _drop_guards(gm)
    return gm


def trace(model: nn.Module, example_inputs: Sequence[Any], *, name: str | None = None) -> tuple[fx.GraphModule, str]:
    """Return (GraphModule, method). Raises a one-line UserError naming both failures if neither works."""
    try:
        return fx.symbolic_trace(model), "fx"
    except Exception as fx_err:  # any tracing failure means "try export"
        try:
            program = _export(model, example_inputs)
        except Exception as ex_err:
            raise UserError(
                f"model {name or type(model).__name__}: cannot be captured: torch.fx symbolic_trace failed "
                f"({_first_line(fx_err)}) and torch.export failed ({_first_line(ex_err)})"
            ) from None
        return _unlift(program), "export"


@contextlib.contextmanager
def _quiet_torch_logs() -> Iterator[None]:
    """torch.export logs, warns and prints its failed guesses; a failed capture must stay one line."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), warnings.catch_warnings():
            warnings.simplefilter("ignore")
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


def _tensors(value: Any) -> list[torch.Tensor]:
    return [v for v in pytree.tree_leaves(value) if isinstance(v, torch.Tensor)]


def _storage(t: torch.Tensor) -> int | None:
    try:
        return t.untyped_storage().data_ptr() if t.numel() else None
    except (RuntimeError, NotImplementedError):  # tensors without storage (sparse, functional wrappers)
        return None


def _module_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


class _Annotator(fx.Interpreter):
    """Runs the graph on real inputs and writes a NodeInfo into each node's meta (ShapeProp mould).

    It also proves the graph functional on those inputs: a node that still bumps an input's
    version counter, or a rewritten write whose target is aliased by a value read later, is a
    `MutationHazard`.
    """

    def __init__(self, gm: fx.GraphModule, rules: Mapping[Any, Rule] | None, model: str) -> None:
        super().__init__(gm)
        self.extra_traceback = False  # fx would append "While executing ..." lines to our one-liner
        self.rules = rules
        self.model = model
        self.pos = {n: i for i, n in enumerate(gm.graph.nodes)}
        self.by_name = {n.name: n for n in gm.graph.nodes}
        self.estimated: dict[str, int] = {}  # op target -> nodes counted with ESTIMATE

    def run_node(self, n: fx.Node) -> Any:
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        # Inference-mode tensors keep no version counter: nothing to compare for them.
        versions = [(a, t, t._version) for a in n.all_input_nodes for t in _tensors(self.env.get(a))
                    if not t.is_inference()] if n.op in COMPUTE_OPS else []
        try:
            out = getattr(self, n.op)(n.target, args, kwargs)
        except UserError:
            raise
        except Exception as e:  # the model itself failed on these inputs: say where, in one line
            raise UserError(
                f"model {self.model}: failed at node {n.name!r} ({self._label(n)}): {_first_line(e)}"
            ) from None
        for a, t, v in versions:
            if t._version != v:
                self._check_write(n, a, t)
        written = self.by_name.get(n.meta.get(META_WRITES, ""))
        if written is not None and written in self.env:
            for t in _tensors(self.env[written]):
                self._check_aliases(n, written, t)
        n.meta[META_KEY] = self._info(n, args, kwargs, out)
        return out

    def _label(self, n: fx.Node) -> str:
        if n.op == "call_module":
            return f"{type(self.fetch_attr(n.target)).__name__} {n.target}"
        return op_name(n.op, n.target) if n.op in COMPUTE_OPS else n.op

    def _check_write(self, n: fx.Node, a: fx.Node, t: torch.Tensor) -> None:
        """A write into an input is safe only into a private value: computed, read by `n` alone."""
        if a.op in ("placeholder", "get_attr") or set(a.users) != {n}:
            raise MutationHazard(
                f"model {self.model}: node {n.name!r} ({self._label(n)}) writes in place into "
                f"{a.name!r}, which other nodes read"
            )
        self._check_aliases(n, a, t)

    def _check_aliases(self, n: fx.Node, written: fx.Node, t: torch.Tensor) -> None:
        """Nodes after `n` must not read another view of the written tensor (they saw the write)."""
        ptr = _storage(t)
        if ptr is None:
            return
        for b, value in self.env.items():
            if b is written or not any(self.pos[u] > self.pos[n] for u in b.users):
                continue
            if any(_storage(s) == ptr for s in _tensors(value)):
                raise MutationHazard(
                    f"model {self.model}: node {n.name!r} ({self._label(n)}) writes into "
                    f"{written.name!r}, a view of {b.name!r} that later nodes read"
                )

    def _info(self, n: fx.Node, args: tuple, kwargs: dict, out: Any) -> NodeInfo:
        shape, dtype, out_bytes = _tensor_meta(out)
        module = self.fetch_attr(n.target) if n.op == "call_module" else None
        param_bytes = _module_bytes(module) if module is not None else 0
        param_bytes += sum(
            _tensor_meta(self.env[a])[2] for a in n.all_input_nodes if a.op == "get_attr"
        )
        estimated = False
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
                rule, estimated = ESTIMATE, True
                self.estimated[target] = self.estimated.get(target, 0) + 1
            kind = rule.kind
            flops = self._flops(n, target, rule, OpCall(module, args, kwargs, out))
        return NodeInfo(
            name=n.name, op=n.op, target=target, kind=kind,
            inputs=tuple(a.name for a in n.all_input_nodes),
            shape=shape, dtype=dtype, out_bytes=out_bytes, param_bytes=param_bytes, flops=flops,
            flops_estimated=estimated,
        )

    def _flops(self, n: fx.Node, target: str, rule: Rule, call: OpCall) -> int:
        """A user's rule that fails or returns nonsense is the user's error, in one line."""
        if self.rules is None or not any(rule is r for r in self.rules.values()):
            return int(rule.flops(call))  # the built-in table
        try:
            flops = rule.flops(call)
        except Exception as e:  # user code: every failure of it is a user error
            raise UserError(f"model {self.model}: node {n.name!r} ({target}): FLOPs rule raised "
                            f"{_first_line(e)}") from None
        if isinstance(flops, bool) or not isinstance(flops, numbers.Real) or not 0 <= flops < float("inf"):
            raise UserError(f"model {self.model}: node {n.name!r} ({target}): FLOPs rule returned "
                            f"{flops!r:.80}, expected a finite number >= 0")
        return int(flops)


def _candidates(
    model: nn.Module, example_inputs: Sequence[Any], name: str
) -> Iterator[tuple[Callable[[], fx.GraphModule], str]]:
    """Ways to capture `model`, best first: fx, torch.export, torch.export functionalised.

    Each is tried only if the one before could not be made functional (a `MutationHazard`).
    """
    program: list[torch.export.ExportedProgram] = []

    def exported() -> torch.export.ExportedProgram:
        if not program:
            program.append(_export(model, example_inputs))
        return program[0]

    gm, method = trace(model, example_inputs, name=name)
    yield (lambda: gm), method
    if method == "fx":
        yield (lambda: _unlift(exported())), "export"
    yield (lambda: _unlift(exported(), functional=True)), "export"


def capture(
    model: nn.Module,
    example_inputs: Sequence[Any] | torch.Tensor,
    *,
    flops_rules: Mapping[Any, Rule] | None = None,
    name: str | None = None,
) -> Graph:
    """Trace `model`, make it functional and annotate every node with shape, dtype, bytes,
    parameter bytes and FLOPs.

    `flops_rules` maps a module type, function or name (op name or module class name) to a
    `Rule(kind, flops_fn)` and takes precedence over the built-in table (graph/flops.py). An op in
    neither is counted with an estimate and named in one `UnknownOpWarning`, not an error.
    """
    if not isinstance(model, nn.Module):
        raise UserError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    example_inputs = tuple(example_inputs)
    name = name or type(model).__name__
    model.eval()  # inference graphs: BN uses running stats, dropout is off (the graph shares modules)
    param_count = sum(p.numel() for p in model.parameters())
    hazard: MutationHazard | None = None
    for build, method in _candidates(model, example_inputs, name):
        try:
            gm = build()
        except Exception as e:  # export cannot take the model: the fx hazard is the user's answer
            raise UserError(f"{hazard}; torch.export fallback failed ({_first_line(e)})") from None
        flat_inputs = pytree.tree_leaves(example_inputs) if method == "export" else list(example_inputs)
        try:
            return annotate(gm, flat_inputs, flops_rules=flops_rules, method=method, name=name,
                            param_count=param_count)
        except MutationHazard as e:
            hazard = e
    raise UserError(f"{hazard}; even torch.export's functional graph still writes in place")


def annotate(
    gm: fx.GraphModule,
    example_inputs: Sequence[Any],
    *,
    flops_rules: Mapping[Any, Rule] | None = None,
    method: str = "fx",
    name: str = "model",
    param_count: int | None = None,
) -> Graph:
    """Functionalise and annotate an existing GraphModule without re-tracing it, so node names
    survive.

    For graph rewrites (partition/tiles.py builds a spatially tiled copy of a model): the
    rewritten module keeps the original node names, so plans can refer to them. The graph is run
    on clones of `example_inputs`, so a model that writes into its inputs cannot change them.
    """
    if method == "fx":  # exported modules refuse eval(); they are already inference graphs
        gm.eval()
    functionalize(gm)
    fresh = [x.clone() if isinstance(x, torch.Tensor) else x for x in example_inputs]
    annotator = _Annotator(gm, flops_rules, name)
    with torch.no_grad():
        annotator.run(*fresh)
    if annotator.estimated:
        ops = ", ".join(f"{t} ({c} node{'s' if c > 1 else ''})" for t, c in annotator.estimated.items())
        warnings.warn(f"model {name}: no FLOPs rule for {ops}; estimated at 1 FLOP per output element "
                      "(pass flops_rules= to capture() or --flops-rules FILE for exact counts)",
                      UnknownOpWarning, stacklevel=2)
    nodes = {n.name: n.meta[META_KEY] for n in gm.graph.nodes}
    if param_count is None:
        param_count = sum(p.numel() for p in gm.parameters())
    return Graph(gm, nodes, list(example_inputs), method=method, param_count=param_count, name=name)
