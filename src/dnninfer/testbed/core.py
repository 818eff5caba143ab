"""`up`, `status` and `down` of the edge testbed: real Ray nodes in shaped namespaces, throttled PUs.

One Ray node per device of a cluster YAML runs inside its own network namespace and joins a head
on the host side of the bridge; each processing unit is one single-threaded actor in a cpu cgroup
whose quota is the PU's throughput as the cost model defines it (speed x multi-core scaling, in
host cores) divided by the dilation D. The box has two cores, so D stretches time until all quotas
fit in `CPU_BUDGET` cores with no contention: link rates are divided by D, RTTs multiplied by D,
and every measured time is divided by D before it is reported.

Bandwidth is enforced by the kernel (tbf); delay is emulated by the runtime in user space.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dnninfer.errors import UserError
from dnninfer.testbed import net, procs

STATE_DIR = Path("/tmp/dnntb")  # short: Ray's socket paths live below it
STATE_FILE = STATE_DIR / "state.json"
#: host cores the quotas may use together: 2 cores less room for the driver, Ray's own daemons, the OS
CPU_BUDGET = 1.6
#: one PU actor is one thread: it cannot use more than this share of a core
MAX_PU_SHARE = 0.95
NOTE = "bandwidth enforced by the kernel (tbf); delay (RTT) emulated by the runtime in user space"
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           # activations go node to node through the object store, never inline via the driver
           "RAY_max_direct_call_object_size": "1024"}


@dataclass
class NodeState:
    index: int
    name: str
    device: str
    ip: str
    netns: str
    rate_mbps: float  # the cluster's link rate (undilated)
    rtt_ms: float
    pus: dict[str, float]  # pu -> emulated speed in host cores (undilated)


@dataclass
class TestbedState:
    cluster: str
    dilation: float
    port: int
    token: str
    nodes: list[NodeState]
    quotas: dict[str, dict[str, int]] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0
    #: per-pair links ("a|b" with a < b -> [Mbit/s, RTT ms], undilated); empty: one access link per device
    pairs: dict[str, list[float]] = field(default_factory=dict)
    host: str = net.HOST_IP  # the Ray head (real boards: wherever it runs)
    source: str = ""  # the cluster as given: a config name or the YAML's absolute path
    boards: bool = False  # real boards joined by hand: no namespaces, quotas, dilation or emulated RTT

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def for_boards(cls, address: str, cluster_name: str, token: str | None = None) -> TestbedState:
        """Real boards already joined to a Ray cluster at `address` (`ray start --address ...
        --resources '{"tb_<node>": 1000}'` on each), described by a cluster YAML: the same runtime,
        with the boards' own speed and network instead of quotas and shaped links."""
        from dnninfer.cost import load_cluster

        host, sep, port = address.rpartition(":")
        if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
            raise UserError(f"--cluster {address!r}: expected testbed or a Ray address HOST:PORT")
        cluster = load_cluster(cluster_name)
        gpus = [(n, pu) for n in cluster.node_names for pu in cluster.device(n).pus if pu.kind != "cpu"]
        if gpus:  # the PU workers run CPU torch; timing a GPU's share on one CPU thread would be wrong
            n, pu = gpus[0]
            raise UserError(f"real boards: PU {n}/{pu.name} is a {pu.kind}; only CPU processing units run through "
                            "the Ray workers so far (describe the board with its CPU PUs only)")
        shares = pu_shares(cluster)
        nodes = []
        for i, n in enumerate(cluster.nodes):
            pus = {t.split("/", 1)[1]: v for t, v in shares.items() if t.split("/", 1)[0] == n.name}
            nodes.append(NodeState(i, n.name, n.device, "", "", 0.0, 0.0, pus))  # real links: nothing emulated
        token = token if token is not None else os.environ.get("RAY_AUTH_TOKEN", "")
        return cls(cluster.name, 1.0, int(port), token, nodes, host=host, boards=True, started=time.time(),
                   source=_cluster_source(cluster_name))

    def load_cluster(self) -> Any:
        """The cluster config this state was made from (a user's YAML by its path, not its name)."""
        from dnninfer.cost import load_cluster

        return load_cluster(self.source or self.cluster)

    def node(self, name: str) -> NodeState:
        for n in self.nodes:
            if n.name == name:
                return n
        raise UserError(f"testbed: no node {name!r}; expected one of {', '.join(n.name for n in self.nodes)}")

    def netnode(self, name: str) -> net.NodeNet:
        n = self.node(name)
        return net.NodeNet(n.index, n.name, n.rate_mbps / self.dilation)

    def link(self, a: str, b: str) -> tuple[float, float]:
        """(Mbit/s, RTT ms) between two devices as configured (undilated)."""
        if self.pairs:
            rate, rtt = self.pairs.get("|".join(sorted((a, b))), (0.0, 0.0))
            return rate, rtt
        na = self.node(a)
        return na.rate_mbps, na.rtt_ms

    def apply_rates(self, mbps: float | None = None) -> None:
        """Set the kernel's rates: every link at `mbps` (undilated), or as configured when None.
        Real boards' links are their own: nothing is set."""
        if self.boards:
            return
        nets = {n.name: net.NodeNet(n.index, n.name, 0) for n in self.nodes}
        for n in self.nodes:
            if self.pairs:
                peers = {}
                for m in self.nodes:
                    rate = self.link(n.name, m.name)[0] if m is not n else 0.0
                    if rate > 0:
                        peers[nets[m.name].ip] = (mbps or rate) / self.dilation
                net.set_pair_rates(nets[n.name], peers)
            elif mbps or n.rate_mbps:
                net.set_rate(nets[n.name], (mbps or n.rate_mbps) / self.dilation)

    def save(self) -> None:
        STATE_DIR.mkdir(mode=0o700, exist_ok=True)
        tmp = STATE_FILE.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.chmod(0o600)
        tmp.replace(STATE_FILE)

    @classmethod
    def load(cls) -> TestbedState:
        if not STATE_FILE.exists():
            raise UserError("testbed: none is up (run `dnninfer testbed up CLUSTER` first)")
        d = json.loads(STATE_FILE.read_text())
        d["nodes"] = [NodeState(**n) for n in d["nodes"]]
        return cls(**d)


