"""The plan simulator (`partition.plan.evaluate`) against hand-computed latency, throughput and energy."""

from __future__ import annotations

import pytest
import torch
import yaml
from torch import nn

from dnninfer.cost import load_cluster, load_device
from dnninfer.cost.energy import energy_breakdown
from dnninfer.errors import UserError
from dnninfer.graph import capture
from dnninfer.partition.costmodel import CostModel, Target, flops_estimate
from dnninfer.partition.plan import Part, chain_parts, evaluate

BW_MBPS, RTT_MS, NJ_PER_BIT = 8.0, 10.0, 100.0


def write_cluster(
    tmp_path,
    nodes: dict[str, str],
    *,
    bw: float = BW_MBPS,
    rtt: float = RTT_MS,
    nj: float = NJ_PER_BIT,
    name: str = "handmade",
):
    """A cluster YAML in tmp_path: the given nodes (name -> device), one link per pair."""
    names = list(nodes)
    link = {"name": "wire", "bandwidth_mbps": bw, "rtt_ms": rtt, "energy_nj_per_bit": nj}
    data = {
        "name": name,
        "nodes": [{"name": n, "device": d} for n, d in nodes.items()],
        "links": [
            {"a": a, "b": b, "link": dict(link, name=f"{a}-{b}")} for i, a in enumerate(names) for b in names[i + 1 :]
        ],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_cluster(path)


def amdahl(pu, lanes: int) -> float:
    f = pu.parallel_fraction
    return 1.0 / ((1.0 - f) + f / lanes)


@pytest.fixture(scope="module")
def chain3():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.Linear(512, 512), nn.Linear(512, 10))
    return capture(model, (torch.randn(1, 256),), name="chain3")


class Fork(nn.Module):
    """x -> (l1(x), l2(x)) -> add: two consumers of the same input."""

    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(4096, 64)
        self.l2 = nn.Linear(4096, 64)

    def forward(self, x):
        return self.l1(x) + self.l2(x)


@pytest.fixture(scope="module")
def fork():
    torch.manual_seed(0)
    return capture(Fork(), (torch.randn(1, 4096),), name="fork")


@pytest.mark.parametrize("host", ["explicit", "flops"])
def test_two_part_layer_plan_matches_hand_formula(tmp_path, chain3, host):
    g = chain3
    n0, n1, n2 = (n.name for n in g.compute_nodes())
    assert [b.nodes for b in g.chain()] == [(n0,), (n1,), (n2,)]
    assert g.nodes[n0].out_bytes == 512 * 4 and g.nodes[n2].out_bytes == 10 * 4
    cluster = write_cluster(tmp_path, {"a": "host1", "b": "rpi4"})
    host_s = {n0: 0.010, n1: 0.020, n2: 0.030} if host == "explicit" else flops_estimate(g)
    cm = CostModel(g, cluster, host_s)
    assert cm.source == "a"
    ta, tb = cm.default_target("a"), cm.default_target("b")
    assert (ta, tb) == (Target("a", "cpu", 1), Target("b", "cpu", 4))
    parts = chain_parts(cm, [(ta, 0, 0), (tb, 1, 2)])
    plan = evaluate(cm, parts, strategy="hand", objective="latency")

    # independent recomputation from the device YAMLs and the link figures
    host1, rpi4 = load_device("host1"), load_device("rpi4")
    pa, pb = host1.pu("cpu"), rpi4.pu("cpu")
    c1 = host_s[n0] / (pa.speed * amdahl(pa, 1))
    c2 = (host_s[n1] + host_s[n2]) / (pb.speed * amdahl(pb, pb.cores))
    ser_up, ser_back = 2048 * 8 / (BW_MBPS * 1e6), 40 * 8 / (BW_MBPS * 1e6)
    hop_up, hop_back = RTT_MS / 2e3 + ser_up, RTT_MS / 2e3 + ser_back
    latency = c1 + hop_up + c2 + hop_back
    assert plan.latency_s == pytest.approx(latency, rel=1e-12)
    assert plan.bytes_sent == 2048 + 40

    # stage timeline: b starts when the activation arrives
    rows = {r["target"]: r for r in plan.stages}
    assert rows["a/cpu"]["finish_ms"] == pytest.approx(c1 * 1e3)
    assert rows["b/cpu"]["start_ms"] == pytest.approx((c1 + hop_up) * 1e3)
    assert rows["b/cpu"]["transfer_ms"] == pytest.approx(hop_up * 1e3)

    # throughput: the busiest PU or radio
    busy = {"compute on a/cpu": c1, "compute on b/cpu": c2, "radio of a": ser_up, "radio of b": ser_back}
    assert plan.throughput_ips == pytest.approx(1.0 / max(busy.values()), rel=1e-12)
    assert plan.bottleneck == max(busy, key=busy.get)

    # energy: §5.5 per node over the wall time (= latency), plus link energy per bit
    e_a = pa.p_active_w * c1 + pa.p_idle_w * (latency - c1) + host1.p_board_idle_w * latency
    e_b = pb.p_active_w * c2 + pb.p_idle_w * (latency - c2) + rpi4.p_board_idle_w * latency
    e_link = NJ_PER_BIT * 1e-9 * 8 * (2048 + 40)
    assert plan.energy_j == pytest.approx(e_a + e_b + e_link, rel=1e-12)
    # the same through cost.energy, node by node
    by_breakdown = (
        energy_breakdown(host1, {"cpu": c1}, latency).total_j + energy_breakdown(rpi4, {"cpu": c2}, latency).total_j
    )
    assert plan.energy["per_node_j"] == pytest.approx({"a": e_a, "b": e_b}, rel=1e-12)
    assert plan.energy["compute_j"] == pytest.approx(by_breakdown, rel=1e-12)
    assert plan.energy["link_j"] == pytest.approx(e_link, rel=1e-12)
    assert plan.score("latency") == plan.latency_s and plan.score("throughput") == -plan.throughput_ips
    assert plan.nodes_used == ["a", "b"]


