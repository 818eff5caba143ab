"""Surface ``model``: the MODEL argument (`dnninfer.zoo.load_model`) given as a file.

Pickled modules (.pt/.pth, zip and legacy formats) that are valid, truncated, byte-flipped, random,
empty, or hold the wrong object (a state_dict, a dict, an int, a class, a tensor, a pickle naming a
module that does not exist); Python files (``model.py[:factory]``) with syntax errors, invalid
bytes, code that raises at import, factories that raise / take arguments / return non-modules,
broken ``example_inputs()``, forwards that raise, untraceable control flow; paths that do not
exist, are folders, or have the wrong suffix. Each runs ``dnninfer inspect MODEL --json``.

Only benign pickles are written (torch.save of our own objects, and byte edits of those).
"""

from __future__ import annotations

import functools
import io
import pickle
import random
import sys
import types
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dnninfer.fuzz.classify import Case
from dnninfer.fuzz.drivers import run_cli
from dnninfer.fuzz.mutate import mutate_bytes, preview_bytes, rng_for

__all__ = ["PY_VARIANTS", "cases"]

SURFACE = "model"
SHAPE = "1,1,8,8"

VALID_PY = '''import torch
from torch import nn


def model():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def example_inputs():
    return (torch.randn(1, 1, 8, 8),)
'''

_NET = '''import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
{forward}
'''

#: (name, label, source, factory suffix). ``{valid}`` is the valid file's body.
PY_VARIANTS: tuple[tuple[str, str, str, str], ...] = (
    ("valid", "valid", VALID_PY, ""),
    ("valid_named_factory", "valid", VALID_PY.replace("def model()", "def make()"), ":make"),
    ("empty_factory_name", "maybe", VALID_PY, ":"),
    ("two_colons", "bad", VALID_PY, ":model:extra"),
    ("syntax_error", "bad", VALID_PY + "\ndef broken(:\n    pass\n", ""),
    ("indentation_error", "bad", VALID_PY + "\n  x = 1\n", ""),
    ("null_bytes", "bad", VALID_PY + "\n# \x00\x00\n", ""),
    ("raise_value_error", "bad", "raise ValueError('boom at import')\n" + VALID_PY, ""),
    ("import_missing_module", "bad", "import dnninfer_fuzz_no_such_module\n" + VALID_PY, ""),
    ("zero_division", "bad", "1 / 0\n" + VALID_PY, ""),
    ("assert_false", "bad", "assert False, 'nope'\n" + VALID_PY, ""),
    ("recursion_at_import", "bad", "def f():\n    return f()\nf()\n" + VALID_PY, ""),
    ("system_exit_at_import", "bad", "raise SystemExit(3)\n" + VALID_PY, ""),
    ("system_exit_0_at_import", "bad", "import sys\nsys.exit(0)\n" + VALID_PY, ""),
    ("memory_error_at_import", "bad", "raise MemoryError('fake')\n" + VALID_PY, ""),
    ("factory_raises", "bad", VALID_PY.replace("    return nn.Sequential", "    raise RuntimeError('factory')\n"
                                               "    return nn.Sequential"), ""),
    ("factory_raises_type_error", "bad", VALID_PY.replace("def model():", "def model(required):"), ""),
    ("factory_system_exit", "bad", VALID_PY.replace("    return nn.Sequential", "    raise SystemExit(1)\n"
                                                    "    return nn.Sequential"), ""),
    ("factory_returns_none", "bad", VALID_PY.replace("    return nn.Sequential", "    return None\n    nn.Sequential"),
     ""),
    ("factory_returns_int", "bad", VALID_PY.replace("    return nn.Sequential", "    return 3\n    nn.Sequential"), ""),
    ("factory_returns_class", "bad", VALID_PY.replace("    return nn.Sequential(", "    return nn.Sequential\n    ("),
     ""),
    ("factory_returns_list", "bad", VALID_PY.replace("    return nn.Sequential(", "    return [nn.Linear(64, 10)]\n"
                                                     "    ("), ""),
    ("factory_returns_function", "bad", VALID_PY.replace("    return nn.Sequential(", "    return torch.relu\n    ("),
     ""),
    ("factory_missing", "bad", VALID_PY.replace("def model()", "def other()"), ""),
    ("factory_not_callable", "bad", VALID_PY.replace("def model():", "model = 3\n\n\ndef unused():"), ""),
    ("named_factory_missing", "bad", VALID_PY, ":nope"),
    ("no_example_inputs", "bad", VALID_PY.replace("def example_inputs", "def not_inputs"), ""),
    ("example_inputs_raises", "bad", VALID_PY.replace("    return (torch.randn", "    raise KeyError('x')\n"
                                                      "    return (torch.randn"), ""),
    ("example_inputs_int", "bad", VALID_PY.replace("    return (torch.randn(1, 1, 8, 8),)", "    return 3"), ""),
    ("example_inputs_not_tensors", "bad", VALID_PY.replace("    return (torch.randn(1, 1, 8, 8),)",
                                                           "    return ['a', None]"), ""),
    ("example_inputs_empty", "bad", VALID_PY.replace("    return (torch.randn(1, 1, 8, 8),)", "    return ()"), ""),
    ("example_inputs_wrong_shape", "bad", VALID_PY.replace("torch.randn(1, 1, 8, 8)", "torch.randn(1, 3, 5)"), ""),
    ("example_inputs_not_callable", "bad",
     VALID_PY.replace("def example_inputs():\n    return (torch.randn(1, 1, 8, 8),)", "example_inputs = 5"), ""),
    ("forward_raises", "bad", _NET.replace("{forward}", "        raise RuntimeError('forward')") +
     "\n\ndef model():\n    return Net()\n\n\ndef example_inputs():\n    return (torch.randn(1, 64),)\n", ""),
    ("data_dependent_control_flow", "maybe", _NET.replace(
        "{forward}", "        if x.sum() > 0:\n            return self.fc(x)\n        return -self.fc(x)") +
     "\n\ndef model():\n    return Net()\n\n\ndef example_inputs():\n    return (torch.randn(1, 64),)\n", ""),
    ("dict_output", "maybe", _NET.replace("{forward}", "        return {'y': self.fc(x), 'z': x}") +
     "\n\ndef model():\n    return Net()\n\n\ndef example_inputs():\n    return (torch.randn(1, 64),)\n", ""),
    ("op_without_flops_rule", "maybe", _NET.replace("{forward}", "        return torch.fft.rfft(self.fc(x)).abs()") +
     "\n\ndef model():\n    return Net()\n\n\ndef example_inputs():\n    return (torch.randn(1, 64),)\n", ""),
    ("prints_to_stderr", "valid", "import sys\nprint('hello from the model file', file=sys.stderr)\n" + VALID_PY, ""),
)


