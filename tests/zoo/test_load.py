"""`load_model` on user files: every failure of the user's code or bytes is one UserError line
naming the file, the function and the first line of the exception; valid files still load."""

from __future__ import annotations

import io
import random
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dnninfer.errors import UserError
from dnninfer.fuzz.models import saved, zip_of
from dnninfer.zoo import load_model
from dnninfer.zoo.load import LEGACY_MAGIC, parse_shape

GOOD_PY = """\
import torch
from torch import nn

def model():
    return nn.Sequential(nn.Linear(3, 2), nn.ReLU())

def example_inputs():
    return (torch.randn(1, 3),)
"""


def _py(tmp_path: Path, body: str, name: str = "m.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def _one_line_error(spec: str, **kw) -> str:
    with pytest.raises(UserError) as info:
        load_model(spec, **kw)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


# -- model.py ----------------------------------------------------------------------------------------

def test_good_model_file_loads_negative_control(tmp_path):
    loaded = load_model(str(_py(tmp_path, GOOD_PY)))
    assert isinstance(loaded.model, nn.Sequential) and loaded.inputs[0].shape == (1, 3)
    assert not loaded.model.training


PY_CASES = {
    # name: (file body, spec suffix, needles)
    "factory_raises": ("def model():\n    raise RuntimeError('boom')\n", "", ["model()", "RuntimeError: boom"]),
    "factory_exits": ("import sys\ndef model():\n    sys.exit(3)\n", "", ["model()", "SystemExit(3)"]),
    "factory_needs_args": ("def build(n):\n    return n\n", ":build", ["build()", "TypeError"]),
    "factory_not_module": ("def model():\n    return 5\n", "", ["model() returned int", "nn.Module"]),
    "no_factory": ("x = 1\n", ":make", ["'make'", "nothing of that name"]),
    "syntax_error": ("def model(:\n", "", ["importing it", "SyntaxError"]),
    "import_error": ("import no_such_module_xyz\n", "", ["importing it", "ModuleNotFoundError", "no_such_module_xyz"]),
    "raises_at_import": ("raise ValueError('first\\nsecond')\n", "", ["importing it", "ValueError: first"]),
    "exits_at_import": ("raise SystemExit('bye')\n", "", ["importing it", "SystemExit('bye')"]),
    "inputs_raise": ("from torch import nn\ndef model():\n    return nn.ReLU()\n"
                     "def example_inputs():\n    raise KeyError('x')\n", "", ["example_inputs()", "KeyError"]),
    "inputs_not_tensors": ("from torch import nn\ndef model():\n    return nn.ReLU()\n"
                           "def example_inputs():\n    return (1, 2)\n", "", ["example_inputs()", "int", "tensors"]),
    "inputs_none": ("from torch import nn\ndef model():\n    return nn.ReLU()\n"
                    "def example_inputs():\n    return None\n", "", ["example_inputs() returned NoneType"]),
    "inputs_empty": ("from torch import nn\ndef model():\n    return nn.ReLU()\n"
                     "def example_inputs():\n    return ()\n", "", ["example_inputs()", "empty"]),
}


@pytest.mark.parametrize("case", sorted(PY_CASES))
def test_bad_model_file_is_one_line_naming_file_and_function(tmp_path, case):
    body, suffix, needles = PY_CASES[case]
    path = _py(tmp_path, body, f"{case}.py")
    msg = _one_line_error(str(path) + suffix, input_shape="1,3")
    assert msg.startswith(f"model file {path}: ")
    msg = msg.removeprefix(f"model file {path}: ")  # needles must not match the file's own name
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"


def test_example_inputs_may_return_one_tensor(tmp_path):
    """A bare tensor is one input, not a tuple of its rows (tuple(t) would unbind dim 0)."""
    path = _py(tmp_path, "import torch\nfrom torch import nn\ndef model():\n    return nn.ReLU()\n"
                         "def example_inputs():\n    return torch.ones(4, 3)\n")
    loaded = load_model(str(path))
    assert len(loaded.inputs) == 1 and loaded.inputs[0].shape == (4, 3)


def test_failed_import_leaves_no_half_module_behind(tmp_path):
    import sys

    _one_line_error(str(_py(tmp_path, "raise RuntimeError('x')\n", "halfmod.py")), input_shape="1")
    assert "dnninfer_user_halfmod" not in sys.modules


# -- pickled .pt files --------------------------------------------------------------------------------

@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_saved_module_loads_only_when_trusted(tmp_path, legacy):
    path = tmp_path / "ok.pt"
    path.write_bytes(saved(nn.Linear(3, 2), legacy))
    msg = _one_line_error(str(path), input_shape="2,3")
    assert "refused" in msg and "torch.nn.modules.linear.Linear" in msg and "--trust-pickle" in msg
    loaded = load_model(str(path), input_shape="2,3", trust_pickle=True)  # negative control
    assert isinstance(loaded.model, nn.Linear) and loaded.inputs[0].shape == (2, 3)


def _pt_cases() -> dict[str, tuple[bytes, list[str]]]:
    zipped, legacy = saved(nn.Linear(3, 2)), saved(nn.Linear(3, 2), legacy=True)
    return {
        # torch.load on these said "MemoryError: " (empty) before the format check
        "binunicode8": (b"\x80\x04\x8d" + (2**62).to_bytes(8, "little") + b"abc", ["not a PyTorch checkpoint"]),
        "frame": (b"\x80\x04\x95" + (2**60).to_bytes(8, "little"), ["not a PyTorch checkpoint"]),
        "legacy_then_huge": (b"\x80\x02" + LEGACY_MAGIC + b".\x80\x04\x8d" + (2**62).to_bytes(8, "little"),
                             ["corrupt"]),
        "random": (random.Random(1).randbytes(4000), ["not a PyTorch checkpoint", "bad magic"]),
        "text": (b"this is not a torch file", ["bad magic b'this'"]),
        "empty": (b"", ["empty"]),
        "plain_pickle": (b"\x80\x04K\x03.", ["plain pickle"]),
        "truncated_zip": (zipped[: len(zipped) // 2], ["truncated"]),
        "truncated_legacy": (legacy[: len(legacy) // 2], ["truncated"]),  # needs trust: see TRUSTED_ONLY
        "zip_without_pickle": (zip_of({"a.txt": b"hi"}), ["without data.pkl"]),
        "state_dict": (saved(nn.Linear(3, 2).state_dict()), ["holds a state_dict", "model.py factory", "--weights"]),
        "checkpoint_dict": (saved({"epoch": 1, "model": {}}), ["holds a dict", "'epoch'", "nn.Module"]),
        "int": (saved(3), ["holds an int", "expected nn.Module"]),
        "tensor": (saved(torch.zeros(2)), ["holds a Tensor"]),
    }


PT_CASES = _pt_cases()
#: Bad in a way only the full unpickler sees: without trust the restricted one refuses the module first.
TRUSTED_ONLY = {"truncated_legacy"}


@pytest.mark.parametrize("trust", [False, True], ids=["default", "trusted"])
@pytest.mark.parametrize("case", sorted(PT_CASES))
def test_bad_checkpoint_is_one_clear_line(tmp_path, case, trust):
    data, needles = PT_CASES[case]
    path = tmp_path / f"{case}.pt"
    path.write_bytes(data)
    msg = _one_line_error(str(path), input_shape="1,3", trust_pickle=trust)
    if case in TRUSTED_ONLY and not trust:
        needles = ["refused", "--trust-pickle"]
    assert msg.startswith(f"model file {path}: ")
    msg = msg.removeprefix(f"model file {path}: ")  # needles must not match the file's own name
    assert not msg.rstrip().endswith(":"), "an empty reason (torch.load's bare 'MemoryError: ')"
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"


def test_flipped_pickle_byte_in_zip_is_caught_by_crc(tmp_path):
    import struct
    import zipfile

    data = bytearray(saved(nn.Linear(3, 2)))
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo("archive/data.pkl")
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    payload = info.header_offset + 30 + name_len + extra_len
    data[payload + info.file_size // 2] ^= 0xFF  # one flipped byte inside the pickle itself
    path = tmp_path / "flip.pt"
    path.write_bytes(bytes(data))
    assert "truncated or corrupt zip archive" in _one_line_error(str(path), input_shape="1,3")
    assert "truncated or corrupt zip archive" in _one_line_error(str(path), input_shape="1,3", trust_pickle=True)


def test_folder_named_pt_and_factory_on_pt(tmp_path):
    (tmp_path / "dir.pt").mkdir()
    assert "not a regular file" in _one_line_error(str(tmp_path / "dir.pt"), input_shape="1")
    (tmp_path / "ok.pt").write_bytes(saved(nn.ReLU()))
    assert "only a .py file" in _one_line_error(str(tmp_path / "ok.pt") + ":make", input_shape="1")
    (tmp_path / "ok.pt2").write_bytes(b"")
    assert "only a .py file" in _one_line_error(str(tmp_path / "ok.pt2") + ":make", input_shape="1")


def test_name_too_long_is_a_user_error(tmp_path):
    msg = _one_line_error(str(tmp_path / ("a" * 300 + ".pt")), input_shape="1")
    assert "cannot be accessed" in msg


@settings(max_examples=30, deadline=None)
@given(head=st.sampled_from([b"", b"\x80", b"\x80\x02", b"\x80\x02" + LEGACY_MAGIC + b".", b"PK\x03\x04"]),
       tail=st.binary(max_size=300), trust=st.booleans(), suffix=st.sampled_from([".pt", ".pt2"]))
def test_any_garbage_is_one_line_user_error(tmp_path_factory, head, tail, trust, suffix):
    path = tmp_path_factory.mktemp("g") / f"g{suffix}"
    path.write_bytes(head + tail)
    try:
        load_model(str(path), input_shape="1,3", trust_pickle=trust)
    except UserError as e:
        assert "\n" not in str(e) and str(e).startswith(f"model file {path}: ")
    # (a random tail that happens to unpickle to a module would be accepted: that is correct)


# -- shapes ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["1,x,3", "", "1,,3", "0", "1,-3", "3.5", "100000,100000,100000"])
def test_bad_shapes_are_user_errors(text):
    with pytest.raises(UserError, match="--input-shape"):
        parse_shape(text)


def test_good_shapes_negative_control():
    assert parse_shape("1,3,8,8") == parse_shape("1x3x8x8") == (1, 3, 8, 8)


def test_shape_may_be_given_as_ints(tmp_path):
    """The CLI parses --input-shape at parse time, so load_model also takes the tuple."""
    assert parse_shape((1, 3, 8, 8)) == (1, 3, 8, 8)
    path = tmp_path / "ok.pt"
    path.write_bytes(saved(nn.Linear(3, 2)))
    assert load_model(str(path), input_shape=(2, 3), trust_pickle=True).inputs[0].shape == (2, 3)
