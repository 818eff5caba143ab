"""The NASNet-like cell stack and the bench's model lookup; the bench's summary of its cases."""

from __future__ import annotations

import pytest
import torch

from dnninfer import zoo
from dnninfer.errors import UserError
from dnninfer.graph import capture
from dnninfer.schedule import OpDAG, make_plan


def test_nasnet_cells_is_deterministic_and_branchy():
    a, b = zoo.build_model("nasnet_cells", seed=3), zoo.build_model("nasnet_cells", seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    x = zoo.example_inputs("nasnet_cells", batch=2)
    assert torch.equal(x[0], zoo.example_inputs("nasnet_cells", batch=2)[0])
    graph = capture(a, x, name="nasnet_cells")
    assert graph(*x).shape == (2, 1000)
    dag = OpDAG.from_graph(graph)
    assert make_plan(dag, "opara", "topo").num_streams > 20  # many small parallel branches
    with torch.no_grad():
        assert torch.isfinite(a(*x)).all()


def test_zoo_names_pass_through_and_unknown_names_are_user_errors():
    assert "googlenet" in zoo.names() and "nasnet_cells" in zoo.names()
    assert zoo.example_inputs("deepfm", batch=3)[0].shape[0] == 3
    with pytest.raises(UserError, match="nosuch"):
        zoo.build_model("nosuch")
    with pytest.raises(UserError, match="batch"):
        zoo.example_inputs("nasnet_cells", batch=0)


def test_gpu_figures_are_null_with_a_reason_without_cuda():
    from dnninfer.schedule.gpu_bench import gpu_unavailable_reason
    from dnninfer.schedule.summary import ours_of

    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    reason = gpu_unavailable_reason()
    assert reason and "no CUDA device" in reason
    cpu = {"m": {"1": {"vs_eager2": 1.1, "vs_ort_parallel": None, "vs_ort_sequential": None, "vs_eager1": 1.5,
                       "vs_compile": None, "opara_order_vs_topo": 1.0, "best_mode": "lanes_opara",
                       "max_abs_error": 0.0, "streams": {"opara": 5, "nimble": 2}, "lanes": 2,
                       "reasons": {"ort_parallel": "export failed", "compile": "skipped"}}}}
    ours = ours_of(cpu, {}, reason, 2)
    assert ours["gpu_speedup_vs_cudagraph"] == {"m": None} and ours["gpu_reason"] == reason
    assert ours["cpu_speedup_vs_eager2"] == {"m": {"1": 1.1}} and ours["streams_used"] == {"m": 5}
    assert ours["ort_reasons"] == {"m": "export failed"}


def test_gpu_headline_is_not_measured_without_cuda_and_the_best_case_with_it():
    from dnninfer.schedule.report import CLAIMS
    from dnninfer.schedule.summary import ours_of

    headline = CLAIMS[0]
    cpu = {m: {"1": {"vs_eager2": 1.0, "vs_ort_parallel": None, "vs_ort_sequential": None, "vs_eager1": 1.0,
                     "vs_compile": None, "opara_order_vs_topo": 1.0, "best_mode": "eager2", "max_abs_error": 0.0,
                     "streams": {"opara": 3, "nimble": 2}, "lanes": 2, "reasons": {}}} for m in ("a", "b")}
    row = headline.row({"ours": ours_of(cpu, {}, "no CUDA device here", 2)})
    assert (row["ours"], row["status"], row["note"]) == ("not measured", "not measured", "no CUDA device here")

    def gpu(a: float, b: float) -> dict:
        case = {"speedup_vs_compile": None, "speedup_vs_nimble": 1.0, "speedup_vs_topo_order": 1.0,
                "max_abs_error": 0.0, "streams": 3, "notes": {}}
        return {"a": {"1": {**case, "speedup_vs_cudagraph": a}}, "b": {"8": {**case, "speedup_vs_cudagraph": b}}}

    row = headline.row({"ours": ours_of(cpu, gpu(1.2, 1.9), None, 2)})
    assert (row["ours"], row["status"], row["note"]) == ("1.90x", "met", "best case: b b8")
    assert headline.row({"ours": ours_of(cpu, gpu(1.5, 1.1), None, 2)})["status"] == "short"  # negative control
