"""Routers that generalise: every figure measured on queries no choice was made on.

1. **Held-out gap closed** on every shared dataset with several models (the bundled sample, LLMRouter's own
   train → test files, RouterArena): ``select_router`` with its defaults against ``TaskTableRouter`` and every
   candidate, each with a bootstrap interval over the test queries (and a paired one for the difference with
   the table), and the least margin over the best single model across the λ grid.
   LLMRouter's test file is small (381 queries): a 75/25 split of its train file (1,402 test queries) is scored too.
2. **Onboarding** on LLMRouter (both splits) and the sample: fit ``ClusterRouter`` on all models but one,
   ``add_model`` the left-out one from 200 labelled training queries, against a ``ClusterRouter`` fitted on all.
3. **RouteLLM MMLU with default settings** (70/30 split by prompt, the default text featurizer, ``select_router``
   defaults): the least GPT-4 call share that reaches 95% of GPT-4's accuracy.

Features are the default pipeline's (``routing-env train``'s): the default text featurizer fitted on the training
prompts, with the text-residual columns of :func:`routing_env.data.stack_text_residual` stacked on them (out of
fold on the training side; ``--no-text-residual`` leaves them out). The onboarding study uses the dense features
only: a left-out model's stacked column would carry its outcomes into the router that must not have seen it.

Every router is fitted on the training side only; all hyperparameters are chosen by cross-validation there. Each
router is scored at 48 λ values log-spaced over the λ range it was cross-validated on (routers set λ at decision
time), its cost–quality hull anchored at the cheapest single model.

    python experiments/generalisation.py                               # everything, ../shared/datasets
    python experiments/generalisation.py --only heldout --datasets sample
    python experiments/generalisation.py --max-queries 600 --bootstrap 50   # a quick look

Writes ``generalisation.md`` and ``generalisation_{heldout,per_lambda,onboarding,mmlu}.csv`` into ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agents import select_router
from agents.cli.evaluate import dense_grid, sweep
from agents.routers import BestSingleModel, ClusterRouter
from agents.routers._cv import default_cost_weights
from routing_env.data import LoggedDataset, load_dataset, load_llmrouter, stack_text_residual
from routing_env.data import featurizers as feat
from routing_env.errors import DataWarning
from routing_env.metrics import DEFAULT_ORACLE_WEIGHTS, aiq, cpt, gap_closed

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results"
HELDOUT = ("sample", "llmrouter", "llmrouter-split", "routerarena")
#: Where the onboarding study runs (datasets with more than two models).
ONBOARDING = ("llmrouter", "llmrouter-split", "sample")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets-root", type=Path, default=None)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bootstrap", type=int, default=1000, help="replicates of the intervals")
    p.add_argument(
        "--no-text-residual",
        action="store_true",
        help="route on the dense text features alone (no stacked text-residual columns)",
    )
    p.add_argument("--datasets", nargs="+", default=list(HELDOUT), choices=list(HELDOUT))
    p.add_argument(
        "--only",
        nargs="+",
        default=["heldout", "onboarding", "mmlu"],
        choices=["heldout", "onboarding", "mmlu"],
    )
    p.add_argument("--onboarding-queries", type=int, default=200)
    p.add_argument("--onboarding-draws", type=int, default=5, help="random labelled sets per left-out model")
    p.add_argument("--max-queries", type=int, default=None, help="subsample every dataset (smoke runs)")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------- data
def subsample(ds: LoggedDataset, n: int | None, seed: int) -> LoggedDataset:
    if n is None or ds.n_queries <= n:
        return ds
    return ds.select(np.sort(np.random.default_rng(seed).choice(ds.n_queries, size=n, replace=False)))


def heldout_split(
    name: str, root: Path, args: argparse.Namespace, stack: bool | None = None
) -> tuple[LoggedDataset, LoggedDataset, str]:
    """Train and test sides with features from the default text featurizer fitted on the training prompts, and
    the text-residual columns stacked on them (as ``routing-env train`` does) when ``stack`` (default: unless
    ``--no-text-residual``)."""
    stack = not args.no_text_residual if stack is None else stack
    if name == "llmrouter":
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", DataWarning
            )  # the overlap dropped from the test file is reported by the loader
            train = load_llmrouter(root / "llmrouter", split="train")
            test = load_llmrouter(root / "llmrouter", split="test").subset_models(train.models)
        train, test = (
            subsample(train, args.max_queries, args.seed),
            subsample(test, args.max_queries, args.seed),
        )
        n_comp = int(max(1, min(64, train.n_queries // 4)))
        featurizer = feat.QueryFeaturizer(feat.TextFeaturizer(n_components=n_comp, seed=args.seed))
        featurizer.fit([str(p) for p in train.prompts], list(train.tasks))
        split = feat.FeaturizedSplit(
            feat.featurize(train, featurizer), feat.featurize(test, featurizer), featurizer
        )
        if stack:
            split = stack_text_residual(split, seed=args.seed)
        return split.train, split.test, "LLMRouter's own train and test files"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        if name == "llmrouter-split":
            data = load_llmrouter(root / "llmrouter", split="train")
        else:
            data = load_dataset(name, root=root)
    data = subsample(data, args.max_queries, args.seed)
    split = feat.split_and_featurize(data, test_size=0.25, seed=args.seed)
    if stack:
        split = stack_text_residual(split, seed=args.seed)
    what = (
        "a 75/25 split by prompt of LLMRouter's train file"
        if name == "llmrouter-split"
        else "a 75/25 split by prompt"
    )
    return split.train, split.test, what


# ---------------------------------------------------------------------------------------------- scoring
class Scorer:
    """Exact per-query outcomes on a full-information test set, for gap closed and its bootstrap."""

    def __init__(self, test: LoggedDataset) -> None:
        self.test = test
        idx = np.arange(test.n_queries)
        acts = [test.oracle_actions(lam) for lam in DEFAULT_ORACLE_WEIGHTS]
        self.oracle_cost = np.array([test.cost[idx, a] for a in acts])
        self.oracle_quality = np.array([test.quality[idx, a] for a in acts])

    def gaps(self, runs: dict[str, Any], rows: np.ndarray | None = None) -> dict[str, float]:
        """Gap closed of every sweep in ``runs`` on the test queries ``rows`` (default all)."""
        r = np.arange(self.test.n_queries) if rows is None else rows
        singles = np.stack([self.test.cost[r].mean(axis=0), self.test.quality[r].mean(axis=0)], axis=1)
        anchor = singles[int(np.argmin(singles[:, 0]))]
        span = (float(singles[:, 0].min()), float(singles[:, 0].max()))
        oracle = np.stack(
            [self.oracle_cost[:, r].mean(axis=1), self.oracle_quality[:, r].mean(axis=1)], axis=1
        )
        # The oracle can always answer as the cheapest model does (its own cheapest point may trade a hair of
        # cost for quality, which would leave the range's start uncovered).
        oracle = np.vstack([oracle, anchor])
        out = {}
        for name, run in runs.items():
            pts = np.stack([run.cost[:, r].mean(axis=1), run.quality[:, r].mean(axis=1)], axis=1)
            out[name] = gap_closed(np.vstack([pts, anchor]), singles, oracle, span)
        return out

    def bootstrap(self, runs: dict[str, Any], reference: str, n: int, seed: int) -> pd.DataFrame:
        """Per router: gap closed, its 95% percentile interval, and the paired interval of the difference with
        ``reference``."""
        rng = np.random.default_rng(seed)
        point = self.gaps(runs)
        draws = [
            self.gaps(runs, rng.integers(self.test.n_queries, size=self.test.n_queries)) for _ in range(n)
        ]
        rows = []
        for name in runs:
            g = np.array([d[name] for d in draws])
            diff = g - np.array([d[reference] for d in draws])
            rows.append(
                {
                    "router": name,
                    "gap_closed": point[name],
                    "ci_low": float(np.percentile(g, 2.5)),
                    "ci_high": float(np.percentile(g, 97.5)),
                    f"minus_{reference}": point[name] - point[reference],
                    "diff_ci_low": float(np.percentile(diff, 2.5)),
                    "diff_ci_high": float(np.percentile(diff, 97.5)),
                }
            )
        return pd.DataFrame(rows)


def margins_over_best_single(
    router: Any, train: LoggedDataset, test: LoggedDataset, grid: Sequence[float]
) -> np.ndarray:
    """Per λ: the router's test reward minus that of the best single model on the training side."""
    scale = float(router.cost_scale_)
    run = sweep(router, test, grid)
    out = []
    for i, lam in enumerate(grid):
        single = BestSingleModel(cost_weight=lam, cost_scale=scale).fit(train)
        s = sweep(single, test, [lam])
        routed = run.quality[i].mean() - lam * run.cost[i].mean() / scale
        fixed = s.quality[0].mean() - lam * s.cost[0].mean() / scale
        out.append(routed - fixed)
    return np.array(out)


