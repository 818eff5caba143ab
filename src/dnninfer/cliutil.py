"""The plumbing every ``dnninfer`` command shares: the one-line-error parser, the model arguments,
model loading, and how a result is printed.

Area CLIs (``dnninfer/<area>/cli.py``) build their commands from these, so every command takes a
model the same way, fails the same way (one ``dnninfer: error:`` line, exit 2) and prints the same
way (``--json``: one object on stdout; otherwise a table). Argument *value* types (positive ints,
finite floats, seeds, shapes) live in `dnninfer.argtypes`; this module is about commands.

API (stable; every area CLI uses it): `Parser`, `model_args`, `load_graph`, `emit`, `stdout`,
`one_line`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from dnninfer import argtypes as at
from dnninfer.errors import UserError

__all__ = ["Parser", "emit", "load_graph", "model_args", "one_line", "stdout"]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are `UserError`s: the entry point prints them as one line
    and exits 2, like every other user mistake (plain argparse prints usage and exits itself).
    Pass it as ``parser_class=`` to ``add_subparsers`` so nested commands behave the same."""

    def error(self, message: str) -> NoReturn:  # raises instead of exiting
        raise UserError(f"{self.prog}: {message}")

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> Any:
        # Python 3.11's argparse drops a lone '--' value (``--batch=--``) and hands the option an
        # empty list without calling its type=; refuse it like any other malformed value.
        if action.option_strings and action.nargs is None and arg_strings == ["--"]:
            self.error(f"argument {'/'.join(action.option_strings)}: expected a value, got '--'")
        return super()._get_values(action, arg_strings)


def model_args(p: argparse.ArgumentParser) -> None:
    """Add MODEL and the options that say how to load it; `load_graph` reads them back. One set for
    every command, so a model that loads in ``inspect`` loads everywhere."""
    p.add_argument("model", help="zoo name (see `dnninfer models`), path/model.py[:factory], a torch.export .pt2, "
                                 "an .onnx file, or (with --trust-pickle) a pickled .pt module")
    p.add_argument("--input-shape", type=at.input_shape,
                   help="input shape for a user model file, e.g. 1,3,224,224")
    p.add_argument("--batch", type=at.batch, default=1,
                   help=f"batch size of the example input (zoo models; a .pt2 with a dynamic first dim), "
                        f"1..{at.MAX_BATCH}")
    p.add_argument("--seed", type=at.seed, default=0)
    p.add_argument("--weights", metavar="FILE", default=None,
                   help="state_dict for a zoo model or model.py factory (torch.save(model.state_dict(), FILE)); "
                        "read without running code")
    p.add_argument("--trust-pickle", action="store_true",
                   help="load a pickled whole-module .pt: unpickling runs any code the file holds, so only for "
                        "files you trust (prefer a .pt2 from torch.export.save)")
    p.add_argument("--flops-rules", metavar="FILE", default=None,
                   help="FLOPs rules for ops the built-in table lacks: .json/.yaml {op: k per output element | "
                        "{per_out|per_in: k, kind: K}} or a .py defining RULES")


def load_graph(args: argparse.Namespace) -> tuple[Any, Any]:
    """``(LoadedModel, Graph)`` for the model `model_args` described, captured with the user's FLOPs
    rules. The once-per-capture warning about estimated ops becomes one ``dnninfer: warning:`` line
    on stderr, so ``--json`` output on stdout stays parseable."""
    import warnings

    from dnninfer.graph import capture
    from dnninfer.graph.flops import UnknownOpWarning
    from dnninfer.zoo import load_model
    from dnninfer.zoo.load import load_flops_rules

    rules_file = getattr(args, "flops_rules", None)
    rules = load_flops_rules(rules_file) if rules_file else None  # a bad file fails before any work
    loaded = load_model(args.model, input_shape=args.input_shape, batch=args.batch, seed=args.seed,
                        weights=getattr(args, "weights", None), trust_pickle=getattr(args, "trust_pickle", False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnknownOpWarning)
        graph = capture(loaded.model, loaded.inputs, name=loaded.name, flops_rules=rules)
    for w in caught:
        if issubclass(w.category, UnknownOpWarning):
            print(f"dnninfer: warning: {one_line(str(w.message))}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return loaded, graph


def emit(args: argparse.Namespace, obj: Any, title: str, rows: list[dict] | None = None,
         columns: list[str] | None = None) -> None:
    """Print a command's result: ``obj`` as one JSON object when ``args.json``, else ``rows`` (or
    ``obj`` itself as one row) as a table titled ``title``. A command calls it once with ``--json``
    (scripts parse exactly one object) and as often as it has tables otherwise."""
    from dnninfer.bench.output import emit_json, print_table

    if args.json:
        emit_json(obj)
    else:
        print_table(title, rows if rows is not None else [obj], columns, console=stdout())


def stdout() -> Any:
    """A rich Console on stdout for what the user asked for (progress and logs go to stderr); wide
    when piped, so a table written to a file is not wrapped at 80 columns."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


def one_line(message: str) -> str:
    """The message with line breaks and other control characters escaped: a UserError is printed
    as exactly one line even when it quotes a file name or an exception text that holds newlines."""
    text = message.strip()
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
