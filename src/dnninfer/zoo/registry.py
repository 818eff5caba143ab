"""The model table: every zoo model by name, with how to build it and what it eats.

Systems ask for models by name (CLI, benches, tests), so one table says which names exist, how to
build each one deterministically, and the example inputs that capture, profiling and equivalence
checks run on. Models are built inside `torch.random.fork_rng`, so asking for one does not disturb
the caller's random stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from dnninfer.errors import expected
from dnninfer.zoo import digits, inception, nlp, recsys, resnet, vision


@dataclass(frozen=True)
class InputSpec:
    """One model input. `shape` includes batch 1; `high` is the exclusive bound for integer inputs."""

    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    high: int | None = None

    def __post_init__(self) -> None:
        integer = not (self.dtype.is_floating_point or self.dtype.is_complex)
        if integer != (self.high is not None):
            raise ValueError(
                f"InputSpec: integer inputs need `high`, float inputs must not set it; got {self!r}"
            )


@dataclass(frozen=True)
class ModelSpec:
    """A zoo entry: `build()` returns a fresh model with weights from the global RNG."""

    name: str
    build: Callable[[], nn.Module]
    input_specs: tuple[InputSpec, ...]
    task: str
    description: str


_IMAGE_224 = (InputSpec((1, 3, 224, 224)),)
_DIGITS = (InputSpec((1, 1, 8, 8)),)
_DEEPFM = (
    InputSpec((1, recsys.NUM_SPARSE), torch.int64, recsys.FIELD_VOCAB),
    InputSpec((1, recsys.NUM_DENSE)),
)

_SPECS: tuple[ModelSpec, ...] = (
    ModelSpec("alexnet", vision.alexnet, _IMAGE_224, "image-classification",
              "AlexNet, torchvision layout: 5 convs + 3 FC, FC-heavy (61.1M params)."),
    ModelSpec("vgg16", vision.vgg16, _IMAGE_224, "image-classification",
              "VGG-16 without BN, torchvision layout: deep plain chain, FC-heavy (138.4M params)."),
    ModelSpec("resnet18", resnet.resnet18, _IMAGE_224, "image-classification",
              "ResNet-18, torchvision layout: basic residual blocks (11.7M params)."),
    ModelSpec("resnet50", resnet.resnet50, _IMAGE_224, "image-classification",
              "ResNet-50, torchvision layout: bottleneck residual blocks (25.6M params)."),
    ModelSpec("mobilenet_v2", vision.mobilenet_v2, _IMAGE_224, "image-classification",
              "MobileNetV2, torchvision layout: depthwise inverted residuals (3.5M params)."),
    ModelSpec("googlenet", inception.googlenet, _IMAGE_224, "image-classification",
              "GoogLeNet without aux heads, torchvision layout: 4-branch inception modules (6.6M params)."),
    ModelSpec("inception_v3", inception.inception_v3, (InputSpec((1, 3, 299, 299)),), "image-classification",
              "Inception-v3 without aux head, torchvision layout: wide multi-branch DAG (23.8M params)."),
    ModelSpec("bert_encoder", nlp.bert_encoder, (InputSpec((1, 128), torch.int64, 30522),), "nlp",
              "BERT encoder, 4 layers x 256 hidden x 4 heads, seq 128, 2-class head (11.2M params)."),
    ModelSpec("deepfm", recsys.deepfm, _DEEPFM, "recsys",
              "DeepFM for Criteo-shaped data: 26 sparse fields x 1000 ids + 13 dense, DNN 400x3."),
    ModelSpec("digits_mlp", digits.digits_mlp, _DIGITS, "digits",
              "MLP 64-128-64-10 for sklearn 8x8 digits; trains in seconds."),
    ModelSpec("digits_cnn", digits.digits_cnn, _DIGITS, "digits",
              "Small conv-BN-ReLU CNN for sklearn 8x8 digits; trains in seconds."),
    ModelSpec("lenet_digits", digits.lenet_digits, _DIGITS, "digits",
              "LeNet-5-style CNN shrunk to 8x8 digits."),
)  # fmt: skip

_BY_NAME: dict[str, ModelSpec] = {s.name: s for s in _SPECS}


def names() -> list[str]:
    """All model names, in table order (vision, nlp, recsys, digits)."""
    return list(_BY_NAME)


def get(name: str) -> ModelSpec:
    """The spec for `name`; an unknown name is a user error that lists the valid ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise expected("model", f"one of {', '.join(_BY_NAME)}", name) from None


def build_model(name: str, seed: int = 0) -> nn.Module:
    """Build `name` with weights drawn after `torch.manual_seed(seed)`, in eval mode.

    Same name and seed give bit-identical weights; the caller's RNG state is left untouched.
    """
    spec = get(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.build()
    return model.eval()


def example_inputs(name: str, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Deterministic random inputs for `name`: randn for float inputs, randint(0, high) for integer ones.

    Drawn from a local generator, so the result depends only on (name, batch, seed).
    """
    spec = get(name)
    if batch < 1:
        raise expected("batch", "a positive integer", batch)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for s in spec.input_specs:
        shape = (batch, *s.shape[1:])
        if s.high is None:
            out.append(torch.randn(shape, generator=gen, dtype=s.dtype))
        else:
            out.append(torch.randint(0, s.high, shape, generator=gen, dtype=s.dtype))
    return tuple(out)
