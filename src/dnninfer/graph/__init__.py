"""Graph capture: one torch.fx DAG per model with shapes, bytes, parameters and FLOPs per node."""

from dnninfer.graph.capture import annotate, capture, trace
from dnninfer.graph.compare import max_abs_diff
from dnninfer.graph.core import Block, Graph, NodeInfo, Stage
from dnninfer.graph.flops import Rule, conv_flops, linear_flops
from dnninfer.graph.inplace import functionalize, is_inplace, mutated_input, shared_writes
from dnninfer.graph.split import equal_flops_chain, run_stages, stage_order

__all__ = [
    "Block",
    "Graph",
    "NodeInfo",
    "Rule",
    "Stage",
    "annotate",
    "capture",
    "conv_flops",
    "equal_flops_chain",
    "functionalize",
    "is_inplace",
    "linear_flops",
    "max_abs_diff",
    "mutated_input",
    "run_stages",
    "shared_writes",
    "stage_order",
    "trace",
]
