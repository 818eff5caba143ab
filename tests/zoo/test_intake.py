"""Safe model intake: a pickled module is refused unless trusted (unpickling runs code), a state_dict
loads into a factory's model, a torch.export .pt2 round-trips (and an archive that would run code
when loaded is refused), .onnx dispatches to the importer. Each check has a negative control."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest
import torch
from test_load import _one_line_error  # tests/zoo/test_load.py
from torch import nn

from dnninfer.errors import UserError
from dnninfer.fuzz.models import zip_of
from dnninfer.zoo import load_model
from test_cli_errors import assert_user_error, run_cli

FACTORY_PY = """\
from torch import nn

def make():
    return nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
"""


def _trained(seed: int = 1) -> nn.Module:
    """The factory's architecture, trained a few steps so its weights are nobody's default init."""
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x, y = torch.randn(16, 3), torch.randn(16, 2)
    for _ in range(5):
        opt.zero_grad()
        nn.functional.mse_loss(m(x), y).backward()
        opt.step()
    return m.eval()


class _Mkdir:
    """Unpickling this creates a folder: what any pickled file may do to whoever loads it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (str(self.path),))


# -- pickled whole modules ------------------------------------------------------------------------------

def test_pickled_module_is_refused_by_the_cli_in_one_line(capsys, tmp_path):
    path = tmp_path / "m.pt"
    torch.save(nn.Linear(3, 2), path)
    code, out, err = run_cli(capsys, "inspect", str(path), "--input-shape", "1,3")
    assert_user_error(code, err, "m.pt", "refused", "runs any code", "--trust-pickle", "torch.export.save", ".pt2")
    assert out == ""


def test_pickled_module_loads_with_trust_pickle_negative_control(capsys, tmp_path):
    path = tmp_path / "m.pt"
    torch.save(nn.Linear(3, 2), path)
    code, out, err = run_cli(capsys, "inspect", str(path), "--input-shape", "1,3", "--trust-pickle", "--json")
    assert code == 0, err
    assert json.loads(out)["summary"]["params"] == 8


