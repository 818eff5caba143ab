"""Resolve the MODEL argument of every command: a zoo name, ``file.py:factory`` or a pickled module.

Users bring their own models; this is the one place that turns what they typed into a model and
example inputs. Everything here runs the user's code or reads the user's bytes, so every failure
of it is the user's to fix: each becomes a one-line `UserError` naming the file, the function and
the first line of the exception (``ExcType: msg``). Nothing a model file does may end in a
traceback, and nothing a garbage file holds may reach the unpickler unchecked.
"""

from __future__ import annotations

import importlib.util
import math
import pickle
import sys
import warnings
import zipfile
from argparse import ArgumentTypeError
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from dnninfer.argtypes import input_shape as _input_shape
from dnninfer.errors import UserError
from dnninfer.zoo.registry import build_model, example_inputs, names

T = TypeVar("T")

#: What `torch.save` writes first: a zip archive, or (legacy format) a pickled magic number,
#: the long 0x1950a86a20f9469cfc6c as LONG1 (opcode 0x8a, 10 bytes little-endian).
ZIP_MAGIC = b"PK\x03\x04"
LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


@dataclass(frozen=True)
class LoadedModel:
    name: str
    model: nn.Module
    inputs: tuple[torch.Tensor, ...]


def parse_shape(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"1,3,224,224"`` (or a sequence of ints) -> (1, 3, 224, 224); UserError on anything else."""
    if not isinstance(text, str):
        text = ",".join(str(d) for d in text)
    try:
        return _input_shape(text)
    except ArgumentTypeError as e:
        raise UserError(f"--input-shape: {e}") from None


def _first_line(e: BaseException) -> str:
    """``ExcType: first line of the message`` (``ExcType`` alone when the message is empty)."""
    if isinstance(e, SystemExit):
        return f"SystemExit({e.code!r})"
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines and lines[0].strip() else type(e).__name__


def _guard(what: str, fn: Callable[[], T]) -> T:
    """Run user code; any exception it raises (or an exit it asks for) is the user's, one line."""
    try:
        return fn()
    except UserError:
        raise
    except (Exception, SystemExit) as e:  # user code: every failure of it is a user error
        raise UserError(f"{what} raised {_first_line(e)}") from None


@contextmanager
def _quiet_unless_ok() -> Iterator[None]:
    """Hold back warnings from user code: shown after success, dropped when a one-line error follows."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _as_inputs(value: Any, where: str) -> tuple[torch.Tensor, ...]:
    """`example_inputs()` may return one tensor or a tuple/list of them; anything else is refused."""
    if isinstance(value, torch.Tensor):
        return (value,)
    if not isinstance(value, (tuple, list)):
        raise UserError(f"{where} returned {type(value).__name__}, expected a tensor or a tuple of tensors")
    if not value:
        raise UserError(f"{where} returned an empty {type(value).__name__}, expected at least one tensor")
    for i, x in enumerate(value):
        if not isinstance(x, torch.Tensor):
            raise UserError(f"{where} returned {type(x).__name__} at position {i}, expected tensors only")
    return tuple(value)


def _from_python(path: Path, factory: str) -> tuple[nn.Module, tuple[torch.Tensor, ...] | None]:
    shown = f"model file {path}"
    if not factory.isidentifier():
        raise UserError(f"{shown}: factory {factory!r}: expected a Python function name")
    spec = importlib.util.spec_from_file_location(f"dnninfer_user_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise UserError(f"{shown}: cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # so pickling and fx can find classes defined there
    try:
        with _quiet_unless_ok():
            _guard(f"{shown}: importing it", lambda: spec.loader.exec_module(module))
    except UserError:
        sys.modules.pop(spec.name, None)
        raise
    fn = getattr(module, factory, None)
    if not callable(fn):
        raise UserError(f"{shown}: expected a function {factory!r} returning an nn.Module, "
                        f"got {'nothing of that name' if fn is None else type(fn).__name__}")
    with _quiet_unless_ok():
        model = _guard(f"{shown}: {factory}()", fn)
    if not isinstance(model, nn.Module):
        raise UserError(f"{shown}: {factory}() returned {type(model).__name__}, expected an nn.Module")
    make_inputs = getattr(module, "example_inputs", None)
    if make_inputs is None:
        return model, None
    if not callable(make_inputs):
        raise UserError(f"{shown}: example_inputs is a {type(make_inputs).__name__}, expected a function")
    with _quiet_unless_ok():
        value = _guard(f"{shown}: example_inputs()", make_inputs)
    return model, _as_inputs(value, f"{shown}: example_inputs()")


def _check_format(path: Path) -> None:
    """Refuse what `torch.save` cannot have written before the unpickler sees it: random bytes fed
    to pickle fail as MemoryError or RecursionError with no message, or allocate without bound."""
    shown = f"model file {path}"
    try:
        with path.open("rb") as f:
            head = f.read(64)
    except OSError as e:
        raise UserError(f"{shown}: cannot be read: {_first_line(e)}") from None
    if not head:
        raise UserError(f"{shown}: empty, expected a PyTorch checkpoint written by torch.save")
    if head.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as zf:
                pickles = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
                if not pickles:
                    raise UserError(f"{shown}: a zip archive without data.pkl, expected a PyTorch checkpoint "
                                    "written by torch.save")
                zf.read(pickles[0])  # checks its CRC: a flipped byte in the pickle stops here
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError) as e:
            raise UserError(f"{shown}: truncated or corrupt zip archive ({_first_line(e)})") from None
        return
    if head.startswith(b"\x80") and LEGACY_MAGIC in head[:32]:
        return
    if head.startswith(b"\x80"):
        raise UserError(f"{shown}: not a PyTorch checkpoint (a plain pickle without torch.save's magic number); "
                        "save the module with torch.save(model, path)")
    raise UserError(f"{shown}: not a PyTorch checkpoint (bad magic {head[:4]!r}; expected a zip archive "
                    f"starting {ZIP_MAGIC!r} or torch's legacy pickle format)")


def _describe_load_error(e: BaseException) -> str:
    """Why unpickling failed, in words: the exception types alone say nothing useful."""
    if isinstance(e, EOFError) or (isinstance(e, pickle.UnpicklingError) and "truncated" in str(e)):
        return "truncated (the data ends early)"
    if isinstance(e, (MemoryError, RecursionError)):
        return f"corrupt (unpickling it ran out of {'memory' if isinstance(e, MemoryError) else 'stack'})"
    if isinstance(e, (ModuleNotFoundError, AttributeError)):
        return (f"pickled with a class this Python cannot import ({_first_line(e)}); "
                "use a model.py factory instead")
    text = str(e)
    if "PytorchStreamReader" in text or "zip archive" in text or "central directory" in text:
        return f"truncated or corrupt archive ({_first_line(e)})"
    return f"corrupt or unreadable ({_first_line(e)})"


def _from_checkpoint(path: Path) -> nn.Module:
    shown = f"model file {path}"
    _check_format(path)
    try:
        with _quiet_unless_ok():
            obj = torch.load(path, weights_only=False, map_location="cpu")
    except UserError:
        raise
    except (Exception, SystemExit) as e:  # unpickling the user's bytes: every failure is theirs
        raise UserError(f"{shown}: {_describe_load_error(e)}") from None
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise UserError(f"{shown}: holds a state_dict, not a module; use a model.py factory that builds "
                            "the model and loads it (model.load_state_dict(torch.load(...)))")
        keys = ", ".join(repr(k) for k in list(obj)[:4]) + (", ..." if len(obj) > 4 else "")
        raise UserError(f"{shown}: holds a {type(obj).__name__} (keys {keys or 'none'}), expected nn.Module; "
                        "save the module itself (torch.save(model, path)) or use a model.py factory")
    name = type(obj).__name__
    kind = f"class {obj.__name__}" if isinstance(obj, type) else f"{'an' if name[0] in 'aeiouAEIOU' else 'a'} {name}"
    raise UserError(f"{shown}: holds {kind}, expected nn.Module")


def _random_inputs(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    try:
        return (torch.randn(shape, generator=gen),)
    except (RuntimeError, MemoryError) as e:  # the size the user asked for does not fit here
        raise UserError(f"--input-shape {','.join(map(str, shape))}: {math.prod(shape)} float32 elements "
                        f"cannot be allocated here ({_first_line(e)})") from None


def _is_file(path: Path) -> bool:
    try:
        if path.is_file():
            return True
        if path.exists():
            raise UserError(f"model file {path}: not a regular file")
        return False
    except OSError as e:  # e.g. a name longer than the file system allows
        raise UserError(f"model file {path}: cannot be accessed ({_first_line(e)})") from None


def load_model(spec: str, *, input_shape: str | Sequence[int] | None = None, batch: int = 1,
               seed: int = 0) -> LoadedModel:
    """A zoo name, ``path/model.py[:factory]`` (default factory ``model``; an ``example_inputs()``
    function there gives inputs) or ``path/model.pt`` (a whole pickled nn.Module)."""
    if spec in names():
        return LoadedModel(spec, build_model(spec, seed=seed), example_inputs(spec, batch=batch, seed=seed))
    path_text, _, factory = spec.partition(":") if spec.count(":") == 1 else (spec, "", "")
    path = Path(path_text)
    if path.suffix not in (".py", ".pt", ".pth"):
        raise UserError(f"model: expected a zoo name ({', '.join(names())}) or a .py/.pt file, got {spec!r}")
    if not _is_file(path):
        raise UserError(f"model file {path}: not found")
    shape = parse_shape(input_shape) if input_shape is not None else None
    inputs: tuple[torch.Tensor, ...] | None = None
    if path.suffix == ".py":
        model, inputs = _from_python(path, factory or "model")
    else:
        if factory:
            raise UserError(f"model file {path}: ':{factory}' names a factory, which only a .py file has")
        model = _from_checkpoint(path)
    if shape is not None:
        inputs = _random_inputs(shape, seed)
    if inputs is None:
        raise UserError(f"model file {path}: needs --input-shape (or an example_inputs() function in the file)")
    try:
        model.eval()
    except Exception as e:  # a user module overriding eval/train
        raise UserError(f"model file {path}: model.eval() raised {_first_line(e)}") from None
    return LoadedModel(path.stem, model, inputs)
