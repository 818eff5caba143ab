"""Weight quantisers with straight-through estimators, quantised layers, and ``quantize(model)``.

Every quantiser works per *filter*: one output channel of a conv weight ``[Cout, Cin, kh, kw]``
or one output row of a linear weight ``[out_features, in_features]`` (dim 0 in both cases).

* ``binary`` (BWN, Rastegari et al. 2016): ``Wq_f = alpha_f * sign(W_f)``, ``alpha_f = mean|W_f|``,
  ``sign(0) = +1`` (PLUM's ``binary_sign``).
* ``ternary`` (TWN, Li et al. 2016): ``delta_f = 0.7 * mean|W_f|``, keep ``|W| > delta_f``,
  ``alpha_f`` = mean of the kept ``|W|``.
* ``signed`` (signed binarization, Kuhar et al., PLUM; official code ``quant/binary/ste.py`` and
  ``quantization.py``, research report §2.1): ``delta_f = 0.05 * max|W_f|``; the first
  ``Cout // 2`` filters are ``{0, +1}`` (``W >= delta_f``), the rest ``{0, -1}`` (``W <= -delta_f``).
  The official ``quantizer_sb`` multiplies by ``v1 = torch.tensor([1])``: the scale is the
  constant 1 and the BatchNorm that follows absorbs magnitude. ``signed_scale=1.0`` here is that
  (QAT from scratch, ``train.py``). ``quantize``'s default ``signed_scale="mean"`` derives the
  scale from the weights instead, like BWN/TWN: ``alpha_f`` = mean of the kept ``|W_f|`` (the
  L2-optimal magnitude for the fixed mask and sign). With the constant 1 a pretrained or freshly
  initialised deep model (ResNet-18) overflows to inf/NaN: every layer multiplies the activation
  scale by about its fan-in non-zeros, and BatchNorm's recorded statistics cannot absorb it.
  ``signed_delta`` (default 0.05) replaces the 0.05 for ablations (docs/signed_binary.md).
* ``fp32``: identity (used so that every method swaps the same layers and counts the same weights).

Backward (all methods, as PLUM's ``STESign.backward``): the clipped straight-through estimator
``g_in = clamp(g_out, -1, 1)``, zeroed where ``|W| > 1``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dnninfer.errors import expected
from dnninfer.graph.swap import FilterFn, candidates, swap_modules
from dnninfer.quant.calibrate import _batches, _eval_output_hook, calibrate_bn, check_finite

__all__ = [
    "FIRST_LAST",
    "METHODS",
    "SIGNED_SCALES",
    "BinaryQuant",
    "QuantConv1d",
    "QuantConv2d",
    "QuantLinear",
    "SignedBinaryQuant",
    "TernaryQuant",
    "check_signed_scale",
    "filter_signs",
    "quant_layers",
    "quantize",
    "quantize_weight",
    "weight_stats",
]

METHODS = ("fp32", "binary", "ternary", "signed")
FIRST_LAST = ("fp32", "quantize")
SIGNED_DELTA = 0.05  # PLUM: 0.05 * max|W_f| (from TTQ)
TERNARY_DELTA = 0.7  # TWN: 0.7 * mean|W_f|
SIGNED_SCALES = ("mean",)  # derived signed-binary scales; a positive number is a constant scale
ScaleSpec = float | str


def _ste_grad(grad: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """PLUM's clipped STE: clamp the incoming gradient to [-1, 1], zero it where |W| > 1."""
    return grad.clamp(-1.0, 1.0) * (w.abs() <= 1.0).to(grad.dtype)


def _flat(w: torch.Tensor) -> torch.Tensor:
    return w.reshape(w.shape[0], -1)


def filter_signs(n_filters: int, *, dtype: torch.dtype = torch.float32, device: Any = None) -> torch.Tensor:
    """PLUM's fixed sign layout: +1 for the first ``n // 2`` filters, -1 for the rest (never learned)."""
    half = n_filters // 2
    return torch.cat([torch.ones(half, dtype=dtype, device=device),
                      -torch.ones(n_filters - half, dtype=dtype, device=device)])


def _binary(w: torch.Tensor) -> torch.Tensor:
    flat = _flat(w)
    alpha = flat.abs().mean(1, keepdim=True)
    return (alpha * torch.where(flat >= 0, 1.0, -1.0).to(w.dtype)).reshape(w.shape)


