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

from agents.cli.common import FORMATS, add_command, add_data_options, print_table, read_logs
from routing_env.data import DATASET_NAMES, write_sample

__all__ = ["add_parser", "print_table"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "datasets", "inspect logged data", __doc__)
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
    add_data_options(s)
    s.add_argument(
        "--format", choices=FORMATS, help="read PATH with this loader instead of by name or suffix"
    )
    s.add_argument(
        "--task", default="mmlu", choices=("mmlu", "gsm8k", "mt_bench"), help="for --format routellm"
    )
    s.add_argument(
        "--split", default="train", choices=("train", "test", "all"), help="for --format llmrouter"
    )
    s.add_argument("--policy", default="random", choices=("random", "bts"), help="for --format open-bandit")
    s.add_argument(
        "--campaign", default="all", choices=("all", "men", "women"), help="for --format open-bandit"
    )
    s.add_argument("--cost-weight", type=float, default=0.0, help="λ of the reward column")
    s.add_argument("--plain", action="store_true", help="plain text table instead of rich")
    s.set_defaults(func=run_summary)
    m = dsub.add_parser("make-sample", help="write the bundled sample logs")
    m.add_argument(
        "directory", nargs="?", default="logged_data/sample", help="folder to write sample.parquet to"
    )
    m.set_defaults(func=run_make_sample)


def run_summary(args: argparse.Namespace) -> int:
    ds = read_logs(
        args.path,
        args,
        fmt=args.format,
        task=args.task,
        split=args.split,
        policy=args.policy,
        campaign=args.campaign,
    )
    print(repr(ds))
    for key, value in ds.meta.items():
        print(f"  {key}: {value}")
    print_table(
        ds.summary(cost_weight=args.cost_weight),
        title=f"summary at cost_weight={args.cost_weight}",
        plain=args.plain,
    )
    return 0


def run_make_sample(args: argparse.Namespace) -> int:
    path = write_sample(args.directory)
    print(f"wrote {path}")
    return 0
