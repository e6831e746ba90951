"""Bandit logs made from full-information data, shared by the router and CLI tests."""

from __future__ import annotations

import numpy as np

from routing_env.data import LoggedDataset


def bandit_logs(ds: LoggedDataset, logged: np.ndarray, propensity: np.ndarray) -> LoggedDataset:
    """``ds`` as bandit logs: each query keeps only the outcome of its ``logged (n,)`` model, chosen with
    ``propensity (n,)``; features, prompts and tasks as in ``ds``."""
    seen = np.zeros(ds.quality.shape, dtype=bool)
    seen[np.arange(ds.n_queries), logged] = True
    return LoggedDataset(
        models=ds.models,
        query_ids=ds.query_ids,
        quality=np.where(seen, ds.quality, np.nan),
        cost=np.where(seen, ds.cost, np.nan),
        features=ds.features,
        feature_names=ds.feature_names,
        prompts=ds.prompts,
        tasks=ds.tasks,
        logged_action=logged,
        propensity=propensity,
    )
