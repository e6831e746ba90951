"""What every ``routing-env`` subcommand shares, so that all of them look and fail alike.

A subcommand module exposes ``add_parser(subparsers)`` and is listed in :data:`agents.cli.SUBCOMMANDS`;
:func:`agents.cli.build_parser` then gives every parser (nested ones too) the conventions below, and
:func:`agents.cli.main` reports errors and warnings through them. A new subcommand gets them by using these
helpers:

- :func:`add_command`: register the subcommand; its ``--help`` shows the module docstring as plain text.
  Help texts are plain text: reST markup (````x````, ``:class:`x```...) is removed, paragraphs are refilled to
  the terminal width, and every option's default is shown (:class:`HelpFormatter`).
- :func:`add_data_options` and :func:`read_logs`: the options that read logged data (``--root``,
  ``--normalize``, ``--quality-range``, ``--complete-only``) and the loading itself, by dataset name, canonical
  file or ``--format`` loader. A corrupt file is reported as one line naming the file (the library raises
  :class:`~routing_env.errors.FileFormatError`).
- :func:`print_table`: tables that fit the terminal width (``COLUMNS`` is honoured).
- :func:`cli_text`: library messages with the Python spelling of an argument (``normalize='minmax'``,
  ``quality_range=(1, 10)``, ``dataset.complete_only()``) rewritten as the command's own flags
  (``--normalize minmax``, ``--quality-range 1 10``, ``--complete-only``) where the command has them.
  :func:`agents.cli.main` applies it to every error and routing-env warning it prints.
"""

from __future__ import annotations

import argparse
import re
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from routing_env.data import DATASET_NAMES, LoggedDataset, loaders
from routing_env.data.files import SUFFIXES
from routing_env.errors import ConfigurationError

#: ``--format`` values: the loader that reads a third-party file or folder (``canonical``: a canonical file).
FORMATS = ("canonical", "routellm", "llmrouter", "routerarena", "routerbench", "open-bandit")
#: The ``--format`` loaders that take ``normalize``/``quality_range`` (besides canonical files).
_NORMALIZING = {"canonical": True, "routerarena": False, "routerbench": True}


# ---------------------------------------------------------------------------------------------------- help
def plain_text(text: str) -> str:
    """``text`` with reST markup removed: roles, literals, emphasis and ``::`` literal-block markers."""
    text = re.sub(r":[a-z]+:`~?([^`<]*?)\s*<[^`>]*>`", r"\1", text)  # :role:`title <target>`
    text = re.sub(r":[a-z]+:`~([^`]*)`", lambda m: m.group(1).rsplit(".", 1)[-1], text)
    text = re.sub(r":[a-z]+:`([^`]*)`", r"\1", text)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    text = re.sub(r"`([^`]+)`", r"\1", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"\1", text)
    text = re.sub(r"^\s*::\s*$", "", text, flags=re.M)
    return re.sub(r"::(\s*)$", r":\1", text, flags=re.M)


def fill_paragraphs(text: str, width: int, indent: str = "") -> str:
    """Refill the paragraphs and ``-`` bullets of ``text`` to ``width``; indented (literal) blocks stay as they
    are."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n", textwrap.dedent(text).strip("\n")):
        lines = block.splitlines()
        if all(line.startswith((" ", "\t")) for line in lines if line.strip()):
            out.append("\n".join(indent + line for line in lines))
            continue
        items: list[list[str]] = []
        for line in lines:
            if line.lstrip().startswith("- ") or not items:
                items.append([line.strip()])
            else:
                items[-1].append(line.strip())
        filled = []
        for item in items:
            joined = " ".join(item)
            hang = "  " if joined.startswith("- ") else ""
            filled.append(
                textwrap.fill(joined, width, initial_indent=indent, subsequent_indent=indent + hang)
            )
        out.append("\n".join(filled))
    return "\n\n".join(out)


def _has_default(action: argparse.Action) -> bool:
    """An option whose default is worth showing (not a flag, not ``None``)."""
    return (
        bool(action.option_strings)
        and not any(action.default is v for v in (None, False, argparse.SUPPRESS))
        and not isinstance(action, (argparse._StoreTrueAction, argparse._VersionAction))
    )


class HelpFormatter(argparse.HelpFormatter):
    """Plain-text help: reST removed, paragraphs refilled to the terminal, and each option's default shown."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return fill_paragraphs(plain_text(text), width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = plain_text(action.help or "")
        if _has_default(action) and "default" not in text:
            text += " (default: %(default)s)"
        return text


