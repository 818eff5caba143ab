"""In-place ops are functionalised at capture: any split of a model full of them equals the model.

Issue 14: a stage that ran ``relu_(y)`` changed the ``y`` another stage read. Every reference run
here uses a fresh clone of the inputs, because the *model* may write into its own input.
"""

from __future__ import annotations

import functools
import importlib
import operator

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from dnninfer.graph import Graph, capture
from dnninfer.graph.capture import annotate
from dnninfer.graph.inplace import MutationHazard, functionalize, is_inplace, mutated_input, shared_writes
from dnninfer.runtime import run_inprocess

capture_module = importlib.import_module("dnninfer.graph.capture")  # the package re-exports capture()

SETTINGS = settings(max_examples=8, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class IssueNet(nn.Module):
    """The issue's model: c2 reads y before the in-place ReLU writes it."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.c3 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu_ = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c1(x)
        a = self.c2(y)
        y2 = self.relu_(y)
        b = self.c3(y2)
        out = a + b
        out += 1
        return out


class ResidualInplace(nn.Module):
    """Residual blocks with inplace ReLU, ``+=`` and an explicit ``operator.iadd``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.convs = nn.ModuleList(nn.Conv2d(6, 6, 3, padding=1) for _ in range(4))
        self.relu = nn.ReLU(inplace=True)  # one module, several call sites

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.stem(x))
        for i in range(0, 4, 2):
            identity = x
            side = self.convs[i](x)  # reads the block input before the write below
            out = self.relu(x)  # writes the block input: identity sees it (eager semantics)
            out = self.convs[i + 1](out)
            out += identity
            out = operator.iadd(out, side * 0.5)
            x = self.relu(out)
        return x


class KitchenSink(nn.Module):
    """Most spellings of an in-place write, with readers before and after each write."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 16)
        self.acts = nn.ModuleList([nn.ReLU6(inplace=True), nn.LeakyReLU(0.1, inplace=True), nn.ELU(inplace=True),
                                   nn.SiLU(inplace=True), nn.Hardswish(inplace=True), nn.Hardtanh(inplace=True)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.mul_(1.5)  # the model writes into its own input
        h = self.fc(x)
        early = h * 2  # reads h before any write
        h.add_(x)
        mid = h.sum(dim=1, keepdim=True)
        for act in self.acts:
            act(h)  # result unused: later code relies on the write
            mid = mid + h.mean(dim=1, keepdim=True)
        F.relu(h, inplace=True)
        F.leaky_relu(h, 0.2, True)
        torch.sigmoid_(h)
        h.clamp_(0.1, 0.9)
        g = self.fc(early)
        g = operator.imul(g, 2.0)
        g = operator.isub(g, h)
        g = operator.itruediv(g, 3.0)
        filled = early.fill_(0.25)  # no out-of-place twin: rewritten as clone + fill_
        return h + g + mid + filled + x


class ViewWrite(nn.Module):
    """A write into a view another node reads later: only torch.export's functionalisation is right."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(x)
        z = y.view(1, -1)
        y.relu_()
        z.add_(1)
        return self.fc(z) + y.sum()


class BranchyInplace(nn.Module):
    """fx cannot trace the branch, so this goes through torch.export (aten relu_ / add_)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            y = self.c1(x)
            a = self.c2(y)
            y.relu_()
            y.add_(a)
            return y + a
        return x


class IndexAssign(nn.Module):
    """``y[:, 0] = 0`` and ``y[..., :2] = v``: index assignment (operator.setitem) after another reader."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3, padding=1)
        self.d = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(x)
        z = y * 2
        y[:, 0] = 0
        y[..., :2] = self.d(z)[..., :2]
        return self.d(y) + z


MODELS = {
    "issue": (IssueNet, (1, 3, 8, 8)),
    "index_assign": (IndexAssign, (1, 3, 8, 8)),
    "residual": (ResidualInplace, (1, 3, 8, 8)),
    "kitchen": (KitchenSink, (3, 16)),
    "view_write": (ViewWrite, (1, 3, 8, 8)),
    "branchy": (BranchyInplace, (1, 3, 8, 8)),
}


@functools.cache
def _setup(key: str) -> tuple[nn.Module, torch.Tensor, Graph, torch.Tensor]:
    """(model, input, captured graph, reference output), once per model; callers clone the input."""
    cls, shape = MODELS[key]
    torch.manual_seed(0)
    model = cls().eval()
    x = torch.randn(shape)
    graph = capture(model, (x.clone(),), name=key)
    with torch.no_grad():
        ref = model(x.clone())
    return model, x, graph, ref


