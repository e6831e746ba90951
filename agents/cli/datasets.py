"""``routing-env datasets``: summarise logged data and write the bundled sample."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from routing_env.data import LoggedDataset, load_sample, write_sample


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("datasets", help="inspect logged data")
    dsub = p.add_subparsers(dest="datasets_command", metavar="ACTION")
    dsub.required = True
    s = dsub.add_parser("summary", help="per-model quality and cost, oracle and best single model")
    s.add_argument("path", nargs="?", help="a canonical .parquet/.csv/.jsonl file, or 'sample'")
    s.add_argument("--cost-weight", type=float, default=0.0, help="λ for the reward column (default 0)")
    s.set_defaults(func=run_summary)
    m = dsub.add_parser("make-sample", help="write the bundled sample logs")
    m.add_argument("directory", nargs="?", default="logged_data/sample")
    m.set_defaults(func=run_make_sample)


def load_cli_dataset(path: str | None) -> LoggedDataset:
    if path in (None, "sample"):
        return load_sample()
    return LoggedDataset.read(Path(path))


def print_table(frame: pd.DataFrame, title: str = "") -> None:
    try:
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
    ds = load_cli_dataset(args.path)
    print(ds)
    for key, value in ds.meta.items():
        print(f"  {key}: {value}")
    print_table(ds.summary(cost_weight=args.cost_weight), title=f"summary at cost_weight={args.cost_weight}")
    return 0


def run_make_sample(args: argparse.Namespace) -> int:
    path = write_sample(args.directory)
    print(f"wrote {path}")
    return 0