def _ternary(w: torch.Tensor) -> torch.Tensor:
    flat = _flat(w)
    a = flat.abs()
    delta = TERNARY_DELTA * a.mean(1, keepdim=True)
    mask = (a > delta).to(w.dtype)
    alpha = (a * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp_min(1.0)
    return (alpha * torch.sign(flat) * mask).reshape(w.shape)


def _signed(w: torch.Tensor, scale: ScaleSpec = 1.0, rel_delta: float = SIGNED_DELTA) -> torch.Tensor:
    flat = _flat(w)
    delta = rel_delta * flat.abs().max(1, keepdim=True).values
    s = filter_signs(flat.shape[0], dtype=w.dtype, device=w.device)[:, None]
    keep = (s * flat >= delta).to(w.dtype)  # first half: W >= delta; second half: W <= -delta
    if isinstance(scale, str):  # "mean": per-filter mean |W| of the kept weights (0 for an empty filter)
        alpha = (flat.abs() * keep).sum(1, keepdim=True) / keep.sum(1, keepdim=True).clamp_min(1.0)
        return (alpha * s * keep).reshape(w.shape)
    return (scale * s * keep).reshape(w.shape)


def check_signed_scale(value: ScaleSpec) -> ScaleSpec:
    """``"mean"`` or a positive finite number; anything else is a ``UserError``."""
    if isinstance(value, str):
        if value in SIGNED_SCALES:
            return value
    elif isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < float("inf"):
        return float(value)
    raise expected("signed-binary scale", f"{' or '.join(map(repr, SIGNED_SCALES))} or a positive number", value)


class _ClippedSTE(torch.autograd.Function):
    """Forward: the subclass's quantiser (autograd is off inside ``forward``, so it sees plain values);
    backward: PLUM's clipped STE for the weight, no gradient for the extra arguments (the scale)."""

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        ctx.save_for_backward(inputs[0])
        ctx.n_extra = len(inputs) - 1

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        (w,) = ctx.saved_tensors
        return (_ste_grad(grad, w), *[None] * ctx.n_extra)


class BinaryQuant(_ClippedSTE):
    """BWN: ``alpha_f * sign(W_f)``, ``alpha_f = mean|W_f|``; clipped STE backward."""

    forward = staticmethod(_binary)


class TernaryQuant(_ClippedSTE):
    """TWN: threshold ``0.7 * mean|W_f|``, ``alpha_f`` = mean of the kept magnitudes; clipped STE."""

    forward = staticmethod(_ternary)


class SignedBinaryQuant(_ClippedSTE):
    """Signed binary (PLUM §2.1): ``{0,+1}`` first half of filters, ``{0,-1}`` the rest, times
    ``scale`` (the official code's constant 1, or ``"mean"``: per-filter mean of the kept ``|W|``);
    clipped STE as ``STESign.backward``. ``apply(w, scale=1.0, rel_delta=0.05)``."""

    forward = staticmethod(_signed)


def quantize_weight(w: torch.Tensor, method: str, *, signed_scale: ScaleSpec = 1.0,
                    signed_delta: float = SIGNED_DELTA) -> torch.Tensor:
    """The quantised weight (differentiable through the STE) for ``method``."""
    if method == "fp32":
        return w
    if method == "binary":
        return BinaryQuant.apply(w)
    if method == "ternary":
        return TernaryQuant.apply(w)
    if method == "signed":
        return SignedBinaryQuant.apply(w, signed_scale, signed_delta)
    raise expected("quantisation method", f"one of {', '.join(METHODS)}", method)


class _QuantMixin:
    """Weight quantisation for a Conv2d/Linear subclass: ``method`` and ``quantized_weight()``."""

    method: str
    signed_scale: ScaleSpec
    signed_delta: float = SIGNED_DELTA
    weight: torch.Tensor

    def quantized_weight(self) -> torch.Tensor:
        return quantize_weight(self.weight, self.method, signed_scale=self.signed_scale,
                               signed_delta=self.signed_delta)

    def extra_repr(self) -> str:  # type: ignore[misc]
        scale = f", signed_scale={self.signed_scale!r}" if self.method == "signed" else ""
        if self.method == "signed" and self.signed_delta != SIGNED_DELTA:
            scale += f", signed_delta={self.signed_delta!r}"
        return f"{super().extra_repr()}, method={self.method}{scale}"  # type: ignore[misc]


class QuantLinear(_QuantMixin, nn.Linear):
    """``nn.Linear`` whose forward uses the quantised weight (filter = output row)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, method: str = "signed",
                 signed_scale: ScaleSpec = 1.0) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.method, self.signed_scale = method, signed_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)


class QuantConv1d(_QuantMixin, nn.Conv1d):
    """``nn.Conv1d`` whose forward uses the quantised weight (filter = output channel)."""

    def __init__(self, *args: Any, method: str = "signed", signed_scale: ScaleSpec = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.method, self.signed_scale = method, signed_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)


class QuantConv2d(_QuantMixin, nn.Conv2d):
    """``nn.Conv2d`` whose forward uses the quantised weight (filter = output channel)."""

    def __init__(self, *args: Any, method: str = "signed", signed_scale: ScaleSpec = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.method, self.signed_scale = method, signed_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)


def _swap(layer: nn.Module, method: str, signed_scale: ScaleSpec, signed_delta: float = SIGNED_DELTA) -> nn.Module:
    if isinstance(layer, nn.Conv1d | nn.Conv2d):
        cls = QuantConv1d if isinstance(layer, nn.Conv1d) else QuantConv2d
        new: nn.Module = cls(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                                     padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                                     bias=layer.bias is not None, padding_mode=layer.padding_mode, method=method,
                                     signed_scale=signed_scale)
    else:
        assert isinstance(layer, nn.Linear)
        new = QuantLinear(layer.in_features, layer.out_features, bias=layer.bias is not None, method=method,
                          signed_scale=signed_scale)
    new.signed_delta = signed_delta
    new.load_state_dict(layer.state_dict())
    return new.to(layer.weight.device, layer.weight.dtype)


def _policy(name: str, value: str) -> str:
    if value not in FIRST_LAST:
        raise expected(name, f"one of {', '.join(FIRST_LAST)}", value)
    return value


def quantize(model: nn.Module, method: str, first_last: str = "fp32", *, first: str | None = None,
             last: str | None = None, signed_scale: ScaleSpec = "mean", signed_delta: float = SIGNED_DELTA,
             calibrate: Any = None, example_inputs: Any = None, filter_fn: FilterFn | None = None) -> nn.Module:
    """A deep copy of ``model`` with its Conv1d/Conv2d/Linear layers swapped for quantised ones.

    ``first_last`` is the policy for the first and last such layer (in ``named_modules`` order):
    ``"fp32"`` keeps them full precision (PLUM keeps the stem and the classifier FP), ``"quantize"``
    quantises them too; ``first``/``last`` override it for one end. ``filter_fn(module, fqn)``
    restricts the candidates (first and last then mean among those accepted). Every other layer is swapped for a
    ``QuantConv1d``/``QuantConv2d``/``QuantLinear`` with ``method`` (also for ``fp32``, whose quantiser is the
    identity, so that all methods count the same weights). The copy trains like any nn.Module.

    A quantised model must be usable as it comes out, not only after QAT:

    * ``signed_scale="mean"`` (default) derives each signed filter's scale from its weights; ``1.0``
      is PLUM's constant (right for QAT with BatchNorm, wrong for a pretrained deep model);
      ``signed_delta`` the relative threshold (PLUM's 0.05 x max|W_f|).
    * ``calibrate``: input batches (a tensor, or an iterable of tensors / tuples of inputs) on which
      the BatchNorm running statistics are reset and re-estimated (``calibrate.calibrate_bn``), since
      the recorded ones describe the full-precision weights.
    * ``example_inputs`` (a tensor or tuple of inputs; default: the first calibration batch, if any)
      are run once in eval mode, and a non-finite output is a ``UserError`` naming the first layer
      whose output is inf/NaN. Without them, an eval-mode forward returning inf/NaN warns
      (``NonFiniteWarning``) instead of passing NaN logits on silently.
    """
    if method not in METHODS:
        raise expected("quantisation method", f"one of {', '.join(METHODS)}", method)
    policy_first = _policy("first layer policy", first or first_last)
    policy_last = _policy("last layer policy", last or first_last)
    signed_scale = check_signed_scale(signed_scale)
    if not 0.0 <= signed_delta < 1.0:
        raise expected("signed-binary threshold", "a fraction of max|W_f| in [0, 1)", signed_delta)
    calls = _batches(calibrate, "quantize calibrate") if calibrate is not None else None
    model = copy.deepcopy(model)
    names = candidates(model, (nn.Conv1d, nn.Conv2d, nn.Linear), filter_fn)
    if not names:
        what = "at least one nn.Conv1d, nn.Conv2d or nn.Linear layer" + (" that filter_fn accepts" if filter_fn else "")
        raise expected("model", what, type(model).__name__)
    keep = set()
    if policy_first == "fp32":
        keep.add(names[0])
    if policy_last == "fp32":
        keep.add(names[-1])
    model = swap_modules(model, [n for n in names if n not in keep],
                         lambda m: _swap(m, method, signed_scale, signed_delta))
    if calls is not None:
        calibrate_bn(model, calls)
        if example_inputs is None:
            example_inputs = calls[0]
    if example_inputs is not None:
        check_finite(model, example_inputs, "quantize")
    if _eval_output_hook not in model._forward_hooks.values():
        model.register_forward_hook(_eval_output_hook)
    return model


def quant_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The quantised layers of a model, in order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantConv1d | QuantConv2d | QuantLinear)]


@torch.no_grad()
def weight_stats(model: nn.Module) -> dict[str, Any]:
    """Non-zero weights of the quantised layers (and of all weight layers), with densities.

    ``nnz``/``weights``/``density`` cover the quantised layers only (the ones that differ between
    methods); ``nnz_all``/``weights_all`` add the full-precision first/last layers.
    """
    layers = []
    for name, m in quant_layers(model):
        q = m.quantized_weight()
        layers.append({"layer": name, "shape": list(q.shape), "weights": q.numel(),
                       "nnz": int((q != 0).sum()),
                       "distinct_nonzero_per_filter": int(max(len(torch.unique(r[r != 0].abs()))
                                                              for r in _flat(q)))})
    nnz = sum(r["nnz"] for r in layers)
    weights = sum(r["weights"] for r in layers)
    fp = [m for m in model.modules() if type(m) in (nn.Conv1d, nn.Conv2d, nn.Linear)]
    fp_weights = sum(m.weight.numel() for m in fp)
    fp_nnz = sum(int((m.weight != 0).sum()) for m in fp)
    return {"nnz": nnz, "weights": weights, "density": nnz / weights if weights else float("nan"),
            "nnz_all": nnz + fp_nnz, "weights_all": weights + fp_weights, "layers": layers}