@functools.cache
def _base_module() -> Any:
    from dnninfer import zoo

    return zoo.build_model("digits_mlp", seed=0).eval()


@functools.cache
def _base_files() -> tuple[bytes, bytes]:
    """(zip checkpoint, legacy checkpoint) of the base module, saved once."""
    model = _base_module()
    return saved(model), saved(model, legacy=True)


def saved(obj: Any, legacy: bool = False) -> bytes:
    """`obj` as torch.save writes it (zip format, or the legacy pickle format)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


@functools.cache
def _gone_class_pickle() -> bytes:
    """A torch file whose pickle names a module that no longer exists."""
    mod = types.ModuleType("dnninfer_fuzz_gone_module")
    exec("import torch\nclass Net(torch.nn.Module):\n    def forward(self, x):\n        return x\n", mod.__dict__)
    sys.modules[mod.__name__] = mod
    try:
        return saved(mod.Net())
    finally:
        del sys.modules[mod.__name__]


def zip_of(members: dict[str, bytes]) -> bytes:
    """A zip archive of `members` (name -> bytes): the container of a torch checkpoint, or not."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _pt_cases(rng: random.Random) -> list[tuple[str, str, bytes, str, str]]:
    """(kind, label, bytes, suffix, description) for the pickled-module file kinds."""
    import torch

    model = _base_module()
    zip_pt, legacy_pt = _base_files()
    wrong: list[tuple[str, Any]] = [
        ("state_dict", model.state_dict()), ("dict", {"model": "digits_mlp", "epoch": 3}), ("int", 3),
        ("list_of_module", [model]), ("none", None), ("tensor", torch.zeros(2, 2)), ("string", "a model"),
        ("module_class", torch.nn.Linear), ("function", torch.relu),
    ]
    name, obj = rng.choice(wrong)
    zcut = rng.randrange(len(zip_pt))
    lcut = rng.randrange(len(legacy_pt))
    zflip, znote = mutate_bytes(rng, zip_pt, rng.randrange(1, 4))
    lflip, lnote = mutate_bytes(rng, legacy_pt, rng.randrange(1, 3))
    rand = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2048)))
    return [
        ("valid_pt", "valid", zip_pt, ".pt", "torch.save(digits_mlp)"),
        ("valid_pth", "valid", zip_pt, ".pth", "torch.save(digits_mlp) as .pth"),
        ("legacy_pt", "valid", legacy_pt, ".pt", "torch.save(digits_mlp, legacy format)"),
        (f"wrong_object:{name}", "bad", saved(obj), ".pt", f"torch.save({name}) (not an nn.Module)"),
        ("truncated_zip", "bad", zip_pt[:zcut], ".pt", f"zip checkpoint truncated to {zcut} of {len(zip_pt)} bytes"),
        ("truncated_legacy", "bad", legacy_pt[:lcut], ".pt",
         f"legacy checkpoint truncated to {lcut} of {len(legacy_pt)} bytes"),
        ("flipped_zip", "maybe", zflip, ".pt", f"zip checkpoint: {znote}"),
        ("flipped_legacy", "maybe", lflip, ".pt", f"legacy checkpoint: {lnote}"),
        ("random_bytes", "bad", rand, ".pt", f"{len(rand)} random bytes"),
        ("empty", "bad", b"", rng.choice([".pt", ".pth"]), "empty file"),
        ("text", "bad", b"this is not a checkpoint\n", ".pt", "a text file"),
        ("plain_pickle", "maybe", pickle.dumps(model), ".pt", "pickle.dumps(module) (not torch.save)"),
        ("missing_class", "bad", _gone_class_pickle(), ".pt", "pickle of a class whose module does not exist"),
        ("foreign_zip", "bad", zip_of({"hello.txt": b"hi", "data/0": b"\x00" * 8}), ".pt", "a zip without data.pkl"),
        ("gzip", "bad", b"\x1f\x8b\x08\x00" + rand[:64], ".pt", "gzip-looking bytes"),
        ("pickled_int_plain", "bad", pickle.dumps(7), ".pt", "pickle.dumps(7)"),
    ]


