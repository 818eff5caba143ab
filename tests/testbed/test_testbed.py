"""The edge testbed: namespaces, shaped links, Ray nodes and throttled PUs, brought up and torn down
for real (root and cgroup v1 needed; skipped with the reason otherwise).

Each driver runs in its own process (the CLI), as a user would: Ray fixes its auth mode at import.
Wall-clock accuracy is a calibration figure, not a unit-test assertion: only gross misconfiguration
(off by more than 2x) fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import quick_bench
from dnninfer.errors import UserError
from dnninfer.testbed import core, net, procs

ROOT = Path(__file__).resolve().parents[2]


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, tc, cgroups)"
    if not (procs.CGROUP_ROOT / "cpu" / "cgroup.procs").exists() or not (procs.CGROUP_ROOT / "pids").exists():
        return "needs the cgroup v1 cpu and pids hierarchies"
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        return "needs `ip netns`"
    return None


needs_host = pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")


def cli(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).with_name("dnninfer"))
    r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if check:
        assert r.returncode == 0, r.stderr[-2000:]
    return r


@pytest.fixture
def clean():
    """Nothing of ours before the test, and nothing after it, whatever happens in between."""
    assert not any(core.leftovers().values()), f"a testbed is already up: {core.leftovers()}"
    yield
    cli("testbed", "down", check=False)
    assert not any(core.leftovers().values()), core.leftovers()


# -- no root needed ---------------------------------------------------------------------------------

def test_dilation_fits_the_pus_into_the_budget():
    from dnninfer.cost import load_cluster

    shares = core.pu_shares(load_cluster("edge3"))
    assert shares["nano/gpu"] == pytest.approx(1.54)
    assert shares["rpi4/cpu"] == pytest.approx(0.25 / (0.16 + 0.84 / 4))  # speed x Amdahl over 4 cores
    d = core.pick_dilation(shares)
    assert sum(shares.values()) / d <= core.CPU_BUDGET and max(shares.values()) / d <= core.MAX_PU_SHARE
    assert sum(shares.values()) / (d - 0.1) > core.CPU_BUDGET  # the smallest such D, to 0.1
    with pytest.raises(UserError, match=r"smallest dilation that fits is 2\.3"):
        core.pick_dilation(shares, 1.5)
    assert core.pick_dilation(shares, 4.0) == 4.0


def test_cfs_period_keeps_the_quota_above_the_kernel_minimum():
    assert procs.period_quota(0.5) == (5_000, 2_500)
    period, quota = procs.period_quota(0.06)
    assert quota >= procs.MIN_QUOTA_US and quota / period == pytest.approx(0.06, rel=0.01)
    with pytest.raises(UserError, match="share"):
        procs.period_quota(1.5)


def test_clusters_with_several_link_kinds_get_one_link_per_pair():
    from dnninfer.cost import load_cluster

    assert core._links(load_cluster("edge3")) == (50.0, 5.0, {})
    rate, rtt, pairs = core._links(load_cluster("hetero4"))
    assert (rate, rtt) == (0.0, 0.0) and len(pairs) == 6  # every pair of 4 nodes has its own link
    assert pairs["gw|tx2"] == [10.0, 20.0] and pairs["nano|tx2"] == [100.0, 1.0]


def test_status_without_a_testbed_is_a_one_line_error():
    if core.STATE_FILE.exists():
        pytest.skip("a testbed is up")
    r = cli("testbed", "status", check=False)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "testbed up" in r.stderr


# -- on the machine ------------------------------------------------------------------------------------

@needs_host
def test_up_and_down_twice_leave_nothing_behind(clean):
    ray_default = Path("/tmp/ray/ray_current_cluster")  # where a plain `ray.init()` looks for a cluster
    before = ray_default.stat().st_mtime_ns if ray_default.exists() else None
    for _ in range(2):
        cli("testbed", "up", "local3", "--no-calibrate", "--json")
        left = core.leftovers()
        assert len(left["netns"]) == 3 and net.BRIDGE in left["links"] and left["processes"]
        pids = [int(p) for p in left["processes"]]
        out = json.loads(cli("testbed", "down", "--json").stdout)
        assert len(out["removed"]["netns"]) == 3
        assert not any(core.leftovers().values()), core.leftovers()
        for pid in pids:  # stopped by PID, every one
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        cli("testbed", "down")  # idempotent
    # the testbed's head never becomes the machine's default cluster: other Ray users are not hijacked
    assert (ray_default.stat().st_mtime_ns if ray_default.exists() else None) == before


@needs_host
def test_leftovers_sees_a_stray_namespace(clean):
    """Negative control for the test above: a namespace of ours that `down` did not make is seen."""
    net.sh("ip", "netns", "add", f"{net.PREFIX}-stray")
    try:
        assert f"{net.PREFIX}-stray" in core.leftovers()["netns"]
    finally:
        net.teardown()
    assert not core.leftovers()["netns"]


@needs_host
def test_bench_smoke_json_contract(clean):
    from test_contracts import check_contract

    check_contract("testbed")
    _, out = quick_bench("testbed")
    ours = json.loads(out)["ours"]
    for key in ("measured_latency_reduction_vs_best_baseline", "measured_latency_reduction_mean_over_baselines",
                "measured_energy_reduction_vs_best_baseline", "measured_energy_reduction_mean_over_baselines",
                "measured_throughput_gain_vs_best_baseline", "measured_throughput_gain_mean_over_baselines",
                "pred_error_median", "pred_error_p90", "rank_tau", "hidp_measured_never_worse", "link_rate_error",
                "pu_speed_error", "dilation", "max_abs_error"):
        assert key in ours, key
    assert ours["max_abs_error"] <= 1e-5 and ours["weights_shipped_bytes"] == 0


def test_kendall_tau_reads_orderings():
    from dnninfer.testbed.bench import kendall_tau

    assert kendall_tau([1, 2, 3], [10, 20, 30]) == 1.0
    assert kendall_tau([1, 2, 3], [30, 20, 10]) == -1.0


# -- on one calibrated local3 testbed (last in the file: the tests above need the machine clean) ----

@pytest.fixture(scope="module")
def local3():
    assert not any(core.leftovers().values()), f"a testbed is already up: {core.leftovers()}"
    try:
        yield json.loads(cli("testbed", "up", "local3", "--json").stdout)
    finally:
        cli("testbed", "down", check=False)
        assert not any(core.leftovers().values()), core.leftovers()


@needs_host
def test_three_node_plan_runs_on_the_testbed_and_equals_the_whole_model(local3):
    up = local3
    cal = up["calibration"]
    assert up["dilation"] >= 1.8  # three one-core nodes into 1.6 cores
    for link in cal["links"].values():  # gross misconfiguration only: the kernel enforces the rate
        assert 0.5 < link["measured_mbps"] / link["configured_mbps"] < 2.0, cal["links"]
    for pu in cal["pus"].values():
        assert 0.5 < pu["measured"] / pu["configured"] < 2.0, cal["pus"]
    out = json.loads(cli("testbed", "run", "resnet18", "--strategy", "uniform", "--requests", "2",
                         "--host-estimate", "flops", "--json").stdout)
    (run,) = out["rows"]
    assert len({t.split("/")[0] for t in run["targets"]}) == 3 and run["stages"] >= 3
    assert run["max_abs_error"] <= 1e-5
    assert run["weights_shipped_bytes"] == 0  # every node rebuilt its stage from the zoo
    assert run["measured_latency_s"] > 0 and run["measured_energy_j"] > 0 and "kernel" in out["note"]


@needs_host
def test_a_node_with_other_weights_is_refused(local3):
    """Negative control for weights never crossing links: a node that rebuilds a different model
    (here: another seed) fails the hash check, naming the node."""
    script = """
