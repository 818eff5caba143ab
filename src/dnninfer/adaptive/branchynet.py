"""BranchyNet: a network with side exits that stops as soon as an exit is confident.

Teerapittayanon, McDanel, Kung, "BranchyNet: Fast Inference via Early Exiting from Deep Neural
Networks", ICPR 2016 (code: kunglab/branchynet). A `MultiExitNet` is a chain of stages with one
classifier head after each stage; the last head is the network's own output. Training minimises
the weighted sum of the exits' cross-entropies (paper Eq. 2, ``L = Σ_n w_n · CE(exit_n)``).
At inference an input leaves at exit ``n`` as soon as the softmax entropy of that exit's output
is below the exit's threshold ``T_n`` (paper Eq. 1, ``entropy(y) = −Σ_c y_c log y_c``, natural
log); the last exit always answers.

Three backbones: `b_lenet`, B-LeNet exactly as in ``kunglab/branchynet/networks/lenet_mnist.py``
(Chainer ``max_pooling_2d`` defaults to ``cover_all=True``, i.e. ceil-mode pooling, which is why
the 28x28 feature sizes are 640 and 720), and `b_cnn`, a two-exit version of the zoo's
``digits_cnn`` (conv-BN-ReLU 16 | exit 1 | conv 32, pool, conv 64, pool, linear), and
`b_alexnet`, BranchyNet's B-AlexNet (``networks/alex_cifar10.py``: conv-pool-ReLU-LRN stem, a
small side branch, then conv 5x5, three conv 3x3 and three linears) at half width for 1x28x28
inputs: its main path costs ~12x its exit 1, where B-LeNet's costs ~5x.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dnninfer.errors import UserError

__all__ = [
    "BACKBONES",
    "NATIVE_28",
    "ChannelLRN",
    "EarlyExit",
    "ExitOutputs",
    "MultiExitNet",
    "SweepPoint",
    "b_alexnet",
    "b_cnn",
    "b_lenet",
    "build_backbone",
    "clone",
    "default_sweep_grid",
    "early_exit",
    "early_exit_unchecked",
    "exit_outputs",
    "softmax_entropy",
    "threshold_sweep",
]


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of ``softmax(logits)`` per row: BranchyNet's confidence measure (Eq. 1)."""
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


