"""HiDP's run-time loop: cluster edits, re-planning on bandwidth drift, and node loss on Ray with no request lost."""

from __future__ import annotations

import functools

import pytest
import torch
import yaml

from dnninfer.cost import load_cluster
from dnninfer.errors import UserError
from dnninfer.partition.costmodel import CostModel
from dnninfer.partition.execute import materialize
from dnninfer.partition.plan import evaluate
from dnninfer.partition.replan import Replanner, with_bandwidth, without_node
from dnninfer.partition.strategies import STRATEGIES


def bandwidths(cluster) -> dict[frozenset[str], float]:
    names = cluster.node_names
    return {frozenset((a, b)): cluster.link(a, b).bandwidth_mbps for i, a in enumerate(names) for b in names[i + 1 :]}


@functools.cache
def _cm(model: str, cluster: str, graph_of) -> CostModel:
    return CostModel.build(graph_of(model)[2], load_cluster(cluster), host="flops")


def test_with_bandwidth_returns_a_new_cluster():
    edge3 = load_cluster("edge3")
    before = bandwidths(edge3)
    assert set(before.values()) == {50.0}
    every = with_bandwidth(edge3, 7)
    assert every is not edge3 and set(bandwidths(every).values()) == {7.0}
    assert every.default_link.bandwidth_mbps == 7.0
    one = with_bandwidth(edge3, 2, ("rpi4", "nano"))
    got = bandwidths(one)
    assert got.pop(frozenset(("rpi4", "nano"))) == 2.0
    assert set(got.values()) == {50.0}
    assert one.link("nano", "rpi4").rtt_ms == edge3.link("rpi4", "nano").rtt_ms  # only the bandwidth changed
    assert bandwidths(edge3) == before and edge3.default_link.bandwidth_mbps == 50.0
    assert edge3.links == []
    # explicit links: the other links keep their own figures
    hetero = load_cluster("hetero4")
    before = bandwidths(hetero)
    slow = with_bandwidth(hetero, 1, ("nano", "tx2"))
    assert bandwidths(slow) == {**before, frozenset(("nano", "tx2")): 1.0}
    assert bandwidths(hetero) == before
    for bad in (0, -5):
        with pytest.raises(UserError, match="bandwidth"):
            with_bandwidth(edge3, bad)


def test_without_node_returns_a_new_cluster(tmp_path):
    hetero = load_cluster("hetero4")
    smaller = without_node(hetero, "nano")
    assert smaller.node_names == ["gw", "xu4", "tx2"]
    assert all("nano" not in (s.a, s.b) for s in smaller.links)
    assert len(smaller.links) == 3 and len(hetero.links) == 6
    assert hetero.node_names == ["gw", "xu4", "nano", "tx2"]
    assert smaller.link("gw", "tx2") == hetero.link("gw", "tx2")
    with pytest.raises(UserError, match="'nano'"):
        smaller.link("gw", "nano")
    with pytest.raises(UserError, match="'ghost'"):
        without_node(hetero, "ghost")
    one = without_node(without_node(without_node(hetero, "gw"), "xu4"), "nano")
    assert one.node_names == ["tx2"]
    with pytest.raises(UserError, match="last node"):
        without_node(one, "tx2")
    # a cluster whose devices are paths relative to its file still resolves them after edits
    (tmp_path / "dev.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "dev",
                "pus": [{"name": "cpu", "kind": "cpu", "cores": 1, "speed": 1.0, "p_active_w": 1.0}],
                "p_board_idle_w": 1.0,
                "memory_mb": 512,
            }
        )
    )
    (tmp_path / "c.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "rel",
                "nodes": [{"name": n, "device": "dev.yaml"} for n in ("a", "b", "c")],
                "default_link": {"name": "w", "bandwidth_mbps": 10, "rtt_ms": 1, "energy_nj_per_bit": 1},
            }
        )
    )
    edited = with_bandwidth(without_node(load_cluster(tmp_path / "c.yaml"), "b"), 3)
    assert edited.node_names == ["a", "c"] and edited.device("c").memory_mb == 512


