"""Resolve the MODEL argument of every command: a zoo name, ``file.py:factory`` (optionally with a
state_dict as ``weights``), a torch.export ``.pt2`` archive, an ``.onnx`` file, or (only when the
user says they trust it) a pickled whole module.

Users bring their own models; this is the one place that turns what they typed into a model and
example inputs. Everything here runs the user's code or reads the user's bytes, so every failure
of it is the user's to fix: each becomes a one-line `UserError` naming the file, the function and
the first line of the exception (``ExcType: msg``). Nothing a model file does may end in a
traceback, and nothing a garbage file holds may reach the unpickler unchecked.

Bytes are not code: a ``.pt`` is read with torch's restricted unpickler (``weights_only=True``),
and a pickled module (whose unpickling runs any code the file holds) is refused unless
``trust_pickle``. A ``.pt2`` is not safe by format either (torch.export.load falls back to full
unpickling, execs the archive's guard code, sympifies its shape expressions and resolves node
targets as any ``torch.*`` attribute), so `_check_pt2` reads the archive first and admits only
what a plain exported program holds; `.py` model and rules files are the user's own code and run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import math
import numbers
import operator
import os
import pickle
import re
import sys
import tokenize
import warnings
import zipfile
from argparse import ArgumentTypeError
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import torch
from torch import fx, nn

from dnninfer.argtypes import input_shape as _input_shape
from dnninfer.errors import UserError
from dnninfer.graph.flops import Rule, per_in, per_out
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


def _import_file(path: Path, shown: str, prefix: str) -> ModuleType:
    """Import the user's Python file as module ``<prefix><stem>``; a failure is one line."""
    spec = importlib.util.spec_from_file_location(f"{prefix}{path.stem}", path)
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
    return module


def _from_python(path: Path, factory: str) -> tuple[nn.Module, tuple[torch.Tensor, ...] | None]:
    shown = f"model file {path}"
    if not factory.isidentifier():
        raise UserError(f"{shown}: factory {factory!r}: expected a Python function name")
    module = _import_file(path, shown, "dnninfer_user_")
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


def _check_format(path: Path, shown: str | None = None) -> None:
    """Refuse what `torch.save` cannot have written before the unpickler sees it: random bytes fed
    to pickle fail as MemoryError or RecursionError with no message, or allocate without bound."""
    shown = shown or f"model file {path}"
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


#: torch's restricted unpickler names the first class or function a file would import.
_UNSAFE_GLOBAL = re.compile(r"(?:Unsupported global: |unsupported )GLOBAL (\S+)")
_SAFE_UNPICKLER = "Weights only load failed"


