
"""CPU lanes: the plan run as parallel threads equals eager on every bench model, in-place writes
stay ordered, failures propagate without deadlock, and thread settings are restored."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dnninfer import zoo
from dnninfer.graph import capture, shared_writes
from dnninfer.schedule import LaneExecutor, OpDAG, make_plan

BENCH_MODELS = ["googlenet", "inception_v3", "nasnet_cells", "deepfm", "bert_encoder"]


def _graph(graph_of, name):
    if zoo.get(name).origin != "zoo":
        model = zoo.build_model(name)
        x = zoo.example_inputs(name, batch=2)
        return model, capture(model, x, name=name)
    model, _, graph, _ = graph_of(name)
    return model, graph


@pytest.mark.parametrize("name", BENCH_MODELS)
def test_lanes_equal_eager_on_fresh_inputs(graph_of, name):
    model, graph = _graph(graph_of, name)
    batch = graph.example_inputs[0].shape[0]
    fresh = zoo.example_inputs(name, batch=batch, seed=7)
    dag = OpDAG.from_graph(graph)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the lanes run one intra-op thread each: compare like with like
    try:
        with torch.no_grad():
            ref = model(*fresh)
        for algo, order, cap in (("opara", "opara", 2), ("opara", "topo", 2), ("opara", "opara", None),
                                 ("nimble", "opara", 3), ("cpfirst", "cp", 4)):
            with LaneExecutor(graph, make_plan(dag, algo, order, max_streams=cap), dag) as ex:
                out = ex(*fresh)
                assert torch.equal(out, ref), (algo, order, cap, (out - ref).abs().max().item())
    finally:
        torch.set_num_threads(previous)


def test_lanes_with_two_intra_threads_match_eager_closely(graph_of):
    _, _, graph, ref = graph_of("googlenet")
    dag = OpDAG.from_graph(graph)
    with LaneExecutor(graph, make_plan(dag, max_streams=2), dag, intra_threads=2) as ex:
        out = ex(*graph.example_inputs)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)


class InplaceShared(nn.Module):
    """b reads a before a is modified in place; c reads it after: program order is the contract."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(x)
        b = torch.sin(a) * 2  # must see a before add_
        a.add_(1)
        c = a * 3  # must see a after add_
        return b + c


def test_inplace_writes_get_ordering_edges_and_lanes_respect_them():
    x = torch.randn(64, 64)
    model = InplaceShared()
    graph = capture(model, (x,), name="inplace")
    dag = OpDAG.from_graph(graph)
    # capture functionalised the add_: no node writes into a value another reads, so no hazards
    assert not dag.hazard_edges and shared_writes(graph.gm) == []
    # lanes may now run the (functional) add_ beside the earlier reader of its input: outputs must still match
    for algo in ("opara", "nimble", "cpfirst"):
        with LaneExecutor(graph, make_plan(dag, algo, "opara"), dag) as ex:
            for _ in range(5):
                fresh = torch.randn(64, 64)
                assert torch.equal(ex(fresh), model(fresh.clone()))


class Failing(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(x)
        b = torch.sigmoid(x)
        c = torch.log_softmax(a, dim=-1)
        d = b.reshape(-1, 3)  # fails for inputs whose size is not a multiple of 3
        return c.sum() + d.sum()


def test_a_failing_operator_raises_without_deadlock():
    model = Failing()
    graph = capture(model, (torch.randn(6, 6),), name="failing")
    dag = OpDAG.from_graph(graph)
    with LaneExecutor(graph, make_plan(dag, "opara", "topo"), dag) as ex:
        assert ex.num_lanes >= 2
        with pytest.raises(RuntimeError):
            ex(torch.randn(5, 5))  # 25 elements do not reshape to (-1, 3)
        x = torch.randn(6, 6)
        assert torch.allclose(ex(x), model(x))  # still usable after a failure


def test_caller_thread_count_is_restored(graph_of):
    _, _, graph, _ = graph_of("deepfm")
    dag = OpDAG.from_graph(graph)
    previous = torch.get_num_threads()
    with LaneExecutor(graph, make_plan(dag, max_streams=2), dag, intra_threads=1) as ex:
        ex(*graph.example_inputs)
    assert torch.get_num_threads() == previous
