"""Bandit logs and partial logs made from full-information data, shared by the router and CLI tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from routing_env.data import LoggedDataset


def hide_outcomes(ds: LoggedDataset, hidden: np.ndarray, **columns: Any) -> LoggedDataset:
    """``ds``'s models, query ids and features with quality and cost NaN where ``hidden`` (a bool mask that
    broadcasts to ``(n, k)``) holds; ``columns`` are further :class:`LoggedDataset` fields to keep."""
    return LoggedDataset(
        models=ds.models,
        query_ids=ds.query_ids,
        quality=np.where(hidden, np.nan, ds.quality),
        cost=np.where(hidden, np.nan, ds.cost),
        features=ds.features,
        **columns,
    )


def bandit_logs(ds: LoggedDataset, logged: np.ndarray, propensity: np.ndarray) -> LoggedDataset:
    """``ds`` as bandit logs: each query keeps only the outcome of its ``logged (n,)`` model, chosen with
    ``propensity (n,)``; features, prompts and tasks as in ``ds``."""
    seen = np.zeros(ds.quality.shape, dtype=bool)
    seen[np.arange(ds.n_queries), logged] = True
    return hide_outcomes(
        ds,
        ~seen,
        feature_names=ds.feature_names,
        prompts=ds.prompts,
        tasks=ds.tasks,
        logged_action=logged,
        propensity=propensity,
    )
