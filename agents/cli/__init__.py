"""The ``routing-env`` console script.

Each subcommand lives in its own module of this package, exposing ``add_parser(subparsers)`` (which registers the
subcommand and sets ``func`` on its parser) and is imported lazily so that ``routing-env --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from routing_env.errors import RoutingEnvError

#: Subcommand modules of this package, in the order ``--help`` lists them.
SUBCOMMANDS = ("demo", "datasets", "serve", "gateway", "ope")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="routing-env",
        description="Learn, evaluate and deploy LLM routing policies from logged query x model outcomes.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMANDS:
        importlib.import_module(f"agents.cli.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (RoutingEnvError, FileNotFoundError) as exc:
        print(f"routing-env {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