# ---------------------------------------------------------------------------------------------- 1. held out
def study_heldout(root: Path, args: argparse.Namespace) -> tuple[pd.DataFrame, pd.DataFrame]:
    tables, per_lambda = [], []
    for name in args.datasets:
        start = time.perf_counter()
        train, test, how = heldout_split(name, root, args)
        selection = select_router(train, seed=args.seed)
        grid = dense_grid(selection.cost_weights)
        runs = {"selected": sweep(selection.router, test, grid)}
        for row, router in zip(selection.table.itertuples(), selection.candidates):
            if router is not None:
                runs[str(row.router)] = sweep(router, test, grid)
        scorer = Scorer(test)
        table = scorer.bootstrap(
            runs, "task-table" if "task-table" in runs else "selected", args.bootstrap, args.seed
        )
        chosen = selection.table.loc[selection.table["selected"]].iloc[0]
        cv = selection.table.set_index("router")
        for column in ("cv_gap_closed", "chosen", "fit_seconds"):
            table[column] = [cv[column].get(r, cv.loc[chosen["router"], column]) for r in table["router"]]
        table["router"] = [
            f"select_router → {chosen['router']}" if r == "selected" else r for r in table["router"]
        ]
        margins = margins_over_best_single(selection.router, train, test, grid)
        table.insert(0, "dataset", name)
        table["split"] = how
        table["n_train"], table["n_test"] = train.n_queries, test.n_queries
        table["min_margin_over_best_single"] = np.nan
        table.loc[0, "min_margin_over_best_single"] = float(margins.min())
        table["guard"] = ""
        table.loc[0, "guard"] = str(chosen["note"])
        tables.append(table)
        per_lambda.append(
            pd.DataFrame({"dataset": name, "cost_weight": grid, "margin_over_best_single": margins})
        )
        print(f"[{name}] {time.perf_counter() - start:.0f}s")
        print(table[["router", "gap_closed", "ci_low", "ci_high", "cv_gap_closed"]].to_string(index=False))
    return pd.concat(tables, ignore_index=True), pd.concat(per_lambda, ignore_index=True)


