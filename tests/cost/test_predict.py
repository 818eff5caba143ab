"""Per-op-kind NNLS regression and device scaling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dnninfer.cost import (
    DeviceProfile,
    LatencyModel,
    Sample,
    fit,
    fit_from_graphs,
    input_bytes,
    load_device,
    predict,
    profile,
)
from dnninfer.graph import NodeInfo, capture

TRUE = {  # seconds per FLOP, per byte, per call
    "conv": (2e-11, 3e-10, 5e-6),
    "act": (0.0, 1e-9, 2e-6),
    "linear": (4e-11, 0.0, 1e-5),
}


def _node(i: int, kind: str, flops: int, out_bytes: int) -> NodeInfo:
    return NodeInfo(name=f"n{i}", op="call_module", target=kind, kind=kind, inputs=(), shape=(1,),
                    dtype="float32", out_bytes=out_bytes, param_bytes=0, flops=flops)


def _synthetic(rng: np.random.Generator, per_kind: int = 12) -> list[Sample]:
    samples, i = [], 0
    for kind, (a, b, c) in TRUE.items():
        for _ in range(per_kind):
            flops, out_b, in_b = (int(v) for v in rng.integers(10**3, 10**9, size=3))
            node = _node(i, kind, flops, out_b)
            samples.append(Sample(node, in_b, a * flops + b * (in_b + out_b) + c))
            i += 1
    return samples


def test_regression_recovers_known_coefficients():
    model = fit(_synthetic(np.random.default_rng(0)))
    for kind, (a, b, c) in TRUE.items():
        got = model.coeffs(kind)
        assert got.n == 12
        assert got.a == pytest.approx(a, rel=1e-6, abs=1e-18)
        assert got.b == pytest.approx(b, rel=1e-6, abs=1e-18)
        assert got.c == pytest.approx(c, rel=1e-6, abs=1e-15)


def test_predict_node_matches_the_generating_law():
    model = fit(_synthetic(np.random.default_rng(1)))
    node = _node(99, "conv", 5 * 10**8, 10**6)
    a, b, c = TRUE["conv"]
    assert model.predict_node(node, 2 * 10**6) == pytest.approx(a * 5e8 + b * 3e6 + c, rel=1e-6)


def test_sparse_kinds_fall_back_to_the_global_model():
    samples = _synthetic(np.random.default_rng(2))
    samples += [Sample(_node(200 + j, "pool", 10**6, 10**5), 10**5, 1e-4) for j in range(2)]
    model = fit(samples)
    assert "pool" not in model.per_kind
    assert model.coeffs("pool") is model.fallback
    assert model.coeffs("never_seen") is model.fallback
    assert model.fallback.n == len(samples)


def test_coefficients_and_predictions_are_never_negative():
    # Latency that FALLS with FLOPs: plain least squares would give a < 0; NNLS clamps it at 0.
    rows = [Sample(_node(j, "act", f, 0), 0, 1e-3 - f * 1e-12) for j, f in enumerate(range(10**6, 10**8, 10**7))]
    x = np.array([[r.node.flops, 1.0] for r in rows])
    y = np.array([r.seconds for r in rows])
    assert np.linalg.lstsq(x, y, rcond=None)[0][0] < 0  # negative control: the data do pull negative
    model = fit(rows)
    co = model.coeffs("act")
    assert co.a >= 0 and co.b >= 0 and co.c >= 0
    assert model.predict_node(_node(0, "act", 0, 0), 0) >= 0
    assert model.predict_node(_node(0, "act", 10**9, 0), 0) >= 0


def test_pairs_without_input_bytes_are_accepted():
    model = fit([(_node(j, "act", 0, 1000 * (j + 1)), 1e-6 * (j + 1)) for j in range(5)])
    assert model.coeffs("act").b == pytest.approx(1e-9, rel=1e-6)


def test_pairs_take_input_bytes_from_their_graph(small_graph):
    nodes = small_graph.compute_nodes()
    pairs = [(n, 1e-9 * (input_bytes(small_graph, n) + n.out_bytes)) for n in nodes]  # t = bytes moved
    with_graph = fit(pairs, graph=small_graph)
    assert with_graph.fallback.b == pytest.approx(1e-9, rel=1e-6)
    assert with_graph == fit([Sample(n, input_bytes(small_graph, n), t) for n, t in pairs])
    without = fit(pairs)  # negative control: the bytes read are lost, the law is no longer recovered
    assert without.fallback.b != pytest.approx(1e-9, rel=1e-3)


def test_save_and_load_round_trip(tmp_path):
    model = fit(_synthetic(np.random.default_rng(3)), meta={"graphs": ["synthetic"]})
    loaded = LatencyModel.load(model.save(tmp_path / "model.json"))
    assert loaded == model


# -- scaling to devices ---------------------------------------------------------------------------


def _device(speed: float, op_speed: dict[str, float] | None = None) -> DeviceProfile:
    return DeviceProfile(
        name=f"dev{speed}", p_board_idle_w=1, memory_mb=1024,
        pus=[{"name": "cpu", "kind": "cpu", "cores": 4, "speed": speed, "p_active_w": 1},
             {"name": "slow", "kind": "cpu", "cores": 4, "speed": speed / 10, "p_active_w": 1,
              "op_speed": op_speed or {}}],
    )


@pytest.fixture(scope="module")
def small_graph():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 4))
    return capture(model, torch.randn(1, 3, 8, 8), name="tiny")


def test_predict_scales_inversely_with_speed(small_graph):
    model = fit(_synthetic(np.random.default_rng(4)))
    host = model.predict_graph(small_graph)
    one = predict(small_graph, _device(1.0), model=model)
    four = predict(small_graph, _device(4.0), model=model)
    assert set(one) == {n.name for n in small_graph.compute_nodes()}
    assert all(v > 0 for v in one.values())
    for name in one:
        assert one[name] == pytest.approx(host[name])
        assert four[name] == pytest.approx(one[name] / 4)


def test_predict_uses_fastest_pu_by_default_and_op_speed(small_graph):
    model = fit(_synthetic(np.random.default_rng(5)))
    dev = _device(2.0, op_speed={"act": 0.5})
    default = predict(small_graph, dev, model=model)
    fast = predict(small_graph, dev, pu="cpu", model=model)
    slow = predict(small_graph, dev, pu="slow", model=model)
    assert default == fast
    for node in small_graph.compute_nodes():
        factor = 20 if node.kind == "act" else 10  # speed/10, and half again for act
        assert slow[node.name] == pytest.approx(fast[node.name] * factor)


def test_input_bytes_sums_data_inputs(small_graph):
    nodes = small_graph.compute_nodes()
    first, second = nodes[0], nodes[1]
    assert input_bytes(small_graph, first) == 3 * 8 * 8 * 4
    assert input_bytes(small_graph, second) == first.out_bytes


def test_fit_from_graphs_and_measured_fallback(small_graph, graph_of, tmp_path, monkeypatch):
    """A model calibrated on a self-made net plus one small zoo net predicts every node >= 0;
    with no model, predict divides this graph's measured (cached) host times by the speed."""
    monkeypatch.setenv("DNNINFER_CACHE_DIR", str(tmp_path))
    digits = graph_of("digits_cnn")[2]
    model = fit_from_graphs([small_graph, digits], warmup=1, repeats=3)
    assert model.meta["graphs"] == ["tiny", "digits_cnn"]
    preds = model.predict_graph(digits)
    assert set(preds) == {n.name for n in digits.compute_nodes()}
    assert all(v >= 0 for v in preds.values())
    rpi4 = load_device("rpi4")
    scaled = predict(small_graph, rpi4)  # model=None: measures with profile()'s defaults, caches
    measured = profile(small_graph)  # the same cache entry
    assert set(scaled) == set(measured.node_s)
    for name, host_s in measured.node_s.items():
        assert scaled[name] == pytest.approx(host_s / rpi4.pu().speed)
