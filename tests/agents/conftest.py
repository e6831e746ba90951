"""Fixtures of the agents tests: single-threaded BLAS (thread start-up dominates the small products of bandit
updates on a shared 2-core machine) and small datasets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from threadpoolctl import threadpool_limits

from routing_env.data import LoggedDataset, make_synthetic


@pytest.fixture(autouse=True)
def _single_thread_blas() -> Iterator[None]:
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="session")
def tiny() -> LoggedDataset:
    """200 queries × 3 models, 5 features, with signals."""
    return make_synthetic(n_queries=200, models=3, n_features=5, seed=11)
