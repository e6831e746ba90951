"""``routing-env evaluate``: score a saved policy on logs — the test split it was trained beside, or any logs.

::

    routing-env evaluate LOGS --policy DIR [--rows auto|held-out|all] [--cost-weight λ | --cost-weight-range LO HI]
                         [--plot PATH] [--csv PATH] [--root DIR] [--format FORMAT --split S --task T] [--quiet]

- ``LOGS``: a dataset name of :func:`routing_env.data.load_dataset` (with ``--root``), a canonical
  ``.parquet``/``.csv``/``.jsonl`` file, or with ``--format`` a third-party file or folder (``--format llmrouter
  --split test`` reads LLMRouter's test file).
- ``--rows auto`` (default): when ``DIR/training.json`` (written by ``routing-env train``) names the same logs read
  the same way, the held-out split of that run (same seed and share, so no training query is scored); otherwise
  all of ``LOGS``.
- Features: from the prompts with the policy's own featurizer when it carries one, else the logs' features.
- Full-information logs: per λ the expected quality, cost (USD), reward and call shares against the best single
  model and the oracle; then AIQ and gap closed over the λ grid, and a cost–quality plot.
- Bandit logs (one logged model per query, with propensities): the off-policy estimates at ``--cost-weight``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agents.cli.common import FORMATS, add_command, add_data_options, print_table, read_logs
from routing_env.errors import ConfigurationError, ModelMismatchError, OPEWarning, ShapeError

#: Written into the policy directory by ``routing-env train``: what was trained on, how it was split.
TRAINING_FILE = "training.json"
#: What ``--rows`` chooses between.
ROWS_HELP = (
    "rows to score: the training run's held-out split, all rows, or held-out when DIR/training.json names these "
    "logs read the same way (auto)"
)
#: Points of the λ grid a router is evaluated on between the ends of its range.
EVALUATION_POINTS = 48


def add_parser(sub: argparse._SubParsersAction) -> None:
    what = "score a saved policy on logs: quality, cost, reward, call shares, AIQ, gap closed (OPE on bandit logs)"
    p = add_logs_command(sub, "evaluate", what, __doc__)
    p.add_argument("--policy", required=True, type=Path, help="saved policy directory")
    p.add_argument("--rows", default="auto", choices=("auto", "held-out", "all"), help=ROWS_HELP)
    add_log_arguments(p)
    add_cost_weight_arguments(p)
    p.add_argument("--plot", type=Path, default=Path("evaluation.png"), help="cost–quality plot (PNG)")
    p.add_argument("--csv", type=Path, default=None, help="also write the per-λ table to this CSV file")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    p.set_defaults(func=run)


def add_logs_command(
    sub: argparse._SubParsersAction, name: str, what: str, doc: str | None
) -> argparse.ArgumentParser:
    """Register a subcommand that reads logs: its parser, with the positional ``logs``."""
    p = add_command(sub, name, what, doc)
    p.add_argument(
        "logs", help="a dataset name (with --root), a canonical .parquet/.csv/.jsonl file, or a path"
    )
    return p


def add_log_arguments(p: argparse.ArgumentParser) -> None:
    """How the logs are read (the CLI's data options, ``--format`` and its loader options), shared with
    ``routing-env train``."""
    add_data_options(p)
    p.add_argument("--format", choices=FORMATS, default=None, help="read LOGS with this loader (a path)")
    p.add_argument(
        "--split", default="train", choices=("train", "test", "all"), help="for --format llmrouter"
    )
    p.add_argument(
        "--task", default="mmlu", choices=("mmlu", "gsm8k", "mt_bench"), help="for --format routellm"
    )


def read(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The logs ``args`` name, and how they were read (recorded in ``training.json``)."""
    reader = {
        "format": args.format,
        "split": args.split if args.format == "llmrouter" else None,
        "task": args.task if args.format == "routellm" else None,
        "normalize": args.normalize,
        "quality_range": None if args.quality_range is None else list(args.quality_range),
        "complete_only": bool(args.complete_only),
    }
    return read_logs(args.logs, args, fmt=args.format, task=args.task, split=args.split), reader


def add_cost_weight_arguments(p: argparse.ArgumentParser) -> None:
    """``--cost-weight`` / ``--cost-weight-range``, shared with ``routing-env train``."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--cost-weight", type=float, default=None, help="one λ of quality − λ·cost/cost_scale")
    group.add_argument(
        "--cost-weight-range",
        type=float,
        nargs=2,
        metavar=("LO", "HI"),
        default=None,
        help="a range of λ the router serves (scored by AIQ over it)",
    )


# ---------------------------------------------------------------------------------------------- shared helpers
def cost_weight_grid(
    cost_weight: float | None, cost_range: Sequence[float] | None
) -> tuple[float, ...] | None:
    """The λ grid of ``--cost-weight`` / ``--cost-weight-range`` (``None`` when neither was given)."""
    if cost_weight is not None:
        if not (math.isfinite(cost_weight) and cost_weight >= 0):
            raise ConfigurationError(f"--cost-weight must be a finite number ≥ 0, got {cost_weight!r}")
        return (float(cost_weight),)
    if cost_range is None:
        return None
    lo, hi = (float(v) for v in cost_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi):
        raise ConfigurationError(f"--cost-weight-range needs 0 ≤ LO < HI, got {lo!r} {hi!r}")
    return dense_grid((lo, hi), 16)


def dense_grid(weights: Sequence[float], points: int = EVALUATION_POINTS) -> tuple[float, ...]:
    """``points`` λ values log-spaced over the positive range of ``weights``, plus its lower end (0 included)."""
    ws = sorted(float(w) for w in weights)
    if len(ws) == 1:
        return (ws[0],)
    positive = [w for w in ws if w > 0]
    lo = positive[0] if ws[0] == 0 and len(positive) > 1 else max(ws[0], ws[-1] / 1e3)
    grid = np.geomspace(lo, ws[-1], points).tolist()
    return tuple(sorted({ws[0], *grid}))


def probabilities_at(policy: Any, features: np.ndarray, cost_weight: float) -> np.ndarray:
    """``(n, K)`` routing distribution of ``policy`` at λ = ``cost_weight`` (fixed policies ignore λ)."""
    if hasattr(policy, "with_cost_weight"):
        return np.asarray(policy.with_cost_weight(cost_weight).action_probabilities(features))
    params = inspect.signature(policy.action_probabilities).parameters
    if "cost_weight" in params:
        return np.asarray(policy.action_probabilities(features, cost_weight=cost_weight))
    return np.asarray(policy.action_probabilities(features))


@dataclass(frozen=True)
class Sweep:
    """A policy's exact operating points on full-information logs over a λ grid.

    Attributes:
        cost_weights: ``(L,)`` λ values.
        cost, quality: ``(L, n)`` expected USD cost and quality of each query at each λ.
        shares: ``(L, K)`` call share of each model.
    """

    cost_weights: tuple[float, ...]
    cost: np.ndarray
    quality: np.ndarray
    shares: np.ndarray

    @property
    def points(self) -> np.ndarray:
        """``(L, 2)`` (mean cost, mean quality)."""
        return np.stack([self.cost.mean(axis=1), self.quality.mean(axis=1)], axis=1)


def sweep(policy: Any, dataset: Any, cost_weights: Sequence[float]) -> Sweep:
    """Score ``policy`` exactly on full-information ``dataset`` at every λ of ``cost_weights``."""
    q, c, shares = [], [], []
    for lam in cost_weights:
        p = probabilities_at(policy, dataset.features, lam)
        q.append((p * dataset.quality).sum(axis=1))
        c.append((p * dataset.cost).sum(axis=1))
        shares.append(p.mean(axis=0))
    return Sweep(tuple(float(w) for w in cost_weights), np.array(c), np.array(q), np.array(shares))


def frontier_figures(points: np.ndarray, dataset: Any) -> dict[str, float]:
    """AIQ and gap closed (RouterBench) of operating ``points (L, 2)`` on full-information ``dataset``, the hull
    anchored at the cheapest single model, over the single models' cost range; with the AIQ of the single models'
    hull (``aiq_single_models``) and of the oracle (``aiq_oracle``) between which the gap is measured."""
    from routing_env.metrics import aiq, gap_closed, oracle_points, single_model_points

    singles = single_model_points(dataset)
    anchor = singles[int(np.argmin(singles[:, 0]))]
    cost_range = (float(singles[:, 0].min()), float(singles[:, 0].max()))
    pts = np.vstack([points, anchor])
    # The oracle can always answer as the cheapest model does.
    oracle = np.vstack([np.array([e.point for e in oracle_points(dataset)]), anchor])
    try:
        gap = gap_closed(pts, singles, oracle, cost_range)
    except ConfigurationError:  # the oracle does no better than the single models: nothing to close
        gap = math.nan
    return {
        "aiq": aiq(pts, cost_range),
        "gap_closed": gap,
        "aiq_single_models": aiq(singles, cost_range),
        "aiq_oracle": aiq(oracle, cost_range),
    }


def align_models(dataset: Any, policy: Any) -> Any:
    """``dataset`` over the policy's models in the policy's order (a reordered file is fine; a missing model
    is not)."""
    models = tuple(policy.models)
    if tuple(dataset.models) == models:
        return dataset
    missing = [m for m in models if m not in dataset.models]
    if missing:
        raise ModelMismatchError(
            f"the policy routes over {list(models)}, but the logs have no outcomes of {missing}"
        )
    return dataset.subset_models(models)


def policy_features(dataset: Any, policy: Any) -> Any:
    """``dataset`` carrying the features the policy expects: its featurizer applied to the prompts when it has
    one (and the logs have prompts), else the logs' own features (checked against the policy's width)."""
    featurizer = getattr(policy, "featurizer", None)
    if featurizer is not None and dataset.prompts is not None:
        from routing_env.data import featurize

        return featurize(dataset, featurizer)
    width = getattr(policy, "n_features", None)
    if width is not None and dataset.n_features != width:
        if featurizer is not None:
            raise ShapeError(
                f"the policy derives its {width} features from prompts, but the logs have no prompts (and "
                f"features of width {dataset.n_features})"
            )
        raise ShapeError(
            f"the policy expects features of width {width} and carries no featurizer for prompts, but the logs "
            f"have features of width {dataset.n_features}"
        )
    return dataset


def report_full_information(
    policy: Any,
    test: Any,
    cost_weights: Sequence[float],
    *,
    plot: Path | None,
    csv: Path | None,
    title: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Print the per-λ table and the AIQ / gap closed of ``policy`` on full-information ``test``; write the plot
    and the CSV. Returns the summary figures."""
    grid = dense_grid(cost_weights)
    run = sweep(policy, test, grid)
    scale = float(getattr(policy, "cost_scale_", None) or test.resolve_cost_scale("max_mean"))
    rows = []
    for i in _table_rows(grid):
        lam = grid[i]
        rewards = test.rewards(lam, cost_scale=scale)
        best = int(np.nanargmax(np.nanmean(rewards, axis=0)))
        oracle = float(rewards[np.arange(test.n_queries), test.oracle_actions(lam, cost_scale=scale)].mean())
        shares = run.shares[i]
        top = np.argsort(-shares)[:3]
        rows.append(
            {
                "λ": lam,
                "quality": float(run.quality[i].mean()),
                "cost_usd": float(run.cost[i].mean()),
                "reward": float(run.quality[i].mean() - lam * run.cost[i].mean() / scale),
                "best_single": float(np.nanmean(rewards[:, best])),
                "oracle": oracle,
                "calls": ", ".join(f"{test.models[j]} {shares[j]:.0%}" for j in top if shares[j] >= 0.005),
            }
        )
    table = pd.DataFrame(rows)
    print_table(
        table, title=f"{title}: mean reward per λ (best_single: the best model at that λ on these logs)"
    )
    figures = frontier_figures(run.points, test)
    summary = pd.DataFrame([{"router": type(policy).__name__, **figures, **(extra or {})}])
    print_table(summary, title=f"{title}: AIQ and gap closed over λ ∈ [{grid[0]:.3g}, {grid[-1]:.3g}]")
    if csv is not None:
        csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(csv, index=False)
        print(f"wrote {csv}")
    if plot is not None:
        write_plot(run, test, plot, title)
        print(f"wrote {plot}")
    return figures


