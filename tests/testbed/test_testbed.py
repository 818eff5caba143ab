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


def _nothing_running() -> None:
    """Fail when a live testbed is up; remove the dead remains of a crashed one (namespaces, links,
    cgroups and state whose processes are all gone), which no one is using."""
    left = core.leftovers()
    assert not left["processes"], f"a testbed is running: {left}"
    if any(left.values()):
        cli("testbed", "down")
        assert not any(core.leftovers().values()), core.leftovers()


@pytest.fixture
def clean():
    """Nothing of ours before the test, and nothing after it, whatever happens in between."""
    _nothing_running()
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


@pytest.mark.parametrize("args, says", [
    (("dpra", "simulate", "--gateway", "1"), "--gateway: goes with --testbed"),
    (("dpra", "simulate", "--testbed", "--run"), "--testbed: one --method at a time, without --run"),
    (("profile", "digits_cnn", "--cluster", "testbed"), "--cluster: needs --out FILE"),
    (("profile", "digits_cnn", "--cluster", "nohost", "--config", "local3", "--out", "x.json"),
     "expected testbed or a Ray address HOST:PORT"),
    (("profile", "digits_cnn", "--cluster", "10.0.0.1:6379", "--out", "x.json"), "real boards need --config"),
    (("testbed", "run", "digits_cnn", "--plan-from", "guess"), "expected measured, cited or both"),
])
def test_testbed_options_fail_in_one_line(args, says, tmp_path):
    exe = str(Path(sys.executable).with_name("dnninfer"))
    r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and says in r.stderr and r.stderr.count("\n") == 1, r.stderr[-1500:]


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


_PIPE = """
import socket, sys, time
mode, ip, nbytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "serve":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((ip, 5001)); s.listen()
    print("ready", flush=True)
    c, _ = s.accept(); got = 0
    while got < nbytes:
        chunk = c.recv(1 << 16)
        if not chunk:
            break
        got += len(chunk)
    c.sendall(b"k"); c.close()
else:
    c = socket.create_connection((ip, 5001)); t0 = time.perf_counter(); c.sendall(b"x" * nbytes); c.recv(1)
    print(time.perf_counter() - t0)
"""