def _run_split(graph: Graph, x: torch.Tensor, assignment: dict[str, int]) -> torch.Tensor:
    stages = graph.split(assignment)
    with torch.no_grad():
        return graph.run_stages(stages, x.clone())


def _issue_assignment(names: list[str]) -> dict[str, int]:
    """The issue's split: c2 and everything from the add on in stage 1, the rest in stage 0."""
    one = {"c2", *names[names.index("add"):]}
    return {n: int(n in one) for n in names}


def test_issue_repro_split_equals_whole_model():
    _, x, g, ref = _setup("issue")
    names = [n.name for n in g.compute_nodes()]
    assignment = _issue_assignment(names)
    assert len(set(assignment.values())) == 2
    torch.testing.assert_close(_run_split(g, x, assignment), ref, rtol=1e-5, atol=1e-5)
    stages = g.split(assignment)
    with torch.no_grad():
        result = run_inprocess(g, stages, (x.clone(),), sleep=False)
    torch.testing.assert_close(result.output, ref, rtol=1e-5, atol=1e-5)


def test_negative_control_unfunctionalised_graph_gives_the_wrong_output():
    """The same split of the raw fx trace (in-place ReLU kept) is wrong: the check can fail."""
    model, x, g, ref = _setup("issue")
    raw = fx.symbolic_trace(model)
    assert [n.name for n in raw.graph.nodes] == [n.name for n in g.gm.graph.nodes]
    assert shared_writes(raw) == ["relu_"]
    unsafe = Graph(raw, g.nodes, g.example_inputs, method="fx", param_count=g.param_count, name="raw")
    names = [n.name for n in g.compute_nodes()]
    out = _run_split(unsafe, x, _issue_assignment(names))
    assert (out - ref).abs().max() > 1e-3


def test_capture_keeps_names_shapes_and_flops_and_leaves_the_model_alone():
    model, x, g, _ = _setup("issue")
    raw = fx.symbolic_trace(model)
    ShapeProp(raw).propagate(x.clone())
    for n in raw.graph.nodes:
        if n.op in ("call_module", "call_function", "call_method"):
            assert g.nodes[n.name].shape == tuple(n.meta["tensor_meta"].shape), n.name
    assert g.nodes["relu_"].kind == "act" and g.nodes["relu_"].flops == 4 * 8 * 8
    assert not any(is_inplace(n) for n in g.gm.graph.nodes)
    assert g.gm.graph.find_nodes(op="call_module", target="relu_")[0].meta["dnninfer_inplace"] == "relu_ (inplace=True)"
    assert model.relu_.inplace is True  # the user's module was copied, not edited
    assert g.gm.get_submodule("relu_") is not model.relu_


@pytest.mark.parametrize("key", sorted(MODELS))
def test_captured_graph_is_functional_and_equals_the_model(key):
    _, x, g, ref = _setup(key)
    assert shared_writes(g.gm) == []
    kept = x.clone()
    with torch.no_grad():
        torch.testing.assert_close(g(kept), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kept, x, rtol=0, atol=0)  # the graph never writes into its input
    if key in ("view_write", "branchy", "index_assign"):
        assert g.method == "export"  # a view write, or untraceable: torch.export's graph


