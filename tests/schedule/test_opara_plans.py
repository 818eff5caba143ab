"""Stream plans: hand-computed stream counts on known DAGs, and happens-before for every edge of
every plan (checked analytically and on a fake adversarial stream device)."""

from __future__ import annotations

import random

import pytest

from dnninfer.errors import UserError
from dnninfer.schedule import ALGOS, ORDERS, FakeStreamExecutor, OpDAG, build_program, make_plan
from dnninfer.schedule.program import WAIT, LaunchProgram, happens_before_violations


def chain(n: int) -> OpDAG:
    return OpDAG.from_edges([(f"n{i}", f"n{i + 1}") for i in range(n - 1)], [f"n{i}" for i in range(n)])


def diamond() -> OpDAG:
    return OpDAG.from_edges([("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")], ["a", "b", "c", "d"])


def fan_out(k: int, depth: int = 1) -> OpDAG:
    """stem -> k branches of `depth` ops -> cat (an inception module)."""
    edges, nodes = [], ["stem"]
    for b in range(k):
        prev = "stem"
        for d in range(depth):
            name = f"b{b}_{d}"
            nodes.append(name)
            edges.append((prev, name))
            prev = name
        edges.append((prev, "cat"))
    return OpDAG.from_edges(edges, [*nodes, "cat"])


def random_dag(n: int, p: float, seed: int) -> OpDAG:
    rng = random.Random(seed)
    names = [f"v{i}" for i in range(n)]
    edges = [(names[i], names[j]) for i in range(n) for j in range(i + 1, n) if rng.random() < p]
    costs = {v: rng.uniform(0.1, 2.0) for v in names}
    flops = {v: rng.choice([0, 10, 1000]) for v in names}
    return OpDAG.from_edges(edges, names, cost_s=costs, flops=flops)


@pytest.mark.parametrize("algo", ["opara", "nimble", "cpfirst", "sequential"])
def test_chain_uses_one_stream(algo):
    assert make_plan(chain(6), algo, "topo").num_streams == 1


@pytest.mark.parametrize("algo", ["opara", "nimble", "cpfirst"])
def test_diamond_uses_two_streams(algo):
    plan = make_plan(diamond(), algo, "topo")
    assert plan.num_streams == 2
    assert plan.stream_of["b"] != plan.stream_of["c"]


@pytest.mark.parametrize("k", [2, 4, 7])
@pytest.mark.parametrize("algo", ["opara", "nimble", "cpfirst"])
def test_fan_out_of_k_uses_k_streams(algo, k):
    assert make_plan(fan_out(k), algo, "topo").num_streams == k


@pytest.mark.parametrize(("k", "cap"), [(4, 1), (4, 2), (4, 3), (4, 4), (4, 9), (7, 3)])
@pytest.mark.parametrize("algo", ["opara", "nimble", "cpfirst"])
def test_fan_out_with_cap_uses_min_of_k_and_cap(algo, k, cap):
    plan = make_plan(fan_out(k), algo, "topo", max_streams=cap)
    assert plan.num_streams == min(k, cap)


def test_opara_gives_each_extra_branch_its_own_stream():
    # Alg. 1 by hand on stem -> 3 branches of 2 ops -> cat: b0 inherits stem's stream, the
    # others open streams 1 and 2, each branch's second op inherits its first's, cat inherits b0's.
    plan = make_plan(fan_out(3, depth=2), "opara", "topo")
    s = plan.stream_of
    assert s["stem"] == s["b0_0"] == s["b0_1"] == s["cat"] == 0
    assert s["b1_0"] == s["b1_1"] == 1 and s["b2_0"] == s["b2_1"] == 2


def test_cpfirst_puts_the_critical_path_on_stream_zero():
    dag = OpDAG.from_edges([("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")], ["a", "b", "c", "d"],
                           cost_s={"a": 1, "b": 1, "c": 5, "d": 1})
    plan = make_plan(dag, "cpfirst", "topo")
    assert plan.stream_of["a"] == plan.stream_of["c"] == plan.stream_of["d"] == 0 != plan.stream_of["b"]


def _all_plans(dag, caps=(None, 1, 2, 3), orders=ORDERS):
    for algo in ALGOS:
        for order in orders:
            for cap in caps:
                yield make_plan(dag, algo, order, max_streams=cap)


def _model_plans(dag):
    """Opara with every order; the other allocations with Opara's order; uncapped and 2 lanes."""
    for cap in (None, 2):
        for order in ORDERS:
            yield make_plan(dag, "opara", order, max_streams=cap)
        for algo in ("nimble", "cpfirst", "sequential"):
            yield make_plan(dag, algo, "opara", max_streams=cap)


