"""Links of the testbed: one network namespace per emulated device, joined to one bridge.

Each device gets a veth pair: one end inside its namespace, one on the bridge. Bandwidth is
enforced by the kernel (tbf on both ends, so a device's sends and receives are each limited to its
link rate, like one radio); delay is emulated by the runtime in user space (no `netem` here).
A cluster whose pairs have links of different rates (hetero4) gets an htb qdisc on both ends
instead, one class per peer, matched by the peer's address (destination on the device's side,
source on the bridge's side), so each pair's traffic gets its own link's rate; traffic to the host
(the Ray head, the driver) goes to an unshaped default class.
Every name starts with `PREFIX` and every address comes from `SUBNET`, a private range used only
inside namespaces the testbed created, so `teardown` can find and remove all of it, and only it.
"""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dnninfer.errors import UserError

PREFIX = "dnntb"
BRIDGE = f"{PREFIX}0"
SUBNET = ipaddress.ip_network("10.213.0.0/24")
HOST_IP = str(SUBNET.network_address + 1)
#: token bucket: two full frames, or 2 ms at the link's rate where that is more. A 64 KiB bucket
#: (one GSO segment) let every message's first 64 KiB through at line rate: measured on edge3 at
#: 5 Mbit/s, a 3-stage plan sending 100 + 75 KB finished in 188 ms where its bytes alone need 280 ms.
#: Larger GSO packets are segmented by tbf itself.
MIN_BURST_BYTES = 2 * 1514
BURST_S = 0.002


def burst_bytes(rate_mbps: float) -> int:
    return max(MIN_BURST_BYTES, round(rate_mbps * 1e6 / 8 * BURST_S))
#: tbf queue: how long a packet may wait before the kernel drops it (drops would make TCP back off)
QUEUE_LATENCY_MS = 4000
#: htb's default class (traffic to the host side): far above any emulated link
UNSHAPED = "10gbit"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one `ip`/`tc` command; a failure is a UserError that names the command and its message."""
    r = subprocess.run(list(args), capture_output=True, text=True)
    if check and r.returncode != 0:
        msg = (r.stderr or r.stdout).strip().splitlines()
        raise UserError(f"testbed: `{' '.join(args)}` failed: {msg[-1] if msg else r.returncode}")
    return r


@dataclass(frozen=True)
class NodeNet:
    """Where one emulated device lives on the network."""

    index: int
    name: str  # the cluster's node name
    rate_mbps: float  # the link rate as enforced (after dilation)

    @property
    def netns(self) -> str:
        return f"{PREFIX}-{self.index}"

    @property
    def host_if(self) -> str:
        return f"{PREFIX}{self.index}h"

    @property
    def ns_if(self) -> str:
        return f"{PREFIX}{self.index}n"

    @property
    def ip(self) -> str:
        return str(SUBNET.network_address + 10 + self.index)


def _tbf(rate_mbps: float, dev: str, netns: str | None = None) -> None:
    cmd = ["ip", "netns", "exec", netns] if netns else []
    rate = f"{max(8, round(rate_mbps * 1000))}kbit"
    sh(*cmd, "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate, "burst", str(burst_bytes(rate_mbps)),
       "latency", f"{QUEUE_LATENCY_MS}ms")


def _kbit(rate_mbps: float) -> str:
    return f"{max(8, round(rate_mbps * 1000))}kbit"


def _htb(peers: dict[str, float], dev: str, match: str, netns: str | None = None) -> None:
    """Root htb on `dev`: one class per peer address (Mbit/s), matched as `ip <match> ADDR/32`."""
    cmd = ["ip", "netns", "exec", netns] if netns else []
    sh(*cmd, "tc", "qdisc", "del", "dev", dev, "root", check=False)
    sh(*cmd, "tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "1")
    sh(*cmd, "tc", "class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate", UNSHAPED)
    for i, (ip, rate) in enumerate(sorted(peers.items()), start=10):
        sh(*cmd, "tc", "class", "add", "dev", dev, "parent", "1:", "classid", f"1:{i}", "htb", "rate", _kbit(rate),
           "ceil", _kbit(rate), "burst", str(burst_bytes(rate)),
           "cburst", str(burst_bytes(rate)))
        # the leaf's queue holds QUEUE_LATENCY_MS of traffic, as tbf's does (drops would make TCP back off)
        limit = max(1 << 20, round(rate * 1e6 / 8 * QUEUE_LATENCY_MS / 1e3))
        sh(*cmd, "tc", "qdisc", "add", "dev", dev, "parent", f"1:{i}", "handle", f"{i}:", "bfifo", "limit", str(limit))
        sh(*cmd, "tc", "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1", "u32", "match",
           "ip", match, f"{ip}/32", "flowid", f"1:{i}")


def set_rate(node: NodeNet, rate_mbps: float) -> None:
    """Change a device's link rate in place (both ends), e.g. slot by slot for a fading channel."""
    _tbf(rate_mbps, node.host_if)
    _tbf(rate_mbps, node.ns_if, node.netns)


