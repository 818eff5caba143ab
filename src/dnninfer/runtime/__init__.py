"""Runtimes for split models: in-process (the reference) and Ray actors (one per node)."""

from dnninfer.runtime.common import EMULATION_NOTE, RunResult, SimpleLink, Transfer
from dnninfer.runtime.inprocess import run_inprocess
from dnninfer.runtime.ray_runtime import NodeFailure, RayRuntime

__all__ = ["EMULATION_NOTE", "NodeFailure", "RayRuntime", "RunResult", "SimpleLink", "Transfer", "run_inprocess"]
