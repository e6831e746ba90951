"""Shared fixtures: the bundled sample, small synthetic logs, and the path of the third-party datasets."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="session")
def ray_local() -> Iterator[Any]:
    """A local Ray of 2 CPUs and a small object store for the session (skips without the ``ray`` extra).

    Reuses a Ray this process already joined; shuts down, with every Ray process it started, at the end.
    """
    ray = pytest.importorskip("ray", reason="needs the ray extra (pip install 'routing-env[ray]')")
    if ray.is_initialized():
        yield ray
        return
    ray.init(
        num_cpus=2,
        object_store_memory=100 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    try:
        yield ray
    finally:
        ray.shutdown()
