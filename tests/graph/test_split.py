"""Split equivalence: any valid partition of any zoo model composes to the whole model's output."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnninfer import zoo
from dnninfer.errors import UserError
from dnninfer.graph import stage_order

SETTINGS = settings(max_examples=4, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def assert_split_equals_whole(graph, inputs, ref, assignment):
    stages = graph.split(assignment)
    with torch.no_grad():
        out = graph.run_stages(stages, *inputs)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    return stages


@pytest.mark.parametrize("name", zoo.names())
@SETTINGS
@given(data=st.data())
def test_random_contiguous_cuts_compose_to_whole_model(name, graph_of, data):
    _, inputs, g, ref = graph_of(name)
    names = [n.name for n in g.compute_nodes()]
    k = data.draw(st.integers(1, min(4, len(names) - 1)))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(names) - 1), min_size=k, max_size=k)))
    assignment = {n: sum(i >= c for c in cuts) for i, n in enumerate(names)}
    stages = assert_split_equals_whole(g, inputs, ref, assignment)
    assert len(stages) == k + 1


@pytest.mark.parametrize("name", ["googlenet", "inception_v3", "resnet50", "deepfm", "bert_encoder"])
@SETTINGS
@given(data=st.data())
def test_random_dag_partitions_compose_to_whole_model(name, graph_of, data):
    """Non-contiguous partitions: parallel branches land on different stages."""
    _, inputs, g, ref = graph_of(name)
    label: dict[str, int] = {}
    for n in g.compute_nodes():
        base = max((label[i] for i in n.inputs if i in label), default=0)
        label[n.name] = min(3, base + data.draw(st.sampled_from([0, 0, 0, 0, 0, 1])))
    if len(set(label.values())) == 1:
        return
    assert_split_equals_whole(g, inputs, ref, label)


def test_branches_on_separate_stages_really_run_apart(graph_of):
    """One inception module's four branches on four stages: a true DAG partition."""
    import networkx as nx

    _, inputs, g, ref = graph_of("googlenet")
    block = next(b for b in g.chain() if any(n.startswith("inception3b") for n in b.nodes))
    cat = block.nodes[-1]
    assert g.nodes[cat].kind == "cat"
    members = set(block.nodes)
    assignment = {n.name: 0 for n in g.compute_nodes()}
    after = False
    for n in g.compute_nodes():
        after = after or n.name == cat
        if after:
            assignment[n.name] = 9
    for b, head in enumerate(g.nodes[cat].inputs, start=1):
        for n in ({head} | nx.ancestors(g.nx, head)) & members:
            assignment[n] = b
    stages = assert_split_equals_whole(g, inputs, ref, assignment)
    assert [s.index for s in stages] == [0, 1, 2, 3, 4, 9]
    assert all(len(s.inputs) == 1 for s in stages[1:5])  # each branch reads only the module input


def test_cyclic_partition_is_a_user_error(graph_of):
    _, _, g, _ = graph_of("digits_mlp")
    names = [n.name for n in g.compute_nodes()]
    bad = {n: i % 2 for i, n in enumerate(names)}  # 0,1,0,1 along a chain: 0 -> 1 -> 0
    with pytest.raises(UserError, match="cycle"):
        stage_order(g, bad)
    with pytest.raises(UserError, match="cycle"):
        g.split(bad)


def test_incomplete_or_unknown_assignment_is_a_user_error(graph_of):
    _, _, g, _ = graph_of("digits_mlp")
    names = [n.name for n in g.compute_nodes()]
    with pytest.raises(UserError, match="no stage"):
        g.split({n: 0 for n in names[1:]})
    with pytest.raises(UserError, match="not compute nodes"):
        g.split({**{n: 0 for n in names}, "nope": 1})


