"""Shared fixtures: zoo graphs are captured once per test session (capture runs each model once)."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# one intra-op thread per xdist worker (two workers share the two cores), two when run alone
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))


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


#: Test files that need a local Ray cluster: the scheduler keeps them on one xdist worker, so the
#: session starts one cluster (`ray_cluster`) for all of them.
RAY_FILES = ("tests/runtime/test_ray_runtime.py", "tests/partition/test_execute.py", "tests/partition/test_replan.py")
_SHARED_ENV = "DNNINFER_TEST_SHARED"


def pytest_xdist_make_scheduler(config, log):
    """Whole files per worker (module fixtures are built once), the Ray files together as one unit."""
    from xdist.scheduler import LoadFileScheduling

    class Scheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "ray" if path in RAY_FILES else path

    return Scheduling(config, log)


#: the longest files, handed out first so they do not become the run's tail on one worker
LONG_FIRST = ("tests/testbed/", *RAY_FILES)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        return next((i for i, prefix in enumerate(LONG_FIRST) if item.nodeid.startswith(prefix)), len(LONG_FIRST))

    items.sort(key=rank)  # stable: the order within a rank is kept


def pytest_configure(config):
    """The controller (or a plain run) makes one folder the workers share for runs worth doing once."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ[_SHARED_ENV] = tempfile.mkdtemp(prefix="dnninfer-tests-")


def pytest_unconfigure(config):
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        shutil.rmtree(os.environ.pop(_SHARED_ENV, ""), ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the session; a `RayRuntime` started inside it reuses it and stops
    only its own actors."""
    from dnninfer.runtime import RayRuntime

    with RayRuntime(num_cpus=2) as rt:
        yield rt


def _smoke(system: str) -> tuple[int, str]:
    from dnninfer.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["bench", system, "--smoke", "--json"])
    return code, out.getvalue()


@functools.cache
def quick_bench(system: str) -> tuple[int, str]:
    """(exit code, stdout) of ``dnninfer bench SYSTEM --smoke --json`` (the smallest run through
    every code path), run once per test run: the JSON contract test and a system's own checks of
    its figures read the same run, whichever xdist worker asks first (the others wait on a lock)."""
    if not os.environ.get(_SHARED_ENV):  # no folder of this run to share through: run it here
        return _smoke(system)
    shared = Path(os.environ[_SHARED_ENV])
    with open(shared / f"smoke-{system}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = shared / f"smoke-{system}.json"
        if done.exists():
            saved = json.loads(done.read_text())
            return saved["code"], saved["out"]
        code, out = _smoke(system)
        done.write_text(json.dumps({"code": code, "out": out}))
        return code, out


def randomise_bn(model: torch.nn.Module, seed: int = 0, shift_scale: float = 1.0) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics (eval mode), so deploy's BN folding is really exercised;
    ``shift_scale`` scales the random running means and biases."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * shift_scale)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g) * shift_scale)
    return model.eval()
