"""The NASNet-like cell stack and the bench's model lookup; the bench's pure helpers."""

from __future__ import annotations

import pytest
import torch

from dnninfer.errors import UserError
from dnninfer.graph import capture
from dnninfer.schedule import OpDAG, make_plan, models


def test_nasnet_cells_is_deterministic_and_branchy():
    a, b = models.build("nasnet_cells", seed=3), models.build("nasnet_cells", seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    x = models.example_inputs("nasnet_cells", batch=2)
    assert torch.equal(x[0], models.example_inputs("nasnet_cells", batch=2)[0])
    graph = capture(a, x, name="nasnet_cells")
    assert graph(*x).shape == (2, 1000)
    dag = OpDAG.from_graph(graph)
    assert make_plan(dag, "opara", "topo").num_streams > 20  # many small parallel branches
    with torch.no_grad():
        assert torch.isfinite(a(*x)).all()


def test_zoo_names_pass_through_and_unknown_names_are_user_errors():
    assert "googlenet" in models.model_names() and "nasnet_cells" in models.model_names()
    assert models.example_inputs("deepfm", batch=3)[0].shape[0] == 3
    with pytest.raises(UserError, match="nosuch"):
        models.build("nosuch")
    with pytest.raises(UserError, match="batch"):
        models.example_inputs("nasnet_cells", batch=0)


def test_gpu_figures_are_null_with_a_reason_without_cuda():
    from dnninfer.schedule.bench import _ours
    from dnninfer.schedule.gpu_bench import gpu_unavailable_reason

    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    reason = gpu_unavailable_reason()
    assert reason and "no CUDA device" in reason
    cpu = {"m": {"1": {"vs_eager2": 1.1, "vs_ort_parallel": None, "vs_ort_sequential": None, "vs_eager1": 1.5,
                       "vs_compile": None, "opara_order_vs_topo": 1.0, "best_mode": "lanes_opara",
                       "max_abs_error": 0.0, "streams": {"opara": 5, "nimble": 2}, "lanes": 2,
                       "reasons": {"ort_parallel": "export failed", "compile": "skipped"}}}}
    ours = _ours(cpu, {}, reason, 2)
    assert ours["gpu_speedup_vs_cudagraph"] == {"m": None} and ours["gpu_reason"] == reason
    assert ours["cpu_speedup_vs_eager2"] == {"m": {"1": 1.1}} and ours["streams_used"] == {"m": 5}
    assert ours["ort_reasons"] == {"m": "export failed"}
