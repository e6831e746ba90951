"""``routing-env ope``: estimate a saved policy's value on bandit logs (off-policy evaluation).

::

    routing-env ope --log logs.parquet --policy runs/linucb [--cost-weight 0.5] [--estimators DM,IPS,DR]
                    [--n-bootstrap 1000] [--alpha 0.05] [--cost-scale max_mean] [--position-feature position]
                    [--root ../datasets] [--csv table.csv]

``--log`` is a canonical file (``.parquet``/``.csv``/``.jsonl``) holding ``logged`` and ``propensity`` columns,
or a dataset name known to ``routing_env.data.load_dataset`` (e.g. ``open-bandit-random`` with ``--root``).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from agents.cli.datasets import print_table
from routing_env.data import load_dataset
from routing_env.data.dataset import CostScale
from routing_env.errors import ConfigurationError, OPEWarning
from routing_env.ope import DEFAULT_ESTIMATORS, ESTIMATORS, BanditFeedback, estimate_policy_value
from routing_env.policy import load_policy


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ope",
        help="estimate a saved policy's value on bandit logs (IPS, SNIPS, DR, ...)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--log", required=True, help="bandit logs: a canonical file with propensities, or a dataset name"
    )
    p.add_argument("--policy", required=True, help="directory of a saved policy (its save(path) output)")
    p.add_argument(
        "--cost-weight", type=float, default=0.0, help="λ of quality − λ·cost/cost_scale (default 0)"
    )
    p.add_argument(
        "--estimators",
        default=",".join(DEFAULT_ESTIMATORS),
        help=f"comma-separated, from {', '.join(ESTIMATORS)} (default: %(default)s)",
    )
    p.add_argument(
        "--n-bootstrap", type=int, default=1000, help="bootstrap replicates, 0 to skip (default 1000)"
    )
    p.add_argument("--alpha", type=float, default=0.05, help="intervals cover 1 − alpha (default 0.05)")
    p.add_argument("--cost-scale", default="max_mean", help="USD per unit of cost weight, or 'max_mean'")
    p.add_argument(
        "--position-feature", default=None, help="feature column holding the slate position, if any"
    )
    p.add_argument("--root", default=None, help="folder of third-party datasets, for dataset names")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and of the reward-model folds")
    p.add_argument("--csv", type=Path, default=None, help="also write the table to this CSV file")
    p.set_defaults(func=run)


def _cost_scale(text: str) -> CostScale:
    if text == "max_mean":
        return "max_mean"
    try:
        return float(text)
    except ValueError:
        raise ConfigurationError(
            f"--cost-scale must be 'max_mean' or a positive number, got {text!r}"
        ) from None


def run(args: argparse.Namespace) -> int:
    dataset = load_dataset(args.log, root=args.root)
    feedback = BanditFeedback.from_dataset(
        dataset,
        cost_weight=args.cost_weight,
        cost_scale=_cost_scale(args.cost_scale),
        position_feature=args.position_feature,
    )
    policy = load_policy(args.policy)
    names = [s.strip() for s in str(args.estimators).split(",") if s.strip()]
    print(feedback)
    print(f"policy: {type(policy).__name__} from {args.policy}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OPEWarning)
        table = estimate_policy_value(
            policy,
            feedback,
            names,
            n_bootstrap=args.n_bootstrap,
            alpha=args.alpha,
            seed=args.seed,
        )
    diag = table.attrs["diagnostics"]
    level = f"{1 - args.alpha:.0%}"
    print_table(
        table.drop(columns=["n_rounds", "cost_weight"]),
        title=f"off-policy estimates at cost_weight={args.cost_weight} ({level} intervals: ci = normal, boot_ci = bootstrap)",
    )
    print(
        f"diagnostics: ESS {diag.ess:.1f} of {diag.n_rounds} rounds, mean weight {diag.mean_weight:.3f}, "
        f"max weight {diag.max_weight:.3g}, min propensity {diag.min_propensity:.3g}"
    )
    for w in caught:
        if issubclass(w.category, OPEWarning):
            print(f"warning: {w.message}")
        else:  # not ours to format: hand it back to the warnings machinery unchanged
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 0
