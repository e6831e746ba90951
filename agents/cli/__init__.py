"""The ``routing-env`` console script.

Each subcommand lives in its own module of this package, exposing ``add_parser(subparsers)`` (which registers the
subcommand and sets ``func`` on its parser) and is imported lazily so that ``routing-env --help`` stays fast.
:mod:`agents.cli.common` holds what they share: plain-text help with defaults, the options that read logged data,
tables that fit the terminal, and error messages worded with the command's own flags.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from agents.cli.common import HelpFormatter, apply_conventions, cli_text
from routing_env.errors import RoutingEnvError, RoutingEnvWarning

#: Subcommand modules of this package, in the order ``--help`` lists them.
SUBCOMMANDS = ("demo", "datasets", "train", "evaluate", "serve", "gateway", "ope", "promote")


def version() -> str:
    """The installed routing-env version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("routing-env")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="routing-env",
        description="Learn, evaluate and deploy LLM routing policies from logged query x model outcomes.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"routing-env {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMANDS:
        importlib.import_module(f"agents.cli.{name}").add_parser(sub)
    apply_conventions(parser)
    return parser


@contextmanager
def _cli_warnings(prefix: str, parser: argparse.ArgumentParser | None) -> Iterator[None]:
    """Show routing-env warnings as ``<prefix>: warning: …`` lines worded for the CLI; others as usual."""
    original = warnings.showwarning

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, RoutingEnvWarning):
            print(f"{prefix}: warning: {cli_text(str(message), parser)}", file=sys.stderr)
        else:
            original(message, category, *args, **kwargs)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = getattr(args, "_cli_parser", parser)
    prefix = f"routing-env {args.command}"
    with _cli_warnings(prefix, command):
        try:
            return int(args.func(args) or 0)
        except (RoutingEnvError, OSError) as exc:
            # OSError covers missing, unreadable and directory-instead-of-file paths.
            print(f"{prefix}: error: {cli_text(str(exc), command)}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
