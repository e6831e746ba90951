"""Fixtures of the online tests that run the real service: the traffic they replay and the policy they serve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.routers import LinUCB
from routing_env.data import LoggedDataset, make_synthetic


@pytest.fixture(scope="session")
def data() -> LoggedDataset:
    """2,000 synthetic queries × 4 models, 8 features (a module may define its own ``data`` instead)."""
    return make_synthetic(n_queries=2000, models=4, n_features=8, seed=11)


@pytest.fixture(scope="session")
def policy_dir(data: LoggedDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LinUCB (ε = 0.1) fitted on the first 500 queries at λ = 0.5, saved."""
    policy = LinUCB(alpha=0.3, epsilon=0.1, seed=0).fit(data.select(np.arange(500)), cost_weight=0.5)
    return policy.save(tmp_path_factory.mktemp("policy") / "linucb")
