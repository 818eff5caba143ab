"""The §5.5 energy model: by-hand example, monotonicity, validation, cluster sums."""

from __future__ import annotations

import itertools

import pytest

from dnninfer.cost import (
    Cluster,
    DeviceProfile,
    LinkProfile,
    cluster_energy,
    energy,
    energy_breakdown,
    link_energy,
    load_cluster,
)


@pytest.fixture
def board() -> DeviceProfile:
    return DeviceProfile(
        name="board", p_board_idle_w=2.0, memory_mb=1024,
        pus=[{"name": "big", "kind": "cpu", "cores": 4, "speed": 0.5, "p_active_w": 4.0, "p_idle_w": 0.5},
             {"name": "gpu", "kind": "gpu", "cores": 128, "speed": 2.0, "p_active_w": 10.0, "p_idle_w": 1.0}],
    )


def test_energy_by_hand(board):
    # big busy 0.3 s of 0.5: 4*0.3 + 0.5*0.2; gpu busy 0.1 s: 10*0.1 + 1*0.4; board 2*0.5
    expected = 1.2 + 0.1 + 1.0 + 0.4 + 1.0
    assert energy(board, {"big": 0.3, "gpu": 0.1}, 0.5) == pytest.approx(expected)
    parts = energy_breakdown(board, {"big": 0.3, "gpu": 0.1}, 0.5)
    assert parts.pu_active_j == pytest.approx({"big": 1.2, "gpu": 1.0})
    assert parts.pu_idle_j == pytest.approx({"big": 0.1, "gpu": 0.4})
    assert parts.board_idle_j == pytest.approx({"board": 1.0})
    assert parts.total_j == pytest.approx(expected)


def test_idle_device_pays_idle_power_only(board):
    assert energy(board, {}, 2.0) == pytest.approx(2.0 * (2.0 + 0.5 + 1.0))


def test_energy_grows_with_busy_time(board):
    values = [energy(board, {"big": t, "gpu": t / 2}, 1.0) for t in (0.0, 0.1, 0.4, 0.7, 1.0)]
    assert all(b > a for a, b in itertools.pairwise(values))


def test_link_energy_per_bit():
    link = LinkProfile(name="wifi", bandwidth_mbps=50, rtt_ms=5, energy_nj_per_bit=100)
    assert link_energy(link, 1000) == pytest.approx(100e-9 * 8000)
    assert link_energy(link, 0) == 0.0


def test_utilisation_scales_active_power(board):
    full = energy_breakdown(board, {"big": 0.4}, 0.4)
    quarter = energy_breakdown(board, {"big": 0.4}, 0.4, utilisation={"big": 0.25})
    assert quarter.pu_active_j["big"] == pytest.approx(full.pu_active_j["big"] / 4)


@pytest.mark.parametrize(
    ("busy", "wall", "match"),
    [({"big": 0.6}, 0.5, "exceeds wall_s"), ({"big": -0.1}, 0.5, ">= 0"), ({"npu": 0.1}, 0.5, "not on device"),
     ({}, -1.0, "wall_s")],
)
def test_invalid_times_raise(board, busy, wall, match):
    with pytest.raises(ValueError, match=match):
        energy(board, busy, wall)


def test_busy_equal_to_wall_is_allowed(board):
    assert energy(board, {"big": 0.5, "gpu": 0.5}, 0.5) == pytest.approx((4 + 10 + 2) * 0.5)


def test_cluster_energy_sums_devices_and_links():
    wifi = {"name": "wifi", "bandwidth_mbps": 50, "rtt_ms": 5, "energy_nj_per_bit": 125}
    cluster = Cluster(name="c", nodes=[{"name": "a", "device": "rpi4"}, {"name": "b", "device": "jetson_nano"}],
                      default_link=wifi)
    rpi4, nano = cluster.device("a"), cluster.device("b")
    busy = {"a": {"cpu": 0.2}, "b": {"gpu": 0.05}}
    transfers = [("a", "b", 100_000), ("b", "a", 1_000), ("a", "a", 10**9)]
    parts = cluster_energy(cluster, busy, 0.3, transfers)
    devices = energy(rpi4, busy["a"], 0.3) + energy(nano, busy["b"], 0.3)
    links = 125e-9 * 8 * (100_000 + 1_000)
    assert parts.compute_j == pytest.approx(devices)
    assert parts.transfer_j == pytest.approx(links)
    assert set(parts.link_j) == {"a->b", "b->a"}  # the same-node move costs nothing
    assert set(parts.pu_active_j) == {"a/cpu", "b/cpu", "b/gpu"}
    assert parts.to_dict()["total_j"] == pytest.approx(devices + links)


def test_cluster_energy_on_shipped_cluster_with_free_links():
    cluster = load_cluster("local2")
    parts = cluster_energy(cluster, {"n1": {"cpu": 0.1}}, 0.2, [("n1", "n2", 10**6)])
    assert parts.transfer_j == 0.0 and parts.compute_j > 0
    with pytest.raises(ValueError, match="not in cluster"):
        cluster_energy(cluster, {"n9": {"cpu": 0.1}}, 0.2)