def _send_s(src: net.NodeNet, dst: net.NodeNet, nbytes: int) -> float:
    """Seconds to push `nbytes` over TCP from one namespace to another (server acks the last byte)."""
    server = subprocess.Popen(["ip", "netns", "exec", dst.netns, sys.executable, "-c", _PIPE, "serve", dst.ip,
                               str(nbytes)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        out = subprocess.run(["ip", "netns", "exec", src.netns, sys.executable, "-c", _PIPE, "send", dst.ip,
                              str(nbytes)], capture_output=True, text=True, timeout=60, check=True)
        return float(out.stdout)
    finally:
        server.wait(timeout=60)


@needs_host
def test_per_pair_links_shape_each_pair_at_its_own_rate(clean):
    """hetero4-style links: a slow pair (8 Mbit/s) and a fast pair (80) from the same device. The
    fast pair is the negative control: a per-device shaper would make both equally slow."""
    nodes = [net.NodeNet(i, f"n{i}", 0) for i in range(3)]
    rates = {(0, 1): 8.0, (0, 2): 80.0, (1, 2): 80.0}
    try:
        net.create(nodes, {**rates, **{(b, a): r for (a, b), r in rates.items()}})
        slow, fast = _send_s(nodes[0], nodes[1], 1 << 20), _send_s(nodes[0], nodes[2], 1 << 20)
    finally:
        net.teardown()
    assert 0.5 < slow / (8 * 2**20 / 8e6) < 2.0, slow  # gross misconfiguration only
    assert slow > 3 * fast, (slow, fast)


def test_kendall_tau_reads_orderings():
    from dnninfer.testbed.bench import kendall_tau

    assert kendall_tau([1, 2, 3], [10, 20, 30]) == 1.0
    assert kendall_tau([1, 2, 3], [30, 20, 10]) == -1.0


# -- on one calibrated local3 testbed (last in the file: the tests above need the machine clean) ----

@pytest.fixture(scope="module")
def local3():
    _nothing_running()
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
def test_cbnet_times_its_deploy_path_on_a_testbed_pu(local3):
    """Issue 20 (d): the CBNet bench's deploy-path comparison runs on a throttled PU of the testbed
    (a user's function shipped to the PU's actor); a PU the testbed lacks is refused before any
    training (the negative control)."""
    out = json.loads(cli("bench", "cbnet", "--smoke", "--testbed-pu", "n2/cpu", "--json").stdout)
    tb = out["ours"]["testbed"]
    assert tb["target"] == "n2/cpu" and tb["dilation"] == local3["dilation"]
    assert 0 < tb["quota_host_cores"] < 1  # one host core's share / D
    (backbone,) = out["ours"]["speedup_vs_full_b1_testbed_by_backbone"]
    speedups = out["deploy"][backbone]["testbed"]
    assert set(speedups["latency_us"]) == {"full", "branchynet", "light", "cbnet"}
    assert all(v > 0 for v in speedups["latency_us"].values())
    assert out["ours"]["speedup_vs_branchynet_b1_testbed_by_backbone"][backbone] > 0
    bad = cli("bench", "cbnet", "--smoke", "--testbed-pu", "n9/cpu", check=False)
    assert bad.returncode == 2 and "'n9/cpu' is not a PU of the testbed (local3)" in bad.stderr
    assert "training" not in bad.stderr


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
def test_profile_on_the_testbed_then_plan_from_it(local3, tmp_path):
    from dnninfer.cost.measured import load_cluster_profile

    path = tmp_path / "digits_cnn.json"
    out = json.loads(cli("profile", "digits_cnn", "--cluster", "testbed", "--out", str(path), "--repeats", "3",
                         "--warmup", "1", "--json").stdout)
    prof = load_cluster_profile(path)
    assert set(prof.targets) == {"n1/cpu", "n2/cpu", "n3/cpu"} and prof.dilation == local3["dilation"]
    assert prof.where == "testbed" and len(out["targets"]) == 3
    for row in out["targets"]:  # gross misconfiguration only (e.g. the dilation not divided out)
        assert 1 / 3 < row["measured_speed"] / row["cited_speed"] < 3, out["targets"]
    plan = json.loads(cli("partition", "digits_cnn", "--cluster", "local3", "--strategy", "all-local", "--profile",
                          str(path), "--json").stdout)["plans"][0]
    assert plan["latency_ms"] == pytest.approx(sum(prof.targets["n1/cpu"].values()) * 1e3, rel=1e-6)


@needs_host
def test_real_boards_join_by_address_and_a_missing_board_is_named(local3, tmp_path):
    """The boards path on the testbed's own Ray cluster, joined by address and a cluster YAML, as a
    user with real boards would; a YAML naming a board no Ray node offers is refused, naming it."""
    st = core.TestbedState.load()
    env = {**os.environ, "RAY_AUTH_TOKEN": st.token}
    exe = str(Path(sys.executable).with_name("dnninfer"))
    base = [exe, "profile", "digits_cnn", "--cluster", st.address, "--repeats", "2", "--warmup", "1", "--json"]
    r = subprocess.run([*base, "--config", "local3", "--out", str(tmp_path / "b.json")], capture_output=True,
                       text=True, timeout=300, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["where"].startswith("real boards") and json.loads(r.stdout)["dilation"] == 1.0
    yaml = tmp_path / "boards.yaml"  # a user's own YAML, by path: one board no Ray node offers
    yaml.write_text("name: myboards\nnodes:\n  - {name: n1, device: host1}\n  - {name: ghost, device: host1}\n"
                    "default_link: {name: lan, bandwidth_mbps: 100, rtt_ms: 1, energy_nj_per_bit: 0}\n")
    bad = subprocess.run([*base, "--config", str(yaml), "--out", str(tmp_path / "c.json")], capture_output=True,
                         text=True, timeout=300, env=env, cwd=ROOT)
    assert bad.returncode == 2 and "tb_ghost" in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr[-2000:]
    gpu = subprocess.run([*base, "--config", "edge3", "--out", str(tmp_path / "d.json")], capture_output=True,
                         text=True, timeout=300, env=env, cwd=ROOT)
    assert gpu.returncode == 2 and "nano/gpu is a gpu" in gpu.stderr, gpu.stderr[-2000:]
    run = [exe, "testbed", "run", "digits_cnn", "--cluster", st.address, "--config", "local3", "--strategy", "uniform",
           "--requests", "2", "--plan-from", "cited", "--json"]
    r = subprocess.run(run, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    row = json.loads(r.stdout)["rows"][0]  # the plan ran across the three boards and equals the whole model
    assert row["max_abs_error"] <= 1e-5 and len({t.split("/")[0] for t in row["targets"]}) == 3, row
    bw = subprocess.run([*run, "--bandwidth-mbps", "5"], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert bw.returncode == 2 and "real links" in bw.stderr, bw.stderr[-2000:]


@needs_host
def test_dpra_splits_execute_across_a_link_that_follows_the_channel(local3):
    """Each slot the kernel's rate (read back from tc) is the channel's, divided by the dilation;
    the executed splits equal the whole model; afterwards the configured rate is back."""
    out = json.loads(cli("dpra", "simulate", "--model", "digits_cnn", "--slots", "3", "--testbed",
                         "--host-estimate", "flops", "--json").stdout)
    rows = out["rows"]
    assert len(rows) == 3 and all(r["max_abs_error"] <= 1e-5 for r in rows)
    assert len({round(r["rate_mbps"], 3) for r in rows}) == 3  # Rayleigh fading: a new rate every slot
    for r in rows:
        assert r["kernel_rate_mbps"] == pytest.approx(r["rate_mbps"], rel=0.01), r
    st = core.TestbedState.load()
    for node in ("n1", "n2"):  # the configured rates and quotas are back
        assert net.tbf_rate_mbps(st.netnode(node)) == pytest.approx(100 / st.dilation, rel=0.01)
    for target, q in st.quotas.items():
        d = procs.CPU / procs.cpu_key(target)
        got = int((d / "cpu.cfs_quota_us").read_text()) / int((d / "cpu.cfs_period_us").read_text())
        assert got == pytest.approx(q["quota_us"] / q["period_us"], rel=0.02), target


@needs_host
def test_link_down_replans_and_loses_no_request(local3):
    """Last on this testbed: it takes a device's link down for good. `retried` >= 1 is the check
    that the fault really struck (a fault that did nothing would pass `lost == 0` alone)."""
    out = json.loads(cli("testbed", "fault", "digits_cnn", "--fault", "link", "--strategy", "uniform",
                         "--requests", "6", "--timeout-s", "8", "--json").stdout)
    assert out["lost"] == 0 and out["answered"] == 6 and out["retried"] >= 1, out["events"]
    assert out["node"] not in out["nodes_after"] and out["max_abs_error"] <= 1e-5
    assert out["recovery_s"] is not None and out["recovery_s"] > 0
