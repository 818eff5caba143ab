"""The simulator's runtime costs: a calibrated per-call and per-message cost (a testbed fits them on
its probes) lengthens a plan by exactly what it adds, and changes what the planner picks."""

from __future__ import annotations

import pytest

from dnninfer.cost import load_cluster
from dnninfer.partition.costmodel import CostModel
from dnninfer.partition.plan import chain_parts, evaluate
from dnninfer.partition.strategies import plan


@pytest.fixture(scope="module")
def graph(graph_of):
    return graph_of("resnet18")[2]


def _two_node_plan(cm: CostModel):
    a, b = cm.default_target("rpi4"), cm.default_target("nano")
    mid = len(cm.blocks) // 2
    return evaluate(cm, chain_parts(cm, [(a, 0, mid), (b, mid + 1, len(cm.blocks) - 1)]), strategy="manual")


def test_call_and_hop_costs_add_exactly_what_they_say(graph):
    cluster = load_cluster("edge3")
    base = CostModel.build(graph, cluster, host="flops")
    costly = CostModel.build(graph, cluster, host="flops", call_s=0.003, hop_s=0.010)
    p0, p1 = _two_node_plan(base), _two_node_plan(costly)
    # two stage calls + one gather call; two messages between nodes (rpi4 -> nano, nano -> rpi4)
    assert p1.latency_s - p0.latency_s == pytest.approx(3 * 0.003 + 2 * 0.010)
    assert p1.energy_j >= p0.energy_j
    assert base.with_cluster(cluster).call_s == 0.0 and costly.with_cluster(cluster).hop_s == 0.010


def test_zero_costs_leave_plans_unchanged(graph):
    """Negative control: the defaults predict what the simulator always predicted."""
    cluster = load_cluster("edge3")
    a = plan(CostModel.build(graph, cluster, host="flops"), "uniform")
    b = plan(CostModel.build(graph, cluster, host="flops", call_s=0.0, hop_s=0.0), "uniform")
    assert a.latency_s == b.latency_s


def test_a_large_message_cost_keeps_hidp_on_fewer_nodes(graph):
    cluster = load_cluster("edge3")
    cheap = plan(CostModel.build(graph, cluster, host="flops"), "hidp")
    dear = plan(CostModel.build(graph, cluster, host="flops", hop_s=1.0), "hidp")
    assert len(dear.nodes_used) <= len(cheap.nodes_used) and len(dear.nodes_used) == 1