def test_small_fluctuations_keep_the_plan_and_a_drop_replans(graph_of):
    cm = _cm("resnet18", "edge3", graph_of)
    rp = Replanner(cm, STRATEGIES["hidp"], objective="latency")
    old = rp.replan()
    remote = [n for n in old.nodes_used if n != cm.source]
    assert remote, old.reason  # at 50 Mbit/s HiDP offloads part of resnet18
    pair = (cm.source, remote[0])
    for mbps in (42, 58, 45, 55, 48, 35):  # within 20% (35 is one dip the EWMA smooths to 42.5)
        assert rp.observe_bandwidth(*pair, mbps) is False
        assert rp.state == "SERVE"
    assert rp.plan is old and rp.cm is cm
    assert [e.state for e in rp.events].count("PLAN") == 1
    replans = [rp.observe_bandwidth(*pair, 2) for _ in range(4)]
    assert replans[0] and all(replans)  # the first reading already moves the EWMA past 20%
    assert rp.cm.cluster.link(*pair).bandwidth_mbps < 10
    assert cm.cluster.link(*pair).bandwidth_mbps == 50  # the original cost model is untouched
    assert rp.state == "DEPLOY"
    plans = [e for e in rp.events if e.state == "PLAN"]
    assert len(plans) == 1 + sum(replans)
    assert f"bandwidth {pair[0]}-{pair[1]} drifted" in plans[-1].detail
    new = rp.plan
    stale = evaluate(rp.cm, old.parts, strategy="old", objective="latency")
    assert new.latency_s <= stale.latency_s * (1 + 1e-9)
    assert new.latency_s < stale.latency_s  # the old plan leaned on the link that collapsed
    # the new plan is what the planner gives for the degraded cluster
    fresh = STRATEGIES["hidp"](cm.with_cluster(rp.cm.cluster), "latency")
    assert new.latency_s == pytest.approx(fresh.latency_s)


def test_node_lost_replans_without_it_and_the_source_is_fatal(graph_of):
    cm = _cm("resnet18", "edge3", graph_of)
    rp = Replanner(cm, STRATEGIES["uniform"])
    assert set(rp.replan().nodes_used) == {"rpi4", "xu4", "nano"}
    p = rp.node_lost("xu4")
    assert set(p.nodes_used) == {"rpi4", "nano"} and rp.cm.nodes == ["rpi4", "nano"]
    assert any(e.state == "PLAN" and "xu4 lost" in e.detail for e in rp.events)
    with pytest.raises(UserError, match="source"):
        rp.node_lost("rpi4")
    with pytest.raises(UserError, match="ghost"):
        rp.node_lost("ghost")


@pytest.fixture(scope="module")
def ray_rt(ray_cluster):
    from dnninfer.runtime import RayRuntime

    with RayRuntime(threads=1) as rt:
        yield rt


def test_node_loss_on_ray_loses_no_request(ray_rt, graph_of):
    model, inputs, _, _ = graph_of("resnet18")
    cm = _cm("resnet18", "local3", graph_of)
    rp = Replanner(cm, STRATEGIES["uniform"])  # uniform spreads over n1, n2 and n3
    first = rp.replan()
    assert set(first.nodes_used) == {"n1", "n2", "n3"}
    victim = next(v for v in materialize(first, cm).placement.values() if v.startswith("n2/"))
    gen = torch.Generator().manual_seed(0)
    requests = [(torch.randn(inputs[0].shape, generator=gen),) for _ in range(6)]
    done: list[int] = []

    def on_result(i, result):
        done.append(i)
        if i == 0:
            ray_rt.kill_node(victim)

    outputs = rp.serve(requests, ray_rt, on_result=on_result)
    assert done == list(range(6)) and len(outputs) == 6
    with torch.no_grad():
        for x, out in zip(requests, outputs, strict=True):
            assert torch.allclose(out, model(*x), atol=1e-4, rtol=1e-4)
    assert "n2" not in rp.plan.nodes_used and rp.cm.nodes == ["n1", "n3"]
    assert all(not place.startswith("n2/") for place in ray_rt.actors)
    states = [(e.state, e.detail) for e in rp.events]
    assert any(s == "PLAN" and "n2" in d and "lost" in d for s, d in states), states
    assert any(s == "MONITOR" and "'n2/cpu'" in d for s, d in states), states
    assert sum(s == "PLAN" for s, _ in states) == 2  # the start and the loss, nothing else
    with pytest.raises(UserError, match="source"):
        rp.node_lost("n1")
