"""Graph capture: one torch.fx DAG per model with shapes, bytes, parameters and FLOPs per node."""

from dnninfer.graph.capture import annotate, capture, trace
from dnninfer.graph.compare import max_abs_diff
from dnninfer.graph.core import Block, Graph, NodeInfo, Stage
from dnninfer.graph.flops import Rule, conv_flops, linear_flops
from dnninfer.graph.inplace import functionalize, is_inplace, mutated_input, shared_writes
from dnninfer.graph.ops import (
    ALIAS_KINDS,
    MatMul,
    RowLocal,
    Window,
    bn_is_affine,
    bn_scale_shift,
    fold_bn,
    foldable_bn,
    folds_into,
    matmuls,
    may_alias,
    passes_through,
    row_local,
)
from dnninfer.graph.split import equal_flops_chain, run_stages, stage_order

__all__ = [
    "ALIAS_KINDS",
    "Block",
    "Graph",
    "MatMul",
    "NodeInfo",
    "RowLocal",
    "Rule",
    "Stage",
    "Window",
    "annotate",
    "bn_is_affine",
    "bn_scale_shift",
    "capture",
    "conv_flops",
    "equal_flops_chain",
    "fold_bn",
    "foldable_bn",
    "folds_into",
    "functionalize",
    "is_inplace",
    "linear_flops",
    "matmuls",
    "max_abs_diff",
    "may_alias",
    "mutated_input",
    "passes_through",
    "row_local",
    "run_stages",
    "shared_writes",
    "stage_order",
    "trace",
]