class _Pickled(Exception):
    """The file pickles Python objects (`name` is the first global), not just tensors."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _describe_load_error(e: BaseException) -> str:
    """Why unpickling failed, in words: the exception types alone say nothing useful."""
    if isinstance(e, EOFError) or (isinstance(e, pickle.UnpicklingError) and "truncated" in str(e)):
        return "truncated (the data ends early)"
    text = str(e)
    if isinstance(e, pickle.UnpicklingError) and text.startswith(_SAFE_UNPICKLER):
        # torch wraps the reason in advice about weights_only=False; the reason is its last line
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Check the documentation")]
        return f"corrupt (torch's restricted unpickler stopped: {lines[-1] if lines else 'no reason given'})"
    if isinstance(e, (MemoryError, RecursionError)):
        return f"corrupt (unpickling it ran out of {'memory' if isinstance(e, MemoryError) else 'stack'})"
    if isinstance(e, (ModuleNotFoundError, AttributeError)):
        return (f"pickled with a class this Python cannot import ({_first_line(e)}); "
                "use a model.py factory instead")
    if "PytorchStreamReader" in text or "zip archive" in text or "central directory" in text:
        return f"truncated or corrupt archive ({_first_line(e)})"
    return f"corrupt or unreadable ({_first_line(e)})"


def _torch_load(path: Path, shown: str, *, trust_pickle: bool) -> Any:
    """`torch.load` after the format check: the restricted unpickler (tensors, containers and
    numbers only) unless the user trusts the file; a file it refuses raises `_Pickled`."""
    _check_format(path, shown)
    try:
        with _quiet_unless_ok():
            return torch.load(path, weights_only=not trust_pickle, map_location="cpu")
    except UserError:
        raise
    except (Exception, SystemExit) as e:  # unpickling the user's bytes: every failure is theirs
        unsafe = _UNSAFE_GLOBAL.search(str(e)) if isinstance(e, pickle.UnpicklingError) else None
        if unsafe:
            raise _Pickled(unsafe.group(1).rstrip(".")) from None
        raise UserError(f"{shown}: {_describe_load_error(e)}") from None


def _from_checkpoint(path: Path, *, trust_pickle: bool) -> nn.Module:
    shown = f"model file {path}"
    try:
        obj = _torch_load(path, shown, trust_pickle=trust_pickle)
    except _Pickled as p:
        raise UserError(
            f"{shown}: refused: it pickles Python objects ({p.name}), and unpickling runs any code the file "
            "holds; if you trust it, pass --trust-pickle (load_model(..., trust_pickle=True)), or export it "
            "with torch.export.save to a .pt2, or save its state_dict and pass path/model.py:factory "
            "--weights FILE") from None
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise UserError(f"{shown}: holds a state_dict, not a module (it has no architecture); pass the "
                            "model.py factory that builds the model, with this file as its weights: "
                            "path/model.py:factory --weights FILE (load_model(..., weights=FILE))")
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


def _is_file(path: Path, what: str = "model file") -> bool:
    try:
        if path.is_file():
            return True
        if path.exists():
            raise UserError(f"{what} {path}: not a regular file")
        return False
    except OSError as e:  # e.g. a name longer than the file system allows
        raise UserError(f"{what} {path}: cannot be accessed ({_first_line(e)})") from None


# -- state_dict weights ----------------------------------------------------------------------------

def _more(keys: list[str]) -> str:
    return f"{keys[0]!r}" + (f" (and {len(keys) - 1} more)" if len(keys) > 1 else "")


def _load_weights(model: nn.Module, path: Path, owner: str) -> None:
    """Load a state_dict (restricted unpickler only) into `model`, strictly: a missing, unexpected
    or differently shaped key is one line naming the first such key."""
    shown = f"weights file {path}"
    if not _is_file(path, "weights file"):
        raise UserError(f"{shown}: not found")
    try:
        state = _torch_load(path, shown, trust_pickle=False)
    except _Pickled as p:
        raise UserError(f"{shown}: refused: it pickles Python objects ({p.name}), not just tensors; --weights takes "
                        "a state_dict saved with torch.save(model.state_dict(), path)") from None
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in state.items()):
        kind = "a mapping with non-tensor entries" if isinstance(state, Mapping) else type(state).__name__
        raise UserError(f"{shown}: holds {kind}, "
                        "expected a state_dict (name -> tensor) saved with torch.save(model.state_dict(), path)")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = ([f"missing key {_more(missing)}"] if missing else []) + (
            [f"unexpected key {_more(unexpected)}"] if unexpected else [])
        raise UserError(f"{shown} does not fit {owner}: {', '.join(parts)}")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise UserError(f"{shown} does not fit {owner}: key {k!r} has shape {list(state[k].shape)}, "
                            f"the model's is {list(v.shape)}")
    try:
        model.load_state_dict(state, strict=True)
    except Exception as e:  # a user module's own load hooks, dtype casts that fail, ...
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise UserError(f"{shown} does not fit {owner}: {lines[-1] if lines else type(e).__name__}") from None


# -- torch.export archives ---------------------------------------------------------------------------

#: What torch.export.save writes under the archive's root folder; anything else (AOTInductor
#: shared libraries, ExecuTorch programs, ...) is code or unknown, and is refused.
_PT2_FILES = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
_PT2_DIRS = ("models/", "data/weights/", "data/constants/", "data/sample_inputs/", "extra/")
#: Constants stored this way are read back with `pickle.loads` / the TorchScript unpickler.
_PT2_PICKLED = ("data/constants/custom_obj_", "data/constants/opaque_obj_")
_SYMBOL = re.compile(r"[a-z]+\d+")  # sympy symbols torch.export makes: s0, u1, ps2, zuf0
_QUOTED = re.compile(r"""'[A-Za-z_][A-Za-z0-9_]*'|'[0-9.e+-]+'""")
_GUARD_NAMES = frozenset({"L", "size", "stride", "storage_offset", "dim", "numel", "and", "or", "not", "True",
                          "False", "math", "floor", "ceil", "trunc", "sqrt", "IsNonOverlappingAndDenseIndicator",
                          "cast_symbool_to_symint_guardless"})
_ARITH_OPS = frozenset({"(", ")", ",", "+", "-", "*", "/", "//", "%", "**", "==", "!=", "<", "<=", ">", ">=",
                        "&", "|", "~", "^", "<<", ">>"})


@cache
def _sym_names() -> frozenset[str]:
    """Names a shape expression may use: sympy's expression classes, torch's sympy functions and
    sympy assumption keywords (``Symbol('s0', positive=True)``), none of which runs code."""
    import sympy
    from sympy.core.assumptions import _assume_defined
    from torch.utils._sympy import functions

    def exprs(mod: ModuleType) -> set[str]:
        return {n for n in dir(mod) if not n.startswith("_") and isinstance(getattr(mod, n), type)
                and issubclass(getattr(mod, n), sympy.Basic)}

    return frozenset(exprs(sympy) | exprs(functions) | set(_assume_defined) | {"True", "False", "oo", "zoo", "nan"})


@cache
def _safe_calls() -> frozenset[Any]:
    """Non-operator node targets an exported program may hold: symbolic-shape arithmetic."""
    calls: set[Any] = {getattr(operator, n) for n in (
        "getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "eq", "ne", "lt", "le",
        "gt", "ge", "and_", "or_", "xor", "invert", "not_", "abs")}
    calls |= {getattr(math, n) for n in ("trunc", "ceil", "floor", "sqrt")}
    calls |= {getattr(torch, n) for n in ("sym_not", "sym_int", "sym_float", "sym_ite", "sym_max", "sym_min",
                                          "sym_sqrt", "sym_sum") if hasattr(torch, n)}
    with contextlib.suppress(ImportError, AttributeError):  # torch's own list, where this version has one
        from torch._export.serde.serialize import _SYM_OPS

        calls |= set(_SYM_OPS)
    return frozenset(calls)


def _refuse_pt2(shown: str, why: str) -> UserError:
    return UserError(f"{shown}: refused: {why} (loading it would run code); pass --trust-pickle "
                     "(trust_pickle=True) only if you trust the file")


def _resolve(root: Any, dotted: list[str]) -> Any:
    obj = root
    for name in dotted:
        if not name.isidentifier() or name.startswith("__") or not hasattr(obj, name):
            return None
        obj = getattr(obj, name)
    return obj


def _check_target(target: str, shown: str) -> None:
    """A node may call a registered torch operator or symbolic-shape arithmetic, nothing else:
    torch.export.load turns any ``torch.*`` / ``math.*`` / ``_operator.*`` path into a call."""
    head, *rest = target.split(".")
    if target.startswith("torch.ops."):
        ok = isinstance(_resolve(torch, rest), (torch._ops.OpOverload, torch._ops.HigherOrderOperator))
    else:
        module = {"torch": torch, "math": math, "_operator": operator}.get(head)
        ok = module is not None and _resolve(module, rest) in _safe_calls()
    if not ok:
        raise _refuse_pt2(shown, f"a node calls {target[:80]!r}, not a torch operator")


def _check_code(text: Any, names: frozenset[str], ops: frozenset[str], shown: str, what: str) -> None:
    """Guard code is exec'd and shape expressions sympified (eval'd) on load: admit arithmetic
    over an allowlist of names only."""
    if not isinstance(text, str) or "\\" in text or "__" in text:
        raise _refuse_pt2(shown, f"{what} {str(text)[:60]!r} is not plain arithmetic")
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError) as e:
        raise _refuse_pt2(shown, f"{what} {text[:60]!r} does not parse ({_first_line(e)})") from None
    for tok in tokens:
        if tok.type in (tokenize.NUMBER, tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER):
            continue
        if (tok.type == tokenize.NAME and (tok.string in names or _SYMBOL.fullmatch(tok.string))) or (
                tok.type == tokenize.STRING and _QUOTED.fullmatch(tok.string)) or (
                tok.type == tokenize.OP and tok.string in ops):
            continue
        raise _refuse_pt2(shown, f"{what} {text[:60]!r} uses {tok.string[:30]!r}")


def _check_program(doc: Any, shown: str) -> None:
    """Walk one serialized program (models/*.json): node targets, guard code, shape expressions."""
    guard_ops = _ARITH_OPS | {".", "[", "]"}
    sym_ops = _ARITH_OPS | {"="}
    stack = [doc]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(value)
            continue
        if not isinstance(value, dict):
            continue
        target = value.get("target")
        if isinstance(target, str) and "inputs" in value:
            _check_target(target, shown)
        for key, item in value.items():
            if key == "guards_code":
                for code in item if isinstance(item, list) else [item]:
                    _check_code(code, _GUARD_NAMES, guard_ops, shown, "guard")
            elif key == "expr_str":
                _check_code(item, _sym_names(), sym_ops, shown, "shape expression")
            else:
                stack.append(item)


def _check_pt2(path: Path, shown: str, *, trust: bool) -> None:
    """Refuse what torch.export.save cannot have written, and (unless trusted) anything in the
    archive that loading it would execute: see the module docstring."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.namelist()
            roots = {m.split("/", 1)[0] for m in members}
            root = roots.pop() if len(roots) == 1 else ""
            fmt = f"{root}/archive_format"
            if not root or fmt not in members or zf.read(fmt).strip() != b"pt2":
                raise UserError(f"{shown}: a zip archive but not a torch.export archive (no archive_format 'pt2'); "
                                "write it with torch.export.save(torch.export.export(model, inputs), path)")
            bad = zf.testzip()
            if bad is not None:
                raise UserError(f"{shown}: corrupt archive ({bad} fails its CRC check)")
            if trust:
                return
            for member in members:
                rel = member[len(root) + 1:]
                if rel in _PT2_FILES or (rel.startswith(_PT2_DIRS) and not rel.startswith(_PT2_PICKLED)):
                    if rel.startswith("models/") and rel.endswith(".json"):
                        try:
                            doc = json.loads(zf.read(member))
                        except (ValueError, RecursionError) as e:
                            raise UserError(f"{shown}: corrupt program {rel} ({_first_line(e)})") from None
                        _check_program(doc, shown)
                    continue
                what = "pickled Python objects" if rel.startswith(_PT2_PICKLED) else "compiled code or an unknown part"
                raise _refuse_pt2(shown, f"it holds {what} ({rel[:80]})")
    except UserError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError) as e:
        head = b""
        with contextlib.suppress(OSError), path.open("rb") as f:
            head = f.read(4)
        if not head:
            raise UserError(f"{shown}: empty, expected an archive written by torch.export.save") from None
        if not head.startswith(ZIP_MAGIC):
            raise UserError(f"{shown}: not a torch.export archive (bad magic {head!r}; expected a zip archive "
                            f"starting {ZIP_MAGIC!r})") from None
        raise UserError(f"{shown}: truncated or corrupt zip archive ({_first_line(e)})") from None


class _CatchLogged(logging.Handler):
    """torch.export.load logs the real error, then raises a vague one: keep the real one."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])


@contextmanager
def _export_load_context(*, safe: bool, catch: _CatchLogged) -> Iterator[None]:
    """Silence torch's logs and prints while loading, catch the logged error, and (when `safe`)
    force every `torch.load` inside to the restricted unpickler (torch's own switch for it)."""
    env = {"TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": None} if safe else {}
    saved = {k: os.environ.get(k) for k in env}
    torch_log, export_log = logging.getLogger("torch"), logging.getLogger("torch.export")
    levels = (torch_log.level, export_log.level, export_log.propagate)
    sink = io.StringIO()
    try:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        torch_log.setLevel(logging.CRITICAL)
        export_log.setLevel(logging.WARNING)
        export_log.propagate = False
        export_log.addHandler(catch)
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        export_log.removeHandler(catch)
        torch_log.setLevel(levels[0])
        export_log.setLevel(levels[1])
        export_log.propagate = levels[2]
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _plain_module(program: torch.export.ExportedProgram) -> fx.GraphModule:
    """The program as a plain GraphModule: torch's unlifted module refuses eval() and calls a
    `_guards_fn` that checks input shapes and computes nothing."""
    unlifted = program.module()
    gm = fx.GraphModule(unlifted, unlifted.graph, class_name="ExportedModule")
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and str(node.target).startswith("_guards_fn") and not node.users:
            gm.graph.erase_node(node)
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm.eval()


def _placeholder_inputs(program: torch.export.ExportedProgram, batch: int, seed: int,
                        shown: str) -> tuple[torch.Tensor, ...]:
    """Random inputs shaped like the program's user inputs: a dynamic dim takes its lower bound
    (the first dim takes `batch`); floats are normal, integer ids are zeros (always in range)."""
    gen = torch.Generator().manual_seed(seed)
    wanted = set(program.graph_signature.user_inputs)
    out = []
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in wanted:
            continue
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise UserError(f"{shown}: input {node.name!r} is a {type(val).__name__}, not a tensor; "
                            "only tensor inputs can be generated")
        dims = []
        for i, d in enumerate(val.shape):
            if isinstance(d, int):
                if i == 0 and batch != 1 and d != batch:
                    raise UserError(f"{shown}: exported with a fixed batch of {d} (input {node.name!r}); --batch "
                                    f"{batch} needs a dynamic first dim (torch.export.Dim) or --input-shape")
                dims.append(d)
                continue
            vr = program.range_constraints.get(d.node.expr)
            lo = max(1, int(vr.lower)) if vr is not None and vr.lower.is_finite else 1
            n = max(lo, batch if i == 0 else lo)
            if vr is not None and vr.upper.is_finite:
                n = min(n, int(vr.upper))
            dims.append(n)
        dtype = val.dtype
        out.append(torch.randn(dims, generator=gen, dtype=dtype) if dtype.is_floating_point
                   else torch.zeros(dims, dtype=dtype))
    if not out:
        raise UserError(f"{shown}: the exported program takes no tensor inputs")
    return tuple(out)


def _export_inputs(program: torch.export.ExportedProgram, shape: tuple[int, ...] | None, batch: int,
                   seed: int, shown: str) -> tuple[torch.Tensor, ...]:
    """--input-shape if given, else the archive's own example inputs (batch 1), else inputs shaped
    like its placeholders."""
    if shape is not None:
        return _random_inputs(shape, seed)
    example = getattr(program, "example_inputs", None)
    if isinstance(example, tuple) and len(example) == 2:
        args, kwargs = example
        if kwargs:
            raise UserError(f"{shown}: the exported program takes keyword inputs ({', '.join(map(str, kwargs))}), "
                            "which a MODEL file cannot be given")
        if batch == 1 and args and all(isinstance(a, torch.Tensor) for a in args):
            return tuple(args)
    return _placeholder_inputs(program, batch, seed, shown)


def _from_export(path: Path, shape: tuple[int, ...] | None, batch: int, seed: int,
                 *, trust: bool) -> tuple[fx.GraphModule, tuple[torch.Tensor, ...]]:
    shown = f"model file {path}"
    _check_pt2(path, shown, trust=trust)
    caught = _CatchLogged()
    try:
        with _quiet_unless_ok(), _export_load_context(safe=not trust, catch=caught):
            program = torch.export.load(path)
    except (Exception, SystemExit) as e:  # the user's bytes: every failure of loading them is theirs
        why = caught.errors[0] if caught.errors else e
        raise UserError(f"{shown}: torch.export.load failed ({_first_line(why)})") from None
    if not isinstance(program, torch.export.ExportedProgram):
        raise UserError(f"{shown}: torch.export.load returned {type(program).__name__}, expected an ExportedProgram")
    try:
        with _quiet_unless_ok():
            model = _plain_module(program)
    except Exception as e:  # the archive's graph does not make a module: still the user's file
        raise UserError(f"{shown}: the exported program does not make a module ({_first_line(e)})") from None
    return model, _export_inputs(program, shape, batch, seed, shown)


# -- ONNX ------------------------------------------------------------------------------------------------

def _from_onnx(path: Path, shape: tuple[int, ...] | None, batch: int, seed: int) -> LoadedModel:
    """Delegate to the ONNX importer (imported here: it and its `onnx` dependency are optional)."""
    try:
        from dnninfer.zoo.onnx_import import import_onnx

        gm, inputs = import_onnx(path, input_shape=shape, batch=batch, seed=seed)
    except ModuleNotFoundError as e:
        missing = e.name or "a module"
        what = "the ONNX importer (dnninfer.zoo.onnx_import)" if missing.startswith("dnninfer") else f"{missing!r}"
        raise UserError(f"model file {path}: loading .onnx needs {what}, which is not installed here") from None
    return LoadedModel(path.stem, gm, tuple(inputs))


# -- the MODEL argument ------------------------------------------------------------------------------

SUFFIXES = (".py", ".pt2", ".onnx", ".pt", ".pth")


def load_model(spec: str, *, input_shape: str | Sequence[int] | None = None, batch: int = 1,
               seed: int = 0, weights: str | Path | None = None, trust_pickle: bool = False) -> LoadedModel:
    """Turn what the user typed into a model and example inputs.

    `spec` is a zoo name; ``path/model.py[:factory]`` (default factory ``model``; an
    ``example_inputs()`` function there gives inputs); ``path/model.pt2`` written by
    torch.export.save; ``path/model.onnx``; or ``path/model.pt`` / ``.pth`` holding a whole pickled
    module, loaded only with `trust_pickle` (unpickling runs any code the file holds).
    `weights` is a state_dict file for a zoo model or a factory, read with the restricted unpickler
    and loaded strictly. `input_shape` replaces a file model's example inputs with one random tensor.
    """
    if spec in names():
        model = build_model(spec, seed=seed)
        if weights is not None:
            _load_weights(model, Path(weights), f"zoo model {spec}")
        return LoadedModel(spec, model, example_inputs(spec, batch=batch, seed=seed))
    path_text, _, factory = spec.partition(":") if spec.count(":") == 1 else (spec, "", "")
    path = Path(path_text)
    if path.suffix not in SUFFIXES:
        raise UserError(f"model: expected a zoo name ({', '.join(names())}) or a .py/.pt2/.onnx/.pt file, "
                        f"got {spec!r}")
    if not _is_file(path):
        raise UserError(f"model file {path}: not found")
    if factory and path.suffix != ".py":
        raise UserError(f"model file {path}: ':{factory}' names a factory, which only a .py file has")
    if weights is not None and path.suffix != ".py":
        raise UserError(f"--weights: goes with a zoo name or a model.py factory, which build the model it fits; "
                        f"{path.name} brings its own weights")
    shape = parse_shape(input_shape) if input_shape is not None else None
    if path.suffix == ".onnx":
        return _from_onnx(path, shape, batch, seed)
    if path.suffix == ".pt2":
        gm, found = _from_export(path, shape, batch, seed, trust=trust_pickle)
        return LoadedModel(path.stem, gm, found)
    inputs: tuple[torch.Tensor, ...] | None = None
    if path.suffix == ".py":
        model, inputs = _from_python(path, factory or "model")
        if weights is not None:
            _load_weights(model, Path(weights), f"model file {path}: {factory or 'model'}()")
    else:
        model = _from_checkpoint(path, trust_pickle=trust_pickle)
    if shape is not None:
        inputs = _random_inputs(shape, seed)
    if inputs is None:
        raise UserError(f"model file {path}: needs --input-shape (or an example_inputs() function in the file)")
    try:
        model.eval()
    except Exception as e:  # a user module overriding eval/train
        raise UserError(f"model file {path}: model.eval() raised {_first_line(e)}") from None
    return LoadedModel(path.stem, model, inputs)


# -- --flops-rules ---------------------------------------------------------------------------------------

RULES_SUFFIXES = (".py", ".json", ".yaml", ".yml")


def _as_rule(key: Any, value: Any, shown: str, *, python: bool) -> Rule:
    """One rules-file entry as a `Rule`: a number is FLOPs per output element; a mapping says
    ``per_out`` or ``per_in`` (and optionally ``kind``); a .py file may also give a Rule or a function."""
    where = f"{shown}: rule {key!r}"
    if python and isinstance(value, Rule):
        if not isinstance(value.kind, str) or not callable(value.flops):
            raise UserError(f"{where}: expected Rule(kind: str, flops: function)")
        return value
    if python and callable(value):
        return Rule("custom", value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if not 0 <= value < math.inf:
            raise UserError(f"{where}: {value!r} FLOPs per output element, expected a finite number >= 0")
        return per_out(value)
    if isinstance(value, Mapping) and set(value) <= {"per_out", "per_in", "kind"} and \
            len(set(value) & {"per_out", "per_in"}) == 1:
        base = "per_out" if "per_out" in value else "per_in"
        k, kind = value[base], value.get("kind", "custom")
        if isinstance(k, bool) or not isinstance(k, numbers.Real) or not 0 <= k < math.inf:
            raise UserError(f"{where}: {base}: {k!r}, expected a finite number >= 0")
        if not isinstance(kind, str) or not kind:
            raise UserError(f"{where}: kind: {kind!r}, expected a name such as 'act' or 'custom'")
        return (per_out if base == "per_out" else per_in)(k, kind)
    expected = "a number (FLOPs per output element) or {per_out: k} / {per_in: k} with an optional kind"
    if python:
        expected += ", a Rule(kind, fn) or a function of an OpCall"
    raise UserError(f"{where}: got {type(value).__name__} {str(value)[:40]!r}, expected {expected}")


def load_flops_rules(path: str | Path) -> dict[Any, Rule]:
    """Read ``--flops-rules FILE``: rules for ops the FLOPs table lacks (or overrides of it), keyed
    like capture's ``flops_rules=`` (op name or module class name as `dnninfer inspect` shows it).

    A ``.json`` / ``.yaml`` file maps names to simple multipliers (``{"PixelShuffle": 0,
    "sign": {"per_in": 1, "kind": "act"}}``), which run nothing; a ``.py`` file is the user's own
    code and defines ``RULES = {key: Rule | fn | k}`` (keys may also be module types or functions).
    """
    path = Path(path)
    shown = f"flops rules file {path}"
    if path.suffix not in RULES_SUFFIXES:
        raise UserError(f"--flops-rules: expected a .py, .json or .yaml file, got {str(path)!r}")
    if not _is_file(path, "flops rules file"):
        raise UserError(f"{shown}: not found")
    python = path.suffix == ".py"
    if python:
        module = _import_file(path, shown, "dnninfer_rules_")
        raw = getattr(module, "RULES", None)
        if not isinstance(raw, Mapping):
            raise UserError(f"{shown}: expected RULES = {{op name: rule}} in the file, got "
                            f"{'nothing of that name' if raw is None else type(raw).__name__}")
    else:
        try:
            text = path.read_text(encoding="utf-8")
            if path.suffix == ".json":
                raw = json.loads(text)
            else:
                import yaml

                raw = yaml.safe_load(text)
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
            raise UserError(f"{shown}: cannot be read ({_first_line(e)})") from None
        except Exception as e:  # yaml.YAMLError and its kin: the user's bytes
            raise UserError(f"{shown}: not valid YAML ({_first_line(e)})") from None
        if not isinstance(raw, Mapping):
            raise UserError(f"{shown}: expected a mapping of op name to rule, got {type(raw).__name__}")
    rules: dict[Any, Rule] = {}
    for key, value in raw.items():
        if isinstance(key, str) and key.strip():
            rules[key.strip()] = _as_rule(key, value, shown, python=python)
        elif python and (isinstance(key, type) or callable(key)):
            rules[key] = _as_rule(key, value, shown, python=python)
        else:
            raise UserError(f"{shown}: key {key!r}: expected an op name such as 'pixel_shuffle' or a module "
                            "class name such as 'PixelShuffle'")
    return rules