from dnninfer import zoo
from dnninfer.cost import load_cluster
from dnninfer.errors import UserError
from dnninfer.graph import capture
from dnninfer.partition.costmodel import CostModel
from dnninfer.partition.execute import materialize
from dnninfer.partition.strategies import plan
from dnninfer.testbed.core import TestbedState
from dnninfer.testbed.runtime import ModelSource, TestbedRuntime

st = TestbedState.load()
rt = TestbedRuntime(st)
g = capture(zoo.build_model("digits_cnn"), zoo.example_inputs("digits_cnn"), name="digits_cnn")
dep = materialize(plan(CostModel.build(g, load_cluster(st.cluster), host="flops"), "uniform"),
                  CostModel.build(g, load_cluster(st.cluster), host="flops"))
try:
    rt.deploy(dep.graph, dep.stages, dep.placement, dep.source, ModelSource("digits_cnn", seed=1))
except Exception as e:
    print("REFUSED", type(e).__name__, str(e).splitlines()[0])
rt.shutdown()
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert "REFUSED" in r.stdout and "weights hash" in r.stdout, (r.stdout, r.stderr[-2000:])


@needs_host
def test_link_down_replans_and_loses_no_request(local3):
    """Last on this testbed: it takes a device's link down for good. `retried` >= 1 is the check
    that the fault really struck (a fault that did nothing would pass `lost == 0` alone)."""
    out = json.loads(cli("testbed", "fault", "digits_cnn", "--fault", "link", "--strategy", "uniform",
                         "--requests", "6", "--timeout-s", "8", "--json").stdout)
    assert out["lost"] == 0 and out["answered"] == 6 and out["retried"] >= 1, out["events"]
    assert out["node"] not in out["nodes_after"] and out["max_abs_error"] <= 1e-5
    assert out["recovery_s"] is not None and out["recovery_s"] > 0