def test_refused_pickle_exits_2_from_a_real_process(tmp_path):
    path = tmp_path / "m.pt"
    torch.save(nn.Linear(3, 2), path)
    proc = subprocess.run([sys.executable, "-m", "dnninfer.cli", "inspect", str(path), "--input-shape", "1,3"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("dnninfer: error: ") and "refused" in proc.stderr


def test_refusal_really_keeps_the_files_code_from_running(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save(_Mkdir(marker), path)
    msg = _one_line_error(str(path), input_shape="1,3")
    assert "refused" in msg and "mkdir" in msg
    assert not marker.exists()
    # negative control: the same file, trusted, does run its code (and then is not a module)
    assert "expected nn.Module" in _one_line_error(str(path), input_shape="1,3", trust_pickle=True)
    assert marker.exists()


# -- state_dict + factory ------------------------------------------------------------------------------------

def _factory_and_weights(tmp_path: Path, state: dict | None = None) -> tuple[str, Path, nn.Module]:
    (tmp_path / "model.py").write_text(FACTORY_PY)
    trained = _trained()
    weights = tmp_path / "w.pt"
    torch.save(trained.state_dict() if state is None else state, weights)
    return f"{tmp_path / 'model.py'}:make", weights, trained


def test_state_dict_loads_into_the_factory_model_and_equals_the_trained_one(tmp_path):
    spec, weights, trained = _factory_and_weights(tmp_path)
    x = torch.randn(4, 3)
    loaded = load_model(spec, input_shape="4,3", weights=weights)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), trained(x))
        # negative control: without the weights the factory's fresh init gives another output
        assert not torch.allclose(load_model(spec, input_shape="4,3").model(x), trained(x))
    assert not loaded.model.training


def test_state_dict_via_cli_weights(capsys, tmp_path):
    spec, weights, _ = _factory_and_weights(tmp_path)
    code, out, err = run_cli(capsys, "inspect", spec, "--input-shape", "1,3", "--weights", str(weights), "--json")
    assert code == 0, err
    assert json.loads(out)["summary"]["params"] == 3 * 5 + 5 + 5 * 2 + 2


def test_state_dict_for_a_zoo_model(tmp_path):
    from dnninfer import zoo

    other = zoo.build_model("digits_mlp", seed=7).eval()
    path = tmp_path / "w.pt"
    torch.save(other.state_dict(), path)
    loaded = load_model("digits_mlp", weights=path)
    x = loaded.inputs[0]
    with torch.no_grad():
        assert torch.equal(loaded.model.eval()(x), other(x))
        assert not torch.equal(load_model("digits_mlp").model.eval()(x), other(x))  # negative control


@pytest.mark.parametrize(("edit", "needles"), [
    (lambda sd: {k: v for k, v in sd.items() if k != "2.bias"}, ["missing key '2.bias'"]),
    (lambda sd: {**sd, "head.weight": torch.zeros(1)}, ["unexpected key 'head.weight'"]),
    (lambda sd: {("fc." + k): v for k, v in sd.items()}, ["missing key '0.weight' (and 3 more)",
                                                         "unexpected key 'fc.0.weight' (and 3 more)"]),
    (lambda sd: {**sd, "0.weight": torch.zeros(4, 3)}, ["key '0.weight' has shape [4, 3]", "[5, 3]"]),
], ids=["missing", "unexpected", "renamed", "shape"])
def test_mismatched_state_dict_names_the_first_bad_key(tmp_path, edit, needles):
    good = _trained().state_dict()
    spec, weights, _ = _factory_and_weights(tmp_path, edit(dict(good)))
    msg = _one_line_error(spec, input_shape="1,3", weights=weights)
    assert msg.startswith(f"weights file {weights} does not fit model file ")
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"


def test_mismatched_state_dict_via_cli(capsys, tmp_path):
    spec, weights, _ = _factory_and_weights(tmp_path, {"0.weight": torch.zeros(5, 3)})
    code, _, err = run_cli(capsys, "inspect", spec, "--input-shape", "1,3", "--weights", str(weights))
    assert_user_error(code, err, "w.pt", "missing key '0.bias'")


@pytest.mark.parametrize(("payload", "needles"), [
    ("module", ["refused", "pickles Python objects", "state_dict"]),
    ("tensor", ["holds Tensor", "expected a state_dict"]),
    ("mixed", ["non-tensor entries"]),
    ("garbage", ["not a PyTorch checkpoint"]),
    ("missing", ["not found"]),
])
def test_weights_file_that_is_not_a_state_dict(tmp_path, payload, needles):
    (tmp_path / "model.py").write_text(FACTORY_PY)
    weights = tmp_path / "w.pt"
    if payload == "module":
        torch.save(_trained(), weights)
    elif payload == "tensor":
        torch.save(torch.zeros(3), weights)
    elif payload == "mixed":
        torch.save({"epoch": 3, "0.weight": torch.zeros(5, 3)}, weights)
    elif payload == "garbage":
        weights.write_bytes(b"not a checkpoint")
    msg = _one_line_error(f"{tmp_path / 'model.py'}:make", input_shape="1,3", weights=weights)
    assert msg.startswith(f"weights file {weights}")
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"


def test_weights_go_only_with_a_factory_or_zoo_model(tmp_path):
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(_trained(), (torch.randn(1, 3),)), path)
    assert "--weights: goes with a zoo name or a model.py factory" in _one_line_error(str(path), weights="w.pt")


# -- torch.export archives ------------------------------------------------------------------------------------

def _export(path: Path, model: nn.Module, x: torch.Tensor, **kw) -> Path:
    torch.export.save(torch.export.export(model, (x,), **kw), path)
    return path


def _convnet(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).eval()


def test_pt2_round_trip_equals_the_original_model(tmp_path):
    model = _convnet(0)
    x = torch.randn(1, 3, 8, 8)
    loaded = load_model(str(_export(tmp_path / "net.pt2", model, x)))
    assert loaded.name == "net" and len(loaded.inputs) == 1 and torch.equal(loaded.inputs[0], x)
    fresh = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.model(fresh), model(fresh))
        assert not torch.allclose(loaded.model(fresh), _convnet(1)(fresh))  # negative control: other weights