def _cluster_source(name_or_path: str) -> str:
    """A config name as given; a YAML path made absolute (a later command may run elsewhere)."""
    p = Path(name_or_path)
    return str(p.resolve()) if p.suffix in (".yaml", ".yml") or os.sep in name_or_path else name_or_path


def pu_shares(cluster: Any) -> dict[str, float]:
    """`node/pu` -> its throughput in host cores, as the cost model defines it (all lanes)."""
    out = {}
    for node in cluster.nodes:
        dev = cluster.device(node.name)
        for pu in dev.pus:
            out[f"{node.name}/{pu.name}"] = pu.speed * pu.scaling()
    return out


def pick_dilation(shares: dict[str, float], requested: float | None = None) -> float:
    """The smallest D (to 0.1) with every quota under one thread's reach and all of them together
    inside `CPU_BUDGET`; a requested D that does not fit is refused, naming what does not fit."""
    total, biggest = sum(shares.values()), max(shares.values())
    need = max(1.0, total / CPU_BUDGET, biggest / MAX_PU_SHARE)
    if requested is None:
        return math.ceil(need * 10 - 1e-9) / 10
    if not (math.isfinite(requested) and requested > 0):
        raise UserError(f"--dilation: expected auto or a number > 0, got {requested}")
    if requested + 1e-9 < need:
        top = max(shares, key=shares.get)
        raise UserError(f"--dilation {requested:g}: the PUs need {total:.2f} host cores in all (budget "
                        f"{CPU_BUDGET}) and {top} alone {biggest:.2f}; the smallest dilation that fits is "
                        f"{math.ceil(need * 10 - 1e-9) / 10:g}")
    return requested


