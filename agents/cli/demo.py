"""``routing-env demo``: the main job on the bundled sample."""

from __future__ import annotations

import argparse

from agents.cli.datasets import print_table
from routing_env.data import load_sample


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train and compare routers on the bundled sample logs")
    p.add_argument("--cost-weight", type=float, default=0.0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ds = load_sample()
    print(ds)
    print_table(ds.summary(cost_weight=args.cost_weight), title="bundled sample")
    return 0
