"""``routing-env datasets``: summarise logged data and write the bundled sample.

``routing-env datasets summary PATH | NAME [--root DIR] [--format FORMAT] [--cost-weight λ]``

- ``NAME``: a name of :func:`routing_env.data.load_dataset` (``sample``, ``routellm-mmlu``, ``llmrouter``…),
  read from ``--root`` (or the ``ROUTING_ENV_DATASETS`` environment variable);
- ``PATH``: a canonical ``.parquet``/``.csv``/``.jsonl`` file, or with ``--format`` a third-party file or folder:
  ``routellm`` (``--task``), ``llmrouter`` (``--split``), ``routerarena``, ``routerbench``, ``open-bandit``
  (``--policy``, ``--campaign``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from routing_env.data import (
    DATASET_NAMES,
    LoggedDataset,
    load_dataset,
    load_llmrouter,
    load_open_bandit,
    load_routellm,
    load_routerarena,
    load_routerbench,
    write_sample,
)
from routing_env.errors import ConfigurationError

FORMATS = ("canonical", "routellm", "llmrouter", "routerarena", "routerbench", "open-bandit")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("datasets", help="inspect logged data")
    dsub = p.add_subparsers(dest="datasets_command", metavar="ACTION")
    dsub.required = True
    s = dsub.add_parser(
        "summary",
        help="per-model quality and cost, oracle and best single model",
        description="Print the per-model summary of a dataset given by name or path.",
    )
    s.add_argument(
        "path",
        nargs="?",
        default="sample",
        help=f"a dataset name ({', '.join(DATASET_NAMES)}), a canonical .parquet/.csv/.jsonl file, "
        "or with --format a third-party file or folder (default: sample)",
    )
    s.add_argument("--root", help="folder holding the third-party dataset folders (for names)")
    s.add_argument(
        "--format", choices=FORMATS, help="read PATH with this loader instead of by name or suffix"
    )
    s.add_argument("--task", default="mmlu", choices=("mmlu", "gsm8k", "mt_bench"), help="--format routellm")
    s.add_argument("--split", default="train", choices=("train", "test", "all"), help="--format llmrouter")
    s.add_argument("--policy", default="random", choices=("random", "bts"), help="--format open-bandit")
    s.add_argument("--campaign", default="all", choices=("all", "men", "women"), help="--format open-bandit")
    s.add_argument("--cost-weight", type=float, default=0.0, help="λ for the reward column (default 0)")
    s.add_argument("--plain", action="store_true", help="plain text table instead of rich")
    s.set_defaults(func=run_summary)
    m = dsub.add_parser("make-sample", help="write the bundled sample logs")
    m.add_argument("directory", nargs="?", default="logged_data/sample")
    m.set_defaults(func=run_make_sample)


def load_cli_dataset(
    path: str | None,
    fmt: str | None = None,
    root: str | None = None,
    **options: Any,
) -> LoggedDataset:
    """The dataset a ``summary`` command names: by ``--format`` loader, by name, or a canonical file."""
    target = "sample" if path is None else path
    if fmt is None:
        if target in DATASET_NAMES or Path(target).suffix.lower() in (
            ".parquet",
            ".csv",
            ".jsonl",
            ".ndjson",
        ):
            return load_dataset(target, root=root)
        raise ConfigurationError(
            f"{target!r} is not a dataset name ({', '.join(DATASET_NAMES)}) nor a .parquet/.csv/.jsonl file; "
            f"pass --format ({', '.join(FORMATS)}) to read a third-party file or folder"
        )
    if fmt == "canonical":
        return LoggedDataset.read(target)
    if fmt == "routellm":
        return load_routellm(target, task=options.get("task", "mmlu"))
    if fmt == "llmrouter":
        return load_llmrouter(target, split=options.get("split", "train"))
    if fmt == "routerarena":
        return load_routerarena(target)
    if fmt == "routerbench":
        return load_routerbench(target)
    if fmt == "open-bandit":
        return load_open_bandit(
            target, policy=options.get("policy", "random"), campaign=options.get("campaign", "all")
        )
    raise ConfigurationError(f"--format must be one of {list(FORMATS)}, got {fmt!r}")


def print_table(frame: pd.DataFrame, title: str = "", plain: bool = False) -> None:
    try:
        if plain:
            raise ImportError
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # rich is a dependency, but keep plain output working without it
        if title:
            print(title)
        print(frame.to_string(index=False))
        return
    table = Table(title=title or None)
    for col in frame.columns:
        table.add_column(str(col), justify="right" if pd.api.types.is_numeric_dtype(frame[col]) else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    Console(width=200).print(table)


def run_summary(args: argparse.Namespace) -> int:
    ds = load_cli_dataset(
        args.path,
        fmt=getattr(args, "format", None),
        root=getattr(args, "root", None),
        task=getattr(args, "task", "mmlu"),
        split=getattr(args, "split", "train"),
        policy=getattr(args, "policy", "random"),
        campaign=getattr(args, "campaign", "all"),
    )
    print(ds)
    for key, value in ds.meta.items():
        print(f"  {key}: {value}")
    print_table(
        ds.summary(cost_weight=args.cost_weight),
        title=f"summary at cost_weight={args.cost_weight}",
        plain=getattr(args, "plain", False),
    )
    return 0


def run_make_sample(args: argparse.Namespace) -> int:
    path = write_sample(args.directory)
    print(f"wrote {path}")
    return 0
