"""``python -m dnninfer.serving [MODEL] [serve options]``: the server alone, without importing every
bench the main CLI registers (the bench starts servers this way)."""

from __future__ import annotations

import argparse
import sys

from dnninfer.errors import UserError
from dnninfer.serving.cli import add_serve_arguments, cmd_serve


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dnninfer.serving", description="dnninfer vision server")
    add_serve_arguments(p, with_model=False)
    p.add_argument("model", nargs="?", default="mobilenet_v2")
    args = p.parse_args(argv)
    try:
        cmd_serve(args)
    except UserError as e:
        print(f"dnninfer: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
