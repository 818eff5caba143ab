"""Per-node latency measurement: a time for every compute node, whole-model time, cache behaviour.

No wall-clock values are asserted (CONVENTIONS.md): only presence, positivity and cache identity.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from dnninfer.cost import LatencyProfile, graph_key, measure, profile
from dnninfer.graph import capture


class SmallConv(nn.Module):
    """Conv, BN, ReLU, a residual add, pooling and a linear head: several op kinds, a DAG."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv1(x)))
        y = y + self.conv2(y)
        return self.fc(torch.flatten(self.pool(y), 1))


@pytest.fixture(scope="module")
def graph():
    torch.manual_seed(0)
    return capture(SmallConv(), torch.randn(1, 3, 16, 16), name="small_conv")


FAST = {"warmup": 1, "repeats": 3}


def test_profile_times_every_compute_node(graph, tmp_path):
    prof = profile(graph, cache_dir=tmp_path, **FAST)
    assert set(prof.node_s) == {n.name for n in graph.compute_nodes()}
    assert all(s > 0 for s in prof.node_s.values())
    assert prof.whole_model_s > 0
    assert prof.total_s == pytest.approx(sum(prof.node_s.values()))
    assert prof.threads == 1 and prof.repeats == 3 and prof.graph_key == graph_key(graph)
    assert prof.env["torch"] == torch.__version__


def test_cache_hit_returns_identical_numbers_without_running(graph, tmp_path, monkeypatch):
    first = profile(graph, cache_dir=tmp_path, **FAST)
    assert len(list(tmp_path.glob("*.json"))) == 1

    def boom(*a, **k):
        raise AssertionError("measured again despite a cache hit")

    monkeypatch.setattr(measure, "_measure", boom)
    assert profile(graph, cache_dir=tmp_path, **FAST) == first


def test_cache_off_measures_again_negative_control(graph, tmp_path, monkeypatch):
    profile(graph, cache_dir=tmp_path, **FAST)
    calls = []
    real = measure._measure
    monkeypatch.setattr(measure, "_measure", lambda *a, **k: calls.append(1) or real(*a, **k))
    profile(graph, cache_dir=tmp_path, cache=False, **FAST)
    assert calls == [1]


def test_different_threads_or_repeats_are_different_cache_entries(graph, tmp_path):
    profile(graph, cache_dir=tmp_path, **FAST)
    profile(graph, cache_dir=tmp_path, warmup=1, repeats=4)
    profile(graph, cache_dir=tmp_path, threads=2, **FAST)
    assert len(list(tmp_path.glob("*.json"))) == 3


def test_threads_are_restored(graph, tmp_path):
    before = torch.get_num_threads()
    profile(graph, cache_dir=tmp_path, threads=1, cache=False, **FAST)
    assert torch.get_num_threads() == before


def test_cache_dir_env_var_is_used(graph, tmp_path, monkeypatch):
    monkeypatch.setenv("DNNINFER_CACHE_DIR", str(tmp_path / "env"))
    profile(graph, **FAST)
    assert len(list((tmp_path / "env").glob("*.json"))) == 1


def test_corrupt_cache_file_is_measured_again(graph, tmp_path):
    path = measure.cache_path(graph, threads=1, repeats=3, cache_dir=tmp_path)
    path.write_text("{not json", encoding="utf-8")
    prof = profile(graph, cache_dir=tmp_path, **FAST)
    assert set(prof.node_s) == {n.name for n in graph.compute_nodes()}
    assert json.loads(path.read_text(encoding="utf-8"))["graph_key"] == prof.graph_key


def test_to_dict_round_trips(graph, tmp_path):
    prof = profile(graph, cache_dir=tmp_path, **FAST)
    again = LatencyProfile.from_dict(json.loads(json.dumps(prof.to_dict())))
    assert again == prof


def test_graph_key_ignores_weights_but_not_shapes():
    torch.manual_seed(0)
    a = capture(SmallConv(), torch.randn(1, 3, 16, 16))
    torch.manual_seed(1)
    b = capture(SmallConv(), torch.randn(1, 3, 16, 16))
    c = capture(SmallConv(), torch.randn(1, 3, 20, 20))
    assert graph_key(a) == graph_key(b)
    assert graph_key(a) != graph_key(c)


def test_bad_arguments_raise(graph):
    with pytest.raises(ValueError):
        profile(graph, repeats=0, cache=False)
