"""``routing-env ope``: estimate a saved policy's value on bandit logs (off-policy evaluation).

::

    routing-env ope --log logs.parquet --policy runs/linucb [--cost-weight 0.5]
        [--estimators DM,IPS,DR] [--n-bootstrap 1000] [--alpha 0.05]
        [--cost-scale max_mean] [--position-feature position] [--max-weight 100]
        [--min-pscore 1e-6] [--root ../datasets] [--csv table.csv]

``--log`` is a canonical file (``.parquet``/``.csv``/``.jsonl``) holding ``logged`` and ``propensity`` columns,
or a dataset name known to ``routing_env.data.load_dataset`` (e.g. ``open-bandit-random`` with ``--root``).

The reward is ``quality − λ·cost/cost_scale``. Unless ``--cost-weight`` says otherwise, λ is the policy's own
``cost_weight`` (the λ it was trained for) and the cost scale the policy's fitted one, as ``routing-env serve``
uses them; the command prints which λ and scale it used.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any

from agents.cli.common import add_command, add_data_options, cli_text, print_table, read_logs
from routing_env.data.dataset import CostScale
from routing_env.errors import ConfigurationError, OPEWarning
from routing_env.ope import (
    DEFAULT_ESTIMATORS,
    ESTIMATORS,
    BanditFeedback,
    estimate_policy_value,
    make_estimator,
)
from routing_env.ope.estimators import OffPolicyEstimator
from routing_env.policy import load_policy


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "ope", "estimate a saved policy's value on bandit logs (IPS, SNIPS, DR, ...)", __doc__
    )
    p.add_argument(
        "--log", required=True, help="bandit logs: a canonical file with propensities, or a dataset name"
    )
    p.add_argument("--policy", required=True, help="directory of a saved policy (its save(path) output)")
    p.add_argument(
        "--cost-weight",
        type=float,
        default=None,
        help="λ of quality − λ·cost/cost_scale (default: the policy's cost_weight, else 0)",
    )
    p.add_argument(
        "--estimators",
        default=",".join(DEFAULT_ESTIMATORS),
        help=f"comma-separated, from {', '.join(ESTIMATORS)}",
    )
    p.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap replicates, 0 to skip")
    p.add_argument("--alpha", type=float, default=0.05, help="intervals cover 1 − alpha")
    p.add_argument(
        "--cost-scale",
        default=None,
        help="USD per unit of λ, or max_mean (the mean cost of the logs' most expensive model); default: the "
        "policy's fitted cost scale, else max_mean",
    )
    p.add_argument(
        "--position-feature", default=None, help="feature column holding the slate position, if any"
    )
    p.add_argument(
        "--max-weight",
        type=float,
        default=None,
        help="clip the importance weights of the weighting estimators at this value (bias for variance)",
    )
    p.add_argument(
        "--min-pscore",
        type=float,
        default=None,
        help="floor the propensities at this value before weighting (for logs with rounded-to-0 propensities)",
    )
    add_data_options(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and of the reward-model folds")
    p.add_argument("--csv", type=Path, default=None, help="also write the table to this CSV file")
    p.set_defaults(func=run)


def _cost_weight(args: argparse.Namespace, policy: Any) -> tuple[float, str]:
    """``(λ, where it comes from)``: ``--cost-weight``, else the policy's own ``cost_weight``, else 0."""
    if args.cost_weight is not None:
        return float(args.cost_weight), "--cost-weight"
    own = getattr(policy, "cost_weight", None)
    if isinstance(own, (int, float)) and math.isfinite(own):
        return float(own), "the policy's cost_weight, the λ it was trained for; --cost-weight overrides"
    return 0.0, "the policy has no cost_weight; --cost-weight sets one"


def _cost_scale(args: argparse.Namespace, policy: Any) -> tuple[CostScale, str]:
    """``(cost scale, where it comes from)``: ``--cost-scale``, else the policy's fitted scale, else max_mean."""
    text = args.cost_scale
    if text is None:
        own = getattr(policy, "cost_scale_", None)
        if isinstance(own, (int, float)) and math.isfinite(own) and own > 0:
            return float(own), "the policy's fitted cost scale"
        return "max_mean", "max_mean: the mean cost of the most expensive model in the logs"
    if text == "max_mean":
        return "max_mean", "--cost-scale max_mean: the mean cost of the most expensive model in the logs"
    try:
        return float(text), "--cost-scale"
    except ValueError:
        raise ConfigurationError(
            f"--cost-scale must be 'max_mean' or a positive number, got {text!r}"
        ) from None


def _estimators(args: argparse.Namespace) -> list[OffPolicyEstimator]:
    """The estimators ``--estimators`` names, with ``--max-weight``/``--min-pscore`` on those that weight."""
    names = [s.strip() for s in str(args.estimators).split(",") if s.strip()]
    options = {
        k: v for k, v in (("max_weight", args.max_weight), ("min_pscore", args.min_pscore)) if v is not None
    }
    ests = []
    for name in names:
        est = make_estimator(name)
        if options and all(hasattr(est, k) for k in options):
            est = dataclasses.replace(est, **options)
        ests.append(est)
    return ests


def run(args: argparse.Namespace) -> int:
    dataset = read_logs(args.log, args)
    if not dataset.has_propensities:
        raise ConfigurationError(
            f"--log {args.log}: routing-env ope needs bandit logs, with the logged model and its propensity on "
            "each query ('logged' and 'propensity' columns), and these logs have none. Full-information logs need "
            "no off-policy estimate: score a policy on them exactly (routing_env.metrics.evaluate_policy)"
        )
    policy = load_policy(args.policy)
    weight, weight_source = _cost_weight(args, policy)
    scale, scale_source = _cost_scale(args, policy)
    feedback = BanditFeedback.from_dataset(
        dataset, cost_weight=weight, cost_scale=scale, position_feature=args.position_feature
    )
    ests = _estimators(args)
    print(repr(feedback))
    print(f"policy: {type(policy).__name__} from {args.policy}")
    print(
        f"reward: quality − λ·cost/cost_scale with λ = {weight:g} ({weight_source}) and cost_scale = "
        f"{feedback.cost_scale:.4g} USD ({scale_source})"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OPEWarning)
        table = estimate_policy_value(
            policy, feedback, ests, n_bootstrap=args.n_bootstrap, alpha=args.alpha, seed=args.seed
        )
    diag = table.attrs["diagnostics"]
    level = f"{1 - args.alpha:.0%}"
    hidden = ["n_rounds", "cost_weight"] + (
        [c for c in table.columns if c.startswith("boot_")] if not args.n_bootstrap else []
    )
    print_table(
        table.drop(columns=hidden),
        title=f"off-policy estimates at λ = {weight:g} ({level} intervals: "
        + ("ci = normal, boot_ci = bootstrap)" if args.n_bootstrap else "normal)"),
    )
    print(
        f"diagnostics: ESS {diag.ess:.1f} of {diag.n_rounds} rounds, mean weight {diag.mean_weight:.3f}, "
        f"max weight {diag.max_weight:.3g}, min propensity {diag.min_propensity:.3g}"
    )
    for w in caught:
        if issubclass(w.category, OPEWarning):
            print(f"warning: {cli_text(str(w.message), getattr(args, '_cli_parser', None))}")
        else:  # not ours to format: hand it back to the warnings machinery unchanged
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 0
