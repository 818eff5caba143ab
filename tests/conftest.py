"""Shared fixtures: zoo graphs are captured once per test session (capture runs each model once)."""

from __future__ import annotations

import contextlib
import functools
import io
import os

import pytest
import torch

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@functools.cache
def zoo_graph(name: str):
    """(model, inputs, graph, reference output) for a zoo model, built once."""
    from dnninfer import zoo
    from dnninfer.graph import capture

    model = zoo.build_model(name)
    inputs = zoo.example_inputs(name)
    graph = capture(model, inputs, name=name)
    with torch.no_grad():
        ref = model(*inputs)
    return model, inputs, graph, ref


@pytest.fixture(scope="session")
def graph_of():
    return zoo_graph


@functools.cache
def quick_bench(system: str) -> tuple[int, str]:
    """(exit code, stdout) of ``dnninfer bench SYSTEM --smoke --json`` (the smallest run through
    every code path), run once per session: the JSON contract test and a system's own checks of
    its figures read the same run."""
    from dnninfer.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["bench", system, "--smoke", "--json"])
    return code, out.getvalue()
