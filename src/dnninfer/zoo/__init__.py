"""Model zoo: the networks every dnninfer system is measured on, by name.

Vision models are plain-PyTorch copies of torchvision's (same module names and parameter counts);
the rest are a small BERT encoder, DeepFM and tiny nets for 8x8 digits. Every model is traceable by
`torch.fx.symbolic_trace`, which graph capture relies on.

The table is open: `register(ModelSpec(...))` adds a user's model under a name every system takes,
and an area declares the models it adds in `<area>/models.py` as `ZOO_MODELS` (found on first lookup).
"""

from dnninfer.zoo.load import LoadedModel, load_model
from dnninfer.zoo.registry import (
    InputSpec,
    ModelSpec,
    build_model,
    example_inputs,
    get,
    names,
    register,
    unregister,
)

__all__ = [
    "InputSpec", "LoadedModel", "ModelSpec", "build_model", "example_inputs", "get", "load_model", "names", "register",
    "unregister",
]
