"""The small nets Mirage's training runs use, declared to the zoo so every system takes them by name.

Small enough that integer (RNS / BFP) emulation of every GEMM stays affordable on a 2-core CPU.
On digits the MLP is the zoo's own ``digits_mlp`` (64-128-64-10, research note §4.2).
"""

from __future__ import annotations

from torch import nn

from dnninfer import zoo

__all__ = ["ZOO_MODELS", "mnist1d_cnn", "mnist1d_mlp", "model_name", "rns_digits_cnn"]


def rns_digits_cnn() -> nn.Sequential:
    """Two convs (the second strided) and a linear head on 8x8 digits; no BN, so every GEMM is emulated."""
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(32 * 4 * 4, 10))


def mnist1d_mlp() -> nn.Sequential:
    """MLP 40-256-256-10 (research note addendum)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(40, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 10))


def mnist1d_cnn() -> nn.Sequential:
    """1-D CNN in the MNIST-1D paper's style, as (1, k) Conv2d kernels over (1, 1, 40) signals."""
    return nn.Sequential(
        nn.Conv2d(1, 32, (1, 5), stride=(1, 2), padding=(0, 2)), nn.ReLU(),
        nn.Conv2d(32, 32, (1, 3), stride=(1, 2), padding=(0, 1)), nn.ReLU(),
        nn.Conv2d(32, 32, (1, 3), stride=(1, 2), padding=(0, 1)), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 5, 10))


_DIGITS = (zoo.InputSpec((1, 1, 8, 8)),)
_MNIST1D = (zoo.InputSpec((1, 1, 1, 40)),)

ZOO_MODELS = (
    zoo.ModelSpec("rns_digits_cnn", rns_digits_cnn, _DIGITS, "digits",
                  "Mirage's digits CNN: conv 16, conv 32 s2, FC; no BN (every GEMM under RNS emulation).",
                  origin="rns"),
    zoo.ModelSpec("mnist1d_mlp", mnist1d_mlp, _MNIST1D, "mnist1d", "MLP 40-256-256-10 for MNIST-1D signals.",
                  origin="rns"),
    zoo.ModelSpec("mnist1d_cnn", mnist1d_cnn, _MNIST1D, "mnist1d",
                  "1-D CNN for MNIST-1D: three (1, k) convs, stride 2, 32 channels, FC.", origin="rns"),
)

#: (dataset, arch) -> zoo name of the model trained on it.
_BY_TASK = {("digits", "mlp"): "digits_mlp", ("digits", "cnn"): "rns_digits_cnn",
            ("mnist1d", "mlp"): "mnist1d_mlp", ("mnist1d", "cnn"): "mnist1d_cnn"}


def model_name(dataset: str, arch: str) -> str:
    """The zoo name of the ``arch`` model for ``dataset``; other pairs are a user error."""
    from dnninfer.errors import UserError

    try:
        return _BY_TASK[(dataset, arch)]
    except KeyError:
        raise UserError(f"model: expected arch mlp or cnn for dataset {dataset!r}, got {arch!r}") from None