def cases(n: int, seed: int, work: Path) -> Iterator[Case]:
    """``n`` model-file cases: the fixed variants first, then random picks with fresh mutations."""
    rng = rng_for(seed, SURFACE)
    folder = work / "model"
    folder.mkdir(parents=True, exist_ok=True)
    made = 0

    def emit(kind: str, label: str, data: bytes, suffix: str, what: str, factory: str = "",
             shape: str | None = SHAPE, path: Path | None = None, trust: bool = True) -> Case:
        nonlocal made
        made += 1
        target = path or folder / f"m{made}{suffix}"
        spec = f"{target}{factory}"
        # pickles are refused unless trusted; trusting them is what exercises the guarded loader
        flags = (["--input-shape", shape] if shape else []) + (["--trust-pickle"] if trust and suffix in (".pt", ".pth")
                                                             else [])
        argv = ["inspect", spec, "--json", *flags]
        shown = f"dnninfer inspect <tmp>/{target.name}{factory} {' '.join(flags)}".rstrip()

        def run(target: Path = target, data: bytes = data, argv: list[str] = argv) -> Any:
            if path is None:
                target.write_bytes(data)
            return run_cli(argv, work)

        return Case(SURFACE, kind, label, what, run, preview=f"{shown}; {preview_bytes(data)}")

    fixed: list[Callable[[], Case]] = []
    for name, label, src, factory in PY_VARIANTS:
        fixed.append(lambda name=name, label=label, src=src, factory=factory: emit(
            f"py:{name}", label, src.encode("utf-8"), ".py", f"model.py variant {name}", factory, None))
    fixed += [
        lambda: emit("py:invalid_utf8", "bad", VALID_PY.encode() + b"\nNAME = \"\xff\xfe\"\n", ".py",
                     "invalid UTF-8 in a string literal", "", None),
        lambda: emit("path:missing", "bad", b"", ".pt", "a path that does not exist",
                     path=folder / "does_not_exist.pt"),
        lambda: emit("path:directory", "bad", b"", ".pt", "a folder named x.pt", path=_dir(folder / "adir.pt")),
        lambda: emit("path:wrong_suffix", "bad", b"", ".onnx", "a .onnx file", path=_file(folder / "m.onnx")),
        lambda: emit("path:no_suffix", "bad", b"", "", "a file without suffix", path=_file(folder / "model")),
        lambda: emit("shape:mismatch", "bad", _base_files()[0], ".pt", "--input-shape 1,3,2 for digits_mlp",
                     shape="1,3,2"),
        lambda: emit("shape:x_separated", "valid", _base_files()[0], ".pt", "--input-shape 1x1x8x8",
                     shape="1x1x8x8"),
        lambda: emit("shape:none", "bad", _base_files()[0], ".pt", ".pt without --input-shape", shape=None),
        lambda: emit("pickle:untrusted", "bad", _base_files()[0], ".pt", "a valid .pt without --trust-pickle",
                     trust=False),
    ]
    for make in fixed:
        if made >= n:
            return
        yield make()
    py_valid = VALID_PY.encode()
    while made < n:
        r = rng.random()
        if r < 0.55:
            kind, label, data, suffix, what = rng.choice(_pt_cases(rng))
            yield emit(kind, label, data, suffix, what)
        elif r < 0.8:
            data, note = mutate_bytes(rng, py_valid, rng.randrange(1, 4))
            yield emit("py:byte_edit", "maybe", data, ".py", f"model.py: {note}", "", None)
        elif r < 0.9:
            cut = rng.randrange(len(py_valid))
            yield emit("py:truncated", "maybe", py_valid[:cut], ".py", f"model.py truncated to {cut} bytes", "", None)
        else:
            name, label, src, factory = rng.choice(PY_VARIANTS)
            yield emit(f"py:{name}", label, src.encode("utf-8"), ".py", f"model.py variant {name}", factory, None)


def _dir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _file(p: Path) -> Path:
    p.write_bytes(_base_files()[0])
    return p