def test_idle_source_still_pays_board_idle(tmp_path, chain3):
    """All on the remote node: the source only sends the input and gets the output back, yet counts."""
    g = chain3
    cluster = write_cluster(tmp_path, {"a": "host1", "b": "rpi4"})
    host_s = {n.name: 0.01 for n in g.compute_nodes()}
    cm = CostModel(g, cluster, host_s)
    tb = cm.default_target("b")
    plan = evaluate(cm, chain_parts(cm, [(tb, 0, 2)]), strategy="hand")
    host1, rpi4 = load_device("host1"), load_device("rpi4")
    pb = rpi4.pu("cpu")
    c = 0.03 / (pb.speed * amdahl(pb, pb.cores))
    in_b, out_b = 256 * 4, 10 * 4
    latency = RTT_MS / 2e3 + in_b * 8 / (BW_MBPS * 1e6) + c + RTT_MS / 2e3 + out_b * 8 / (BW_MBPS * 1e6)
    assert plan.latency_s == pytest.approx(latency, rel=1e-12)
    assert plan.energy["per_node_j"]["a"] == pytest.approx(host1.p_board_idle_w * latency, rel=1e-12)
    assert plan.energy_j == pytest.approx(
        host1.p_board_idle_w * latency
        + pb.p_active_w * c
        + rpi4.p_board_idle_w * latency
        + NJ_PER_BIT * 1e-9 * 8 * (in_b + out_b),
        rel=1e-12,
    )


def test_source_radio_serialises_two_messages(tmp_path, fork):
    g = fork
    l1, l2, add = (n.name for n in g.compute_nodes())
    assert g.nodes[add].inputs == (l1, l2)
    cluster = write_cluster(tmp_path, {"a": "host1", "b": "rpi4", "c": "rpi4"}, bw=10.0, rtt=4.0)
    cm = CostModel(g, cluster, {l1: 0.001, l2: 0.001, add: 0.0001})
    tb, tc, ta = cm.default_target("b"), cm.default_target("c"), cm.default_target("a")
    parts = [Part((l1,), (tb,)), Part((l2,), (tc,)), Part((add,), (ta,))]
    plan = evaluate(cm, parts, strategy="hand")
    ser = 4096 * 4 * 8 / 10e6  # one copy of the input over 10 Mbit/s
    rows = {r["target"]: r for r in plan.stages}
    first, second = rows["b/cpu"], rows["c/cpu"]
    assert first["start_ms"] == pytest.approx((2e-3 + ser) * 1e3)
    # the second message leaves only when the first is off the radio
    assert second["start_ms"] - first["start_ms"] == pytest.approx(ser * 1e3)
    assert second["transfer_ms"] == pytest.approx((2e-3 + 2 * ser) * 1e3)
    assert plan.bytes_sent == 2 * 4096 * 4 + 2 * 64 * 4
    # the source radio is busy for both sends: it is the bottleneck here
    assert plan.bottleneck == "radio of a"
    assert plan.throughput_ips == pytest.approx(1 / (2 * ser), rel=1e-12)
    # same plan with a link 10x faster: the gap shrinks 10x (it is serialisation, not RTT)
    fast = cm.with_cluster(
        write_cluster(tmp_path, {"a": "host1", "b": "rpi4", "c": "rpi4"}, bw=100.0, rtt=4.0, name="fast")
    )
    rows = {r["target"]: r for r in evaluate(fast, parts, strategy="hand").stages}
    assert rows["c/cpu"]["start_ms"] - rows["b/cpu"]["start_ms"] == pytest.approx(ser * 1e2)


def test_plan_must_cover_every_node_once(tmp_path, chain3):
    g = chain3
    n0, n1, n2 = (n.name for n in g.compute_nodes())
    cm = CostModel(g, write_cluster(tmp_path, {"a": "host1", "b": "rpi4"}), flops_estimate(g))
    ta, tb = cm.default_target("a"), cm.default_target("b")
    with pytest.raises(ValueError, match="in no part"):
        evaluate(cm, [Part((n0, n1), (ta,))], strategy="bad")
    with pytest.raises(ValueError, match=f"node '{n1}' is in parts 0 and 1"):
        evaluate(cm, [Part((n0, n1), (ta,)), Part((n1, n2), (tb,))], strategy="bad")
    with pytest.raises(ValueError, match="cycle"):  # b -> a -> b
        evaluate(cm, [Part((n0, n2), (ta,)), Part((n1,), (tb,))], strategy="bad")
    with pytest.raises(ValueError, match="at least one target"):
        Part((n0,), ())
    with pytest.raises(ValueError, match="one share per target"):
        Part((n0,), (ta, tb), (1.0,))
    with pytest.raises(UserError, match="objective 'speed'"):
        evaluate(cm, [Part((n0, n1, n2), (ta,))], strategy="bad", objective="speed")