def tbf_rate_mbps(node: NodeNet) -> float | None:
    """The rate the kernel enforces now on the device's side of its link (None: no tbf there)."""
    out = sh("ip", "netns", "exec", node.netns, "tc", "qdisc", "show", "dev", node.ns_if).stdout.split()
    if "tbf" not in out or "rate" not in out:
        return None
    text = out[out.index("rate") + 1]
    unit = text.lstrip("0123456789.")
    scale = {"bit": 1e-6, "Kbit": 1e-3, "Mbit": 1.0, "Gbit": 1e3}.get(unit)
    return float(text[:len(text) - len(unit)]) * scale if scale else None


def sent_bytes(indices: list[int]) -> int:
    """Bytes the devices have sent so far (kernel counters of the host ends of their veths: what
    a device sends, the host end receives), Ray's own control messages included."""
    return sum(int(Path(f"/sys/class/net/{PREFIX}{i}h/statistics/rx_bytes").read_text()) for i in indices)


def set_pair_rates(node: NodeNet, peers: dict[str, float]) -> None:
    """Per-pair links: the device's traffic to (and from) each peer address at that pair's Mbit/s."""
    _htb(peers, node.ns_if, "dst", node.netns)
    _htb(peers, node.host_if, "src")


def create(nodes: list[NodeNet], pairs: dict[tuple[int, int], float] | None = None) -> None:
    """The bridge with the host's address, and a shaped veth into a fresh namespace per node: one
    rate per device, or, with `pairs` ((index, index) -> Mbit/s, both orders), one per pair."""
    if len(nodes) > SUBNET.num_addresses - 12:
        raise UserError(f"testbed: at most {SUBNET.num_addresses - 12} nodes, got {len(nodes)}")
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "addr", "add", f"{HOST_IP}/{SUBNET.prefixlen}", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")
    for n in nodes:
        sh("ip", "netns", "add", n.netns)
        sh("ip", "link", "add", n.host_if, "type", "veth", "peer", "name", n.ns_if)
        sh("ip", "link", "set", n.ns_if, "netns", n.netns)
        sh("ip", "link", "set", n.host_if, "master", BRIDGE, "up")
        sh("ip", "netns", "exec", n.netns, "ip", "addr", "add", f"{n.ip}/{SUBNET.prefixlen}", "dev", n.ns_if)
        sh("ip", "netns", "exec", n.netns, "ip", "link", "set", n.ns_if, "up")
        sh("ip", "netns", "exec", n.netns, "ip", "link", "set", "lo", "up")
        if pairs:
            set_pair_rates(n, {m.ip: pairs[(n.index, m.index)] for m in nodes if (n.index, m.index) in pairs})
        elif n.rate_mbps > 0:  # a lone device has no link to shape
            set_rate(n, n.rate_mbps)


def set_link(node: NodeNet, up: bool) -> None:
    """Take a device's link down or up (fault injection)."""
    sh("ip", "link", "set", node.host_if, "up" if up else "down")


def leftovers() -> dict[str, list[str]]:
    """Every namespace and interface of ours that exists now (empty lists: nothing is left)."""
    ns = [line.split()[0] for line in sh("ip", "netns", "list").stdout.splitlines() if line.startswith(PREFIX)]
    links = []
    for line in sh("ip", "-o", "link", "show").stdout.splitlines():
        name = line.split(":", 2)[1].strip().split("@")[0]
        if name.startswith(PREFIX):
            links.append(name)
    return {"netns": ns, "links": links}


def teardown() -> None:
    """Remove every namespace and interface of ours; idempotent (deleting a namespace deletes its
    veth end, the peer and its qdiscs with it)."""
    left = leftovers()
    for ns in left["netns"]:
        sh("ip", "netns", "del", ns, check=False)
    for link in leftovers()["links"]:
        sh("ip", "link", "del", link, check=False)
