"""``routing-env train``: choose and fit a router on your own logs, and save it with its featurizer.

::

    routing-env train LOGS --out DIR [--router auto|task-table|cluster|linucb|…] [--candidates a,b,…]
                      [--cost-weight λ | --cost-weight-range LO HI] [--featurizer text|embeddings]
                      [--features auto|prompts|logs] [--text-residual auto|off] [--test-size 0.25] [--cv 5]
                      [--seed 0]
                      [--root DIR] [--format FORMAT --split S --task T] [--force] [--quiet]

- Load ``LOGS``: a dataset name of :func:`routing_env.data.load_dataset` (with ``--root``), a canonical
  ``.parquet``/``.csv``/``.jsonl`` file, or with ``--format`` a third-party file or folder.
- Split off a test share by prompt (a duplicated prompt never straddles the split; tasks keep their shares).
- Features: with ``--features auto`` (default) and prompts in the logs, the ``--featurizer`` (TF-IDF + SVD
  ``text``, or ``embeddings``: all-MiniLM-L6-v2, needs the embeddings extra) fitted on the training prompts plus
  the task one-hot; on full-information logs (``--text-residual auto``, default) one more column per model, its
  quality predicted from the prompt's sparse TF-IDF (:func:`routing_env.data.stack_text_residual`: out of fold on
  the training split). The policy carries the featurizer, so ``routing-env serve --policy DIR`` routes
  ``{"prompt": …}``. Logs without prompts use their own features.
- ``--router auto`` (default): :func:`agents.select_router` fits every candidate family with its own grouped
  cross-validation and keeps the best by cross-validated AIQ over the λ range (mean reward for one
  ``--cost-weight``), each candidate also with per-query costs from :class:`agents.routers.CostModel`; a family
  name fits that family alone (its hyperparameters still chosen by CV, its own cost estimates).
- Print the CV table and the test-split figures; write the policy, ``training.json`` (the split, the λ grid, the
  choice) and ``cv_table.csv`` into ``DIR``. ``routing-env evaluate LOGS --policy DIR`` scores the same split.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from agents.cli.common import print_table
from agents.cli.evaluate import (
    TRAINING_FILE,
    add_cost_weight_arguments,
    add_log_arguments,
    add_logs_command,
    cost_weight_grid,
    read,
    report_bandit_logs,
    report_full_information,
)
from routing_env.errors import ConfigurationError

#: Featurizers ``--featurizer`` names.
FEATURIZERS = ("text", "embeddings")


def _families() -> tuple[str, ...]:
    from agents.routers.selection import ROUTER_FAMILIES

    return tuple(ROUTER_FAMILIES)


def add_parser(sub: argparse._SubParsersAction) -> None:
    what = "choose a router for your logs by cross-validation, fit it and save it with its featurizer"
    p = add_logs_command(sub, "train", what, __doc__)
    p.add_argument("--out", required=True, type=Path, help="policy directory to write")
    p.add_argument(
        "--router",
        default="auto",
        choices=("auto", *_families()),
        help="auto: the best of --candidates by cross-validation; or one router family",
    )
    p.add_argument(
        "--candidates",
        default=None,
        help="comma-separated families --router auto compares",
    )
    add_cost_weight_arguments(p)
    p.add_argument("--featurizer", default="text", choices=FEATURIZERS, help="features from the prompts")
    p.add_argument(
        "--features",
        default="auto",
        choices=("auto", "prompts", "logs"),
        help="derive features from the prompts (prompts), keep the logs' own (logs), or prompts when the logs "
        "have them (auto)",
    )
    p.add_argument(
        "--text-residual",
        default="auto",
        choices=("auto", "off"),
        help="auto: on full-information logs, stack one column per model predicting its quality from the "
        "prompt's sparse TF-IDF (out of fold on the training split); off: the featurizer's columns alone",
    )
    p.add_argument("--test-size", type=float, default=0.25, help="held-out share of the queries")
    p.add_argument("--cv", type=int, default=5, help="folds of the grouped cross-validation")
    p.add_argument("--seed", type=int, default=0, help="seeds the split, the folds and the routers")
    add_log_arguments(p)
    p.add_argument("--force", action="store_true", help="overwrite a policy already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars or messages (tables still print)")
    p.set_defaults(func=run)


# ---------------------------------------------------------------------------------------------- steps
def _features(dataset: Any, args: argparse.Namespace) -> tuple[Any, Any, Any, str]:
    """``(train, test, featurizer, description)`` after the split and the featurization."""
    from routing_env.data import (
        QueryFeaturizer,
        SentenceEmbeddingFeaturizer,
        TextResidualFeaturizer,
        split_and_featurize,
        stack_text_residual,
    )

    use_prompts = args.features == "prompts" or (args.features == "auto" and dataset.prompts is not None)
    if use_prompts:
        if dataset.prompts is None:
            raise ConfigurationError("--features prompts needs logs with prompts, and these have none")
        featurizer = (
            QueryFeaturizer(SentenceEmbeddingFeaturizer(unit_variance=True))
            if args.featurizer == "embeddings"
            else None
        )
        split = split_and_featurize(dataset, test_size=args.test_size, seed=args.seed, featurizer=featurizer)
        what = (
            f"{args.featurizer} featurizer fitted on the training prompts ({split.train.n_features} features)"
        )
        if args.text_residual == "auto" and split.train.is_full_information:
            split = stack_text_residual(split, n_splits=max(2, args.cv), seed=args.seed)
            stacker = cast(TextResidualFeaturizer, split.featurizer)
            off = "; inf: no residual" if stacker.penalty_ == float("inf") else ""
            what += (
                f", and {len(stacker.models_)} text-residual columns (ridge penalty {stacker.penalty_:g}, chosen "
                f"by {max(2, args.cv)}-fold CV{off})"
            )
        return split.train, split.test, split.featurizer, what
    if dataset.n_features == 0:
        raise ConfigurationError(
            "the logs have neither features nor prompts to derive them from; add x_0 … x_{d-1} or prompt columns"
        )
    train, test = dataset.split(test_size=args.test_size, seed=args.seed)
    return train, test, None, f"the logs' own {dataset.n_features} features (the policy needs them to route)"


def _select(
    train: Any,
    weights: tuple[float, ...] | None,
    args: argparse.Namespace,
    featurizer: Any,
    step: Callable[[str], None],
) -> Any:
    from agents.routers.selection import DEFAULT_CANDIDATES, select_router

    if args.router != "auto":
        candidates: tuple[str, ...] = (args.router,)
    elif args.candidates:
        candidates = tuple(c.strip() for c in str(args.candidates).split(",") if c.strip())
    else:
        candidates = DEFAULT_CANDIDATES
    # A named family is fitted alone, as asked: no pairing with the cost model, so a bandit stays a bandit that
    # keeps learning when served.
    options = {
        "seed": args.seed,
        "featurizer": featurizer,
        "progress": step,
        "cost_model": args.router == "auto",
    }
    return select_router(train, candidates, weights, args.cv, **options)


#: How each ``--router`` choice is trained: ``(train, λ grid or None, args, featurizer, progress) -> Selection``.
#: A new trainer (e.g. PPO) is one more entry here and one more ``--router`` choice.
TRAINERS: dict[str, Callable[..., Any]] = {"auto": _select, **{name: _select for name in _families()}}


class _Progress:
    """One progress bar over the steps of a run (silent with ``--quiet``)."""

    def __init__(self, total: int, quiet: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, disable=quiet, file=sys.stderr, unit="step", leave=False)
        self.started = False

    def __call__(self, what: str) -> None:
        if self.started:
            self.bar.update(1)
        self.started = True
        self.bar.set_description(what)

    def close(self) -> None:
        self.bar.update(self.bar.total - self.bar.n)
        self.bar.close()


# ---------------------------------------------------------------------------------------------- the command
def run(args: argparse.Namespace) -> int:
    if (args.out / "policy.json").exists() and not args.force:
        raise ConfigurationError(f"{args.out} already holds a policy; pass --force to overwrite it")
    if not 0.0 < args.test_size < 1.0:
        raise ConfigurationError(f"--test-size must be in (0, 1), got {args.test_size}")
    weights = cost_weight_grid(args.cost_weight, args.cost_weight_range)
    say = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    n_candidates = 1 if args.router != "auto" else len((args.candidates or "a,b,c,d,e").split(","))
    progress = _Progress(total=2 + n_candidates, quiet=args.quiet)
    start = time.perf_counter()
    try:
        progress("loading logs")
        dataset, reader = read(args)
        progress("featurizing")
        train, test, featurizer, features = _features(dataset, args)
        selection = TRAINERS[args.router](train, weights, args, featurizer, progress)
    finally:
        progress.close()
    say(f"{dataset}")
    say(
        f"split: {train.n_queries} training / {test.n_queries} test queries (by prompt); features: {features}"
    )
    policy = selection.router
    table = selection.table.drop(columns=["kind", "cv_se"])
    # One column for the one-standard-error rule: shortfall from the best CV score ± its standard error.
    table["cv_behind_best"] = [
        "" if not math.isfinite(b) else f"{b:.3g} ± {e:.2g}"
        for b, e in zip(selection.table["cv_behind_best"], selection.table["cv_se"])
    ]
    metric = "AIQ" if selection.metric == "aiq" else "mean reward"
    print_table(table, title=f"cross-validation on the training split ({args.cv} grouped folds, {metric})")
    name = str(table.loc[table["selected"], "router"].iloc[0])
    print(
        f"chosen: {name} — {type(policy).__name__}({', '.join(f'{k}={v}' for k, v in policy.chosen().items())})"
    )
    title = f"{name} on the test split"
    figures: dict[str, float] = {}
    args.out.mkdir(parents=True, exist_ok=True)
    if test.is_full_information:
        figures = report_full_information(
            policy,
            test,
            selection.cost_weights,
            plot=args.out / "test_plot.png",
            csv=args.out / "test_table.csv",
            title=title,
        )
    elif test.has_propensities:
        report_bandit_logs(
            policy, test, selection.cost_weights[0], seed=args.seed, csv=args.out / "test_ope.csv"
        )
    policy.save(args.out)
    selection.table.to_csv(args.out / "cv_table.csv", index=False)
    record = {
        "logs": str(args.logs),
        "reader": reader,
        "seed": args.seed,
        "test_size": args.test_size,
        "cv": args.cv,
        "cost_weights": list(selection.cost_weights),
        "metric": selection.metric,
        "router": name,
        "kind": type(policy).__name__,
        "chosen": {k: v for k, v in policy.chosen().items()},
        "features": features,
        "n_train": train.n_queries,
        "n_test": test.n_queries,
        "test": figures,
    }
    (args.out / TRAINING_FILE).write_text(json.dumps(record, indent=1, default=str))
    print(f"saved {type(policy).__name__} to {args.out} in {time.perf_counter() - start:.1f}s")
    if featurizer is not None:
        print(
            f'serve it: routing-env serve --policy {args.out} --store decisions.db   (POST /v1/route {{"prompt": ...}})'
        )
    return 0
