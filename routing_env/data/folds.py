"""Grouped K-fold assignment of logged queries: every query with the same prompt text in one fold, stratified by
task. The routers' cross-validation (:mod:`agents.routers._cv`) and the text-residual featurizer's out-of-fold
columns (:mod:`routing_env.data.residual`) use the same folds, so a stacked column never saw its own fold."""

from __future__ import annotations

import numpy as np
import pandas as pd

from routing_env.data.dataset import LoggedDataset
from routing_env.errors import ConfigurationError

__all__ = ["DEFAULT_FOLDS", "group_ids", "make_folds"]

#: Folds of the grouped cross-validation (few: every router refits once per fold and value).
DEFAULT_FOLDS = 5


def group_ids(dataset: LoggedDataset) -> np.ndarray:
    """``(n,) int64`` group of each query: its prompt text (its id when it has none), as in ``split``."""
    if dataset.prompts is not None:
        keys = [
            "p:" + str(p) if p is not None else "q:" + str(q)
            for p, q in zip(dataset.prompts, dataset.query_ids)
        ]
    else:
        keys = ["q:" + str(q) for q in dataset.query_ids]
    codes, _ = pd.factorize(pd.Series(keys, dtype=object), sort=False)
    return np.asarray(codes, dtype=np.int64)


def make_folds(dataset: LoggedDataset, n_splits: int = DEFAULT_FOLDS, seed: int | None = 0) -> np.ndarray:
    """``(n,) int64`` fold of each query: grouped by prompt, stratified by task, ``n_splits`` folds.

    Groups are shuffled with ``seed``, sorted by task (stably), and dealt round robin, so each task's groups spread
    evenly over the folds and the folds are within one group of each other in size. ``n_splits`` is capped at the
    number of groups.

    Raises:
        ConfigurationError: fewer than two groups.
    """
    groups = group_ids(dataset)
    n_groups = int(groups.max()) + 1 if groups.size else 0
    if n_groups < 2:
        raise ConfigurationError(
            f"cross-validation needs at least 2 distinct prompts (or query ids), got {n_groups}"
        )
    k = min(int(n_splits), n_groups)
    first = np.full(n_groups, -1, dtype=np.int64)
    first[groups[::-1]] = np.arange(len(groups) - 1, -1, -1)
    if dataset.tasks is not None:
        stratum, _ = pd.factorize(pd.Series(dataset.tasks[first], dtype=object).fillna("\x00none"), sort=True)
    else:
        stratum = np.zeros(n_groups, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(n_groups)
    dealt = order[np.argsort(stratum[order], kind="stable")]
    fold_of_group = np.empty(n_groups, dtype=np.int64)
    fold_of_group[dealt] = np.arange(n_groups) % k
    return fold_of_group[groups]
