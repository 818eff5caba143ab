"""The captured graph every system works on: a torch.fx DAG annotated with per-node costs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import networkx as nx
import torch
from torch import fx

COMPUTE_OPS = ("call_module", "call_function", "call_method")


@dataclass(frozen=True)
class NodeInfo:
    """Static facts about one fx node, measured once on the example inputs."""

    name: str
    op: str  # fx opcode: placeholder | get_attr | call_module | call_function | call_method | output
    target: str  # module path, function or method name
    kind: str  # conv, linear, matmul, bn, norm, pool, act, add, mul, cat, attention, reshape, ...
    inputs: tuple[str, ...]  # names of the nodes this one reads (data dependencies)
    shape: tuple[int, ...] | None  # output shape (first tensor if the output is a tuple)
    dtype: str | None
    out_bytes: int  # bytes of every tensor the node outputs
    param_bytes: int  # parameters + buffers the node reads (weights that must live with it)
    flops: int  # 2 x MACs for conv/linear/matmul; see graph/flops.py
    flops_estimated: bool = False  # no FLOPs rule for this op: `flops` is graph/flops.py's ESTIMATE

    @property
    def is_compute(self) -> bool:
        return self.op in COMPUTE_OPS

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape) if self.shape is not None else None
        d["inputs"] = list(self.inputs)
        return d


@dataclass(frozen=True)
class Block:
    """A run of compute nodes between two single-tensor cuts of the DAG (see `Graph.chain`)."""

    index: int
    nodes: tuple[str, ...]
    flops: int
    param_bytes: int
    out_bytes: int  # bytes crossing the cut right after this block (the model output for the last)


@dataclass(frozen=True)
class Stage:
    """One piece of a split model: a GraphModule from named inputs to named outputs."""

    index: int  # the label given in the assignment
    module: fx.GraphModule
    nodes: tuple[str, ...]
    inputs: tuple[str, ...]  # values it receives, in call order
    outputs: tuple[str, ...]  # values it returns, in order

    def __call__(self, *args: Any) -> tuple[Any, ...]:
        return self.module(*args)


class Graph:
    """A captured model: the fx GraphModule plus one `NodeInfo` per node, in topological order.

    Built by `dnninfer.graph.capture`. The annotations also live on the IR
    (``node.meta["dnninfer"]``) so fx passes can read them without a side table. The graph is
    functional (graph/inplace.py): no node writes into a value another node reads, so stages,
    lanes and tiles may run its pieces in any order the data dependencies allow.
    """

    def __init__(
        self,
        gm: fx.GraphModule,
        nodes: Mapping[str, NodeInfo],
        example_inputs: Sequence[torch.Tensor],
        *,
        method: str,
        param_count: int,
        name: str = "model",
    ) -> None:
        self.gm = gm
        self.nodes: dict[str, NodeInfo] = dict(nodes)
        self.example_inputs = tuple(example_inputs)
        self.method = method  # "fx" (symbolic_trace) or "export" (torch.export fallback)
        self.param_count = param_count
        self.name = name

    # -- views -------------------------------------------------------------------------------
    def __repr__(self) -> str:
        return (f"Graph({self.name!r}, {len(self.compute_nodes())} compute nodes, "
                f"{self.total_flops / 1e9:.3f} GFLOPs, {self.param_count:,} params, via {self.method})")

    def __call__(self, *inputs: Any) -> Any:
        return self.gm(*inputs)

    def compute_nodes(self) -> list[NodeInfo]:
        """Nodes that do work and can be assigned to a stage (not inputs, weights or the output)."""
        return [n for n in self.nodes.values() if n.is_compute]

    @property
    def input_names(self) -> list[str]:
        return [n.name for n in self.nodes.values() if n.op == "placeholder"]

    @property
    def output_node(self) -> fx.Node:
        return next(n for n in self.gm.graph.nodes if n.op == "output")

    @property
    def total_flops(self) -> int:
        return sum(n.flops for n in self.nodes.values())

    @property
    def param_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.gm.parameters()) + sum(
            b.numel() * b.element_size() for b in self.gm.buffers()
        )

    @cached_property
    def nx(self) -> nx.DiGraph:
        """The DAG as networkx (node attributes are the NodeInfo fields; edge weight = bytes)."""
        g = nx.DiGraph()
        for info in self.nodes.values():
            g.add_node(info.name, **info.to_dict())
        for info in self.nodes.values():
            for src in info.inputs:
                g.add_edge(src, info.name, bytes=self.nodes[src].out_bytes)
        return g

    # -- cuts and chains ---------------------------------------------------------------------
    @cached_property
    def _cuts(self) -> list[tuple[int, int]]:
        """For each compute position i: (tensors, bytes) live across the cut after node i.

        A value crosses cut i when it is produced at or before position i (inputs count as
        produced before position 0) and read after it (the model output reads at the end).
        Weights (get_attr) never cross: they are copied to whichever stage uses them.
        """
        order = [n.name for n in self.compute_nodes()]
        pos = {name: i for i, name in enumerate(order)}
        end = len(order)
        count = [0] * (end + 1)
        nbytes = [0] * (end + 1)
        users: dict[str, list[int]] = {}
        for info in self.nodes.values():
            at = end if info.op == "output" else pos.get(info.name)
            if at is None:
                continue
            for src in info.inputs:
                users.setdefault(src, []).append(at)
        for name, reads in users.items():
            info = self.nodes[name]
            if info.op == "get_attr":
                continue
            start = pos.get(name, -1)
            last = max(reads)
            if last <= start:
                continue
            lo = max(start, 0)
            if info.shape is not None:  # only tensors count as a cut's width; ints ride along free
                count[lo] += 1
                count[last] -= 1
            nbytes[lo] += info.out_bytes
            nbytes[last] -= info.out_bytes
        cuts, c, b = [], 0, 0
        for i in range(end):
            c += count[i]
            b += nbytes[i]
            cuts.append((c, b))
        return cuts

    def cut_bytes(self, position: int) -> int:
        """Bytes that must be sent if the compute order is cut after `position`."""
        return self._cuts[position][1]

    def chain(self) -> list[Block]:
        """Collapse the DAG to a chain of blocks, cut where the fewest tensors are live.

        For CNNs that is one tensor: the articulation points (after each residual block, after
        each inception module), so chain algorithms (Neurosurgeon, PipeEdge, uniform split) see
        a plain sequence whose cut sizes are the real bytes on the wire.
        """
        nodes = self.compute_nodes()
        if not nodes:
            return []
        cuts = self._cuts
        inner = cuts[:-1]
        width = min((c for c, _ in inner), default=0)
        blocks: list[Block] = []
        start = 0
        for i in range(len(nodes)):
            last = i == len(nodes) - 1
            if not last and cuts[i][0] != width:
                continue
            members = nodes[start : i + 1]
            out = self.nodes[self.output_node.name].out_bytes if last else cuts[i][1]
            blocks.append(Block(
                index=len(blocks),
                nodes=tuple(n.name for n in members),
                flops=sum(n.flops for n in members),
                param_bytes=sum(n.param_bytes for n in members),
                out_bytes=out,
            ))
            start = i + 1
        return blocks

    @staticmethod
    def blocks_to_assignment(blocks: Sequence[Block], block_stage: Sequence[int]) -> dict[str, int]:
        """Turn a per-block stage label (non-decreasing for a chain) into a node assignment."""
        if len(blocks) != len(block_stage):
            raise ValueError(f"{len(block_stage)} labels for {len(blocks)} blocks")
        return {name: s for b, s in zip(blocks, block_stage, strict=True) for name in b.nodes}

    # -- splitting ---------------------------------------------------------------------------
    def split(self, assignment: Mapping[str, int]) -> list[Stage]:
        """Materialise each stage of a partition as its own GraphModule, in dependency order.

        Invariant (tested on every zoo model): running the stages in order with
        `run_stages` gives the whole model's output.
        """
        from dnninfer.graph.split import split_graph

        return split_graph(self, assignment)

    def run_stages(self, stages: Sequence[Stage], *inputs: Any) -> Any:
        """Compose stages in-process; the reference every distributed runtime is checked against."""
        from dnninfer.graph.split import run_stages

        return run_stages(self, stages, inputs)

    # -- export ------------------------------------------------------------------------------
    def to_rows(self) -> list[dict[str, Any]]:
        """One row per compute node, for tables and JSON."""
        return [
            {"name": n.name, "kind": n.kind, "target": n.target,
             "shape": list(n.shape) if n.shape else None, "dtype": n.dtype,
             "out_bytes": n.out_bytes, "param_bytes": n.param_bytes, "flops": n.flops}
            for n in self.compute_nodes()
        ]

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "method": self.method, "nodes": len(self.compute_nodes()),
                "flops": self.total_flops, "params": self.param_count,
                "param_bytes": self.param_bytes, "blocks": len(self.chain())}
