"""`plan(ir, planner, **opts)`: every memory planner by name, so benches and the CLI can swap rivals.

Planners (research report §4): ``naive`` (no reuse), ``tflm`` (TFLite Micro GreedyMemoryPlanner),
``tinyengine`` (first-fit + in-place depthwise), ``vmcu`` (layer-wise segment overlap),
``vmcu_fused`` (fused inverted-bottleneck kernels). Each is a pure function ``IR -> MemoryPlan``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from dnninfer.errors import UserError
from dnninfer.memory.ir import IR
from dnninfer.memory.naive import plan_naive
from dnninfer.memory.plan import MemoryPlan
from dnninfer.memory.tflm import plan_tflm
from dnninfer.memory.tinyengine import plan_tinyengine
from dnninfer.memory.vmcu import plan_vmcu, plan_vmcu_fused

PLANNERS: dict[str, Callable[..., MemoryPlan]] = {
    "naive": plan_naive,
    "tflm": plan_tflm,
    "tinyengine": plan_tinyengine,
    "vmcu": plan_vmcu,
    "vmcu_fused": plan_vmcu_fused,
}


def planner_options(planner: str) -> dict[str, Any]:
    """The keyword options a planner takes, with their defaults."""
    fn = _get(planner)
    return {n: p.default for n, p in inspect.signature(fn).parameters.items() if p.kind == p.KEYWORD_ONLY}


def _get(planner: str) -> Callable[..., MemoryPlan]:
    try:
        return PLANNERS[planner]
    except KeyError:
        raise UserError(f"planner: expected one of {', '.join(PLANNERS)}, got {planner!r}") from None


def plan(ir: IR, planner: str, **opts: Any) -> MemoryPlan:
    """Plan `ir`'s activation memory with the named planner; unknown names or options are user errors."""
    fn = _get(planner)
    known = planner_options(planner)
    unknown = sorted(set(opts) - set(known))
    if unknown:
        raise UserError(f"planner {planner}: unknown option(s) {', '.join(unknown)} "
                        f"(options: {', '.join(known) or 'none'})")
    return fn(ir, **opts)
