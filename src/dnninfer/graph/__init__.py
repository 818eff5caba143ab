"""Graph capture: one torch.fx DAG per model with shapes, bytes, parameters and FLOPs per node."""

from dnninfer.graph.capture import annotate, capture, trace
from dnninfer.graph.core import Block, Graph, NodeInfo, Stage
from dnninfer.graph.flops import Rule, conv_flops, linear_flops
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
    "linear_flops",
    "run_stages",
    "stage_order",
    "trace",
]
