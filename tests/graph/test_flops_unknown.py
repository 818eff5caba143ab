"""An op the FLOPs table lacks no longer makes a model unusable: capture estimates it (one FLOP per
output element), marks the node, warns once naming every such op; a rules file (``--flops-rules``)
or ``flops_rules=`` replaces the estimate exactly; a broken rules file is one line."""

from __future__ import annotations

import json
import textwrap
import warnings

import pytest
import torch
from torch import nn

from dnninfer.errors import UserError
from dnninfer.graph import Rule, capture
from dnninfer.graph.flops import UnknownOpWarning
from dnninfer.zoo.load import load_flops_rules
from test_cli_errors import assert_user_error, run_cli

X = torch.randn(1, 4, 3, 3)

MODEL_PY = """\
import torch
from torch import nn

def model():
    return nn.Sequential(nn.Conv2d(4, 8, 1), nn.PixelShuffle(2))

def example_inputs():
    return torch.randn(1, 4, 3, 3)
"""


class Shuffle(nn.Module):
    """A conv (in the table), two PixelShuffles and a torch.sign (neither is)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 16, 1)
        self.up = nn.PixelShuffle(2)
        self.up2 = nn.PixelShuffle(2)

    def forward(self, x):
        return torch.sign(self.up2(self.up(self.conv(x))))


def _capture(model, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = capture(model, (X,), **kw)
    return g, [w for w in caught if issubclass(w.category, UnknownOpWarning)]


def _node(g, target):
    return [n for n in g.compute_nodes() if n.target == target]


def test_unknown_ops_are_estimated_marked_and_named_in_one_warning():
    g, warned = _capture(Shuffle())
    assert len(warned) == 1, [str(w.message) for w in warned]  # once per capture, not per node
    msg = str(warned[0].message)
    assert "PixelShuffle (2 nodes)" in msg and "sign (1 node)" in msg and "1 FLOP per output element" in msg
    for n in _node(g, "PixelShuffle") + _node(g, "sign"):
        assert n.flops_estimated and n.kind == "unknown"
        assert n.flops == torch.Size(n.shape).numel() > 0
    conv = _node(g, "Conv2d")[0]  # negative control: a table op keeps its exact count, unmarked
    assert not conv.flops_estimated and conv.flops == 2 * 16 * 3 * 3 * 4
    assert g.total_flops == sum(n.flops for n in g.compute_nodes())


def test_model_without_unknown_ops_gives_no_warning_negative_control():
    _, warned = _capture(nn.Sequential(nn.Conv2d(4, 8, 1), nn.ReLU()))
    assert warned == []


def test_functional_pixel_shuffle_is_already_data_movement():
    """F.pixel_shuffle is in the table (0 FLOPs, like view): only the module form was unknown."""

    class F(nn.Module):
        def forward(self, x):
            return nn.functional.pixel_shuffle(x, 2)

    g, warned = _capture(F())
    assert warned == [] and _node(g, "pixel_shuffle")[0].flops == 0


@pytest.mark.parametrize("key", ["PixelShuffle", nn.PixelShuffle], ids=["class_name", "type"])
def test_flops_rules_replace_the_estimate_exactly(key):
    g, warned = _capture(Shuffle(), flops_rules={key: Rule("reshape", lambda c: 0), "sign": Rule("act", lambda c: 7)})
    assert warned == []
    assert [n.flops for n in _node(g, "PixelShuffle")] == [0, 0] and _node(g, "sign")[0].flops == 7
    assert not any(n.flops_estimated for n in g.compute_nodes())
    assert _node(g, "PixelShuffle")[0].kind == "reshape"


def test_bench_and_table_keys_are_unchanged():
    g, _ = _capture(Shuffle())
    assert set(g.to_rows()[0]) == {"name", "kind", "target", "shape", "dtype", "out_bytes", "param_bytes", "flops"}
    assert set(g.summary()) == {"name", "method", "nodes", "flops", "params", "param_bytes", "blocks"}


def test_a_user_rule_that_fails_is_one_line_naming_the_node():
    with pytest.raises(UserError, match=r"node 'up' \(PixelShuffle\): FLOPs rule raised KeyError") as info:
        capture(Shuffle(), (X,), flops_rules={"PixelShuffle": Rule("x", lambda c: {}["k"])})
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="returned -1, expected a finite number >= 0"):
        capture(Shuffle(), (X,), flops_rules={"PixelShuffle": Rule("x", lambda c: -1)})


# -- --flops-rules FILE ----------------------------------------------------------------------------------

@pytest.fixture
def model_py(tmp_path):
    path = tmp_path / "ps.py"
    path.write_text(MODEL_PY)
    return path


def _inspect(capsys, model_py, *extra):
    code, out, err = run_cli(capsys, "inspect", str(model_py), "--json", *extra)
    assert code == 0, err
    nodes = {n["target"]: n for n in json.loads(out)["nodes"]}
    return nodes, err


def test_cli_warns_in_one_line_and_estimates_without_rules(capsys, model_py):
    nodes, err = _inspect(capsys, model_py)
    assert err.strip().splitlines() == [err.strip()] and err.startswith("dnninfer: warning: ")
    assert "PixelShuffle" in err
    assert nodes["PixelShuffle"]["flops"] == 2 * 6 * 6 > 0 and nodes["PixelShuffle"]["kind"] == "unknown"


@pytest.mark.parametrize(("name", "body", "flops"), [
    ("r.json", json.dumps({"PixelShuffle": 3}), 3 * 72),
    ("r.json", json.dumps({"PixelShuffle": {"per_in": 1, "kind": "reshape"}}), 72),
    ("r.yaml", "PixelShuffle:\n  per_out: 0\n  kind: reshape\n", 0),
    ("r.py", "from dnninfer.graph import Rule\nRULES = {'PixelShuffle': Rule('reshape', lambda c: 11)}\n", 11),
    ("r.py", "RULES = {'PixelShuffle': lambda c: 2 * c.out.numel()}\n", 144),
], ids=["json_number", "json_per_in", "yaml", "py_rule", "py_function"])
def test_flops_rules_file_gives_the_exact_count_and_silences_the_warning(capsys, tmp_path, model_py, name, body,
                                                                        flops):
    rules = tmp_path / name
    rules.write_text(body)
    nodes, err = _inspect(capsys, model_py, "--flops-rules", str(rules))
    assert nodes["PixelShuffle"]["flops"] == flops
    assert "warning" not in err
    assert nodes["Conv2d"]["flops"] == 2 * 8 * 9 * 4  # the table still counts the rest


@pytest.mark.parametrize(("name", "body", "needles"), [
    ("r.json", "{not json", ["cannot be read", "JSONDecodeError"]),
    ("r.yaml", "PixelShuffle: [1", ["not valid YAML"]),
    ("r.json", "[1, 2]", ["expected a mapping", "list"]),
    ("r.json", json.dumps({"PixelShuffle": -2}), ["rule 'PixelShuffle'", "-2", ">= 0"]),
    ("r.json", json.dumps({"PixelShuffle": "out_elems * k"}), ["rule 'PixelShuffle'", "expected a number"]),
    ("r.json", json.dumps({"PixelShuffle": {"per_out": 1, "per_in": 1}}), ["rule 'PixelShuffle'"]),
    ("r.yaml", "1: 2\n", ["key 1", "op name"]),
    ("r.py", "raise RuntimeError('nope')\n", ["importing it raised RuntimeError: nope"]),
    ("r.py", "rules = {}\n", ["expected RULES", "nothing of that name"]),
    ("r.py", "RULES = {'PixelShuffle': 'fast'}\n", ["rule 'PixelShuffle'", "Rule(kind, fn)"]),
    ("r.txt", "{}", ["--flops-rules", "expected a .py, .json or .yaml file"]),
], ids=["bad_json", "bad_yaml", "not_mapping", "negative", "string", "both_bases", "int_key", "py_raises",
        "py_no_rules", "py_bad_value", "suffix"])
def test_broken_rules_file_is_one_line_before_any_work(capsys, tmp_path, model_py, name, body, needles):
    rules = tmp_path / name
    rules.write_text(body)
    code, out, err = run_cli(capsys, "inspect", str(model_py), "--flops-rules", str(rules))
    assert_user_error(code, err, *needles)
    assert out == ""


def test_missing_rules_file(capsys, tmp_path, model_py):
    code, _, err = run_cli(capsys, "inspect", str(model_py), "--flops-rules", str(tmp_path / "none.json"))
    assert_user_error(code, err, "none.json", "not found")


def test_rules_loader_keys_python_types_and_names(tmp_path):
    path = tmp_path / "r.py"
    path.write_text(textwrap.dedent("""
        import torch
        from torch import nn
        RULES = {nn.PixelShuffle: 0, torch.sign: {"per_out": 2}, "gelu": 1.5}
    """))
    rules = load_flops_rules(path)
    assert set(rules) == {nn.PixelShuffle, torch.sign, "gelu"}
    assert all(isinstance(r, Rule) for r in rules.values())
    g, warned = _capture(Shuffle(), flops_rules=rules)
    assert warned == [] and _node(g, "sign")[0].flops == 2 * torch.Size(_node(g, "sign")[0].shape).numel()
