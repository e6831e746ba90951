"""Does the budget pacer spend what it is told, and buy as much quality as the best fixed λ at that spend?

Each full-information dataset (the bundled sample; LLMRouter when ``../shared/datasets`` has it, with text + task
features fitted on the training half) is split in half. LinUCB (``--alpha``) is fitted on the first half and then
serves the second half, query by query in a seeded order, through :class:`agents.online.OnlineRouter` and a SQLite
decision store: ``route`` → the chosen model's logged quality and cost as ``feedback`` → the bandit keeps learning.

- **paced**: the router carries a :class:`agents.online.BudgetPacer` with a target spend per query; it starts
  from ``--initial-cost-weights`` (a poor start costs budget while λ is found) and knows nothing but the target.
- **fixed λ**: the same replay with the router's λ fixed, for every λ of a grid (``--grid`` values, 0 and
  geometric over ``[1e-3, 100]``) — found after the fact, which no deployment can do.

Targets: ``--target-fractions`` of the feasible range, ``S(λ_max) + f·(S(0) − S(λ_max))`` with ``S`` the fixed-λ
spend per query, so they mean the same on every dataset (printed in USD). For each paced run the report gives its
spend against the target, its quality, and the fixed λ that spends the same: the best quality among the fixed λ
that spend no more than the pacer (``best_fixed``), the frontier interpolated at the pacer's spend
(``interp_fixed``), and the paired standard error of the difference with the fixed λ whose spend is nearest
(``se_paired``: the same queries, so the noise that matters is where the two runs chose differently).

    python experiments/budget_pacing.py                            # sample and LLMRouter, a few minutes
    python experiments/budget_pacing.py --datasets sample --grid 12 --initial-cost-weights 1   # smoke
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from agents import LinUCB
from agents.online import BudgetPacer, OnlineRouter, SQLiteDecisionStore
from routing_env.data import LoggedDataset, load_dataset, split_and_featurize
from routing_env.errors import DataWarning
from routing_env.policy import load_policy


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="sample,llmrouter", help="comma-separated dataset names")
    p.add_argument(
        "--root", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
    )
    p.add_argument(
        "--target-fractions", default="0.1,0.25,0.5", help="targets as fractions of the feasible range"
    )
    p.add_argument("--initial-cost-weights", default="0.1,1,10", help="λ the pacer starts from")
    p.add_argument(
        "--grid", type=int, default=96, help="fixed λ values of the sweep (0 and a geometric grid)"
    )
    p.add_argument("--step", type=float, default=0.5, help="the pacer's step (BudgetConfig.step)")
    p.add_argument("--warmup", type=float, default=10.0, help="the pacer's warmup (BudgetConfig.warmup)")
    p.add_argument("--alpha", type=float, default=1.0, help="LinUCB's confidence width")
    p.add_argument("--max-queries", type=int, default=None, help="replay at most this many queries")
    p.add_argument(
        "--seed", type=int, default=0, help="seeds the split, the featurizer, the order and LinUCB"
    )
    p.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads")
    return p.parse_args(argv)


class Replay(NamedTuple):
    """One replay: per query, in serving order, the quality and the USD cost obtained and the λ routed with."""

    quality: np.ndarray
    cost: np.ndarray
    cost_weight: np.ndarray

    @property
    def spend(self) -> float:
        return float(self.cost.mean())

    @property
    def value(self) -> float:
        return float(self.quality.mean())


def load(name: str, args: argparse.Namespace) -> tuple[LoggedDataset, LoggedDataset]:
    """``(train, serve)`` halves of ``name``, both with features (fitted on the training prompts when needed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        ds = load_dataset(name, root=args.root, **({"split": "all"} if name == "llmrouter" else {}))
        if ds.n_features > 0:
            train, serve = ds.split(0.5, seed=args.seed)
        else:
            split = split_and_featurize(ds, test_size=0.5, seed=args.seed)
            train, serve = split.train, split.test
    if args.max_queries is not None and serve.n_queries > args.max_queries:
        serve = serve.select(np.arange(args.max_queries))
    return train, serve


def replay(
    fitted: Path,
    serve: LoggedDataset,
    order: np.ndarray,
    workdir: Path,
    *,
    cost_weight: float | None = None,
    pacer: BudgetPacer | None = None,
) -> Replay:
    """Serve ``serve``'s queries in ``order`` through an :class:`OnlineRouter` with a fresh store, starting from
    the bandit saved in ``fitted`` (every replay starts from the same fitted state)."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        # No fsync: a replay needs no durability, and the timing is not what this study measures.
        store = SQLiteDecisionStore(Path(tmp) / "replay.db", synchronous="OFF")
        router = OnlineRouter(
            load_policy(fitted), store, cost_weight=cost_weight, pacer=pacer, checkpoint_every=10**9, seed=0
        )
        n = len(order)
        quality, cost, lam = np.empty(n), np.empty(n), np.empty(n)
        for t, i in enumerate(order):
            d = router.route(serve.features[i])
            quality[t], cost[t], lam[t] = serve.quality[i, d.action], serve.cost[i, d.action], d.cost_weight
            router.feedback(d.decision_id, float(quality[t]), float(cost[t]))
        store.close()
    return Replay(quality, cost, lam)


def compare(paced: Replay, sweep: dict[float, Replay]) -> dict[str, float]:
    """The fixed λ that spend what ``paced`` spent: best at no more spend, interpolated, and the paired error."""
    spends = np.array([r.spend for r in sweep.values()])
    values = np.array([r.value for r in sweep.values()])
    within = spends <= paced.spend
    best = float(values[within].max()) if within.any() else math.nan
    by_spend = np.argsort(spends)
    nearest = list(sweep.values())[int(np.argmin(np.abs(spends - paced.spend)))]
    diff = paced.quality - nearest.quality
    return {
        "best_fixed": best,
        "best_fixed_lambda": float(np.array(list(sweep))[within][values[within].argmax()])
        if within.any()
        else math.nan,
        "interp_fixed": float(np.interp(paced.spend, spends[by_spend], values[by_spend])),
        "se_paired": float(diff.std(ddof=1) / math.sqrt(len(diff))),
    }


def study(name: str, args: argparse.Namespace, workdir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    train, serve = load(name, args)
    policy = LinUCB(alpha=args.alpha, seed=args.seed).fit(train, cost_weight=0.0)
    fitted = policy.save(workdir / f"{name}-fitted")
    order = np.random.default_rng(args.seed).permutation(serve.n_queries)
    grid = np.concatenate([[0.0], np.geomspace(1e-3, 100.0, args.grid - 1)])
    sweep = {float(lam): replay(fitted, serve, order, workdir, cost_weight=float(lam)) for lam in grid}
    s_max, s_min = sweep[0.0].spend, sweep[float(grid[-1])].spend
    print(
        f"{name}: {serve.n_queries} queries × {serve.n_models} models; fixed-λ spend {s_min:.3g} … {s_max:.3g} "
        f"USD/query (cost scale {policy.cost_scale_:.3g})"
    )
    rows, traces = [], {}
    for frac in [float(f) for f in args.target_fractions.split(",")]:
        target = s_min + frac * (s_max - s_min)
        for lam0 in [float(v) for v in args.initial_cost_weights.split(",")]:
            pacer = BudgetPacer(
                target_per_query=target, initial_cost_weight=lam0, step=args.step, warmup=args.warmup
            )
            paced = replay(fitted, serve, order, workdir, pacer=pacer)
            row = {
                "dataset": name, "target_fraction": frac, "target": target, "initial_cost_weight": lam0,
                "spend": paced.spend, "spend_error": paced.spend / target - 1.0, "quality": paced.value,
                **compare(paced, sweep), "final_cost_weight": float(paced.cost_weight[-1]),
            }  # fmt: skip
            row["vs_best"] = row["quality"] - row["best_fixed"]
            rows.append(row)
            traces[(frac, lam0)] = paced
            print(
                f"  target {target:.4g} (f={frac}) from λ={lam0:g}: spend {paced.spend:.4g} "
                f"({100 * row['spend_error']:+.2f}%), quality {paced.value:.4f} vs best fixed {row['best_fixed']:.4f} "
                f"(interp {row['interp_fixed']:.4f}, paired SE {row['se_paired']:.4f})"
            )
    frontier = pd.DataFrame(
        {"dataset": name, "cost_weight": list(sweep), "spend": [r.spend for r in sweep.values()],
         "quality": [r.value for r in sweep.values()]}
    )  # fmt: skip
    return pd.DataFrame(rows), frontier, traces


def plot(name: str, runs: pd.DataFrame, frontier: pd.DataFrame, traces: dict, path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    f = frontier.sort_values("spend")
    left.plot(f["spend"], f["quality"], "-o", ms=3, color="0.5", label="fixed λ (after the fact)")
    left.scatter(runs["spend"], runs["quality"], color="C3", zorder=3, label="paced")
    for target in runs["target"].unique():
        left.axvline(target, color="C3", lw=0.5, ls=":")
    left.set_xscale("log")
    left.set(xlabel="spend, USD per query", ylabel="mean quality", title=f"{name}: quality at a spend")
    left.legend()
    for (frac, lam0), r in traces.items():
        right.plot(r.cost_weight, lw=0.8, label=f"f={frac}, λ₀={lam0:g}")
    right.set_yscale("log")
    right.set(xlabel="query", ylabel="λ routed with", title="the pacer's λ")
    right.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    args = parse_args(argv)
    # Thousands of one-row products: multi-threaded BLAS only adds contention on a shared machine.
    with threadpool_limits(args.threads):
        return run(args)


def run(args: argparse.Namespace) -> dict[str, pd.DataFrame]:
    start = time.perf_counter()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    all_runs, all_frontiers = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in [s.strip() for s in args.datasets.split(",") if s.strip()]:
            if name != "sample" and not (args.root / name).is_dir():
                print(f"{name}: skipped ({args.root / name} not found)")
                continue
            runs, frontier, traces = study(name, args, Path(tmp))
            plot(name, runs, frontier, traces, args.out_dir / f"budget_pacing_{name}.png")
            all_runs.append(runs)
            all_frontiers.append(frontier)
    runs = pd.concat(all_runs, ignore_index=True)
    frontier = pd.concat(all_frontiers, ignore_index=True)
    runs.to_csv(args.out_dir / "budget_pacing.csv", index=False)
    frontier.to_csv(args.out_dir / "budget_pacing_frontier.csv", index=False)
    summary = (
        runs.groupby("dataset")
        .agg(
            runs=("spend", "size"),
            max_abs_spend_error=("spend_error", lambda e: float(np.abs(e).max())),
            mean_vs_best=("vs_best", "mean"),
            min_vs_best=("vs_best", "min"),
            mean_vs_interp=("quality", lambda q: float((q - runs.loc[q.index, "interp_fixed"]).mean())),
            max_se_paired=("se_paired", "max"),
        )
        .reset_index()
    )
    elapsed = time.perf_counter() - start
    shown = runs[
        ["dataset", "target", "initial_cost_weight", "spend", "spend_error", "quality", "best_fixed",
         "best_fixed_lambda", "interp_fixed", "se_paired", "final_cost_weight"]
    ]  # fmt: skip
    report = "\n\n".join(
        [
            "# Budget pacing: spend on target, quality against the best fixed λ",
            f"Command: `python experiments/budget_pacing.py --datasets {args.datasets} --target-fractions "
            f"{args.target_fractions} --initial-cost-weights {args.initial_cost_weights} --grid {args.grid} "
            f"--step {args.step} --warmup {args.warmup} --alpha {args.alpha} --seed {args.seed}` ({elapsed:.0f} s)",
            "LinUCB fitted on one half of each dataset serves the other half through `OnlineRouter` (learning "
            "online from every feedback). Paced: a `BudgetPacer` with the step and warmup above, given the target only. "
            "Fixed λ: the same replay at each λ of the grid. `best_fixed` is the best quality among the fixed λ "
            "that spend no more than the paced run, `interp_fixed` the fixed-λ frontier at the paced run's spend, "
            "`se_paired` the standard error of the per-query quality difference with the nearest-spend fixed λ.",
            "## Summary\n\n```\n"
            + summary.to_string(index=False, float_format=lambda v: f"{v:.4g}")
            + "\n```",
            "## Runs\n\n```\n" + shown.to_string(index=False, float_format=lambda v: f"{v:.4g}") + "\n```",
        ]
    )
    (args.out_dir / "budget_pacing.md").write_text(report + "\n")
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {args.out_dir / 'budget_pacing.md'} ({elapsed:.0f} s)")
    return {"runs": runs, "frontier": frontier, "summary": summary}


if __name__ == "__main__":
    main()
