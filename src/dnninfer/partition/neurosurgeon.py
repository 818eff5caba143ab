"""Neurosurgeon (Kang et al., ASPLOS'17): one split of the layer chain between the device and one server.

Every split point s of the chain is evaluated: blocks before s on the source, the rest on the
server, T(s) = sum edge + d_s / BW + sum server (partitioning.md §3.2). The server is the other node
that gives the best plan (Neurosurgeon assumes one cloud; we let it pick the best one).
"""

from __future__ import annotations

from dnninfer.partition.common import best
from dnninfer.partition.costmodel import CostModel
from dnninfer.partition.fleet import fleet
from dnninfer.partition.plan import Plan, chain_parts, evaluate


def plan_neurosurgeon(cm: CostModel, objective: str = "latency") -> Plan:
    n_blocks = len(cm.blocks)
    local = cm.default_target(cm.source)
    plans = []
    # one server of each type (partition/fleet.py): interchangeable servers give the same plans, and
    # the first of a type is the one `best` would keep among them
    for server in (n for n in fleet(cm).reps if n != cm.source):
        remote = cm.default_target(server)
        for s in range(n_blocks + 1):  # s blocks on the device, the rest on the server
            stages = ([(local, 0, s - 1)] if s > 0 else []) + ([(remote, s, n_blocks - 1)] if s < n_blocks else [])
            parts = chain_parts(cm, stages)
            if not all(cm.fits(p.targets[0].node, p.nodes) for p in parts):
                continue
            plans.append(evaluate(cm, parts, strategy="neurosurgeon", objective=objective, mode="layer",
                                  reason=f"best of {n_blocks + 1} chain splits with {server}: {s} blocks local"))
    return best(plans, objective)
