"""A CLI that answers at once (issue 22): nothing heavy is imported before the arguments are parsed,
an area is imported only when its command runs, and the static table of area commands in cli.py
says exactly what the areas register (so ``--help`` lists them without importing them)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from dnninfer import cli
from dnninfer.cliutil import Parser

HEAVY = ("torch", "ray", "fastapi")


def _imported_after(argv: list[str]) -> dict[str, object]:
    """Run ``main(argv)`` in a fresh interpreter; report its exit code and what it imported."""
    code = (
        "import contextlib, io, json, sys\n"
        "from dnninfer.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):\n"
        "    try:\n"
        f"        rc = main({argv!r})\n"
        "    except SystemExit as e:\n"
        "        rc = e.code\n"
        "mods = sorted(sys.modules)\n"
        "print(json.dumps({'rc': rc, 'out': out.getvalue(), 'modules': mods}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _areas_and_benches(modules: list[str]) -> list[str]:
    return [m for m in modules if m.startswith("dnninfer.") and m.count(".") >= 2
            and m.rsplit(".", 1)[1] in ("cli", "bench") and m.split(".")[1] not in ("bench",)]


@pytest.mark.parametrize("argv", [["--help"], ["devices", "--json"]])
def test_help_and_devices_import_nothing_heavy(argv):
    got = _imported_after(argv)
    assert got["rc"] == 0
    heavy = [m for m in got["modules"] if m.split(".")[0] in HEAVY]
    assert not heavy, heavy[:5]
    assert not _areas_and_benches(got["modules"])
    if argv[0] == "devices":
        assert {r["device"] for r in json.loads(got["out"])["devices"]} >= {"rpi4", "jetson_tx2"}


def test_an_area_command_imports_its_area_only():
    got = _imported_after(["ledger", "--help"])
    assert got["rc"] == 0
    assert "dnninfer.ledger.cli" in got["modules"]
    assert _areas_and_benches(got["modules"]) == ["dnninfer.ledger.cli"]


def test_the_whole_parser_negative_control():
    got = _imported_after(["no-such-command"])  # a word the table does not know: every area, as before
    assert got["rc"] == 2
    assert len(_areas_and_benches(got["modules"])) >= len(set(m for m, _ in cli.AREA_COMMANDS.values()))


def _registered() -> dict[str, tuple[str, str]]:
    """What every area's ``add_commands`` registers: name -> (module, help)."""
    found: dict[str, tuple[str, str]] = {}
    for module in cli._area_cli_modules():
        sub = Parser(prog="x").add_subparsers(dest="command", parser_class=Parser)
        module.add_commands(sub)
        for action in sub._choices_actions:
            found[action.dest] = (module.__name__, action.help)
    return found


def test_the_table_of_area_commands_is_what_the_areas_register():
    assert _registered() == cli.AREA_COMMANDS
    assert list(cli.AREA_COMMANDS) == list(_registered())  # and in the order --help has always listed them


def _listing(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [(a.dest, a.help) for a in sub._choices_actions]


def test_the_lazy_listing_equals_the_whole_parsers():
    assert _listing(cli.build_parser(["--help"])) == _listing(cli.build_parser())


def test_an_area_command_parses_as_in_the_whole_parser():
    argv = ["partition", "digits_cnn", "--strategy", "coedge", "--bandwidth-mbps", "20"]
    lazy, whole = cli.build_parser(argv).parse_args(argv), cli.build_parser().parse_args(argv)
    assert {k: v for k, v in vars(lazy).items() if k != "func"} == {k: v for k, v in vars(whole).items() if k != "func"}
    assert lazy.func is whole.func
