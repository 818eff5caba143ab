"""Operator-parallel inference: Opara (stream allocation + resource-aware launch order + one CUDA
Graph), Nimble-style chain decomposition, critical-path-first, sequential; run on CUDA streams or
as parallel CPU lanes. See docs/opara.md.

    dag      OpDAG.from_graph(graph, node_s) -> the operator DAG with costs and hazard edges
    plan     make_plan(dag, algo, order, max_streams=) -> StreamPlan
    program  build_program(plan, dag) -> LaunchProgram (run / record / wait per stream)
    lanes    LaneExecutor(graph, plan)(*inputs)      CPU lanes
    cuda     CudaStreamGraph(graph, plan)(*inputs)   one CUDA Graph over several streams
"""

from dnninfer.schedule.dag import OpDAG
from dnninfer.schedule.lanes import LaneExecutor
from dnninfer.schedule.plan import ALGOS, ORDERS, StreamPlan, make_plan
from dnninfer.schedule.program import FakeStreamExecutor, LaunchProgram, build_program, happens_before_violations

__all__ = [
    "ALGOS",
    "ORDERS",
    "FakeStreamExecutor",
    "LaneExecutor",
    "LaunchProgram",
    "OpDAG",
    "StreamPlan",
    "build_program",
    "happens_before_violations",
    "make_plan",
]
