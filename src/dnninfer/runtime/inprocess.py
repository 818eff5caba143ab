"""Run a split model stage by stage in this process: the reference the Ray runtime must match."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from dnninfer.errors import UserError
from dnninfer.graph import Graph, Stage
from dnninfer.graph.split import assemble_output
from dnninfer.runtime.common import (
    Links,
    RunResult,
    Transfer,
    check_placement,
    emulated_delay,
    link_between,
    producers,
    tensor_bytes,
)


def incoming(
    stage_inputs: Sequence[str], env: Mapping[str, Any], where: Mapping[str, str], node: str, links: Links,
    *, sleeping: bool = True,
) -> list[Transfer]:
    """Transfers a stage on `node` waits for, one per sending node (they overlap: the wait is the max)."""
    by_src: dict[str, int] = {}
    for name in stage_inputs:
        src = where[name]
        if src != node:
            by_src[src] = by_src.get(src, 0) + tensor_bytes(env[name])
    out = []
    for src, nbytes in by_src.items():
        link = link_between(links, src, node)
        if getattr(link, "local", False):  # shared memory between PUs of one board: no transfer
            continue
        delay = emulated_delay(link, src, node, nbytes, sleeping=sleeping) if link else 0.0
        out.append(Transfer(src, node, nbytes, delay))
    return out


def run_inprocess(
    graph: Graph,
    stages: Sequence[Stage],
    inputs: Sequence[Any],
    *,
    placement: Mapping[int, str] | Sequence[str] | None = None,
    links: Links = None,
    source: str | None = None,
    sleep: bool = True,
) -> RunResult:
    """Run `stages` in order. With `links`, each hop waits RT/2 + bytes/bandwidth (emulation):
    slept for real when `sleep`, otherwise only added to `wall_s`."""
    if placement is None:
        placement = [f"node{i}" for i in range(len(stages))]
    place = check_placement(stages, placement)
    source = source or place[stages[0].index]
    where = producers(graph, stages, place, source)
    if len(inputs) != len(graph.input_names):
        raise UserError(f"inputs: expected {len(graph.input_names)} tensors, got {len(inputs)}")
    env: dict[str, Any] = dict(zip(graph.input_names, inputs, strict=True))
    result = RunResult(output=None, wall_s=0.0, emulated=links is not None)
    simulated = 0.0

    def receive(names: Sequence[str], node: str) -> None:
        """Wait for the values `node` needs (sleep, or add to the simulated time)."""
        nonlocal simulated
        hops = incoming(names, env, where, node, links, sleeping=sleep)
        result.transfers += hops
        wait = max((h.delay_s for h in hops), default=0.0)
        if sleep:
            time.sleep(wait)
        else:
            simulated += wait

    t0 = time.perf_counter()
    for st in stages:
        node = place[st.index]
        receive(st.inputs, node)
        c0 = time.perf_counter()
        try:
            with torch.no_grad():
                outs = st(*(env[n] for n in st.inputs))
        except Exception as e:
            raise RuntimeError(f"stage {st.index} on node {node!r} failed: {type(e).__name__}: {e}") from e
        result.compute_s[st.index] = time.perf_counter() - c0
        env.update(zip(st.outputs, outs, strict=True))
    receive([n.name for n in graph.output_node.all_input_nodes], source)
    result.output = assemble_output(graph, env)
    result.wall_s = time.perf_counter() - t0 + simulated
    return result
