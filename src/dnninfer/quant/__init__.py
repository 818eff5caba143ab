"""Signed binarization (Kuhar, Jain, Tumanov: PLUM) beside binary (BWN) and ternary (TWN) weights.

* ``quantizers``: STE quantisers, ``QuantConv1d``/``QuantConv2d``/``QuantLinear``, ``quantize(model, method)``;
* ``calibrate``: ``calibrate_bn`` (BatchNorm re-estimation after quantising) and the inf/NaN checks
  (``first_nonfinite``, ``NonFiniteWarning``) that keep a broken quantised model from passing silently;
* ``models``/``train``: width-multiplied MLP/CNN/residual net (Conv1d on signals) and
  quantisation-aware training on digits/MNIST/MNIST-1D;
* ``kernels``: add-only numba GEMV/GEMM kernels (dense +-1, binary 2*pos-total, ternary, signed
  index lists) and bit-packed weights; ``engine.deploy(model)`` runs a quantised model on them;
* ``analysis``: accuracy at matched non-zeros with paired-seed statistics; ``bench``: the
  ``signed-binary`` bench; ``study``: signed vs binary per dataset, architecture and policy (ablations).
See docs/signed_binary.md.
"""

from dnninfer.quant.calibrate import NonFiniteWarning, calibrate_bn, check_finite, first_nonfinite
from dnninfer.quant.engine import DeployedModel, deploy
from dnninfer.quant.kernels import PackedWeights, make_kernel, pack, unpack
from dnninfer.quant.models import build_model, cnn, mlp, resnet
from dnninfer.quant.quantizers import (
    METHODS,
    BinaryQuant,
    QuantConv1d,
    QuantConv2d,
    QuantLinear,
    SignedBinaryQuant,
    TernaryQuant,
    quantize,
    weight_stats,
)
from dnninfer.quant.train import TrainConfig, TrainResult, train

__all__ = [
    "METHODS",
    "BinaryQuant",
    "DeployedModel",
    "NonFiniteWarning",
    "PackedWeights",
    "QuantConv1d",
    "QuantConv2d",
    "QuantLinear",
    "SignedBinaryQuant",
    "TernaryQuant",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "calibrate_bn",
    "check_finite",
    "cnn",
    "deploy",
    "first_nonfinite",
    "make_kernel",
    "mlp",
    "pack",
    "quantize",
    "resnet",
    "train",
    "unpack",
    "weight_stats",
]