def _links(cluster: Any) -> tuple[float, float, dict[str, list[float]]]:
    """One access link per device (the bridge is the shared air) when every link is alike: (rate,
    RTT, {}); otherwise one link per pair: (0, 0, {"a|b": [rate, RTT]}) for every pair that has one."""
    links = {(s.link.bandwidth_mbps, s.link.rtt_ms) for s in cluster.links}
    if cluster.default_link is not None:
        links.add((cluster.default_link.bandwidth_mbps, cluster.default_link.rtt_ms))
    if not links:
        if len(cluster.nodes) > 1:
            raise UserError(f"testbed: cluster {cluster.name!r} has no links between its {len(cluster.nodes)} "
                            "devices; expected a default_link or links")
        return 0.0, 0.0, {}  # one device: nothing to shape
    if len(links) == 1:
        rate, rtt = links.pop()
        return rate, rtt, {}
    pairs = {}
    for (a, b), link in cluster.link_map().items():
        pairs["|".join(sorted((a, b)))] = [link.bandwidth_mbps, link.rtt_ms]
    return 0.0, 0.0, pairs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((net.HOST_IP, 0))
        return s.getsockname()[1]


def ray_env(state: TestbedState) -> dict[str, str]:
    if not state.token:  # real boards without token auth
        return {k: v for k, v in RAY_ENV.items() if k != "RAY_AUTH_MODE"}
    return {**RAY_ENV, "RAY_AUTH_TOKEN": state.token}


def _ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


def up(cluster_name: str, dilation: float | None = None, *, calibrate: bool = True,
       log: Any = None) -> TestbedState:
    """Bring the testbed up for `cluster_name`; returns its state (also saved for `status`/`down`)."""
    from dnninfer.cost import load_cluster

    procs.check_host()
    cluster = load_cluster(cluster_name)
    if STATE_FILE.exists() or any(net.leftovers().values()):
        raise UserError("testbed: one is already up (or left over); run `dnninfer testbed down` first")
    shares = pu_shares(cluster)
    d = pick_dilation(shares, dilation)
    rate, rtt, pairs = _links(cluster)
    nets = [net.NodeNet(i, n.name, rate / d) for i, n in enumerate(cluster.nodes)]
    index = {n.name: i for i, n in enumerate(cluster.nodes)}
    pair_rates = {(index[a], index[b]): v[0] / d for ab, v in pairs.items()
                  for a, b in (ab.split("|"), ab.split("|")[::-1])}
    nodes = [NodeState(i, n.name, n.device, nn.ip, nn.netns, rate, rtt,
                       {t.split("/", 1)[1]: s for t, s in shares.items() if t.split("/", 1)[0] == n.name})
             for i, (n, nn) in enumerate(zip(cluster.nodes, nets, strict=True))]
    say = log or (lambda msg: None)
    try:
        net.create(nets, pair_rates or None)
        state = TestbedState(cluster.name, d, _free_port(), secrets.token_hex(16), nodes, started=time.time(),
                             pairs=pairs, source=_cluster_source(cluster_name))
        state.quotas = procs.make_cpu_groups({t: s / d for t, s in shares.items()})
        state.save()
        STATE_DIR.joinpath("ray").mkdir(exist_ok=True)
        env = {**os.environ, **ray_env(state)}
        common = ["--disable-usage-stats", "--block", "--temp-dir", str(STATE_DIR / "ray")]
        say(f"ray head on {state.address}")
        procs.spawn([_ray_bin(), "start", "--head", "--node-ip-address", net.HOST_IP, "--port", str(state.port),
                     "--num-cpus", "0", "--include-dashboard=false", "--object-store-memory", str(300 << 20),
                     *common], STATE_DIR / "head.log", env)
        _wait_for(lambda: _port_open(net.HOST_IP, state.port), 60, "the Ray head to listen")
        for n in nodes:
            say(f"ray node {n.name} in {n.netns} ({n.ip}), "
                + (f"link {rate / d:.3g} Mbit/s" if not pairs else "one link per peer (htb)"))
            procs.spawn(["ip", "netns", "exec", n.netns, _ray_bin(), "start", "--address", state.address,
                         "--node-ip-address", n.ip, "--num-cpus", "0",
                         "--resources", json.dumps({f"tb_{n.name}": 1000}), "--object-store-memory",
                         str(300 << 20), "--disable-usage-stats", "--block",
                         # nodes on one machine would share Ray's session folder and its socket files
                         "--temp-dir", str(STATE_DIR / f"r{n.index}")], STATE_DIR / f"node-{n.name}.log", env)
        connect(state)
        import ray

        _wait_for(lambda: all(f"tb_{n.name}" in ray.cluster_resources() for n in nodes), 90,
                  "every Ray node to join")
        if calibrate:
            from dnninfer.testbed.calibrate import calibrate as _calibrate

            say("calibrating PU speeds and link rates")
            state.calibration = _calibrate(state)
            state.save()
        return state
    except BaseException:
        if not os.environ.get("DNNINFER_TESTBED_KEEP"):  # debugging: keep what failed, logs included
            down()
        raise


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _wait_for(cond: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.25)
    raise UserError(f"testbed: timed out after {timeout_s:g} s waiting for {what} (logs in {STATE_DIR})")


