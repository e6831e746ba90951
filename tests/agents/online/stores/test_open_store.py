"""``open_store``: a path opens the SQLite store, a ``postgresql://`` URL the PostgreSQL store; an unreachable
server or another scheme is a clear error that never shows the password and creates nothing on disk."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from agents.online import OnlineRouter, SQLiteDecisionStore, StoreUnavailableError, open_store
from routing_env.errors import ConfigurationError
from tests.agents.online.online_policies import FixedPolicy
from tests.pg_cluster import free_port

URL = "postgresql://alice:hunter2@db.example:5432/routing"


def test_a_path_opens_the_sqlite_store(tmp_path: Path) -> None:
    store = open_store(tmp_path / "d.db", synchronous="FULL")
    assert isinstance(store, SQLiteDecisionStore) and store.synchronous == "FULL"
    assert store.location == str(tmp_path / "d.db") and (tmp_path / "d.db").is_file()
    store.close()
    with pytest.raises(ConfigurationError, match="synchronous must be"):
        open_store(tmp_path / "e.db", synchronous="SOMETIMES")


def _unreachable(password: str = "hunter2") -> str:
    """A PostgreSQL URL (with a password) on a loopback port nothing listens on."""
    return f"postgresql://alice:{password}@127.0.0.1:{free_port()}/routing"


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_an_unreachable_postgresql_url_is_a_clear_error_without_the_password(
    scheme: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("psycopg")
    monkeypatch.chdir(tmp_path)
    url = _unreachable().replace("postgresql", scheme, 1)
    port = url.rsplit(":", 1)[1].split("/")[0]
    with pytest.raises(
        StoreUnavailableError, match=f"postgresql://alice@127.0.0.1:{port}/routing cannot be reached"
    ):
        open_store(url, timeout_s=2)
    for attempt in (
        lambda: OnlineRouter(FixedPolicy(("a", "b"), [0.5, 0.5]), url),
        lambda: OnlineRouter.restore(url),
    ):
        with pytest.raises(StoreUnavailableError) as err:
            attempt()
        assert "hunter2" not in str(err.value) and "hunter2" not in repr(err.value)
    assert os.listdir(tmp_path) == []  # nothing created locally (no directory named "postgresql:")


def test_a_postgresql_url_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg → ImportError
    with pytest.raises(
        ConfigurationError, match=r"needs the postgres extra: pip install 'routing-env\[postgres\]'"
    ):
        open_store(URL)


def test_other_urls_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match=r"mysql:// URLs are not supported"):
        open_store("mysql://root@localhost/db")
    assert os.listdir(tmp_path) == []


def test_serve_with_an_unreachable_postgresql_store_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("uvicorn")
    pytest.importorskip("psycopg")
    from agents.cli import main

    monkeypatch.chdir(tmp_path)
    policy = FixedPolicy(("a", "b"), [0.5, 0.5]).save(tmp_path / "policy")
    assert main(["serve", "--store", _unreachable(), "--policy", str(policy)]) == 2
    err = capsys.readouterr().err
    assert "routing-env serve: error: the decision store postgresql://alice@127.0.0.1:" in err
    assert "cannot be reached" in err and "hunter2" not in err
    # Nothing but the policy directory: no local directory named "postgresql:".
    assert os.listdir(tmp_path) == ["policy"]
