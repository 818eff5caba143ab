"""Planning from a measured cluster profile (`partition --profile`): the cost model uses the seconds
measured on each PU instead of host time / cited speed, and a profile of another graph or cluster is
refused. (Measuring one on a running testbed is tested in tests/testbed.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dnninfer.cost import load_cluster
from dnninfer.cost.measure import graph_key
from dnninfer.cost.measured import ClusterProfile, load_cluster_profile
from dnninfer.errors import UserError
from dnninfer.partition.costmodel import CostModel, flops_estimate
from dnninfer.partition.strategies import plan


@pytest.fixture(scope="module")
def graph(graph_of):
    return graph_of("resnet18")[2]


def _profile(graph, cluster, factor) -> ClusterProfile:
    """A profile whose every PU takes host time x factor[node] (default 1)."""
    host = flops_estimate(graph)
    targets = {f"{n}/{pu.name}": {k: v * factor.get(n, 1.0) for k, v in host.items()}
               for n in cluster.node_names for pu in cluster.device(n).pus}
    return ClusterProfile(graph.name, graph_key(graph), cluster.name, "testbed", 1.0, targets)


def test_seconds_come_from_the_measured_profile(graph):
    cluster = load_cluster("edge3")
    prof = _profile(graph, cluster, {"rpi4": 3.0})
    cm = CostModel.build(graph, cluster, host="flops", measured=prof)
    names = [n.name for n in graph.compute_nodes()]
    t = cm.default_target("rpi4")
    assert cm.seconds(names, t) == pytest.approx(3.0 * sum(cm.host_s.values()))
    # fewer lanes than measured: slower by the PU's own Amdahl ratio
    pu = cluster.device("rpi4").pu(t.pu)
    one = type(t)(t.node, t.pu, 1)
    assert cm.seconds(names, one) == pytest.approx(cm.seconds(names, t) * pu.scaling() / pu.scaling(1))
    # the cited model differs (negative control: the profile is what changed the figure)
    cited = CostModel.build(graph, cluster, host="flops")
    assert cited.seconds(names, t) != pytest.approx(cm.seconds(names, t))
    assert cm.with_cluster(cluster).measured is prof


def test_a_measured_profile_moves_the_plan(graph):
    """xu4 measured 50x faster than the host and the others 50x slower: all-local stays on the
    source, but HiDP's latency plan puts nearly all the compute on xu4 (with the cited speeds it
    does not: the negative control)."""
    cluster = load_cluster("edge3")
    fast = _profile(graph, cluster, {"rpi4": 50.0, "nano": 50.0, "xu4": 0.02})
    cm = CostModel.build(graph, cluster, host="flops", measured=fast)
    assert plan(cm, "all-local").nodes_used == ["rpi4"]

    def share_on_xu4(p) -> float:
        flops = {n.name: n.flops for n in graph.compute_nodes()}
        on = sum(flops[n] * s for part in p.parts for t, s in zip(part.targets, part.shares or (1.0,), strict=True)
                 for n in part.nodes if t.node == "xu4" and n in flops)
        return on / sum(flops.values())

    assert share_on_xu4(plan(cm, "hidp")) > 0.9
    assert share_on_xu4(plan(CostModel.build(graph, cluster, host="flops"), "hidp")) < 0.9


def test_a_profile_of_another_graph_or_cluster_is_refused(graph, graph_of):
    cluster = load_cluster("edge3")
    other = graph_of("mobilenet_v2")[2]
    with pytest.raises(UserError, match="does not match the graph"):
        CostModel.build(graph, cluster, host="flops", measured=_profile(other, cluster, {}))
    short = _profile(graph, load_cluster("local3"), {})
    with pytest.raises(UserError, match="no measurement for"):
        CostModel.build(graph, cluster, host="flops", measured=short)


def test_profile_files_round_trip_and_bad_files_are_one_line_errors(graph, tmp_path):
    cluster = load_cluster("edge3")
    path = _profile(graph, cluster, {"xu4": 2.0}).save(tmp_path / "p.json")
    assert load_cluster_profile(path) == _profile(graph, cluster, {"xu4": 2.0})
    data = json.loads(path.read_text())
    first = next(iter(data["targets"]))
    data["targets"][first][next(iter(data["targets"][first]))] = -1.0
    (tmp_path / "neg.json").write_text(json.dumps(data))
    for name, text, match in (("neg.json", None, "seconds > 0"), ("fmt.json", '{"format": "x"}', "format 'x'"),
                              ("bad.json", "{", "cannot read"), ("missing.json", None, "no such file")):
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(UserError, match=match):
            load_cluster_profile(tmp_path / name)


def test_partition_cli_plans_from_a_profile(graph, tmp_path):
    """End to end through the CLI: the plan's predicted latency is the measured profile's."""
    cluster = load_cluster("local3")
    path = _profile(graph, cluster, {"n1": 0.5, "n2": 0.5, "n3": 0.5}).save(tmp_path / "p.json")
    exe = str(Path(sys.executable).with_name("dnninfer"))
    base = [exe, "partition", "resnet18", "--cluster", "local3", "--strategy", "all-local", "--host-estimate",
            "flops", "--json"]
    runs = [subprocess.run(base + extra, capture_output=True, text=True, timeout=300)
            for extra in ([], ["--profile", str(path)])]
    assert all(r.returncode == 0 for r in runs), runs[1].stderr
    cited, measured = (json.loads(r.stdout)["plans"][0]["latency_ms"] for r in runs)
    assert measured == pytest.approx(cited * 0.5, rel=0.02)  # local3's host1 speed is 1: half the host time
    bad = subprocess.run([*base[:3], "--cluster", "edge3", "--profile", str(path)], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith("dnninfer: error: ") and "no measurement" in bad.stderr


def test_python_api_plans_from_a_profile_file(graph, tmp_path):
    """`dnninfer.partition(..., cluster_profile=FILE)`: the library path to the same plans; the
    source device measured 4x slower makes its all-local plan 4x the cited-free flops figure."""
    import dnninfer

    cluster = load_cluster("edge3")
    path = _profile(graph, cluster, {"rpi4": 4.0}).save(tmp_path / "p.json")
    p = dnninfer.partition("resnet18", None, "edge3", strategy="all-local", profile="flops", cluster_profile=path)
    assert p.latency_ms == pytest.approx(4.0 * sum(flops_estimate(graph).values()) * 1e3, rel=1e-6)
    cited = dnninfer.partition("resnet18", None, "edge3", strategy="all-local", profile="flops")
    assert cited.latency_ms != pytest.approx(p.latency_ms)  # negative control: the profile moved it
