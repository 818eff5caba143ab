"""Every partitioning strategy by name: the baselines HiDP is compared with, HiDP and its ablations."""

from __future__ import annotations

from collections.abc import Callable

from dnninfer.errors import UserError
from dnninfer.partition.coedge import plan_coedge
from dnninfer.partition.costmodel import CostModel
from dnninfer.partition.local import plan_all_local, plan_all_offload
from dnninfer.partition.neurosurgeon import plan_neurosurgeon
from dnninfer.partition.pipeedge import plan_pipeedge
from dnninfer.partition.plan import Plan
from dnninfer.partition.uniform import plan_uniform

Planner = Callable[[CostModel, str], Plan]


def _dads(cm: CostModel, objective: str) -> Plan:
    from dnninfer.partition.dads import plan_dads

    return plan_dads(cm, objective)


BASELINES: dict[str, Planner] = {
    "all-local": plan_all_local,
    "all-offload": plan_all_offload,
    "neurosurgeon": plan_neurosurgeon,
    "dads": _dads,
    "uniform": plan_uniform,
    "coedge": plan_coedge,
    "pipeedge": plan_pipeedge,
}


def _hidp(levels: tuple[str, ...]) -> Planner:
    def run(cm: CostModel, objective: str) -> Plan:
        from dnninfer.partition.hidp import plan_hidp

        return plan_hidp(cm, objective, levels=levels)

    return run


STRATEGIES: dict[str, Planner] = {
    **BASELINES,
    "hidp": _hidp(("global", "local")),
    "hidp-global-only": _hidp(("global",)),
    "hidp-local-only": _hidp(("local",)),
}


def plan(cm: CostModel, strategy: str = "hidp", objective: str = "latency") -> Plan:
    """Plan with a strategy by name (memoised per cost model: planners are deterministic)."""
    if strategy not in STRATEGIES:
        raise UserError(f"strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    return cm.memo(("plan", strategy, objective), lambda: STRATEGIES[strategy](cm, objective))