# ---------------------------------------------------------------------------------------------- 2. onboarding
def study_onboarding(root: Path, args: argparse.Namespace) -> pd.DataFrame:
    rows = []
    for name in [d for d in ONBOARDING if d in args.datasets]:
        # Base features only: the stacked columns of the model left out would carry its outcomes into the
        # router that is meant never to have seen it.
        train, test, how = heldout_split(name, root, args, stack=False)
        weights = default_cost_weights(train, train.resolve_cost_scale("max_mean"))
        full = ClusterRouter(seed=args.seed, cv_cost_weights=weights).fit(train)
        grid = dense_grid(weights)
        scorer = Scorer(test)
        base = scorer.gaps({"full": sweep(full, test, grid)})["full"]

        rng = np.random.default_rng(args.seed)
        for model in train.models:
            others = [m for m in train.models if m != model]
            router = ClusterRouter(seed=args.seed, cv_cost_weights=weights).fit(train.subset_models(others))
            without = scorer.gaps(
                {"w": sweep(_Padded(router, train.models), test, in_units(grid, router, full))}
            )["w"]
            units = in_units(grid, router, full)
            for draw in range(args.onboarding_draws):
                n_labelled = min(args.onboarding_queries, train.n_queries)
                rows_idx = np.sort(rng.choice(train.n_queries, size=n_labelled, replace=False))
                onboarded_router = copy.deepcopy(router).add_model(
                    model, train.select(rows_idx).subset_models([model])
                )
                onboarded = scorer.gaps(
                    {"o": sweep(onboarded_router, test.subset_models(onboarded_router.models), units)}
                )["o"]
                rows.append(
                    {
                        "dataset": name,
                        "split": how,
                        "left_out": model,
                        "draw": draw,
                        "labelled_queries": n_labelled,
                        "gap_full_retrain": base,
                        "gap_without_it": without,
                        "gap_onboarded": onboarded,
                        "share_of_full": onboarded / base if base else np.nan,
                    }
                )
            done = pd.DataFrame(rows[-args.onboarding_draws :])
            print(
                f"[onboarding {name}] {model}: full {base:.3f}, without {without:.3f}, onboarded "
                f"{done['gap_onboarded'].mean():.3f} (mean of {args.onboarding_draws} draws)"
            )
    return pd.DataFrame(rows)


