"""Plans executed for real: every strategy's plan reproduces the whole model, in process and on Ray."""

from __future__ import annotations

import functools

import pytest
import torch

from dnninfer.cost import load_cluster
from dnninfer.partition.costmodel import CostModel
from dnninfer.partition.execute import materialize, run_plan
from dnninfer.partition.strategies import STRATEGIES, plan

MODELS = ["resnet18", "mobilenet_v2", "googlenet"]
CASES = [(s, "latency") for s in STRATEGIES] + [("hidp", "throughput"), ("hidp", "energy")]


@functools.cache
def _cm(model: str, cluster: str, graph_of) -> CostModel:
    return CostModel.build(graph_of(model)[2], load_cluster(cluster), host="flops")


@functools.cache
def _plan(model: str, cluster: str, strategy: str, objective: str, graph_of):
    return plan(_cm(model, cluster, graph_of), strategy, objective)


def node(place: str) -> str:
    return place.split("/", 1)[0]


def assert_same(out, ref) -> None:
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4), (out - ref).abs().max().item()


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(("strategy", "objective"), CASES, ids=[f"{s}-{o}" for s, o in CASES])
def test_plan_runs_and_equals_whole_model(graph_of, model, strategy, objective):
    _, inputs, _, ref = graph_of(model)
    p = _plan(model, "edge3", strategy, objective, graph_of)
    cm = _cm(model, "edge3", graph_of)
    dep = materialize(p, cm)
    # every stage sits on a target the plan chose, and every plan target gets work
    assert {dep.placement[st.index] for st in dep.stages} >= {str(t) for t in p.targets}
    assert {node(v) for v in dep.placement.values()} <= set(cm.nodes)
    result = run_plan(p, cm, inputs, sleep=False, deployment=dep)
    assert_same(result.output, ref)
    # what crosses between nodes at run time is exactly what the simulator charged the links for
    inter = sum(t.nbytes for t in result.transfers if node(t.src) != node(t.dst))
    assert inter == p.bytes_sent
    assert all(t.delay_s == 0 for t in result.transfers if node(t.src) == node(t.dst))


def test_hybrid_plan_spans_nodes_and_pus_of_one_node_share_memory(graph_of):
    """resnet18 on edge3: HiDP's latency plan tiles across rpi4 and nano, then across the nano's CPU and GPU."""
    cm = _cm("resnet18", "edge3", graph_of)
    p = _plan("resnet18", "edge3", "hidp", "latency", graph_of)
    assert p.mode in ("spatial", "hybrid")
    dep = materialize(p, cm)
    places = set(dep.placement.values())
    assert len({node(v) for v in places}) >= 2
    same = [(a, b) for (a, b) in dep.links if a != b and node(a) == node(b)]
    cross = [(a, b) for (a, b) in dep.links if node(a) != node(b)]
    assert same and cross
    for a, b in same:
        assert dep.links[(a, b)].transfer_s(10**6) == 0
    for a, b in cross:
        expected = cm.cluster.link(node(a), node(b)).transfer_s(10**6)
        assert dep.links[(a, b)].transfer_s(10**6) == pytest.approx(expected)
        assert cm.transfer_s(node(a), node(b), 10**6) == pytest.approx(expected) and expected > 0
    # a PU-level split of one node really happens in this plan
    assert any(len({node(str(t)) for t in part.targets}) == 1 < len(part.targets) for part in p.parts)


def test_coedge_plan_tiles_over_every_node(graph_of):
    cm = _cm("resnet18", "edge3", graph_of)
    p = _plan("resnet18", "edge3", "coedge", "latency", graph_of)
    assert p.mode == "spatial" and p.parts[0].tiled
    dep = materialize(p, cm)
    assert {node(v) for v in dep.placement.values()} == set(cm.nodes)
    # the tiled graph has more nodes than the original (scatter, tiles, gather) yet the same output
    assert len(dep.graph.compute_nodes()) > len(cm.graph.compute_nodes())


@pytest.fixture(scope="module")
def ray_rt(ray_cluster):
    from dnninfer.runtime import RayRuntime

    with RayRuntime(threads=1) as rt:
        yield rt


@pytest.mark.parametrize("strategy", ["hidp", "coedge"])
def test_plan_on_ray_equals_whole_model(ray_rt, graph_of, strategy):
    _, inputs, _, ref = graph_of("resnet18")
    cm = _cm("resnet18", "local3", graph_of)
    p = _plan("resnet18", "local3", strategy, "latency", graph_of)
    assert len(p.nodes_used) >= 2, p.reason
    result = run_plan(p, cm, inputs, runtime=ray_rt)
    assert_same(result.output, ref)
    assert set(ray_rt.actors) == set(materialize(p, cm).placement.values())
    inter = sum(t.nbytes for t in result.transfers if node(t.src) != node(t.dst))
    assert inter == p.bytes_sent
    assert result.emulated