@pytest.mark.parametrize("seed", range(12))
def test_every_plan_on_random_dags_respects_every_edge(seed):
    dag = random_dag(14, 0.25, seed)
    for plan in _all_plans(dag):
        program = build_program(plan, dag)
        assert not happens_before_violations(program, dag.edges(), final_stream=0), plan.summary()
        fake = FakeStreamExecutor(dag, seed=seed).run(program)
        assert not fake.violations and sorted(fake.order) == sorted(dag.names)


@pytest.mark.parametrize("name", ["googlenet", "inception_v3", "deepfm", "bert_encoder"])
def test_every_plan_on_zoo_models_respects_every_edge(graph_of, name):
    _, _, graph, _ = graph_of(name)
    dag = OpDAG.from_graph(graph)
    for plan in _model_plans(dag):
        program = build_program(plan, dag)
        assert not happens_before_violations(program, dag.edges(), final_stream=0), plan.summary()
        assert not FakeStreamExecutor(dag).run(program).violations


def test_nasnet_cells_plans_respect_every_edge():
    from dnninfer import zoo
    from dnninfer.graph import capture

    graph = capture(zoo.build_model("nasnet_cells"), zoo.example_inputs("nasnet_cells"), name="nasnet_cells")
    dag = OpDAG.from_graph(graph)
    for plan in _model_plans(dag):
        assert not happens_before_violations(build_program(plan, dag), dag.edges(), final_stream=0)


def _drop_first_wait(program: LaunchProgram) -> LaunchProgram:
    k = next(i for i, ins in enumerate(program.instrs) if ins.op == WAIT and ins.stream != 0
             and i > program.num_streams)  # a data wait, not a fork wait
    return LaunchProgram(program.instrs[:k] + program.instrs[k + 1:], program.num_streams, program.num_events,
                         program.fork_join)


def test_negative_control_a_missing_wait_is_caught():
    dag = fan_out(3, depth=2)
    program = build_program(make_plan(dag, "opara", "topo"), dag)
    broken = _drop_first_wait(program)
    assert happens_before_violations(broken, dag.edges())
    assert FakeStreamExecutor(dag, seed=0).run(broken).violations


def test_negative_control_a_wait_issued_before_its_record_is_a_noop():
    dag = diamond()
    program = build_program(make_plan(dag, "opara", "topo"), dag, fork_join=False)
    instrs = list(program.instrs)
    k = next(i for i, ins in enumerate(instrs) if ins.op == WAIT)
    moved = [instrs[k], *instrs[:k], *instrs[k + 1:]]  # the wait now precedes the record it needs
    assert happens_before_violations(moved, dag.edges(), num_streams=program.num_streams)


def test_missing_join_is_caught_at_the_end():
    dag = fan_out(3)
    program = build_program(make_plan(dag, "opara", "topo"), dag, fork_join=False)
    # stream 0 runs `cat` after waiting for the branches, so data edges hold...
    assert not happens_before_violations(program, dag.edges())
    # ...but with the join the caller relies on stripped, a branch that is not a predecessor
    # of anything on stream 0 would escape; a leaf on stream 1 shows it
    leafy = OpDAG.from_edges([("a", "b"), ("a", "c")], ["a", "b", "c"])
    prog = build_program(make_plan(leafy, "opara", "topo"), leafy, fork_join=False)
    assert happens_before_violations(prog, leafy.edges(), final_stream=0)
    with_join = build_program(make_plan(leafy, "opara", "topo"), leafy, fork_join=True)
    assert not happens_before_violations(with_join, leafy.edges(), final_stream=0)


def test_pruning_removes_transitively_implied_waits():
    dag = random_dag(30, 0.2, 3)
    plan = make_plan(dag, "opara", "topo")
    pruned, full = build_program(plan, dag), build_program(plan, dag, prune=False)
    assert pruned.counts()["waits"] < full.counts()["waits"]
    assert not happens_before_violations(pruned, dag.edges(), final_stream=0)


def test_launch_order_is_a_linear_extension_and_streams_are_numbered_by_first_use():
    dag = random_dag(20, 0.2, 5)
    for plan in _all_plans(dag):
        assert dag.is_linear_extension(plan.order)
        first_use = list(dict.fromkeys(plan.stream_of[n] for n in plan.order))
        assert first_use == list(range(plan.num_streams))


def test_bad_algo_order_or_cap_is_a_user_error():
    with pytest.raises(UserError, match="--algo"):
        make_plan(diamond(), "rammer")
    with pytest.raises(UserError, match="--order"):
        make_plan(diamond(), "opara", "bfs")
    with pytest.raises(UserError, match="--max-streams"):
        make_plan(diamond(), "opara", max_streams=0)


def test_plans_are_deterministic():
    dag = random_dag(25, 0.2, 9)
    for algo in ALGOS:
        assert make_plan(dag, algo).stream_of == make_plan(dag, algo).stream_of
