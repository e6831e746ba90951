"""``routing-env demo``: the main job — train every router on the bundled sample and compare them.

Runs the frontier study (:func:`agents.studies.compare.run_frontier_study`) on the bundled sample logs (4,000 synthetic
queries × 7 models): baselines, cost-aware bandits, per-λ PPO and λ-conditioned PPO, scored exactly on a held-out
split over a grid of cost weights. Prints the summary table and writes the cost–quality plot, the CSV tables and a
Markdown report to ``--out`` (default ``routing-env-results/`` in the current directory). One to two minutes on 2
cores, most of it PPO (``--no-ppo``: well under a minute).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from agents.cli.datasets import print_table

#: The demo's PPO budget: per-λ policies for three cost weights, one λ-conditioned policy for the whole grid.
DEMO_PPO_COST_WEIGHTS = (0.05, 0.2, 1.0)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train and compare every router on the bundled sample; print the table, write the plot",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path("routing-env-results"), help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ppo-timesteps", type=int, default=30_000, help="steps per per-λ PPO policy")
    p.add_argument("--ppo-conditioned-timesteps", type=int, default=80_000)
    p.add_argument(
        "--queries",
        type=int,
        default=None,
        help="use a random subset of this many queries (a quicker, noisier look)",
    )
    p.add_argument(
        "--no-ppo", action="store_true", help="skip the PPO routers (the rest takes well under a minute)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agents.studies.compare import ROUTERS, CompareConfig, run_frontier_study
    from routing_env.data import load_sample
    from routing_env.errors import ConfigurationError

    if args.ppo_timesteps < 1 or args.ppo_conditioned_timesteps < 1:
        raise ConfigurationError(
            f"--ppo-timesteps and --ppo-conditioned-timesteps must be ≥ 1, got {args.ppo_timesteps} and "
            f"{args.ppo_conditioned_timesteps}"
        )
    routers = tuple(r for r in ROUTERS if not (args.no_ppo and r.startswith("ppo")))
    config = CompareConfig(
        routers=routers,
        seed=args.seed,
        ppo_timesteps=args.ppo_timesteps,
        ppo_cost_weights=DEMO_PPO_COST_WEIGHTS,
        ppo_conditioned_timesteps=args.ppo_conditioned_timesteps,
    )
    start = time.perf_counter()
    dataset = load_sample()
    if args.queries is not None:
        if not 100 <= args.queries <= dataset.n_queries:
            raise ConfigurationError(f"--queries must be in [100, {dataset.n_queries}], got {args.queries}")
        rng = np.random.default_rng(args.seed)
        dataset = dataset.select(np.sort(rng.choice(dataset.n_queries, size=args.queries, replace=False)))
    print(f"bundled sample: {dataset}")
    result, paths = run_frontier_study(dataset, "sample", args.out, config, stem="demo", log=print)
    table = result.table.copy()
    print_table(
        table, title="routers on the held-out split (AIQ, gap closed, cost saved at 95% of the best model)"
    )
    print_table(result.rewards.reset_index(), title="mean reward per cost weight λ")
    check = result.ppo_vs_best_bandit()
    if not check.empty:
        print_table(check.reset_index(), title="PPO against the best bandit (shortfall ≤ 0.02 = within 2%)")
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}")
    print(f"done in {time.perf_counter() - start:.0f}s")
    return 0