def in_units(grid: Sequence[float], router: Any, reference: Any) -> list[float]:
    """``grid`` (λ in ``reference``'s units) in ``router``'s units: without the dearest model a router's unit of λ
    (the dearest model's mean cost) is smaller, so the same trade-offs sit at proportionally smaller λ."""
    return [lam * float(router.cost_scale_) / float(reference.cost_scale_) for lam in grid]


class _Padded:
    """A router over a subset of models seen as one over ``models`` (probability 0 on the missing ones)."""

    def __init__(self, router: Any, models: Sequence[str]) -> None:
        self.router, self.models = router, tuple(models)
        self.cols = [self.models.index(m) for m in router.models]

    def action_probabilities(self, features: np.ndarray, cost_weight: float = 0.0) -> np.ndarray:
        p = self.router.action_probabilities(features, cost_weight=cost_weight)
        out = np.zeros((p.shape[0], len(self.models)))
        out[:, self.cols] = p
        return out


# ---------------------------------------------------------------------------------------------- 3. MMLU
def study_mmlu(root: Path, args: argparse.Namespace) -> pd.DataFrame:
    """GPT-4's call share at 95% of its accuracy, under the loader's token-based USD cost and under RouteLLM's
    cost model (every call of a model costs the same, so cost counts strong-model calls)."""
    frames = []
    for label, cost in (("token-based USD", "tokens"), ("one price per call", "per_call")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            ds = subsample(load_dataset("routellm-mmlu", root=root, cost=cost), args.max_queries, args.seed)
        split = feat.split_and_featurize(ds, test_size=0.3, seed=args.seed)
        if not args.no_text_residual:
            split = stack_text_residual(split, seed=args.seed)
        frame = _mmlu_shares(split.train, split.test, args.seed)
        frame.insert(0, "cost_model", label)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _mmlu_shares(train: LoggedDataset, test: LoggedDataset, seed: int) -> pd.DataFrame:
    selection = select_router(train, seed=seed)
    grid = dense_grid(selection.cost_weights)
    q = test.quality.mean(axis=0)
    strong, weak = int(np.argmax(q)), int(np.argmin(q))
    target = 0.95 * q[strong]
    x = float(np.clip((target - q[weak]) / (q[strong] - q[weak]), 0.0, 1.0))
    chosen = selection.table.loc[selection.table["selected"], "router"].iloc[0]
    routers = {f"select_router → {chosen}": selection.router}
    for row, router in zip(selection.table.itertuples(), selection.candidates):
        if router is not None:
            routers[str(row.router)] = router
    singles = np.stack([test.cost.mean(axis=0), test.quality.mean(axis=0)], axis=1)
    kw = {"weak_quality": float(q[weak]), "strong_quality": float(q[strong])}
    rows = []
    for name, router in routers.items():
        run = sweep(router, test, grid)
        share, quality = run.shares[:, strong], run.quality.mean(axis=1)
        rows.append(
            {
                "router": name,
                "strong_share_at_95pct": cpt(share, quality, x, **kw),
                "cpt50": cpt(share, quality, 0.5, **kw),
                "aiq": aiq(
                    np.vstack([run.points, singles[weak]]), (singles[:, 0].min(), singles[:, 0].max())
                ),
                "n_train": train.n_queries,
                "n_test": test.n_queries,
                "strong": test.models[strong],
                "target_quality": float(target),
            }
        )
        print(f"[mmlu] {name}: GPT-4 share at 95% {rows[-1]['strong_share_at_95pct']:.3f}")
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- report
def markdown(frames: dict[str, pd.DataFrame], args: argparse.Namespace, seconds: float) -> str:
    def table(frame: pd.DataFrame, cols: Sequence[str]) -> str:
        sub = frame[[c for c in cols if c in frame.columns]]
        head = "| " + " | ".join(sub.columns) + " |\n|" + "|".join("---" for _ in sub.columns) + "|"
        body = [
            "| "
            + " | ".join(
                f"{v:.3f}"
                if isinstance(v, float) and np.isfinite(v)
                else ("" if isinstance(v, float) else str(v))
                for v in r
            )
            + " |"
            for r in sub.itertuples(index=False)
        ]
        return "\n".join([head, *body])

    out = [
        "# Routers that generalise: held-out figures",
        "",
        f"`python experiments/generalisation.py --seed {args.seed} --bootstrap {args.bootstrap}"
        f"{' --no-text-residual' if args.no_text_residual else ''}` ({seconds:.0f} s). Features: the default text "
        "featurizer fitted on the training prompts"
        + (
            ""
            if args.no_text_residual
            else ", with one text-residual column per model stacked on them (`stack_text_residual`: out of fold on "
            "the training side; not in the onboarding study)"
        )
        + ". Every router is fitted on the training side with its hyperparameters chosen by grouped "
        "5-fold cross-validation there; the figures are on the test side. Gap closed: RouterBench's AIQ over the single "
        "models' cost range (hull anchored at the cheapest model), 95% bootstrap intervals over test queries; "
        "`minus_task-table` with its paired interval; `chosen`: the hyperparameters cross-validation chose; "
        "`fit_seconds`: fitting with that cross-validation (on a 2-core machine shared with other jobs). "
        "`<router>+cost-model`: the same quality estimates with every model's cost of each query from "
        "`CostModel` (fitted on the same folds; `cost=` says how many models it estimates by which mode) instead of "
        "the router's group means; `select_router` compares each candidate's two cost sources by CV score.",
    ]
    if "heldout" in frames:
        h = frames["heldout"]
        out += ["", "## 1. select_router against the per-task table", ""]
        out.append(
            table(
                h,
                [
                    "dataset",
                    "router",
                    "gap_closed",
                    "ci_low",
                    "ci_high",
                    "minus_task-table",
                    "diff_ci_low",
                    "diff_ci_high",
                    "cv_gap_closed",
                    "chosen",
                    "fit_seconds",
                    "n_train",
                    "n_test",
                ],
            )
        )
        first = h.groupby("dataset").head(1)
        out += [
            "",
            "Least margin of select_router's router over the best single model across the λ grid (test reward, "
            "negative = below it at some λ), and where it defers to the best single model:",
            "",
        ]
        out.append(table(first, ["dataset", "split", "min_margin_over_best_single", "guard"]))
    if "onboarding" in frames:
        o = frames["onboarding"]
        per_model = (
            o.groupby(["dataset", "left_out"], sort=False)
            .agg(
                gap_full_retrain=("gap_full_retrain", "first"),
                gap_without_it=("gap_without_it", "first"),
                gap_onboarded=("gap_onboarded", "mean"),
                share_of_full=("share_of_full", "mean"),
                worst_draw=("share_of_full", "min"),
            )
            .reset_index()
        )
        draws = int(o["draw"].max()) + 1
        out += [
            "",
            f"## 2. Onboarding a model from {int(o['labelled_queries'].iloc[0])} labelled queries "
            "(ClusterRouter.add_model)",
            "",
            f"Fitted on every model but one, then `add_model` of the left-out one from a random labelled set of "
            f"training queries ({draws} sets per model; `gap_onboarded` and `share_of_full` are their mean, "
            "`worst_draw` the lowest share); `gap_without_it`: the router that never calls it.",
            "",
        ]
        out.append(
            table(
                per_model,
                [
                    "dataset",
                    "left_out",
                    "gap_full_retrain",
                    "gap_without_it",
                    "gap_onboarded",
                    "share_of_full",
                    "worst_draw",
                ],
            )
        )
        for name, g in per_model.groupby("dataset", sort=False):
            worst = g.loc[g["share_of_full"].idxmin()]
            out.append(
                f"\n{name}: onboarded / full retrain = {g['share_of_full'].mean():.3f} on average over the models, "
                f"{worst['share_of_full']:.3f} for the hardest ({worst['left_out']})."
            )
    if "mmlu" in frames:
        out += ["", "## 3. RouteLLM MMLU with default settings (70/30 split by prompt)", ""]
        out.append(
            "Cost-aware routers trade quality per USD, so under the loader's token-based cost a long prompt is a "
            "dear GPT-4 call: the λ sweep then favours short prompts, which is not the fewest GPT-4 calls. "
            "RouteLLM counts calls (its evaluation measures cost as the strong model's share of calls); its cost "
            'model, one price per call of each model (`load_routellm(cost="per_call")`: each model\'s mean '
            "token-priced cost), is scored too."
        )
        out.append("")
        out.append(
            table(
                frames["mmlu"],
                ["cost_model", "router", "strong_share_at_95pct", "cpt50", "aiq", "n_train", "n_test"],
            )
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> dict[str, pd.DataFrame]:
    args = parse_args(argv)
    root = Path(
        args.datasets_root or os.environ.get("ROUTING_ENV_DATASETS") or (REPO.parent / "shared" / "datasets")
    )
    start = time.perf_counter()
    frames: dict[str, pd.DataFrame] = {}
    if "heldout" in args.only:
        frames["heldout"], frames["per_lambda"] = study_heldout(root, args)
    if "onboarding" in args.only and set(ONBOARDING) & set(args.datasets):
        frames["onboarding"] = study_onboarding(root, args)
    if "mmlu" in args.only:
        frames["mmlu"] = study_mmlu(root, args)
    args.out.mkdir(parents=True, exist_ok=True)
    for key, frame in frames.items():
        frame.to_csv(args.out / f"generalisation_{key}.csv", index=False, float_format="%.6g")
    (args.out / "generalisation.md").write_text(markdown(frames, args, time.perf_counter() - start))
    print(f"wrote {args.out / 'generalisation.md'} in {time.perf_counter() - start:.0f}s")
    return frames


if __name__ == "__main__":
    main()
