"""Cascade study: Cascade-v0 with PPO (fixed chain; free choice with MaskablePPO), threshold cascades and cascade
bandits, against single-shot routing — same outputs as ``frontier.py``.

Cascades call the models cheapest first and stop when the answer's signal (a logged confidence or verifier
score) looks good enough; their cost counts every call. Writes ``cascade_<dataset>_points.csv``, ``_table.csv``,
``_rewards.csv``, ``.md`` and ``.png`` into ``--out``.

    python experiments/cascade.py --dataset sample
    python experiments/cascade.py --dataset sample --ppo-timesteps 2000 --cost-weights 0 0.5   # smoke size
"""

from __future__ import annotations

import argparse
import time

from _common import add_study_arguments, load_study_dataset, print_study, study_config

from agents.studies.compare import CASCADE_METHODS, run_cascade_study

CASCADE_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--dataset", default="sample", help="a dataset name or canonical file with per-call signals"
    )
    add_study_arguments(p, CASCADE_WEIGHTS, ppo_timesteps=60_000)
    p.add_argument("--methods", nargs="+", default=list(CASCADE_METHODS), choices=list(CASCADE_METHODS))
    p.add_argument(
        "--ppo-cost-weights",
        type=float,
        nargs="*",
        default=[0.05, 0.2, 1.0],
        help="λ values that get their own PPO policy",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    name, dataset = load_study_dataset(args.dataset, args.datasets_root)
    config = study_config(
        args, ppo_cost_weights=tuple(args.ppo_cost_weights) if args.ppo_cost_weights else None
    )
    result, paths = run_cascade_study(dataset, name, args.out, config, methods=tuple(args.methods), log=print)
    print_study(result.table, paths, start, result.rewards)


if __name__ == "__main__":
    main()