def test_pt2_via_cli_and_capture(capsys, tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    path = _export(tmp_path / "mlp.pt2", model, torch.randn(2, 3))
    code, out, err = run_cli(capsys, "inspect", str(path), "--json")
    assert code == 0, err
    obj = json.loads(out)
    assert obj["model"] == "mlp" and obj["summary"]["params"] == 26
    assert [n["kind"] for n in obj["nodes"]] == ["linear", "act", "linear"]


def test_pt2_batch_follows_a_dynamic_first_dim_and_is_refused_for_a_fixed_one(tmp_path):
    model = nn.Sequential(nn.Linear(3, 2)).eval()
    x = torch.randn(2, 3)
    dynamic = _export(tmp_path / "dyn.pt2", model, x, dynamic_shapes=({0: torch.export.Dim("b", min=1, max=64)},))
    loaded = load_model(str(dynamic), batch=5)
    assert loaded.inputs[0].shape == (5, 3)
    with torch.no_grad():
        assert torch.equal(loaded.model(*loaded.inputs), model(*loaded.inputs))
    fixed = _export(tmp_path / "fixed.pt2", model, x)
    assert "fixed batch of 2" in _one_line_error(str(fixed), batch=5)
    assert load_model(str(fixed), input_shape="2,3").inputs[0].shape == (2, 3)  # negative control


def _pt2_bytes(tmp_path: Path) -> bytes:
    return _export(tmp_path / "src.pt2", nn.Sequential(nn.Linear(3, 2)).eval(), torch.randn(1, 3)).read_bytes()


def _flip_in(data: bytes, member_suffix: str) -> bytes:
    zf = zipfile.ZipFile(io.BytesIO(data))
    info = next(i for i in zf.infolist() if i.filename.endswith(member_suffix))
    out = bytearray(data)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    out[start + info.compress_size // 2] ^= 0xFF
    return bytes(out)


@pytest.mark.parametrize(("make", "needles"), [
    (lambda good: b"", ["empty"]),
    (lambda good: b"this is not an archive", ["not a torch.export archive", "bad magic b'this'"]),
    (lambda good: good[: len(good) // 2], ["truncated or corrupt zip archive"]),
    (lambda good: zip_of({"a/hello.txt": b"hi"}), ["not a torch.export archive", "archive_format"]),
    (lambda good: _flip_in(good, "models/model.json"), ["corrupt archive", "CRC"]),
], ids=["empty", "text", "truncated", "foreign_zip", "flipped"])
@pytest.mark.parametrize("trust", [False, True], ids=["default", "trusted"])
def test_garbage_pt2_is_one_line(tmp_path, make, needles, trust):
    path = tmp_path / "bad.pt2"
    path.write_bytes(make(_pt2_bytes(tmp_path)))
    msg = _one_line_error(str(path), trust_pickle=trust)
    assert msg.startswith(f"model file {path}: ")
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"


def _rewrite(data: bytes, *, program=None, add: dict[str, bytes] | None = None) -> bytes:
    """The archive with its program JSON edited by `program` and members added (names under its root)."""
    zin = zipfile.ZipFile(io.BytesIO(data))
    root = zin.namelist()[0].split("/")[0]
    members = {}
    for name in zin.namelist():
        body = zin.read(name)
        if program is not None and name.endswith("models/model.json"):
            body = json.dumps(program(json.loads(body))).encode()
        members[name] = body
    members.update({f"{root}/{k}": v for k, v in (add or {}).items()})
    return zip_of(members)


def _add_node(doc: dict, target: str) -> dict:
    doc["graph_module"]["graph"]["nodes"].insert(0, {
        "target": target, "inputs": [{"name": "path", "arg": {"as_string": "x"}, "kind": 1}],
        "outputs": [], "metadata": {}})
    return doc


def _guard(doc: dict, code: str) -> dict:
    doc["guards_code"] = [code]
    return doc


@pytest.mark.parametrize(("edit", "needles"), [
    (dict(program=lambda d: _add_node(d, "torch.os.mkdir")), ["a node calls 'torch.os.mkdir'"]),
    (dict(program=lambda d: _add_node(d, "builtins.exec")), ["a node calls 'builtins.exec'"]),
    (dict(program=lambda d: _guard(d, "__import__('os').getcwd() == 0")), ["guard", "not plain arithmetic"]),
    (dict(program=lambda d: _guard(d, "L['x'].size()[0] == len('y')")), ["guard", "uses 'len'"]),
    (dict(add={"data/aotinductor/model/model.so": b"\x7fELF"}), ["compiled code or an unknown part"]),
    (dict(add={"data/constants/opaque_obj_0": b"\x80\x04N."}), ["pickled Python objects"]),
], ids=["torch_os", "builtins", "guard_dunder", "guard_name", "aoti_library", "opaque_pickle"])
def test_pt2_that_would_run_code_is_refused(tmp_path, edit, needles):
    path = tmp_path / "evil.pt2"
    path.write_bytes(_rewrite(_pt2_bytes(tmp_path), **edit))
    msg = _one_line_error(str(path))
    assert "refused" in msg and "--trust-pickle" in msg
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"


def test_rewritten_but_clean_pt2_loads_negative_control(tmp_path):
    """The rewrite the refusal tests use does not by itself make an archive unloadable."""
    path = tmp_path / "clean.pt2"
    path.write_bytes(_rewrite(_pt2_bytes(tmp_path), program=lambda d: _guard(d, "L['input'].size()[0] == 1")))
    loaded = load_model(str(path))
    assert loaded.inputs[0].shape == (1, 3)


def test_pt2_shape_expression_really_runs_code_unless_refused(tmp_path):
    """torch.export.load sympifies (evals) shape expressions: the check is what keeps this out."""
    model = nn.Sequential(nn.Linear(3, 2)).eval()
    good = _export(tmp_path / "dyn.pt2", model, torch.randn(2, 3),
                   dynamic_shapes=({0: torch.export.Dim("b", min=1, max=64)},)).read_bytes()
    marker = tmp_path / "ran"
    text = zipfile.ZipFile(io.BytesIO(good)).read("dyn/models/model.json").decode()
    assert '"expr_str"' in text, "no symbolic shape in the archive: the test would prove nothing"

    def poison(doc):
        def walk(v):
            if isinstance(v, dict):
                for k, x in v.items():
                    if k == "expr_str":
                        v[k] = f"{x} + 0*len(str(__import__('os').mkdir({str(marker)!r})))"
                    else:
                        walk(x)
            elif isinstance(v, list):
                for x in v:
                    walk(x)
        walk(doc)
        return doc

    path = tmp_path / "evil.pt2"
    path.write_bytes(_rewrite(good, program=poison))
    assert "shape expression" in _one_line_error(str(path))
    assert not marker.exists()
    with pytest.raises(UserError):  # negative control: trusted, the payload runs (then loading fails)
        load_model(str(path), trust_pickle=True)
    assert marker.exists()
    assert load_model(str(tmp_path / "dyn.pt2")).inputs[0].shape == (2, 3)  # and the clean archive loads


# -- ONNX dispatch and the suffix list ------------------------------------------------------------------

def test_onnx_dispatches_to_the_importer_contract(tmp_path, monkeypatch):
    calls = []

    def import_onnx(path, *, input_shape, batch, seed):
        calls.append((path, input_shape, batch, seed))
        return nn.Identity(), (torch.zeros(2, 3),)

    monkeypatch.setitem(sys.modules, "dnninfer.zoo.onnx_import", types.SimpleNamespace(import_onnx=import_onnx))
    path = tmp_path / "net.onnx"
    path.write_bytes(b"whatever")
    loaded = load_model(str(path), input_shape="2,3", batch=4, seed=9)
    assert calls == [(path, (2, 3), 4, 9)]
    assert loaded.name == "net" and isinstance(loaded.model, nn.Identity) and loaded.inputs[0].shape == (2, 3)


def test_onnx_without_the_importer_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "dnninfer.zoo.onnx_import", None)  # import fails: ModuleNotFoundError
    path = tmp_path / "net.onnx"
    path.write_bytes(b"whatever")
    assert "needs the ONNX importer" in _one_line_error(str(path))


def test_real_onnx_import_round_trip(tmp_path):
    pytest.importorskip("dnninfer.zoo.onnx_import")
    pytest.importorskip("onnx")
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU()).eval()
    path = tmp_path / "net.onnx"
    try:
        torch.onnx.export(model, (torch.randn(1, 3),), str(path), dynamo=False)
    except Exception as e:  # this torch cannot write ONNX here: nothing to import
        pytest.skip(f"torch.onnx.export unavailable: {type(e).__name__}")
    loaded = load_model(str(path))
    assert loaded.name == "net"
    with torch.no_grad():
        assert torch.allclose(loaded.model(*loaded.inputs), model(*loaded.inputs), atol=1e-6)


def test_unknown_suffix_lists_every_accepted_kind(tmp_path):
    msg = _one_line_error(str(tmp_path / "model.txt"))
    assert ".py/.pt2/.onnx/.pt file" in msg


def test_every_model_command_takes_the_intake_options():
    from dnninfer.cli import build_parser

    parser = build_parser()
    for argv in (["inspect", "m.py"], ["profile", "m.py"], ["run", "m.py"], ["partition", "m.py"],
                 ["mcu", "plan", "m.py"]):
        args = parser.parse_args([*argv, "--weights", "w.pt", "--trust-pickle", "--flops-rules", "r.json"])
        assert (args.weights, args.trust_pickle, args.flops_rules) == ("w.pt", True, "r.json"), argv
