"""Where MMLU's routing signal lives: dense SVD features against the full sparse TF-IDF.

On RouteLLM's MMLU (Mixtral vs GPT-4, 70/30 split by prompt, one price per call) a two-model router is a ranking of
queries by its predicted quality gain of GPT-4 over Mixtral; sending the top share to GPT-4 traces its curve. This
script scores rankings by the least GPT-4 share that reaches 95% of GPT-4's accuracy on the test side, every
threshold (no λ grid), each fitted on the training side only:

- the per-subject table (the mean gain per MMLU subject);
- the table plus a ridge residual on the text featurizer's standardised SVD directions (64, 256, 768 of them);
- the table plus a ridge residual on the prompt's full sparse TF-IDF (what :class:`routing_env.data.
  TextResidualFeaturizer` stacks), at each of its penalties, and at the one its cross-validation chooses.

Ridge penalties on the SVD directions are scanned (best shown, so the dense rows are an upper bound for them).

    python experiments/mmlu_text_headroom.py        # ~2 min; results in experiments/results/
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

import numpy as np
from _common import RESULTS, SHARED_DATASETS, write_csv

from routing_env.data import load_routellm, split_and_featurize, stack_text_residual
from routing_env.data.featurizers import TextFeaturizer
from routing_env.data.residual import RESIDUAL_PENALTIES, _ridge
from routing_env.errors import DataWarning
from routing_env.metrics import cpt

#: Ridge penalties scanned for the dense rows (standardised features: multiples of about the row count).
DENSE_PENALTIES = (10.0, 100.0, 1000.0, 3000.0, 10000.0, 30000.0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=SHARED_DATASETS / "routellm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-queries", type=int, default=None, help="subsample the logs (a quick look)")
    p.add_argument("--dense", default="64,256,768", help="SVD widths of the dense rows")
    p.add_argument("--out", type=Path, default=RESULTS / "mmlu_text_headroom.csv")
    args = p.parse_args(argv)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        data = load_routellm(args.data, task="mmlu", cost="per_call")
    if args.max_queries is not None and args.max_queries < data.n_queries:
        data = data.select(
            np.sort(np.random.default_rng(args.seed).permutation(data.n_queries)[: args.max_queries])
        )
    split = split_and_featurize(data, test_size=0.3, seed=args.seed)
    train, test = split.train, split.test
    q = test.quality.mean(axis=0)
    strong, weak = int(np.argmax(q)), int(np.argmin(q))
    gain_train = train.quality[:, strong] - train.quality[:, weak]
    gain_test = test.quality[:, strong] - test.quality[:, weak]
    x = float(np.clip((0.95 * q[strong] - q[weak]) / (q[strong] - q[weak]), 0.0, 1.0))

    def share(score: np.ndarray) -> float:
        """Least strong-model share reaching 95% of its accuracy when the top-``score`` queries go to it."""
        order = np.argsort(-score, kind="stable")
        n = len(order)
        quality = q[weak] + np.concatenate([[0.0], np.cumsum(gain_test[order])]) / n
        return cpt(
            np.arange(n + 1) / n, quality, x, weak_quality=float(q[weak]), strong_quality=float(q[strong])
        )

    tasks_train, tasks_test = np.asarray(train.tasks, dtype=object), np.asarray(test.tasks, dtype=object)
    means = {t: float(gain_train[tasks_train == t].mean()) for t in set(tasks_train)}
    table_train = np.array([means[t] for t in tasks_train])
    table_test = np.array([means.get(t, float(gain_train.mean())) for t in tasks_test])
    # Ties within a subject are broken at random (seeded), as a router with no per-query signal would.
    jitter = np.random.default_rng(args.seed).uniform(0.0, 1e-9, size=len(table_test))
    rows = [
        {"ranking": "per-subject table", "penalty": "", "strong_share_at_95pct": share(table_test + jitter)}
    ]

    prompts_train = [str(t) for t in train.prompts]
    prompts_test = [str(t) for t in test.prompts]
    residual = (gain_train - table_train)[:, None]
    for width in (int(w) for w in args.dense.split(",") if w.strip()):
        svd = TextFeaturizer(n_components=min(width, len(prompts_train) // 4), seed=args.seed).fit(
            prompts_train
        )
        a, b = svd.transform(prompts_train).astype(np.float64), svd.transform(prompts_test).astype(np.float64)
        scores = []
        for penalty in DENSE_PENALTIES:
            coef = np.linalg.solve(
                a.T @ a + penalty * np.eye(a.shape[1]), a.T @ (residual[:, 0] - residual.mean())
            )
            scores.append(share(table_test + residual.mean() + b @ coef))
        best = int(np.argmin(scores))
        rows.append(
            {
                "ranking": f"table + ridge on {a.shape[1]} SVD directions (best penalty in hindsight)",
                "penalty": DENSE_PENALTIES[best],
                "strong_share_at_95pct": scores[best],
            }
        )

    vocabulary = TextFeaturizer(n_components=1, seed=args.seed).fit(prompts_train)
    sparse_train, sparse_test = vocabulary.tfidf(prompts_train), vocabulary.tfidf(prompts_test)
    for penalty in (pen for pen in RESIDUAL_PENALTIES if math.isfinite(pen)):
        coef, intercept = _ridge(sparse_train, residual, penalty)
        score = table_test + np.asarray(sparse_test @ coef.T)[:, 0] + intercept[0]
        rows.append(
            {
                "ranking": "table + ridge on the sparse TF-IDF",
                "penalty": penalty,
                "strong_share_at_95pct": share(score),
            }
        )
    chosen = stack_text_residual(split, seed=args.seed).featurizer.penalty_
    rows.append(
        {
            "ranking": "penalty TextResidualFeaturizer's CV chooses",
            "penalty": chosen,
            "strong_share_at_95pct": "",
        }
    )

    print(
        f"RouteLLM MMLU, {data.n_queries} queries ({train.n_queries} train / {test.n_queries} test), one price per call"
    )
    for r in rows:
        value = r["strong_share_at_95pct"]
        shown = f"{value:.3f}" if isinstance(value, float) else "—"
        print(f"  {r['ranking']:<72} {r['penalty']!s:>8}  {shown}")
    write_csv(args.out, rows, ["ranking", "penalty", "strong_share_at_95pct"])


if __name__ == "__main__":
    main()
