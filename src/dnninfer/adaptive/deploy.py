"""One deploy path for every method alike: each method's network pieces compiled into graphs.

At batch 1 on these small nets PyTorch eager spends most of a call in per-op dispatch (B-LeNet's
main path: ~210 µs eager, ~45 µs as one ONNX Runtime session on the same core), so comparing
CBNet with BranchyNet in eager mode mostly compares how many *ops* each runs, not how much work.
Here every method (full net, BranchyNet early exit, the truncated net, CBNet, guarded CBNet) is cut
into the same kind of segments and each segment is compiled once:

- ``onnxruntime``: one ``InferenceSession`` per segment (1 intra-op thread, all graph
  optimisations), exported with a dynamic batch axis;
- ``torchscript``: ``torch.jit.freeze(torch.jit.trace(segment))``;
- ``eager``: the segment as is (the baseline column).

Data-dependent control flow (BranchyNet's exit test, the guard's fall-back) stays in Python
*between* segments, exactly as in `branchynet.early_exit_unchecked`: a side-exit segment returns
(features, logits, entropy) so the decision is one float compare, and later segments take the
features on. Every method therefore pays the same per-call overhead per segment it runs.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

from dnninfer.adaptive.branchynet import MultiExitNet, softmax_entropy
from dnninfer.adaptive.pipeline import Trained

__all__ = ["RUNTIMES", "Compiled", "compile_segment", "deploy_early_exit", "deploy_methods"]

RUNTIMES = ("eager", "torchscript", "onnxruntime")

#: a compiled segment: tensor in, tuple of tensors out
Compiled = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]


class _ExitSegment(nn.Module):
    """stage k then head k: features for the next stage, the exit's logits and their entropy."""

    def __init__(self, stage: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.stage, self.head = stage, head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.stage(x)
        logits = self.head(h)
        return h, logits, softmax_entropy(logits)


class _WithEntropy(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(x)
        return logits, softmax_entropy(logits)


def _as_tuple(out: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return (out,) if isinstance(out, torch.Tensor) else tuple(out)


def compile_segment(module: nn.Module, example: torch.Tensor, runtime: str) -> Compiled:
    """``module`` (eval mode) compiled for ``runtime``; outputs as a tuple of CPU tensors.

    The ONNX session and the frozen TorchScript module each pin one intra-op thread of their own
    (ORT's session options; TorchScript follows ``torch.set_num_threads`` as eager does).
    """
    module = module.eval()
    if runtime == "eager":
        return lambda x: _as_tuple(module(x))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if runtime == "torchscript":
            ts = torch.jit.freeze(torch.jit.trace(module, example).eval())
            return lambda x: _as_tuple(ts(x))
        if runtime == "onnxruntime":
            return _ort_segment(module, example)
    raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")


def _ort_segment(module: nn.Module, example: torch.Tensor) -> Compiled:
    import onnxruntime as ort

    n_out = len(_as_tuple(module(example)))
    outs = [f"y{i}" for i in range(n_out)]
    buf = io.BytesIO()
    torch.onnx.export(module, (example,), buf, input_names=["x"], output_names=outs,
                      dynamic_axes={name: {0: "n"} for name in ["x", *outs]}, dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    run = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"]).run

    def call(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(o) for o in run(None, {"x": x.contiguous().numpy()}))

    return call


def _bnet_segments(net: MultiExitNet, example: torch.Tensor, runtime: str) -> tuple[list[Compiled], Compiled]:
    last = net.num_exits - 1
    segs: list[Compiled] = []
    h = example
    with torch.no_grad():
        for k in range(last):
            segs.append(compile_segment(_ExitSegment(net.stages[k], net.heads[k]).eval(), h, runtime))
            h = net.stages[k](h)
    return segs, compile_segment(nn.Sequential(net.stages[last], net.heads[last]), h, runtime)


def deploy_early_exit(net: MultiExitNet, example: torch.Tensor, runtime: str,
                      thresholds: Sequence[float]) -> Callable[[torch.Tensor], torch.Tensor]:
    """BranchyNet inference (paper Algorithm 1) over compiled segments; same decisions as
    `branchynet.early_exit_unchecked` (inputs that leave are dropped from the batch)."""
    return _early_exit_fn(*_bnet_segments(net, example, runtime), thresholds)


def _early_exit_fn(segs: list[Compiled], tail: Compiled, thresholds: Sequence[float]
                   ) -> Callable[[torch.Tensor], torch.Tensor]:
    last = len(segs)
    ts = [float(t) for t in thresholds]

    def run(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1:
            for k in range(last):
                x, logits, ent = segs[k](x)
                if float(ent) < ts[k]:
                    return logits
            return tail(x)[0]
        n = x.shape[0]
        out: torch.Tensor | None = None
        active = torch.arange(n)
        for k in range(last):
            x, logits, ent = segs[k](x)
            if out is None:
                out = logits.new_empty((n, logits.shape[1]))
            done = ent < ts[k]
            out[active[done]] = logits[done]
            keep = ~done
            if not bool(keep.any()):
                return out
            active, x = active[keep], x[keep]
        logits = tail(x)[0]
        if out is None:
            return logits
        out[active] = logits
        return out

    return run


def _deploy_guarded(trained: Trained, example: torch.Tensor, runtime: str) -> Callable[[torch.Tensor], torch.Tensor]:
    g = trained.guarded
    conv = compile_segment(_WithEntropy(nn.Sequential(g.ae, g.light)), example, runtime)
    full = compile_segment(g.full, example, runtime)
    t = g.threshold

    def run(x: torch.Tensor) -> torch.Tensor:
        logits, ent = conv(x)
        if x.shape[0] == 1:
            return logits if float(ent) < t else full(x)[0]
        unsure = ent >= t
        if bool(unsure.any()):
            logits = logits.clone()
            logits[unsure] = full(x[unsure])[0]
        return logits

    return run


def deploy_methods(trained: Trained, runtime: str, only: Sequence[str] | None = None
                   ) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Every method of `measure.methods` (same names; ``only`` those listed) on ``runtime``,
    logits out. BranchyNet's segments are compiled once and shared by its three thresholds."""
    example = trained.split.test_x[:1].contiguous()
    bnet, t = trained.bnet.eval(), trained.threshold
    last = bnet.num_exits - 1
    want = set(only) if only is not None else None

    def wanted(name: str) -> bool:
        return want is None or name in want

    def single(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        seg = compile_segment(module, example, runtime)
        return lambda x: seg(x)[0]

    out: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    if wanted("full"):
        out["full"] = single(trained.full)
    bnet_names = {"branchynet": [t] * last, "bnet_exit1_always": [math.inf] * last, "bnet_exit1_never": [0.0] * last}
    if any(wanted(k) for k in bnet_names):
        segs, tail = _bnet_segments(bnet, example, runtime)
        out.update({k: _early_exit_fn(segs, tail, ts) for k, ts in bnet_names.items() if wanted(k)})
    if wanted("light"):
        out["light"] = single(trained.light)
    for kind, cb in trained.cbnets.items():
        if wanted(trained.method_name(kind)):
            out[trained.method_name(kind)] = single(nn.Sequential(cb.ae, cb.light))
    if wanted("cbnet_guarded"):
        out["cbnet_guarded"] = _deploy_guarded(trained, example, runtime)
    return {k: out[k] for k in ("full", "branchynet", "light", *[trained.method_name(k) for k in trained.cbnets],
                                "cbnet_guarded", "bnet_exit1_always", "bnet_exit1_never") if k in out}
