"""Make a quantised model usable after ``quantize``: BatchNorm re-calibration and non-finite checks.

Swapping a layer's weights for binary/ternary/signed ones changes the magnitude and the mean of its
output, so the BatchNorm statistics that follow (recorded for the full-precision weights, or still
at their initial 0/1) no longer normalise anything; through a deep network such as ResNet-18 the
mismatch compounds into inf/NaN. Re-estimating the running statistics on a few batches with the
quantised weights, in train mode and without gradients, is the standard fix (post-training BN
re-estimation; ``torch.optim.swa_utils.update_bn`` is the same idea, but it puts the whole model,
Dropout included, in train mode). ``first_nonfinite`` names the first layer whose output is not
finite, so a broken model is refused with a name instead of silently producing NaN logits.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from dnninfer.errors import UserError

__all__ = ["NonFiniteWarning", "calibrate_bn", "check_finite", "first_nonfinite", "warn_if_nonfinite"]


class NonFiniteWarning(RuntimeWarning):
    """A quantised (or deployed) model produced inf/NaN outputs."""


def _call_args(inputs: Any, what: str) -> tuple[Any, ...]:
    """Positional arguments of one forward call: a tensor, or a tuple/list of inputs (as
    ``dnninfer.zoo.example_inputs`` returns)."""
    if isinstance(inputs, torch.Tensor):
        return (inputs,)
    if isinstance(inputs, tuple | list) and inputs:
        return tuple(inputs)
    raise UserError(f"{what}: expected a tensor or a non-empty tuple of input tensors, got {type(inputs).__name__}")


def _batches(batches: Any, what: str) -> list[tuple[Any, ...]]:
    """Calls for calibration: one tensor is one batch; any other iterable yields batches, each a
    tensor or a tuple/list of positional inputs."""
    if isinstance(batches, torch.Tensor):
        return [(batches,)]
    try:
        items = list(batches)
    except TypeError:
        raise UserError(f"{what}: expected a tensor or an iterable of input batches, "
                        f"got {type(batches).__name__}") from None
    if not items:
        raise UserError(f"{what}: expected at least one input batch, got none")
    return [_call_args(b, what) for b in items]


@torch.no_grad()
def calibrate_bn(model: nn.Module, batches: Any) -> nn.Module:
    """Reset every BatchNorm's running statistics and re-estimate them on ``batches``, in place.

    ``batches`` is one input tensor, a tuple of positional inputs, or an iterable of either. Only the
    BatchNorm layers run in train mode (Dropout and the rest stay in eval), with ``momentum=None`` so
    the result is the plain average over all batches, independent of their order's weighting. Each
    module's train/eval flag and momentum are restored afterwards. Returns ``model``.
    """
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    if not bns:
        raise UserError(f"calibrate_bn: {type(model).__name__} has no BatchNorm layer to calibrate; "
                        "expected a model with BatchNorm1d/2d/3d")
    args = _batches(batches, "calibrate_bn")
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in bns}
    saved = {m: {k: v.clone() for k, v in m.state_dict().items()} for m in bns}  # restored on failure
    try:
        model.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        for a in args:
            try:
                with warnings.catch_warnings():  # a batch-statistics forward is not the eval output
                    warnings.simplefilter("ignore", NonFiniteWarning)
                    model(*a)
            except ValueError as e:  # e.g. BatchNorm1d on a batch of one
                for m, state in saved.items():
                    m.load_state_dict(state)
                raise UserError(f"calibrate_bn: a calibration batch failed: {e}; expected batches of "
                                "at least 2 samples (BatchNorm needs more than one value per channel)") from None
    finally:
        for m, flag in modes.items():
            m.training = flag
        for m, mom in momenta.items():
            m.momentum = mom
    return model


def _nonfinite(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.is_floating_point() and not bool(torch.isfinite(value).all())
    if isinstance(value, tuple | list):
        return any(_nonfinite(v) for v in value)
    if isinstance(value, dict):
        return any(_nonfinite(v) for v in value.values())
    return False


@torch.no_grad()
def first_nonfinite(model: nn.Module, inputs: Any) -> str | None:
    """The name of the first module (in execution order) whose output is inf/NaN, or ``None``.

    Runs ``model`` once in eval mode on ``inputs`` (a tensor or a tuple of positional inputs) with a
    forward hook on every module; the first to *finish* with a non-finite output is the innermost
    culprit (a child finishes before its parent). ``"<input>"`` if the inputs already are; ``"<root>"``
    names the model itself (an overflow in its own ``forward`` code). The train/eval flag is restored.
    """
    args = _call_args(inputs, "first_nonfinite")
    if _nonfinite(args):
        return "<input>"
    names = {m: (n or "<root>") for n, m in model.named_modules()}
    found: list[str] = []

    def hook(module: nn.Module, _args: Any, output: Any) -> None:
        if not found and _nonfinite(output):
            found.append(names[module])

    handles = [m.register_forward_hook(hook) for m in names]
    was_training = model.training
    try:
        model.eval()
        with warnings.catch_warnings():  # the quantised model's own output check would repeat this
            warnings.simplefilter("ignore", NonFiniteWarning)
            model(*args)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return found[0] if found else None


def check_finite(model: nn.Module, inputs: Any, what: str = "quantize") -> None:
    """Raise ``UserError`` naming the first layer whose output is inf/NaN on ``inputs``."""
    name = first_nonfinite(model, inputs)
    if name is None:
        return
    layer = type(model.get_submodule(name)).__name__ if not name.startswith("<") else "model"
    raise UserError(f"{what}: the output of {name} ({layer}) is not finite (inf/NaN) on the example inputs; "
                    "expected finite activations: re-estimate BatchNorm statistics (calibrate=...), "
                    "keep the scale derived from the weights (signed_scale='mean'), or check the weights")


def warn_if_nonfinite(output: Any, what: str, first: str | None = None) -> bool:
    """``warnings.warn(NonFiniteWarning)`` when ``output`` (tensor or array) has inf/NaN; True if so."""
    bad = (not np.isfinite(output).all()) if isinstance(output, np.ndarray) else _nonfinite(output)
    if bad:
        where = f"; first non-finite output at {first}" if first else ""
        warnings.warn(f"{what}: the model's output is not finite (inf/NaN){where}; expected finite logits: "
                      "re-estimate BatchNorm statistics with dnninfer.quant.calibrate_bn on a few batches",
                      NonFiniteWarning, stacklevel=3)
    return bool(bad)


def _eval_output_hook(module: nn.Module, _args: Any, output: Any) -> None:
    """Forward hook on a quantised model: warn when an eval-mode forward returns inf/NaN.

    Module-level (so the model still pickles) and skipped in train mode and under tracing, compiling
    or export, where the output is not a concrete tensor (a subclass such as FakeTensor).
    """
    if module.training or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return
    if not (type(output) is torch.Tensor or isinstance(output, tuple | list)):  # fake/proxy tensors: skip
        return
    if isinstance(output, tuple | list) and any(isinstance(o, torch.Tensor) and type(o) is not torch.Tensor
                                                 for o in output):
        return
    warn_if_nonfinite(output, f"{type(module).__name__} (quantised) forward")
