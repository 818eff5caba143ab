"""Launch orders: Opara's Alg. 2 alternates compute- and memory-bound operators when both are
ready, takes the smallest demand first, and classifies by measured intensity, not by name."""

from __future__ import annotations

import pytest

from dnninfer.schedule import OpDAG, make_plan
from dnninfer.schedule.cpfirst import critical_path_order
from dnninfer.schedule.opara import COMPUTE, MEMORY, classify, demand, opara_order, roofline


def _ready_trace(dag: OpDAG, order: list[str], classes: dict[str, str]):
    """For each launch: (class launched, classes that were ready at that moment)."""
    done: set[str] = set()
    for n in order:
        ready = {m for m in dag.names if m not in done and all(p in done for p in dag.preds[m])}
        assert n in ready
        yield classes[n], {classes[m] for m in ready}
        done.add(n)


def _check_alternation(dag: OpDAG, order: list[str], classes: dict[str, str]) -> int:
    last, checked = None, 0
    for cls, ready in _ready_trace(dag, order, classes):
        if last is not None and ready == {COMPUTE, MEMORY}:
            assert cls != last, "both classes were ready but the same class was launched twice in a row"
            checked += 1
        last = cls
    return checked


def mixed_dag() -> OpDAG:
    """Six independent branches off one root: 3 conv-like (high intensity), 3 relu-like (low)."""
    names = ["root", "c1", "c2", "c3", "m1", "m2", "m3", "sink"]
    edges = [("root", x) for x in names[1:7]] + [(x, "sink") for x in names[1:7]]
    flops = {"root": 0, "sink": 0, "c1": 9e6, "c2": 8e6, "c3": 7e6, "m1": 1e3, "m2": 2e3, "m3": 3e3}
    nbytes = {n: 1e5 for n in names}
    cost = {"root": 1e-5, "sink": 1e-5, "c1": 3e-4, "c2": 1e-4, "c3": 2e-4, "m1": 3e-5, "m2": 1e-5, "m3": 2e-5}
    return OpDAG.from_edges(edges, names, cost_s=cost, flops=flops, bytes_moved=nbytes)


def test_classes_come_from_measured_intensity():
    dag = mixed_dag()
    cls = classify(dag)
    assert {n for n, c in cls.items() if c == COMPUTE} == {"c1", "c2", "c3"}


def test_classification_ignores_names():
    # negative control for Opara's name table: a node *named* relu that does matmul-like work is
    # compute-bound; one named conv that only moves bytes is memory-bound
    dag = OpDAG.from_edges([("relu", "conv"), ("relu", "other")], ["relu", "conv", "other"],
                           cost_s={"relu": 1e-3, "conv": 1e-3, "other": 1e-3},
                           flops={"relu": 10**9, "conv": 10, "other": 10**8}, bytes_moved={"relu": 10**5, "conv": 10**6,
                                                                                         "other": 10**5})
    cls = classify(dag)
    assert cls["relu"] == COMPUTE and cls["conv"] == MEMORY


def test_ridge_is_peak_flops_over_peak_bandwidth_from_the_profile():
    dag = mixed_dag()
    roof = roofline(dag)
    assert roof.peak_flops == pytest.approx(max(dag.flops[n] / dag.cost_s[n] for n in dag.names))
    assert roof.peak_bw == pytest.approx(max(dag.bytes_moved[n] / dag.cost_s[n] for n in dag.names))
    assert roof.ridge == pytest.approx(roof.peak_flops / roof.peak_bw)


def test_opara_order_alternates_classes_when_both_are_ready():
    dag = mixed_dag()
    order = opara_order(dag)
    assert _check_alternation(dag, order, classify(dag)) >= 4
    # demand = achieved share of the bottleneck: c1 0.375 < c3 0.44 < c2 1.0; m1 0.33 < m3 0.5 < m2 1.0;
    # compute first (as Opara's code), then strictly alternating
    assert order == ["root", "c1", "m1", "c3", "m3", "c2", "m2", "sink"]


def test_smallest_demand_first_within_a_class():
    dag = mixed_dag()
    d = demand(dag)
    order = opara_order(dag)
    for cls in (["c1", "c2", "c3"], ["m1", "m2", "m3"]):
        launched = [n for n in order if n in cls]
        assert launched == sorted(cls, key=d.__getitem__)


def test_topological_order_does_not_alternate():
    # negative control: program order on the same DAG launches all convs, then all relus
    dag = mixed_dag()
    order = make_plan(dag, "opara", "topo").order
    with pytest.raises(AssertionError):
        _check_alternation(dag, list(order), classify(dag))


def test_opara_order_alternates_on_googlenet(graph_of):
    _, _, graph, _ = graph_of("googlenet")
    dag = OpDAG.from_graph(graph)
    order = opara_order(dag)
    assert dag.is_linear_extension(order)
    assert _check_alternation(dag, order, classify(dag)) > 20


def test_critical_path_order_launches_the_longest_remaining_path_first():
    dag = OpDAG.from_edges([("a", "b"), ("a", "c"), ("c", "d")], ["a", "b", "c", "d"],
                           cost_s={"a": 1, "b": 5, "c": 1, "d": 1})
    assert critical_path_order(dag) == ["a", "b", "c", "d"]
    dag2 = OpDAG.from_edges([("a", "b"), ("a", "c"), ("c", "d")], ["a", "b", "c", "d"],
                            cost_s={"a": 1, "b": 1, "c": 1, "d": 5})
    assert critical_path_order(dag2) == ["a", "c", "d", "b"]  # after c, d (level 5) beats b (level 1)