def _table_rows(grid: Sequence[float], most: int = 12) -> list[int]:
    """Indices of at most ``most`` λ values spread over ``grid`` (the printed table; the CSV has them all)."""
    if len(grid) <= most:
        return list(range(len(grid)))
    return sorted({round(float(i)) for i in np.linspace(0, len(grid) - 1, most)})


def write_plot(run: Sweep, test: Any, path: Path, title: str) -> None:
    """Cost–quality plot: the router's sweep, the single models and the oracle's frontier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from routing_env.metrics import oracle_points, single_model_points

    singles = single_model_points(test)
    oracle = np.array([e.point for e in oracle_points(test)])
    fig, ax = plt.subplots(figsize=(7.5, 5))
    pts = run.points[np.argsort(run.points[:, 0])]
    ax.plot(pts[:, 0], pts[:, 1], "o-", ms=3, label="router (λ sweep)")
    ax.plot(oracle[:, 0], oracle[:, 1], "k--", lw=1, label="oracle")
    ax.scatter(singles[:, 0], singles[:, 1], marker="*", s=120, c="k", label="single models", zorder=5)
    for (c, q), name in zip(singles, test.models):
        ax.annotate(str(name), (c, q), fontsize=7, xytext=(4, -8), textcoords="offset points")
    if singles[:, 0].min() > 0 and singles[:, 0].max() / singles[:, 0].min() > 20:
        ax.set_xscale("log")
    ax.set_xlabel("mean cost per query (USD)")
    ax.set_ylabel("mean quality")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_bandit_logs(policy: Any, logs: Any, cost_weight: float, *, seed: int, csv: Path | None) -> None:
    """Print the off-policy estimates of ``policy`` at λ = ``cost_weight`` on bandit ``logs``."""
    from routing_env.ope import DEFAULT_ESTIMATORS, BanditFeedback, estimate_policy_value

    scale = getattr(policy, "cost_scale_", None)
    feedback = BanditFeedback.from_dataset(
        logs, cost_weight=cost_weight, cost_scale=float(scale) if scale else "max_mean"
    )
    probs = probabilities_at(policy, feedback.features, cost_weight)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OPEWarning)
        table = estimate_policy_value(probs, feedback, list(DEFAULT_ESTIMATORS), n_bootstrap=200, seed=seed)
    print_table(
        table.drop(columns=["n_rounds", "cost_weight"]), title=f"off-policy estimates at λ={cost_weight:g}"
    )
    for w in caught:
        print(f"warning: {w.message}")
    if csv is not None:
        csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(csv, index=False)
        print(f"wrote {csv}")


def read_training(policy_dir: Path) -> dict[str, Any]:
    """``DIR/training.json`` written by ``routing-env train`` (empty when absent)."""
    path = policy_dir / TRAINING_FILE
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{path} is not valid JSON: {exc}") from None
    return doc if isinstance(doc, dict) else {}


def _say(args: argparse.Namespace) -> Callable[[str], None]:
    return (lambda _msg: None) if args.quiet else (lambda msg: print(msg, flush=True))


# ---------------------------------------------------------------------------------------------- the command
def run(args: argparse.Namespace) -> int:
    from routing_env.policy import load_policy

    say = _say(args)
    policy = load_policy(args.policy)
    training = read_training(args.policy)
    logs, reader = read(args)
    say(f"logs: {logs}")
    say(f"policy: {type(policy).__name__} from {args.policy}")
    same_logs = training.get("logs") == str(args.logs) and training.get("reader") == reader
    if args.rows == "held-out" or (args.rows == "auto" and same_logs):
        if not training:
            raise ConfigurationError(
                f"--rows held-out needs {args.policy / TRAINING_FILE} (written by routing-env train)"
            )
        _, logs = logs.split(test_size=float(training["test_size"]), seed=int(training["seed"]))
        say(f"scoring the held-out split of the training run: {logs.n_queries} queries")
    logs = policy_features(align_models(logs, policy), policy)
    weights = cost_weight_grid(args.cost_weight, args.cost_weight_range)
    if weights is None:
        weights = tuple(training.get("cost_weights") or ()) or (float(getattr(policy, "cost_weight", 0.0)),)
    title = f"{type(policy).__name__} on {Path(str(args.logs)).name}"
    if logs.is_full_information:
        report_full_information(policy, logs, weights, plot=args.plot, csv=args.csv, title=title)
    elif logs.has_propensities:
        lam = args.cost_weight if args.cost_weight is not None else float(getattr(policy, "cost_weight", 0.0))
        report_bandit_logs(policy, logs, lam, seed=int(training.get("seed", 0)), csv=args.csv)
    else:
        raise ConfigurationError(
            "these logs are partial without propensities: neither exact scoring (needs every model's outcome) "
            "nor off-policy evaluation (needs logged propensities) applies"
        )
    return 0
