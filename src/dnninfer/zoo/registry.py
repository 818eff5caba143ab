"""The model table: every zoo model by name, with how to build it and what it eats.

Systems ask for models by name (CLI, benches, tests), so one table says which names exist, how to
build each one deterministically, and the example inputs that capture, profiling and equivalence
checks run on. Models are built inside `torch.random.fork_rng`, so asking for one does not disturb
the caller's random stream.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dnninfer.errors import UserError, expected
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
    """A zoo entry: `build()` returns a fresh model with weights from the global RNG.

    `origin` says who declared it: "zoo" for the built-in table, an area name for the models an
    area declares in its `models.ZOO_MODELS`, "user" for `register(spec)` from user code.
    """

    name: str
    build: Callable[[], nn.Module]
    input_specs: tuple[InputSpec, ...]
    task: str
    description: str
    origin: str = "user"

    def __post_init__(self) -> None:
        if not (isinstance(self.name, str) and _NAME.fullmatch(self.name)):
            raise UserError(f"zoo.register: expected a model name of letters, digits, '_', '-' or '.', "
                            f"got {self.name!r}")
        if not callable(self.build):
            raise UserError(f"zoo.register {self.name}: expected a callable `build`, got {type(self.build).__name__}")
        if not self.input_specs or not all(isinstance(s, InputSpec) for s in self.input_specs):
            raise UserError(f"zoo.register {self.name}: expected one or more InputSpec in `input_specs`")


_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
_IMAGE_224 = (InputSpec((1, 3, 224, 224)),)
_DIGITS = (InputSpec((1, 1, 8, 8)),)
_DEEPFM = (
    InputSpec((1, recsys.NUM_SPARSE), torch.int64, recsys.FIELD_VOCAB),
    InputSpec((1, recsys.NUM_DENSE)),
)

#: (name, builder, inputs, task, description) of the built-in models, in listing order.
_BUILTIN = (
    ("alexnet", vision.alexnet, _IMAGE_224, "image-classification",
     "AlexNet, torchvision layout: 5 convs + 3 FC, FC-heavy (61.1M params)."),
    ("vgg16", vision.vgg16, _IMAGE_224, "image-classification",
     "VGG-16 without BN, torchvision layout: deep plain chain, FC-heavy (138.4M params)."),
    ("resnet18", resnet.resnet18, _IMAGE_224, "image-classification",
     "ResNet-18, torchvision layout: basic residual blocks (11.7M params)."),
    ("resnet50", resnet.resnet50, _IMAGE_224, "image-classification",
     "ResNet-50, torchvision layout: bottleneck residual blocks (25.6M params)."),
    ("mobilenet_v2", vision.mobilenet_v2, _IMAGE_224, "image-classification",
     "MobileNetV2, torchvision layout: depthwise inverted residuals (3.5M params)."),
    ("googlenet", inception.googlenet, _IMAGE_224, "image-classification",
     "GoogLeNet without aux heads, torchvision layout: 4-branch inception modules (6.6M params)."),
    ("inception_v3", inception.inception_v3, (InputSpec((1, 3, 299, 299)),), "image-classification",
     "Inception-v3 without aux head, torchvision layout: wide multi-branch DAG (23.8M params)."),
    ("bert_encoder", nlp.bert_encoder, (InputSpec((1, 128), torch.int64, 30522),), "nlp",
     "BERT encoder, 4 layers x 256 hidden x 4 heads, seq 128, 2-class head (11.2M params)."),
    ("deepfm", recsys.deepfm, _DEEPFM, "recsys",
     "DeepFM for Criteo-shaped data: 26 sparse fields x 1000 ids + 13 dense, DNN 400x3."),
    ("digits_mlp", digits.digits_mlp, _DIGITS, "digits", "MLP 64-128-64-10 for sklearn 8x8 digits; trains in seconds."),
    ("digits_cnn", digits.digits_cnn, _DIGITS, "digits",
     "Small conv-BN-ReLU CNN for sklearn 8x8 digits; trains in seconds."),
    ("lenet_digits", digits.lenet_digits, _DIGITS, "digits", "LeNet-5-style CNN shrunk to 8x8 digits."),
)  # fmt: skip

_REGISTRY: dict[str, ModelSpec] = {row[0]: ModelSpec(*row, origin="zoo") for row in _BUILTIN}
_discovered = False


def register(spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
    """Add `spec` to the zoo, so every system can take the model by name (CLI, benches, `api`).

    A name already taken by another spec is refused unless `replace`; registering the same spec
    again is a no-op, so a module may register its models each time it is imported.
    """
    if not isinstance(spec, ModelSpec):
        raise UserError(f"zoo.register: expected a ModelSpec, got {type(spec).__name__}")
    _discover()
    old = _REGISTRY.get(spec.name)
    if old is not None and old != spec and not replace:
        raise UserError(f"zoo.register: model {spec.name!r} is already registered (by {old.origin}); "
                        "pass replace=True to override it")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a model (user-registered ones, in tests and notebooks); unknown names are an error."""
    get(name)
    del _REGISTRY[name]


def _area_model_modules() -> list[str]:
    """`dnninfer.<area>.models` for every area folder that has one, found without importing areas."""
    import dnninfer

    found = []
    for area in pkgutil.iter_modules(dnninfer.__path__):
        if area.ispkg and area.name != "zoo":
            area_dir = Path(area.module_finder.path) / area.name  # type: ignore[union-attr]
            if any(m.name == "models" for m in pkgutil.iter_modules([str(area_dir)])):
                found.append(f"dnninfer.{area.name}.models")
    return sorted(found)


def _discover() -> None:
    """Add every area's declared `ZOO_MODELS` once (areas declare; nothing registers on import)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for module in _area_model_modules():
        for spec in getattr(importlib.import_module(module), "ZOO_MODELS", ()):
            if spec.name in _REGISTRY and _REGISTRY[spec.name] != spec:
                raise ValueError(f"zoo: {module} declares {spec.name!r}, already registered by "
                                 f"{_REGISTRY[spec.name].origin}")
            _REGISTRY[spec.name] = spec


def names(origin: str | None = None) -> list[str]:
    """All model names in registration order (built-ins first); `origin` keeps one source only."""
    _discover()
    return [n for n, s in _REGISTRY.items() if origin is None or s.origin == origin]


def get(name: str) -> ModelSpec:
    """The spec for `name`; an unknown name is a user error that lists the valid ones."""
    spec = _REGISTRY.get(name)
    if spec is None:
        _discover()
        spec = _REGISTRY.get(name)
    if spec is None:
        raise expected("model", f"one of {', '.join(_REGISTRY)}", name)
    return spec


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
