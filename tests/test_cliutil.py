"""The CLI helpers are public and the only way in: no area CLI reaches into ``dnninfer.cli`` for a
private name (issue 16, item 6), and the helpers keep the CLI contract (one-line errors, one JSON
object)."""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

import pytest

from dnninfer import cliutil
from dnninfer.errors import UserError

SRC = Path(__file__).parents[1] / "src" / "dnninfer"


def private_cli_imports(source: str) -> list[str]:
    """Private names a module imports from ``dnninfer.cli`` (``from dnninfer.cli import _x`` or
    ``dnninfer.cli._x``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == "dnninfer.cli":
            found += [a.name for a in node.names if a.name.startswith("_")]
        elif (isinstance(node, ast.Attribute) and node.attr.startswith("_") and isinstance(node.value, ast.Attribute)
              and node.value.attr == "cli" and isinstance(node.value.value, ast.Name)
              and node.value.value.id == "dnninfer"):
            found.append(node.attr)
    return found


def test_no_area_imports_a_private_name_from_the_cli():
    offenders = {str(p.relative_to(SRC)): names for p in sorted(SRC.rglob("*.py"))
                 if (names := private_cli_imports(p.read_text()))}
    assert not offenders, offenders


def test_the_scan_finds_a_private_import():  # negative control for the scan above
    assert private_cli_imports("from dnninfer.cli import _emit, main\n") == ["_emit"]
    assert private_cli_imports("import dnninfer.cli\ndnninfer.cli._stdout()\n") == ["_stdout"]
    assert private_cli_imports("from dnninfer.cli import main\nfrom dnninfer.cliutil import emit\n") == []


def test_every_area_cli_uses_the_public_helpers():
    """Each area CLI that prints or takes a model does it through cliutil, so there is one way."""
    for path in sorted(SRC.glob("*/cli.py")):
        tree = ast.parse(path.read_text())
        froms = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "dnninfer.cliutil" in froms, f"{path.relative_to(SRC)} does not use dnninfer.cliutil"


def test_parser_errors_are_user_errors_in_one_line():
    p = cliutil.Parser(prog="dnninfer x")
    p.add_argument("--n", type=int)
    with pytest.raises(UserError, match=r"^dnninfer x: argument --n: invalid int value: 'a'$"):
        p.parse_args(["--n", "a"])
    with pytest.raises(UserError, match="expected a value, got '--'"):
        p.parse_args(["--n=--"])
    plain = argparse.ArgumentParser(prog="plain")  # control: plain argparse prints usage and exits
    plain.add_argument("--n", type=int)
    with pytest.raises(SystemExit):
        plain.parse_args(["--n"])


def test_model_args_round_trip_through_load_graph():
    p = cliutil.Parser(prog="t")
    cliutil.model_args(p)
    args = p.parse_args(["digits_mlp", "--batch", "3"])
    loaded, g = cliutil.load_graph(args)
    assert loaded.inputs[0].shape[0] == 3 and g.compute_nodes()
    with pytest.raises(UserError, match="--batch"):
        p.parse_args(["digits_mlp", "--batch", "0"])


def test_emit_prints_one_json_object_or_a_table(capsys):
    obj = {"a": 1, "b": [1, 2]}
    cliutil.emit(argparse.Namespace(json=True), obj, "title", [{"x": 1}])
    assert json.loads(capsys.readouterr().out) == obj
    cliutil.emit(argparse.Namespace(json=False), obj, "my title", [{"x": 12345}])
    out = capsys.readouterr().out
    assert "my title" in out and "12345" in out and not out.lstrip().startswith("{")


def test_one_line_escapes_line_breaks():
    assert cliutil.one_line("bad\nname\r") == "bad\\nname"
    assert cliutil.one_line("  plain  ") == "plain"
    assert "\n" not in cliutil.one_line("a\n\tb")
