"""The CUDA Graph executor, run on a fake CUDA backend that enforces capture rules (fork from the
capture stream, join before capture ends) and traces every stream call for happens-before."""

from __future__ import annotations

import pytest
import torch

from dnninfer import zoo
from dnninfer.schedule import OpDAG, make_plan
from dnninfer.schedule.cuda import CudaStreamGraph, FakeCudaBackend
from dnninfer.schedule.program import RUN, happens_before_violations


@pytest.mark.parametrize("name", ["googlenet", "deepfm", "bert_encoder"])
def test_stream_graph_equals_eager_on_fresh_inputs(graph_of, name):
    model, _, graph, _ = graph_of(name)
    dag = OpDAG.from_graph(graph)
    runner = CudaStreamGraph(graph, make_plan(dag, "opara", "opara"), dag, backend=FakeCudaBackend(), warmup=1)
    assert runner.program.num_streams > 1
    for seed in (3, 4):  # a second call must see its own inputs (static buffers refreshed)
        fresh = zoo.example_inputs(name, seed=seed)
        with torch.no_grad():
            assert torch.allclose(runner(*fresh), model(*fresh), atol=1e-6)


def test_captured_calls_respect_every_edge_and_join(graph_of):
    _, _, graph, _ = graph_of("googlenet")
    dag = OpDAG.from_graph(graph)
    fake = FakeCudaBackend()
    runner = CudaStreamGraph(graph, make_plan(dag, "opara", "opara"), dag, backend=fake, warmup=2)
    runs = [i for i, ins in enumerate(fake.trace) if ins.op == RUN]
    per_pass = len(dag)
    assert len(runs) == 3 * per_pass  # two warm-ups and the capture; replays issue nothing
    (start, end), = fake.capture_spans
    capture = fake.trace[start:end]
    assert capture[0].op == "record" and capture[0].stream == runner.streams[0].id  # fork from the capture stream
    assert [i.node for i in capture if i.op == RUN] == list(runner.plan.order)
    assert not happens_before_violations(capture, dag.edges(), num_streams=fake._streams,
                                         final_stream=runner.streams[0].id)
    assert fake.captures == 1


def test_outputs_are_aliased_unless_copied(graph_of):
    _, _, graph, _ = graph_of("deepfm")
    dag = OpDAG.from_graph(graph)
    plan = make_plan(dag, "opara", "opara")
    a, b = zoo.example_inputs("deepfm", seed=1), zoo.example_inputs("deepfm", seed=2)
    aliased = CudaStreamGraph(graph, plan, dag, backend=FakeCudaBackend(), warmup=0, copy_outputs=False)
    first = aliased(*a)
    kept = first.clone()
    second = aliased(*b)
    assert second is first and not torch.equal(first, kept)  # the documented hazard
    copied = CudaStreamGraph(graph, plan, dag, backend=FakeCudaBackend(), warmup=0, copy_outputs=True)
    first = copied(*a)
    kept = first.clone()
    copied(*b)
    assert torch.equal(first, kept)


def test_fake_backend_rejects_unjoined_work():
    fake = FakeCudaBackend()
    s0, s1 = fake.new_stream(), fake.new_stream()
    ev = fake.new_event()

    def forked_but_not_joined():
        fake.record(ev, s0)
        fake.wait(s1, ev)
        return fake.launch(s1, "side", lambda: torch.ones(1))

    with pytest.raises(RuntimeError, match="unjoined"):
        fake.capture(forked_but_not_joined, s0)


def test_fake_backend_rejects_work_on_a_stream_never_forked():
    fake = FakeCudaBackend()
    s0, s1 = fake.new_stream(), fake.new_stream()
    with pytest.raises(RuntimeError, match="not forked"):
        fake.capture(lambda: fake.launch(s1, "stray", lambda: torch.ones(1)), s0)


def test_single_stream_plan_needs_no_events(graph_of):
    _, _, graph, ref = graph_of("googlenet")
    dag = OpDAG.from_graph(graph)
    runner = CudaStreamGraph(graph, make_plan(dag, "sequential", "topo"), dag, backend=FakeCudaBackend(), warmup=0)
    assert runner.program.counts()["events"] == 0
    assert torch.allclose(runner(*graph.example_inputs), ref, atol=1e-6)
