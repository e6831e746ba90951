"""``location``: runs a decision-store test once on each store (a SQLite file, a PostgreSQL database from the
``postgres_url`` fixture of :mod:`tests.pg_fixtures`)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store lives (``open_store(location)`` opens it, again after a close): once per backend."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    return str(request.getfixturevalue("postgres_url"))
