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
import os
import time
from pathlib import Path

import pandas as pd

from agents.studies.compare import CASCADE_METHODS, CompareConfig, run_cascade_study
from routing_env.data import load_dataset

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results"
CASCADE_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--dataset", default="sample", help="a dataset name or canonical file with per-call signals"
    )
    p.add_argument("--datasets-root", type=Path, default=None)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-size", type=float, default=0.25)
    p.add_argument("--cost-weights", type=float, nargs="+", default=list(CASCADE_WEIGHTS))
    p.add_argument("--methods", nargs="+", default=list(CASCADE_METHODS), choices=list(CASCADE_METHODS))
    p.add_argument("--ppo-timesteps", type=int, default=60_000, help="per PPO policy (one per λ)")
    p.add_argument(
        "--ppo-cost-weights",
        type=float,
        nargs="*",
        default=[0.05, 0.2, 1.0],
        help="λ values that get their own PPO policy",
    )
    p.add_argument("--n-envs", type=int, default=8)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    root = (
        args.datasets_root or os.environ.get("ROUTING_ENV_DATASETS") or (REPO.parent / "shared" / "datasets")
    )
    start = time.perf_counter()
    dataset = load_dataset(args.dataset, root=root)
    name = Path(args.dataset).stem if Path(args.dataset).suffix else args.dataset
    print(f"{name}: {dataset}")
    config = CompareConfig(
        cost_weights=tuple(args.cost_weights),
        test_size=args.test_size,
        seed=args.seed,
        ppo_timesteps=args.ppo_timesteps,
        ppo_cost_weights=tuple(args.ppo_cost_weights) if args.ppo_cost_weights else None,
        n_envs=args.n_envs,
    )
    result, paths = run_cascade_study(dataset, name, args.out, config, methods=tuple(args.methods), log=print)
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.precision", 4):
        print(result.table.to_string(index=False))
        print(result.rewards.to_string())
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}")
    print(f"total {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