@pytest.mark.parametrize("key", sorted(MODELS))
@SETTINGS
@given(data=st.data())
def test_random_contiguous_splits_equal_the_model(key, data):
    _, x, g, ref = _setup(key)
    names = [n.name for n in g.compute_nodes()]
    k = data.draw(st.integers(1, min(4, len(names) - 1)))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(names) - 1), min_size=k, max_size=k)))
    assignment = {n: sum(i >= c for c in cuts) for i, n in enumerate(names)}
    torch.testing.assert_close(_run_split(g, x, assignment), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("key", sorted(MODELS))
@SETTINGS
@given(data=st.data())
def test_random_dag_splits_equal_the_model(key, data):
    """Non-contiguous stages: a reader and a (former) writer of one value land apart."""
    _, x, g, ref = _setup(key)
    label: dict[str, int] = {}
    for n in g.compute_nodes():
        base = max((label[i] for i in n.inputs if i in label), default=0)
        label[n.name] = min(3, base + data.draw(st.sampled_from([0, 0, 1, 2])))
    torch.testing.assert_close(_run_split(g, x, label), ref, rtol=1e-5, atol=1e-5)


def test_negative_control_the_annotator_catches_a_write_the_pass_missed(monkeypatch):
    """Turn the rewrite off: the runtime check refuses the in-place graph instead of passing it."""
    model, x, _, _ = _setup("issue")
    monkeypatch.setattr(capture_module, "functionalize", lambda gm: {})
    with pytest.raises(MutationHazard, match=r"node 'relu_'.*writes in place into 'c1'"):
        annotate(fx.symbolic_trace(model), [x.clone()], name="issue")


def test_a_write_into_a_view_read_later_falls_back_to_functional_export():
    model, x, _, _ = _setup("view_write")
    gm = fx.symbolic_trace(model)
    with pytest.raises(MutationHazard, match="a view of"):
        annotate(gm, [x.clone()], name="view_write")


def _node(graph: fx.Graph, *args: object, op: str, target: object, kwargs: dict | None = None) -> fx.Node:
    return graph.create_node(op, target, args, kwargs or {})


def _users_own_function_(t: torch.Tensor) -> torch.Tensor:
    return t * 2  # ends in "_" but is not torch's: not assumed to write


def test_inplace_table_knows_each_spelling():
    g = fx.Graph()
    x = g.placeholder("x")
    y = g.placeholder("y")
    aten = torch.ops.aten
    inplace = [
        _node(g, x, op="call_method", target="relu_"),
        _node(g, x, y, op="call_method", target="add_"),
        _node(g, x, op="call_function", target=torch.relu_),
        _node(g, x, op="call_function", target=F.relu, kwargs={"inplace": True}),
        _node(g, x, True, op="call_function", target=F.relu),
        _node(g, x, y, op="call_function", target=operator.iadd),
        _node(g, x, y, op="call_function", target=aten.add_.Tensor),
        _node(g, x, y, op="call_function", target=torch.add, kwargs={"out": y}),
    ]
    functional = [
        _node(g, x, op="call_method", target="relu"),
        _node(g, x, op="call_method", target="requires_grad_"),
        _node(g, x, op="call_function", target=F.relu, kwargs={"inplace": False}),
        _node(g, x, y, op="call_function", target=operator.and_),
        _node(g, x, y, op="call_function", target=operator.add),
        _node(g, x, y, op="call_function", target=aten.add.Tensor),
        _node(g, x, op="call_function", target=_users_own_function_),
    ]
    assert [mutated_input(n) for n in inplace] == [x] * 7 + [y]
    assert not any(is_inplace(n) for n in functional)
    assert is_inplace(_node(g, x, op="call_module", target="m"), nn.ReLU(inplace=True))
    assert not is_inplace(_node(g, x, op="call_module", target="m"), nn.ReLU())


def test_functionalize_is_idempotent_and_rewires_later_readers():
    class RelyOnWrite(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x * 1.0
            before = y + 0
            y.relu_()
            return before, y * 2  # y * 2 must see the ReLU

    gm = fx.symbolic_trace(RelyOnWrite())
    done = functionalize(gm)
    assert done == {"relu_": "relu_"}
    assert functionalize(gm) == {}
    x = torch.randn(20)
    before, after = gm(x)
    torch.testing.assert_close(before, x)
    torch.testing.assert_close(after, 2 * x.relu())


def _hand_built() -> fx.GraphModule:
    """Writes fx never records from Python source: operator.iadd, ``out=`` and an aten ``relu_``."""
    g = fx.Graph()
    x = g.placeholder("x")
    a = g.call_function(operator.mul, (x, 1.0))
    before = g.call_function(operator.add, (a, 0))
    g.call_function(operator.iadd, (a, x))
    c = g.call_function(operator.mul, (a, 2))  # must see a + x
    d = g.call_function(torch.mul, (c, 1.0))
    g.call_function(torch.add, (c, 1), {"out": d})
    e = g.call_function(operator.add, (d, 0))  # must see c + 1
    g.call_function(torch.ops.aten.relu_.default, (e,))
    f = g.call_function(operator.mul, (e, 1))  # must see relu(e)
    g.output((before, c, f))
    return fx.GraphModule(nn.Module(), g)


def test_functionalize_handles_operators_out_and_aten_writes():
    x = torch.randn(30)
    raw = _hand_built()
    want = raw(x.clone())
    assert len(shared_writes(raw)) == 3
    gm = _hand_built()
    assert set(functionalize(gm)) == {"iadd", "add_1", "relu__default"}
    assert shared_writes(gm) == []
    got = gm(x.clone())
    for w, o in zip(want, got, strict=True):
        torch.testing.assert_close(o, w)
