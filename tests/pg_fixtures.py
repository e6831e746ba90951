"""PostgreSQL fixtures for every test (imported by ``tests/conftest.py``): a real server for the session, a fresh
database per test, and a cluster of its own for tests that stop the server.

The server is ``$ROUTING_ENV_TEST_POSTGRES_URL`` (CI starts one) or a throw-away cluster started here for the
session (:mod:`tests.pg_cluster`); the tests that need one skip with the reason when neither is possible, and fail
instead under ``ROUTING_ENV_REQUIRE_POSTGRES=1``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.pg_cluster import REQUIRE_ENV, URL_ENV, Cluster, ClusterError, start_cluster, with_database


def unavailable(reason: str) -> None:
    """Skip the test for ``reason``, or fail it where PostgreSQL is required (CI)."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"PostgreSQL is required ({REQUIRE_ENV}=1) but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The superuser URL of a PostgreSQL server for the whole session."""
    try:
        import psycopg
    except ImportError:
        unavailable("psycopg is not installed (pip install 'routing-env[postgres]')")
    url = os.environ.get(URL_ENV)
    if url:
        try:
            psycopg.connect(url, connect_timeout=5).close()
        except psycopg.Error as exc:
            pytest.fail(f"{URL_ENV} names a server that does not accept connections: {exc}")
        yield url
        return
    try:
        cluster = start_cluster()
    except ClusterError as exc:
        unavailable(f"no PostgreSQL server could be started: {exc}")
    try:
        yield cluster.url
    finally:
        cluster.destroy()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """The URL of a new, empty database of its own for one test (dropped afterwards)."""
    import psycopg

    name = f"routing_env_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(postgres_server, name)
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A cluster only this test uses, so that it may stop and restart the server."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed (pip install 'routing-env[postgres]')")
    try:
        cluster = start_cluster()
    except ClusterError as exc:
        unavailable(f"no PostgreSQL cluster of its own could be started: {exc}")
    try:
        yield cluster
    finally:
        cluster.destroy()
