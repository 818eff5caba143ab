"""The two trivial baselines every partitioning paper reports (Neurosurgeon §2, DADS §6).

all-local: the whole model on the source device (the gateway), nothing sent.
all-offload: send the input to the fastest other node, run everything there, send the result back.
Both run on each node's default PU, as a stock framework would.
"""

from __future__ import annotations

from dnninfer.errors import UserError
from dnninfer.partition.common import best, feasible_nodes, single
from dnninfer.partition.costmodel import CostModel
from dnninfer.partition.fleet import fleet
from dnninfer.partition.plan import Plan


def plan_all_local(cm: CostModel, objective: str = "latency") -> Plan:
    return single(cm, cm.default_target(cm.source), strategy="all-local", objective=objective,
                  reason=f"everything on the source {cm.source} (no transfers)")


def plan_all_offload(cm: CostModel, objective: str = "latency") -> Plan:
    whole = set(feasible_nodes(cm))
    # one node of each type (partition/fleet.py): the first of a type is the one `best` would keep
    others = [n for n in fleet(cm).reps if n != cm.source and n in whole]
    if not others:
        raise UserError(f"all-offload: no node other than the source {cm.source!r} can hold the model")
    plans = [single(cm, cm.default_target(n), strategy="all-offload", objective=objective,
                    reason=f"input sent to {n}, the best other node by {objective}") for n in others]
    return best(plans, objective)
