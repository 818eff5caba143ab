"""Resolve the MODEL argument of every command: a zoo name, ``file.py:factory`` or a pickled module.

Users bring their own models; this is the one place that turns what they typed into a model and
example inputs, with one-line errors for a bad name, a missing file or a file that is not a model.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dnninfer.errors import UserError
from dnninfer.zoo.registry import build_model, example_inputs, names


@dataclass(frozen=True)
class LoadedModel:
    name: str
    model: nn.Module
    inputs: tuple[torch.Tensor, ...]


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` -> (1, 3, 224, 224)."""
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise UserError(f"--input-shape: expected positive integers like 1,3,224,224, got {text!r}")
    return shape


def _from_python(path: Path, factory: str) -> tuple[nn.Module, tuple[torch.Tensor, ...] | None]:
    spec = importlib.util.spec_from_file_location(f"dnninfer_user_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise UserError(f"model file {path}: cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # so pickling and fx can find classes defined there
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise UserError(f"model file {path}: import failed: {type(e).__name__}: {e}") from None
    fn = getattr(module, factory, None)
    if not callable(fn):
        raise UserError(f"model file {path}: expected a function {factory!r} returning an nn.Module")
    model = fn()
    inputs = getattr(module, "example_inputs", None)
    return model, (tuple(inputs()) if callable(inputs) else None)


def load_model(spec: str, *, input_shape: str | None = None, batch: int = 1, seed: int = 0) -> LoadedModel:
    """A zoo name, ``path/model.py[:factory]`` (default factory ``model``; an ``example_inputs()``
    function there gives inputs) or ``path/model.pt`` (a whole pickled nn.Module)."""
    if spec in names():
        return LoadedModel(spec, build_model(spec, seed=seed), example_inputs(spec, batch=batch, seed=seed))
    path_text, _, factory = spec.partition(":") if spec.count(":") == 1 else (spec, "", "")
    path = Path(path_text)
    if path.suffix not in (".py", ".pt", ".pth"):
        raise UserError(f"model: expected a zoo name ({', '.join(names())}) or a .py/.pt file, got {spec!r}")
    if not path.is_file():
        raise UserError(f"model file {path}: not found")
    inputs: tuple[torch.Tensor, ...] | None = None
    if path.suffix == ".py":
        model, inputs = _from_python(path, factory or "model")
    else:
        try:
            model = torch.load(path, weights_only=False, map_location="cpu")
        except Exception as e:
            raise UserError(f"model file {path}: cannot be read: {type(e).__name__}: {e}".splitlines()[0]) from None
    if not isinstance(model, nn.Module):
        raise UserError(f"model file {path}: expected a pickled torch.nn.Module, got {type(model).__name__}")
    if input_shape is not None:
        gen = torch.Generator().manual_seed(seed)
        inputs = (torch.randn(parse_shape(input_shape), generator=gen),)
    if inputs is None:
        raise UserError(f"model file {path}: needs --input-shape (or an example_inputs() function in the file)")
    return LoadedModel(path.stem, model.eval(), inputs)