def connect(state: TestbedState) -> None:
    """Join this process to the testbed's Ray cluster as a driver (on the host side: unshaped).

    Ray reads its auth mode when it is imported, so this must come before any `import ray`."""
    if state.token and "ray" in sys.modules and os.environ.get("RAY_AUTH_MODE") != "token":
        raise UserError("testbed: connect before importing ray (Ray reads RAY_AUTH_MODE=token at import); "
                        "run the testbed driver in a fresh process")
    os.environ.update(ray_env(state))
    import ray

    if ray.is_initialized():
        ray.shutdown()
    try:
        ray.init(address=state.address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError) as e:
        raise UserError(f"cannot join the Ray cluster at {state.address}: {str(e).strip().splitlines()[-1]}") from None
    if state.boards:
        have = ray.cluster_resources()
        missing = [n.name for n in state.nodes if f"tb_{n.name}" not in have]
        if missing:
            raise UserError(f"Ray cluster at {state.address}: no node offers resource tb_{missing[0]} (start it with "
                            f"`ray start --address {state.address} --resources '{{\"tb_{missing[0]}\": 1000}}'`)")


def status() -> dict[str, Any]:
    """What is up: configured vs calibrated figures, and whether every process still runs."""
    state = TestbedState.load()
    alive = procs.tracked()
    return {"cluster": state.cluster, "dilation": state.dilation, "address": state.address, "note": NOTE,
            "nodes": [asdict(n) for n in state.nodes], "quotas": state.quotas,
            "calibration": state.calibration, "processes": len(alive), "up_s": round(time.time() - state.started, 1)}


def down() -> dict[str, Any]:
    """Stop every process the testbed started (by PID), remove namespaces, links, qdiscs, cgroups
    and state. Idempotent; says what it removed."""
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except ImportError:
        pass
    before = {**net.leftovers(), **procs.leftovers()}
    procs.stop_all()
    net.teardown()
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    after = leftovers()
    if any(after.values()):
        raise UserError(f"testbed down: could not remove {after}")
    return {"removed": before}


def leftovers() -> dict[str, list[str]]:
    """Everything of the testbed that exists now; all lists empty when it is down."""
    state = [str(STATE_FILE)] if STATE_FILE.exists() else []
    return {**net.leftovers(), **procs.leftovers(), "state": state}
