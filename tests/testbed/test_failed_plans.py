"""A plan that fails or times out on the testbed becomes a row with its error; the run goes on and
the summary and report read the plans that were measured. No testbed needed: the execution is
replaced by a stand-in that raises what the runtime raises."""

from __future__ import annotations

from dnninfer.runtime.ray_runtime import NodeFailure
from dnninfer.testbed import experiment
from dnninfer.testbed.bench import summarise
from dnninfer.testbed.report import report_section


class _Runtime:
    resets = 0

    def reset(self) -> None:
        self.resets += 1


def _row(strategy: str, measured: float | None, predicted: float, **extra):
    return {"cluster": "edge3", "model": "m", "bandwidth_mbps": 5.0, "strategy": strategy, "planned_from": "measured",
            "predicted_latency_s": predicted, "measured_latency_s": measured, "stages": 2,
            "pred_error": None if measured is None else abs(measured - predicted) / measured,
            "measured_energy_j": measured, "measured_throughput_ips": None if measured is None else 1 / measured,
            "max_abs_error": None if measured is None else 0.0,
            "weights_shipped_bytes": None if measured is None else 0,
            **extra}


def test_a_failing_plan_is_recorded_and_the_actors_restarted(monkeypatch):
    def fails(*_args, **_kw):
        raise NodeFailure("testbed stream of 6 requests failed (GetTimeoutError, limit 600 s)")

    monkeypatch.setattr(experiment, "_execute", fails)
    rt, said = _Runtime(), []
    m = experiment._execute_or_record(rt, None, None, "vgg16", 0, None, 5, 6, said.append)
    assert m["measured_latency_s"] is None and "GetTimeoutError" in m["error"] and rt.resets == 1
    assert any("plan failed" in s for s in said)
    # negative control: a plan that runs is passed through untouched, nothing restarted
    monkeypatch.setattr(experiment, "_execute", lambda *a, **k: {"measured_latency_s": 0.1})
    assert experiment._execute_or_record(rt, None, None, "m", 0, None, 5, 6, said.append) == {"measured_latency_s": 0.1}
    assert rt.resets == 1


def test_summary_and_report_skip_failed_plans(tmp_path):
    rows = [_row("hidp", 0.10, 0.11), _row("uniform", 0.20, 0.18), _row("dads", None, 0.3, error="timed out")]
    ours = summarise(rows, {}, 2.0)
    assert ours["failed_plans"] == 1 and ours["cases"] == 1
    assert abs(ours["measured_latency_reduction_vs_best_baseline"] - 0.5) < 1e-9  # vs uniform only
    section = report_section({"rows": rows, "ours": ours}, tmp_path)
    assert (tmp_path / "testbed_measured_vs_predicted.png").exists() and section is not None
    only_failed = summarise([_row("hidp", None, 0.1, error="x")], {}, 2.0)
    assert only_failed == {"failed_plans": 1, "planned_from": None}


def test_a_failed_stream_keeps_the_plans_latency(monkeypatch):
    """A stream that times out costs only the throughput figure: the latency requests stand, the
    error is recorded and the actors are restarted. Negative control: a stream that runs."""
    import types

    import torch

    from dnninfer.partition import execute

    monkeypatch.setattr(execute, "materialize", lambda p, cm: types.SimpleNamespace(
        graph=None, stages=[1, 2], placement={}, source="n1/cpu"))
    monkeypatch.setattr(experiment, "measured_energy_j", lambda *a: 1.0)
    out = torch.ones(2)

    class Rt(_Runtime):
        state = types.SimpleNamespace(boards=True)
        stream_fails = True

        def deploy(self, *a):
            return {"targets": ["n1/cpu"], "weights_shipped_bytes": 0}

        def run(self):
            return types.SimpleNamespace(latency_s=0.2, compute_s={}, output=out)

        def stream(self, n):
            if self.stream_fails:
                raise NodeFailure("testbed stream of 6 requests failed (GetTimeoutError, limit 600 s)")
            return 7.0

    plan = types.SimpleNamespace(energy={}, bytes_sent=0)
    rt = Rt()
    m = experiment._execute(rt, None, plan, "vgg16", 0, out, 3, 6)
    assert m["measured_latency_s"] == 0.2 and m["measured_throughput_ips"] is None
    assert "GetTimeoutError" in m["stream_error"] and rt.resets == 1 and m["max_abs_error"] == 0.0
    rt.stream_fails = False
    m = experiment._execute(rt, None, plan, "vgg16", 0, out, 3, 6)
    assert m["measured_throughput_ips"] == 7.0 and m["stream_error"] is None and rt.resets == 1