def test_stage_labels_need_not_be_sorted(graph_of):
    _, inputs, g, ref = graph_of("digits_cnn")
    names = [n.name for n in g.compute_nodes()]
    assignment = {n: (7 if i < len(names) // 2 else 3) for i, n in enumerate(names)}
    stages = assert_split_equals_whole(g, inputs, ref, assignment)
    assert [s.index for s in stages] == [7, 3]


def test_negative_control_split_check_detects_a_wrong_stage(graph_of):
    """The equivalence check can fail: corrupt one stage's weights and the output moves."""
    import copy

    _, inputs, g, ref = graph_of("digits_cnn")
    names = [n.name for n in g.compute_nodes()]
    stages = g.split({n: int(i >= len(names) // 2) for i, n in enumerate(names)})
    broken = copy.deepcopy(stages[1].module)
    with torch.no_grad():
        for p in broken.parameters():
            p.add_(1.0)
    env = dict(zip(g.input_names, inputs, strict=True))
    env.update(zip(stages[0].outputs, stages[0](*(env[n] for n in stages[0].inputs)), strict=True))
    with torch.no_grad():
        out = broken(*(env[n] for n in stages[1].inputs))
    assert not torch.allclose(out[-1], ref, rtol=1e-5, atol=1e-5)


def _stage_flops(g, assignment):
    flops: dict[int, int] = {}
    for n in g.compute_nodes():
        flops[assignment[n.name]] = flops.get(assignment[n.name], 0) + n.flops
    return flops


def _best_bottleneck(weights, k):
    """Brute force: the smallest possible heaviest stage over every k-part contiguous split."""
    import itertools

    n = len(weights)
    return min(max(sum(weights[a:b]) for a, b in itertools.pairwise((0, *cuts, n)))
               for cuts in itertools.combinations(range(1, n), k - 1))


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn", "lenet_digits"])
def test_equal_flops_chain_gives_exactly_k_contiguous_balanced_stages(name, graph_of):
    from dnninfer.graph import equal_flops_chain

    _, inputs, g, ref = graph_of(name)
    blocks = g.chain()
    weights = [b.flops for b in blocks]
    for k in sorted({1, 2, 3, 4, len(blocks) - 1, len(blocks)}):
        assignment = equal_flops_chain(g, k)
        per_block = [assignment[b.nodes[0]] for b in blocks]
        assert sorted(set(per_block)) == list(range(k)), (k, per_block)
        assert per_block == sorted(per_block)  # contiguous along the chain
        assert all(assignment[n] == assignment[b.nodes[0]] for b in blocks for n in b.nodes)
        assert max(_stage_flops(g, assignment).values()) == _best_bottleneck(weights, k)
        stages = assert_split_equals_whole(g, inputs, ref, assignment)
        assert [s.index for s in stages] == list(range(k))


def test_negative_control_the_old_cumulative_labels_skip_stages(graph_of):
    """The previous rule (label = floor(k * FLOPs before the block / total)) fails the check above."""
    _, _, g, _ = graph_of("digits_mlp")
    blocks = g.chain()
    total, acc, labels = sum(b.flops for b in blocks), 0, []
    for b in blocks:
        labels.append(min(3, int(4 * acc / total)))
        acc += b.flops
    assert sorted(set(labels)) != [0, 1, 2, 3]


@pytest.mark.parametrize("k", [0, -1, 7, 1000])
def test_equal_flops_chain_refuses_impossible_stage_counts(graph_of, k):
    from dnninfer.graph import equal_flops_chain

    _, _, g, _ = graph_of("digits_mlp")
    assert len(g.chain()) == 6
    match = "positive integer" if k < 1 else "digits_mlp has 6 chain blocks.*at most 6 stages, got"
    with pytest.raises(UserError, match=match):
        equal_flops_chain(g, k)


def test_cli_run_gives_the_stages_asked_for(capsys):
    """The issue's case: `dnninfer run MODEL --stages K` ran fewer stages than asked."""
    import json

    from dnninfer.cli import main

    assert main(["run", "digits_mlp", "--stages", "4", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["stages"] == 4 and obj["equal"]
