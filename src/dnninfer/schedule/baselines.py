"""CPU baselines for the Opara bench: ONNX Runtime (sequential and parallel executors) and
torch.compile (Inductor). Each returns a callable or raises `BaselineUnavailable` with a one-line
reason, which the bench records next to a null figure.
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["BaselineUnavailable", "compiled_cpu", "onnx_bytes", "ort_session"]


class BaselineUnavailable(RuntimeError):
    """A baseline cannot run here (export failed, package missing); the message is the reason."""


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}"


def onnx_bytes(model: nn.Module, inputs: Sequence[torch.Tensor]) -> bytes:
    """Export with the TorchScript-based exporter (``dynamo=False``): the dynamo exporter needs
    onnxscript, which this environment does not carry. Exporter chatter goes to stderr."""
    buf = io.BytesIO()
    names = [f"input{i}" for i in range(len(inputs))]
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, tuple(inputs), buf, dynamo=False, input_names=names,
                              output_names=["output"], opset_version=17)
    except Exception as e:
        raise BaselineUnavailable(f"torch.onnx.export failed: {_reason(e)}") from None
    return buf.getvalue()


def ort_session(onnx: bytes, *, parallel: bool, threads: int = 2) -> Callable[..., Any]:
    """An ONNX Runtime CPU session as ``fn(*torch_inputs) -> np.ndarray``.

    Sequential: ``ORT_SEQUENTIAL``, ``threads`` intra-op threads. Parallel: ``ORT_PARALLEL``,
    ``threads`` inter-op threads x 1 intra-op thread (branches run concurrently). Thread
    spinning is off in both: spinning pool threads would steal the cores from the next
    interleaved case (and from ORT's own other pool).
    """
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise BaselineUnavailable(f"onnxruntime not installed: {e}") from None
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if parallel:
        so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        so.inter_op_num_threads = threads
        so.intra_op_num_threads = 1
    else:
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(onnx, so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise BaselineUnavailable(f"onnxruntime could not load the export: {_reason(e)}") from None
    names = [i.name for i in sess.get_inputs()]

    def run(*inputs: torch.Tensor) -> np.ndarray:
        return sess.run(None, {n: x.numpy() for n, x in zip(names, inputs, strict=True)})[0]

    return run


def compiled_cpu(
    model: nn.Module, inputs: Sequence[torch.Tensor], *, threads: int = 2
) -> tuple[Callable[..., Any], float]:
    """``torch.compile(model, dynamic=False)`` warmed up on ``inputs``; (callable, compile seconds)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr), torch.no_grad():
            warnings.simplefilter("ignore")
            fn = torch.compile(model, dynamic=False)
            fn(*inputs)
            fn(*inputs)
        return fn, time.perf_counter() - t0
    except Exception as e:
        raise BaselineUnavailable(f"torch.compile failed: {_reason(e)}") from None
    finally:
        torch.set_num_threads(previous)
