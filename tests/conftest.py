"""Shared fixtures: the bundled sample, small synthetic logs, and the path of the third-party datasets."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

from routing_env.data import LoggedDataset, load_sample, make_synthetic
from tests.pg_fixtures import own_cluster, postgres_server, postgres_url  # noqa: F401  (PostgreSQL fixtures)

# Shared CI machines are noisy: a property test fails on a wrong answer, never on a slow example.
settings.register_profile("routing-env", deadline=None)
settings.load_profile("routing-env")

REPO = Path(__file__).resolve().parents[1]
#: Third-party logs live beside the repository, read-only; tests that need them skip when absent.
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


def shared_dataset(name: str) -> Path:
    """Path of ``../shared/datasets/<name>``, or skip the test with the reason."""
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(f"third-party dataset {name!r} not found at {path} (../shared/datasets is absent)")
    return path


@pytest.fixture(scope="session")
def sample() -> LoggedDataset:
    """The bundled sample (4,000 synthetic queries × 7 models)."""
    return load_sample()


@pytest.fixture(scope="session")
def small() -> LoggedDataset:
    """A small synthetic dataset: 300 queries × 4 models, 8 features."""
    return make_synthetic(n_queries=300, models=4, n_features=8, seed=7)
