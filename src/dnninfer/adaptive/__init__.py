"""Adaptive inference: BranchyNet early exit and CBNet's converting autoencoder.

``branchynet``  multi-exit networks (B-LeNet, a multi-exit digits CNN), joint training, entropy exits
``autoencoder`` converting AEs: the paper's dense ones and a cheaper conv-encoder variant
``cbnet``       easy/hard labels, per-class targets, CBNet and the guarded CBNet
``pipeline``    the whole recipe in one call (`fit`), plus test-set summaries
``measure``     the same-harness comparison: accuracy, latency, throughput, MACs, device energy
"""

from dnninfer.adaptive.autoencoder import ConvAE, DenseAE, build_autoencoder
from dnninfer.adaptive.branchynet import (
    MultiExitNet,
    b_cnn,
    b_lenet,
    early_exit,
    exit_outputs,
    softmax_entropy,
    threshold_sweep,
)
from dnninfer.adaptive.cbnet import (
    CBNet,
    GuardedCBNet,
    choose_threshold,
    conversion_pairs,
    easiest_targets,
    kmeans_targets,
    label_easy,
)
from dnninfer.adaptive.pipeline import CBNetConfig, Trained, fit

__all__ = [
    "CBNet",
    "CBNetConfig",
    "ConvAE",
    "DenseAE",
    "GuardedCBNet",
    "MultiExitNet",
    "Trained",
    "b_cnn",
    "b_lenet",
    "build_autoencoder",
    "choose_threshold",
    "conversion_pairs",
    "early_exit",
    "easiest_targets",
    "exit_outputs",
    "fit",
    "kmeans_targets",
    "label_easy",
    "softmax_entropy",
    "threshold_sweep",
]
