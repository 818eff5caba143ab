"""DADS min-cut (Hu et al., INFOCOM'19) against exhaustive enumeration of monotone partitions."""

from __future__ import annotations

import math
import random

import networkx as nx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dnninfer.errors import UserError
from dnninfer.partition import dads


def _random_case(seed: int) -> tuple[nx.DiGraph, dict, dict, dict, dict, set[str], set[str]]:
    """A random DAG on <= 10 nodes with fan-out, zero costs, inf local costs, pins and returns."""
    rng = random.Random(seed)
    n = rng.randint(1, 10)
    names = [f"n{i}" for i in range(n)]
    rng.shuffle(names)  # topological order is not name order
    dag = nx.DiGraph()
    dag.add_nodes_from(names)
    p = rng.choice([0.2, 0.4, 0.7])
    for i in range(n):
        for j in range(i + 1, n):
            if rng.random() < p:
                dag.add_edge(names[i], names[j])

    def cost(zero: float = 0.15) -> float:
        return 0.0 if rng.random() < zero else rng.choice([rng.uniform(0, 1), rng.uniform(0, 10), rng.randint(0, 4)])

    local = {v: (math.inf if rng.random() < 0.1 else cost()) for v in names}
    remote = {v: cost() for v in names}
    up = {v: cost() for v in names}
    down = {v: cost() for v in names}
    sources = [v for v in names if dag.in_degree(v) == 0]
    pins = {v for v in sources if rng.random() < 0.5}
    if rng.random() < 0.2:
        pins.add(rng.choice(names))  # a pinned inner node forces its ancestors local too
    sinks = [v for v in names if dag.out_degree(v) == 0]
    returns = {v for v in sinks if rng.random() < 0.7}
    if rng.random() < 0.2:
        returns.add(rng.choice(names))
    return dag, local, remote, up, down, pins, returns


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 2**32 - 1))
@example(2863)  # float capacities: networkx's `flow == capacity` cut extraction gave cost 25.7 vs 14.9
def test_min_cut_equals_brute_force(seed: int) -> None:
    dag, local, remote, up, down, pins, rets = _random_case(seed)
    try:
        ref = dads.brute_force(dag, local, remote, up, down, pinned_local=pins, returns=rets)
    except UserError:
        with pytest.raises(UserError):
            dads.min_cut(dag, local, remote, up, down, pinned_local=pins, returns=rets)
        return
    got = dads.min_cut(dag, local, remote, up, down, pinned_local=pins, returns=rets)
    assert got.cost_s == pytest.approx(ref.cost_s, rel=1e-9, abs=1e-9)
    assert got.remote == ref.remote  # exact arithmetic: same optimum, same tie-break (fewest remote)
    # the assignment is monotone (cut_cost raises otherwise), respects pins and costs what it says
    assert not got.remote & pins
    assert dads.cut_cost(dag, local, remote, up, down, set(got.remote), returns=rets) == got.cost_s
    # the cut value of the flow network is the same number (construction is exact)
    net = dads.flow_network(dag, local, remote, up, down, pinned_local=pins, returns=rets)
    value, _ = nx.minimum_cut(net, ("dads", "source"), ("dads", "sink"))
    assert value / net.graph["scale"] == pytest.approx(ref.cost_s, rel=1e-9, abs=1e-9)


def _fan_out() -> tuple[nx.DiGraph, dict, dict, dict, dict]:
    """``x`` (pinned input) feeds three consumers that are much faster remotely."""
    dag = nx.DiGraph([("x", "b"), ("x", "c"), ("x", "d")])
    local = {"x": 0.0, "b": 1.0, "c": 1.0, "d": 1.0}
    remote = {"x": 0.0, "b": 0.0, "c": 0.0, "d": 0.0}
    up = {"x": 1.5, "b": 0.0, "c": 0.0, "d": 0.0}
    down = {"b": 0.0, "c": 0.0, "d": 0.0}
    return dag, local, remote, up, down


def test_fan_out_upload_charged_once() -> None:
    dag, local, remote, up, down = _fan_out()
    got = dads.min_cut(dag, local, remote, up, down, pinned_local=["x"], returns=["b", "c", "d"])
    assert got.remote == {"b", "c", "d"}
    assert got.cost_s == 1.5  # one upload of x, not three