class MultiExitNet(nn.Module):
    """``stages[k]`` then ``heads[k]`` gives exit k; ``heads[-1]`` is the full network's output.

    ``forward`` returns the logits of every exit (what joint training needs); `early_exit` is the
    inference path that skips later stages for confident inputs.
    """

    def __init__(self, stages: Sequence[nn.Module], heads: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(stages) != len(heads) or len(stages) < 2:
            raise ValueError(f"need one head per stage and at least 2 exits, got {len(stages)} stages, "
                             f"{len(heads)} heads")
        self.stages = nn.ModuleList(stages)
        self.heads = nn.ModuleList(heads)

    @property
    def num_exits(self) -> int:
        return len(self.heads)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for stage, head in zip(self.stages, self.heads, strict=True):
            x = stage(x)
            outs.append(head(x))
        return outs

    def exit_path(self, k: int) -> nn.Sequential:
        """The network cut after exit ``k`` (shares parameters): stages 0..k, then head k.

        ``exit_path(0)`` is CBNet's lightweight classifier (the truncated B-LeNet);
        ``exit_path(num_exits - 1)`` is the full network without side branches.
        """
        if not 0 <= k < self.num_exits:
            raise ValueError(f"exit index must be in 0..{self.num_exits - 1}, got {k}")
        return nn.Sequential(*self.stages[: k + 1], self.heads[k])

    def light(self) -> nn.Sequential:
        return self.exit_path(0)

    def main_path(self) -> nn.Sequential:
        return self.exit_path(self.num_exits - 1)


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(2, 2, ceil_mode=True)  # Chainer max_pooling_2d(2, 2), cover_all=True


def _flat_size(module: nn.Module, shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return int(module(torch.zeros(1, *shape)).numel())


def b_lenet(image_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10) -> MultiExitNet:
    """B-LeNet (kunglab/branchynet networks/lenet_mnist.py): conv 5x5 1→5 pad 3, then
    exit 1: pool, ReLU, conv 3x3 5→10 pad 1, pool, ReLU, linear (640 at 28x28) → classes;
    main: pool, ReLU, conv 5x5 5→10 pad 3, pool, ReLU, conv 5x5 10→20 pad 3, pool, ReLU,
    linear (720 at 28x28) → 84 → classes (no activation between the two linears, as in the code)."""
    c = image_shape[0]
    stem = nn.Sequential(nn.Conv2d(c, 5, 5, padding=3))
    stem_shape = tuple(stem(torch.zeros(1, *image_shape)).shape[1:])
    branch = nn.Sequential(_pool(), nn.ReLU(), nn.Conv2d(5, 10, 3, padding=1), _pool(), nn.ReLU(), nn.Flatten())
    branch.append(nn.Linear(_flat_size(branch, stem_shape), num_classes))
    trunk = nn.Sequential(_pool(), nn.ReLU(), nn.Conv2d(5, 10, 5, padding=3), _pool(), nn.ReLU(),
                          nn.Conv2d(10, 20, 5, padding=3), _pool(), nn.ReLU(), nn.Flatten())
    trunk.append(nn.Linear(_flat_size(trunk, stem_shape), 84))
    head = nn.Sequential(nn.Linear(84, num_classes))
    return MultiExitNet([stem, trunk], [branch, head])


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def b_cnn(image_shape: tuple[int, int, int] = (1, 8, 8), num_classes: int = 10) -> MultiExitNet:
    """The zoo's ``digits_cnn`` with a side exit after its first conv-BN-ReLU unit.

    Main path: conv16 | conv32, pool, conv64, pool, linear (as digits_cnn, any input size).
    Exit 1: pool, conv 16→16, pool, linear: a small head in B-LeNet's branch style.
    """
    c = image_shape[0]
    stem = _conv_bn_relu(c, 16)
    stem_shape = (16, *image_shape[1:])
    branch = nn.Sequential(_pool(), _conv_bn_relu(16, 16), _pool(), nn.Flatten())
    branch.append(nn.Linear(_flat_size(branch, stem_shape), num_classes))
    trunk = nn.Sequential(_conv_bn_relu(16, 32), _pool(), _conv_bn_relu(32, 64), _pool(), nn.Flatten())
    head = nn.Sequential(nn.Linear(_flat_size(trunk, stem_shape), num_classes))
    net = MultiExitNet([stem, trunk], [branch, head])
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return net


class ChannelLRN(nn.Module):
    """Cross-channel local response norm, ``x / (k + alpha * mean_{n nearby channels}(x^2))^beta``,
    equal to ``nn.LocalResponseNorm`` (zero-padded channels, mean over ``size``) but written as a
    fixed banded 1x1 convolution, so it exports to ONNX as one Conv (the exporter's LRN lowering
    broke ONNX Runtime's reshape once an autoencoder ran in front of it). B-AlexNet's beta = 3/4
    is computed with square roots instead of a generic power (equal to float rounding)."""

    def __init__(self, channels: int, size: int = 3, alpha: float = 5e-5, beta: float = 0.75, k: float = 1.0) -> None:
        super().__init__()
        idx = torch.arange(channels)
        off = idx[None, :] - idx[:, None]  # [c_out, c_in]
        band = ((off >= -(size // 2)) & (off <= (size - 1) // 2)).float() / size
        self.register_buffer("band", band[:, :, None, None])
        self.alpha, self.beta, self.k = alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.k + self.alpha * F.conv2d(x * x, self.band)
        if self.beta == 0.75:  # d^-3/4 = r * sqrt(r), r = d^-1/2: ~4x cheaper than Pow in ONNX Runtime
            r = torch.rsqrt(d)
            return x * (r * torch.sqrt(r))
        return x / d.pow(self.beta)


def _lrn(channels: int) -> ChannelLRN:
    return ChannelLRN(channels, 3, alpha=5e-5, beta=0.75)  # B-AlexNet's F.local_response_normalization


def _pool3() -> nn.MaxPool2d:
    return nn.MaxPool2d(3, 2, ceil_mode=True)  # Chainer max_pooling_2d(3, 2), cover_all=True


def b_alexnet(image_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10) -> MultiExitNet:
    """B-AlexNet (kunglab/branchynet networks/alex_cifar10.py) at half width for small inputs.

    Stem: conv 5x5 c→16 pad 2, pool 3/2, ReLU, LRN. Exit 1: pool 3/2, ReLU, conv 3x3 16→16,
    pool 3/2, ReLU, linear → classes. Main: conv 5x5 16→32 pad 2, ReLU, pool 3/2, LRN, conv 3x3
    32→48, ReLU, conv 3x3 48→48, ReLU, conv 3x3 48→32, ReLU, pool 3/2, linear → 128, ReLU,
    linear → 64, ReLU | linear → classes. At 1x28x28: exit 1 0.43 M MACs, main path 5.2 M.
    """
    c = image_shape[0]
    stem = nn.Sequential(nn.Conv2d(c, 16, 5, padding=2), _pool3(), nn.ReLU(), _lrn(16))
    stem_shape = tuple(stem(torch.zeros(1, *image_shape)).shape[1:])
    branch = nn.Sequential(_pool3(), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), _pool3(), nn.ReLU(), nn.Flatten())
    branch.append(nn.Linear(_flat_size(branch, stem_shape), num_classes))
    trunk = nn.Sequential(nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), _pool3(), _lrn(32),
                          nn.Conv2d(32, 48, 3, padding=1), nn.ReLU(), nn.Conv2d(48, 48, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(48, 32, 3, padding=1), nn.ReLU(), _pool3(), nn.Flatten())
    trunk.extend([nn.Linear(_flat_size(trunk, stem_shape), 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU()])
    head = nn.Sequential(nn.Linear(64, num_classes))
    net = MultiExitNet([stem, trunk], [branch, head])
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return net


BACKBONES = {"blenet": b_lenet, "bcnn": b_cnn, "balexnet": b_alexnet}
#: backbones built for 28x28 inputs: digits are upsampled to 28x28 for them
NATIVE_28 = frozenset({"blenet", "balexnet"})


def build_backbone(name: str, image_shape: tuple[int, int, int], num_classes: int, seed: int = 0) -> MultiExitNet:
    """A fresh, seeded multi-exit backbone by name (``blenet``, ``bcnn`` or ``balexnet``)."""
    if name not in BACKBONES:
        raise UserError(f"backbone {name!r}: expected one of {', '.join(BACKBONES)}")
    torch.manual_seed(seed)
    return BACKBONES[name](image_shape, num_classes)


# -- inference ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EarlyExit:
    """Per input: the answer and the exit (0-based) that gave it."""

    logits: torch.Tensor
    exit: torch.Tensor


def _thresholds(net: MultiExitNet, thresholds: float | Sequence[float]) -> list[float]:
    ts = [float(thresholds)] * (net.num_exits - 1) if np.isscalar(thresholds) else [float(t) for t in thresholds]
    if len(ts) != net.num_exits - 1:
        raise ValueError(f"need {net.num_exits - 1} threshold(s) (one per side exit), got {len(ts)}")
    return ts


@torch.inference_mode()
def early_exit(net: MultiExitNet, x: torch.Tensor, thresholds: float | Sequence[float]) -> EarlyExit:
    """BranchyNet inference (paper Algorithm 1): exit n answers when entropy < ``T_n``.

    Inputs that leave early are dropped from the batch, so later stages only see the rest; a
    single input takes a branch-free fast path (what batch-1 timing measures).
    """
    return early_exit_unchecked(net, x, _thresholds(net, thresholds))


def early_exit_unchecked(net: MultiExitNet, x: torch.Tensor, ts: Sequence[float]) -> EarlyExit:
    """`early_exit` without argument checks or its own inference-mode guard: the timed path
    (the caller holds ``torch.inference_mode()``, as it does for every method it times)."""
    last = net.num_exits - 1
    if x.shape[0] == 1:
        for k in range(last):
            x = net.stages[k](x)
            logits = net.heads[k](x)
            if float(softmax_entropy(logits)) < ts[k]:
                return EarlyExit(logits, torch.tensor([k]))
        logits = net.heads[last](net.stages[last](x))
        return EarlyExit(logits, torch.tensor([last]))
    n = x.shape[0]
    out: torch.Tensor | None = None
    exits = torch.full((n,), last, dtype=torch.int64)
    active = torch.arange(n)
    h = x
    for k in range(net.num_exits):
        h = net.stages[k](h)
        logits = net.heads[k](h)
        if out is None:
            out = logits.new_empty((n, logits.shape[1]))
        if k == last:
            out[active] = logits
            break
        done = softmax_entropy(logits) < ts[k]
        out[active[done]] = logits[done]
        exits[active[done]] = k
        keep = ~done
        if not bool(keep.any()):
            break
        active, h = active[keep], h[keep]
    assert out is not None
    return EarlyExit(out, exits)


@dataclass(frozen=True)
class ExitOutputs:
    """Logits of every exit for every input, computed once so threshold sweeps cost nothing."""

    logits: list[torch.Tensor]

    @property
    def entropies(self) -> list[torch.Tensor]:
        return [softmax_entropy(lg) for lg in self.logits]

    def decide(self, thresholds: Sequence[float]) -> EarlyExit:
        """What `early_exit` would answer with these thresholds (same decisions, no re-run)."""
        n = self.logits[0].shape[0]
        last = len(self.logits) - 1
        exits = torch.full((n,), last, dtype=torch.int64)
        undecided = torch.ones(n, dtype=torch.bool)
        for k in range(last):
            take = undecided & (softmax_entropy(self.logits[k]) < thresholds[k])
            exits[take] = k
            undecided &= ~take
        stacked = torch.stack(self.logits)  # (exits, n, classes)
        return EarlyExit(stacked[exits, torch.arange(n)], exits)


@torch.inference_mode()
def exit_outputs(net: MultiExitNet, x: torch.Tensor, batch: int = 512) -> ExitOutputs:
    net.eval()
    parts = [net(x[i: i + batch]) for i in range(0, len(x), batch)]
    return ExitOutputs([torch.cat([p[k] for p in parts]) for k in range(net.num_exits)])


@dataclass(frozen=True)
class SweepPoint:
    """One threshold of a two-exit sweep: accuracy and the share of inputs leaving at exit 1."""

    threshold: float
    accuracy: float
    exit1_fraction: float


def threshold_sweep(outputs: ExitOutputs, y: torch.Tensor, thresholds: Sequence[float]) -> list[SweepPoint]:
    """Accuracy and exit-1 share at every threshold T (same T on every side exit)."""
    points = []
    for t in thresholds:
        res = outputs.decide([t] * (len(outputs.logits) - 1))
        acc = float((res.logits.argmax(1) == y).float().mean())
        points.append(SweepPoint(float(t), acc, float((res.exit == 0).float().mean())))
    return points


def default_sweep_grid(entropies: torch.Tensor, n: int = 25) -> list[float]:
    """Thresholds from 'nobody exits early' to 'everybody does', log-spaced over the entropies seen."""
    e = entropies[entropies > 0]
    lo = float(e.min()) if e.numel() else 1e-6
    hi = float(entropies.max()) * 1.01
    grid = np.geomspace(max(lo, 1e-8), max(hi, 2e-8), n)
    return [0.0, *grid.tolist(), float("inf")]


def clone(net: nn.Module) -> nn.Module:
    """An independent copy (BranchyNet is initialised from the trained baseline, §III-B)."""
    return copy.deepcopy(net)
