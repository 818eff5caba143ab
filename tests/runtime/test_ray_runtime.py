"""The Ray runtime on a local cluster: same outputs as the in-process reference, node-named failures."""

import pytest
import torch

from dnninfer.runtime import NodeFailure, RayRuntime, SimpleLink, run_inprocess


@pytest.fixture(scope="module")
def ray_rt(ray_cluster):
    with RayRuntime(num_cpus=2) as rt:
        yield rt


def split3(g):
    blocks = g.chain()
    labels = [min(2, 3 * i // len(blocks)) for i in range(len(blocks))]
    return g.split(g.blocks_to_assignment(blocks, labels))


@pytest.mark.parametrize("name", ["resnet18", "googlenet"])
def test_three_stage_split_on_ray_matches_whole_model(ray_rt, graph_of, name):
    _, inputs, g, ref = graph_of(name)
    stages = split3(g)
    assert len(stages) == 3
    link = SimpleLink(bandwidth_mbps=200, rtt_ms=1)
    ray_rt.deploy(stages, ["n1", "n2", "n3"], links=link)
    r = ray_rt.run(g, inputs)
    torch.testing.assert_close(r.output, ref, rtol=1e-5, atol=1e-5)
    local = run_inprocess(g, stages, inputs, placement=["n1", "n2", "n3"], links=link, sleep=False)
    assert [(t.src, t.dst, t.nbytes) for t in r.transfers] == [(t.src, t.dst, t.nbytes) for t in local.transfers]
    assert set(r.compute_s) == {s.index for s in stages}


def test_dag_partition_runs_branches_on_different_actors(ray_rt, graph_of):
    _, inputs, g, ref = graph_of("inception_v3")
    label = {}
    for i, n in enumerate(g.compute_nodes()):
        base = max((label[x] for x in n.inputs if x in label), default=0)
        label[n.name] = min(2, base + (1 if i % 37 == 36 else 0))
    stages = g.split(label)
    ray_rt.deploy(stages, [f"n{s.index}" for s in stages])
    torch.testing.assert_close(ray_rt.run(g, inputs).output, ref, rtol=1e-5, atol=1e-5)


def test_stage_error_names_the_node(ray_rt, graph_of):
    _, _, g, _ = graph_of("digits_cnn")
    stages = split3(g)
    ray_rt.deploy(stages, ["pi-a", "pi-b", "pi-c"])
    with pytest.raises(NodeFailure, match="stage 0 on node 'pi-a' failed"):
        ray_rt.run(g, (torch.randn(1, 5, 8, 8),))


def test_dead_node_is_reported_as_unreachable(ray_rt, graph_of):
    _, inputs, g, _ = graph_of("digits_cnn")
    stages = split3(g)
    ray_rt.deploy(stages, ["pi-a", "pi-b", "pi-c"])
    ray_rt.kill_node("pi-b")
    with pytest.raises(NodeFailure, match="node 'pi-b' is unreachable"):
        ray_rt.run(g, inputs)