def test_negative_control_per_edge_upload_is_wrong() -> None:
    """Charging up_s on every edge (no auxiliary node) pays x's upload three times and so keeps
    everything local: a different, worse partition than the correct one."""
    dag, local, remote, up, down = _fan_out()
    kw = {"pinned_local": ["x"], "returns": ["b", "c", "d"]}
    naive = dads.flow_network(dag, local, remote, up, down, per_edge_upload=True, **kw)
    value, (src_side, _) = nx.minimum_cut(naive, ("dads", "source"), ("dads", "sink"))
    naive_remote = {v for v in dag.nodes if v not in src_side}
    assert value == 3.0 * naive.graph["scale"] and naive_remote == set()
    correct = dads.min_cut(dag, local, remote, up, down, **kw)
    assert correct.remote != naive_remote
    assert dads.cut_cost(dag, local, remote, up, down, naive_remote, returns=kw["returns"]) > correct.cost_s
    # and the naive network over-charges the correct assignment
    naive_value_of_correct = sum(
        d["capacity"]
        for u, v, d in naive.edges(data=True)
        if (u == ("dads", "source") or (u in dag and u not in correct.remote))
        and (v == ("dads", "sink") or v in correct.remote)
    )
    assert naive_value_of_correct == 4.5 * naive.graph["scale"]


def test_chain_hand_computed() -> None:
    """in -> a -> b -> out: offloading after ``a`` (small tensor, fast server) is best."""
    dag = nx.DiGraph([("in", "a"), ("a", "b"), ("b", "out")])
    local = {"in": 0.0, "a": 1.0, "b": 5.0, "out": 0.1}
    remote = {"in": 0.0, "a": 0.1, "b": 0.5, "out": 0.01}
    up = {"in": 10.0, "a": 0.2, "b": 3.0}
    down = {"out": 0.05}
    got = dads.min_cut(dag, local, remote, up, down, pinned_local=["in"], returns=["out"])
    assert got.remote == {"b", "out"}
    assert got.cost_s == pytest.approx(0.0 + 1.0 + 0.2 + 0.5 + 0.01 + 0.05)
    assert got == dads.brute_force(dag, local, remote, up, down, pinned_local=["in"], returns=["out"])


def test_slow_link_keeps_all_local() -> None:
    dag = nx.DiGraph([("in", "a"), ("a", "out")])
    local = {"in": 0.0, "a": 1.0, "out": 1.0}
    remote = {"in": 0.0, "a": 0.0, "out": 0.0}
    up = {"in": 100.0, "a": 100.0}
    got = dads.min_cut(dag, local, remote, up, {"out": 0.0}, pinned_local=["in"], returns=["out"])
    assert got.remote == frozenset() and got.cost_s == 2.0


def test_infeasible_and_bad_input() -> None:
    dag = nx.DiGraph([("in", "a")])
    costs = {"in": 0.0, "a": 1.0}
    with pytest.raises(UserError, match="no finite partition"):
        dads.min_cut(dag, {"in": math.inf, "a": 1.0}, costs, costs, {}, pinned_local=["in"])
    with pytest.raises(UserError, match="no finite partition"):
        dads.brute_force(dag, {"in": math.inf, "a": 1.0}, costs, costs, {}, pinned_local=["in"])
    with pytest.raises(UserError, match="not monotone"):
        dads.cut_cost(dag, costs, costs, costs, {}, {"in"})
    with pytest.raises(UserError, match="no cost"):
        dads.min_cut(dag, {"in": 0.0}, costs, costs, {})
    with pytest.raises(UserError, match="non-negative"):
        dads.min_cut(dag, {"in": 0.0, "a": -1.0}, costs, costs, {})
    with pytest.raises(UserError, match="not in the DAG"):
        dads.min_cut(dag, costs, costs, costs, {}, pinned_local=["zz"])
    with pytest.raises(UserError, match="cycle"):
        dads.min_cut(nx.DiGraph([("a", "b"), ("b", "a")]), costs, costs, costs, {})
