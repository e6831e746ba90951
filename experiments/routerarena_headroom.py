"""How much routing can gain on RouterArena's two models, in sample and out of sample.

RouterArena logs claude-3-haiku and gemini-2.0-flash on the same 809 queries. Gemini is cheaper and better on
average, so the question is whether any router finds the queries where haiku wins. This script reports, per λ:

- the per-query oracle and the in-sample per-task best model (an upper bound for a task-aware router), and
- the test reward of warm-started LinUCB, kNN and logistic routers on TF-IDF + task one-hot features, over
  ``--splits`` random 70/30 splits grouped by prompt, as a difference to the best single model chosen on the
  training split.

    python experiments/routerarena_headroom.py           # ~1 min; results in experiments/results/
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
from _common import RESULTS, SHARED_DATASETS, write_csv

from agents import LinUCB
from agents.routers import BestSingleModel, KNNRouter, LogisticRouter
from routing_env.data import load_routerarena
from routing_env.data.featurizers import TaskOneHot, TextFeaturizer
from routing_env.errors import DataWarning


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=SHARED_DATASETS / "routerarena")
    p.add_argument("--lambdas", default="0,0.3,1")
    p.add_argument("--splits", type=int, default=5)
    p.add_argument("--out", type=Path, default=RESULTS / "routerarena_headroom.csv")
    args = p.parse_args(argv)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # one METEOR score clipped into [0, 1]
        data = load_routerarena(args.data)
    assert data.prompts is not None and data.tasks is not None
    text = TextFeaturizer(n_components=32, seed=0).fit_transform(list(data.prompts))
    tasks = TaskOneHot().fit_transform(list(data.tasks))
    data = data.with_features(np.hstack([text, tasks]).astype(np.float32))

    rows: list[dict[str, object]] = []
    for lam in (float(v) for v in args.lambdas.split(",")):
        r = data.rewards(lam)
        best_single = float(r.mean(axis=0).max())
        oracle = float(r.max(axis=1).mean())
        task_names = np.asarray(data.tasks)
        per_task = sum(
            r[task_names == t].mean(axis=0).max() * (task_names == t).sum() for t in set(task_names)
        )
        rows.append(
            {"lambda": lam, "router": "oracle (in sample)", "gain_vs_best_single": oracle - best_single}
        )
        rows.append(
            {
                "lambda": lam,
                "router": "per-task best (in sample)",
                "gain_vs_best_single": per_task / len(r) - best_single,
            }
        )
        gains: dict[str, list[float]] = {"linucb": [], "knn": [], "logistic": []}
        for seed in range(args.splits):
            train, test = data.split(test_size=0.3, seed=seed)
            rt = test.rewards(lam)
            base = float(
                (BestSingleModel(cost_weight=lam).fit(train).action_probabilities(test.features) * rt)
                .sum(1)
                .mean()
            )
            routers = {
                "linucb": LinUCB(alpha=0.0, ridge=3.0, seed=0).fit(train, cost_weight=lam),
                "knn": KNNRouter(cost_weight=lam).fit(train),
                "logistic": LogisticRouter(cost_weight=lam).fit(train),
            }
            for name, router in routers.items():
                value = float((router.action_probabilities(test.features) * rt).sum(1).mean())
                gains[name].append(value - base)
        for name, values in gains.items():
            rows.append(
                {
                    "lambda": lam,
                    "router": f"{name} (test, mean of {args.splits} splits)",
                    "gain_vs_best_single": float(np.mean(values)),
                }
            )

    print(f"RouterArena, {data.n_queries} queries, models {list(data.models)}")
    for row in rows:
        print(f"  λ={row['lambda']:<4} {row['router']:<36} {row['gain_vs_best_single']:+.4f}")
    write_csv(args.out, rows, ["lambda", "router", "gain_vs_best_single"])


if __name__ == "__main__":
    main()