def apply_conventions(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` and every parser below it the :class:`HelpFormatter` (an option without a help text still
    shows its default), and record each parser in its own namespace (``args._cli_parser``) so that errors can be
    worded with the flags of the command that ran."""
    parser.formatter_class = HelpFormatter
    parser.set_defaults(_cli_parser=parser)
    for action in parser._actions:
        if not action.help and _has_default(action):
            action.help = "(default: %(default)s)"
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                apply_conventions(child)


def add_command(
    sub: argparse._SubParsersAction, name: str, help: str, doc: str | None = None
) -> argparse.ArgumentParser:
    """Register subcommand ``name``: ``help`` in the command list, ``doc`` (a module docstring) as its description."""
    return sub.add_parser(name, help=help, description=doc, formatter_class=HelpFormatter)


# ---------------------------------------------------------------------------------------------------- messages
def _flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """``{dest: long flag}`` of the optional arguments of ``parser``."""
    out = {}
    for action in parser._actions:
        long = [s for s in action.option_strings if s.startswith("--")]
        if long and action.dest not in ("help", "version"):
            out[action.dest] = long[0]
    return out


def cli_text(text: str, parser: argparse.ArgumentParser | None) -> str:
    """``text`` with the Python spelling of the arguments ``parser`` has as flags rewritten as those flags."""
    if parser is None:
        return text
    for dest, flag in sorted(_flags(parser).items(), key=lambda kv: -len(kv[0])):
        text = _as_flag(text, dest, flag)
    return text


def _as_flag(text: str, dest: str, flag: str) -> str:
    """``text`` with ``dest()``, ``dest=(a, b)``, ``dest='v'|'w'``, ``dest=v`` and a bare ``dest=`` as ``flag``."""

    def values(m: re.Match[str]) -> str:
        return f"{flag} " + " ".join(p.strip().strip("'\"") for p in m.group(1).split(","))

    def choices(m: re.Match[str]) -> str:
        return f"{flag} {m.group(1)}" + m.group(2).replace("'", "")

    name = r"(?<![\w.\-])" + re.escape(dest)
    text = re.sub(r"(?<![\w.\-])(?:\w+\.)?" + re.escape(dest) + r"\(\)", flag, text)
    text = re.sub(name + r"=\(([^()]*)\)", values, text)
    text = re.sub(name + r"='([^']*)'((?:\|'[^']*')*)", choices, text)
    text = re.sub(name + r"=([\w.\-]+|\.\.\.)", rf"{flag} \1", text)
    return re.sub(name + r"=(?=[\s,;)]|$)", flag, text)


def terminal_width() -> int:
    """Columns of the terminal (``COLUMNS`` when set; 100 when there is no terminal)."""
    return max(40, shutil.get_terminal_size((100, 24)).columns)


def print_table(frame: pd.DataFrame, title: str = "", plain: bool = False) -> None:
    """Print ``frame`` as a table that fits the terminal width (rich, or pandas' plain text with ``plain``).

    Floats are shown with 4 significant digits; columns that do not fit are folded (rich) or continued in
    further blocks (plain).
    """
    width = terminal_width()
    if plain:
        if title:
            print(title)
        print(frame.to_string(index=False, line_width=width))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title or None)
    for col in frame.columns:
        numeric = pd.api.types.is_numeric_dtype(frame[col])
        table.add_column(str(col), justify="right" if numeric else "left", overflow="fold")
    for row in frame.itertuples(index=False):
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    Console(width=width).print(table)


# ---------------------------------------------------------------------------------------------------- logged data
def add_data_options(parser: argparse.ArgumentParser) -> None:
    """The options of reading logged data: where named datasets live, how to map quality, which queries to keep."""
    parser.add_argument(
        "--root", default=None, help="folder holding the third-party dataset folders (for dataset names)"
    )
    parser.add_argument(
        "--normalize",
        choices=("minmax", "clip"),
        default=None,
        help="map a quality column outside [0, 1]: minmax rescales (see --quality-range), clip clips; without "
        "it such quality is an error",
    )
    parser.add_argument(
        "--quality-range",
        nargs=2,
        type=float,
        metavar=("LOW", "HIGH"),
        default=None,
        help="the judge scale that --normalize minmax maps onto [0, 1], e.g. 1 10 (default: the observed range)",
    )
    parser.add_argument(
        "--complete-only",
        action="store_true",
        help="keep only the queries on which every model has an outcome (drops partially logged queries)",
    )


def read_logs(target: str, args: argparse.Namespace, fmt: str | None = None, **options: Any) -> LoggedDataset:
    """The dataset ``target`` names (a dataset name, a canonical file, or a path read by the ``fmt`` loader),
    read with the options of :func:`add_data_options` held in ``args``; ``options`` go to the ``fmt`` loader."""
    normalizing = {
        k: v
        for k, v in (
            ("normalize", getattr(args, "normalize", None)),
            ("quality_range", getattr(args, "quality_range", None)),
        )
        if v is not None
    }
    if "quality_range" in normalizing:
        normalizing["quality_range"] = tuple(normalizing["quality_range"])
    kind = fmt or ("canonical" if Path(target).suffix.lower() in SUFFIXES else target)
    if normalizing and not _takes_normalize(kind, normalizing):
        raise ConfigurationError(
            f"--normalize and --quality-range apply to canonical files, routerbench and (--normalize only) "
            f"routerarena, not to {kind!r}"
        )
    dataset = _load(target, fmt, getattr(args, "root", None), normalizing, options)
    if getattr(args, "complete_only", False):
        dataset = dataset.complete_only()
        if "complete_only" in dataset.meta:
            print(f"--complete-only: {dataset.meta['complete_only']}")
    return dataset


def _takes_normalize(kind: str, normalizing: dict[str, Any]) -> bool:
    """Whether the loader of ``kind`` takes the ``normalize``/``quality_range`` options given."""
    takes_range = _NORMALIZING.get(kind)
    return takes_range is not None and (takes_range or "quality_range" not in normalizing)


def _load(
    target: str, fmt: str | None, root: str | None, normalizing: dict[str, Any], options: dict[str, Any]
) -> LoggedDataset:
    if fmt is None:
        if target in DATASET_NAMES or Path(target).suffix.lower() in SUFFIXES:
            return loaders.load_dataset(target, root=root, **normalizing)
        raise ConfigurationError(
            f"{target!r} is not a dataset name ({', '.join(DATASET_NAMES)}) nor a .parquet/.csv/.jsonl file; "
            f"pass --format ({', '.join(FORMATS)}) to read a third-party file or folder"
        )
    readers: dict[str, Callable[..., LoggedDataset]] = {
        "canonical": lambda: LoggedDataset.read(target, **normalizing),
        "routellm": lambda: loaders.load_routellm(target, task=options.get("task", "mmlu")),
        "llmrouter": lambda: loaders.load_llmrouter(target, split=options.get("split", "train")),
        "routerarena": lambda: loaders.load_routerarena(target, **normalizing),
        "routerbench": lambda: loaders.load_routerbench(target, **normalizing),
        "open-bandit": lambda: loaders.load_open_bandit(
            target, policy=options.get("policy", "random"), campaign=options.get("campaign", "all")
        ),
    }
    if fmt not in readers:
        raise ConfigurationError(f"--format must be one of {list(FORMATS)}, got {fmt!r}")
    return readers[fmt]()
