"""``open_store``: a path opens the SQLite store; a URL is refused with a clear error and creates nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agents.online import OnlineRouter, SQLiteDecisionStore, open_store
from routing_env.errors import ConfigurationError
from tests.agents.online.online_policies import FixedPolicy

URL = "postgresql://alice:hunter2@db.example:5432/routing"


def test_a_path_opens_the_sqlite_store(tmp_path: Path) -> None:
    store = open_store(tmp_path / "d.db", synchronous="FULL")
    assert isinstance(store, SQLiteDecisionStore) and store.synchronous == "FULL"
    assert store.location == str(tmp_path / "d.db") and (tmp_path / "d.db").is_file()
    store.close()
    with pytest.raises(ConfigurationError, match="synchronous must be"):
        open_store(tmp_path / "e.db", synchronous="SOMETIMES")


@pytest.mark.parametrize("url", [URL, "postgres://alice:hunter2@db.example/routing"])
def test_a_postgresql_url_is_refused_and_creates_nothing(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="PostgreSQL store, which is not available") as err:
        open_store(url)
    assert "hunter2" not in str(err.value) and "--store runs/router.db" in str(err.value)
    with pytest.raises(ConfigurationError, match="PostgreSQL store"):
        OnlineRouter(FixedPolicy(("a", "b"), [0.5, 0.5]), url)
    with pytest.raises(ConfigurationError, match="PostgreSQL store"):
        OnlineRouter.restore(url)
    assert os.listdir(tmp_path) == []


def test_other_urls_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match=r"mysql:// URLs are not supported"):
        open_store("mysql://root@localhost/db")
    assert os.listdir(tmp_path) == []


def test_serve_refuses_a_postgresql_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("uvicorn")
    from agents.cli import main

    monkeypatch.chdir(tmp_path)
    policy = FixedPolicy(("a", "b"), [0.5, 0.5]).save(tmp_path / "policy")
    assert main(["serve", "--store", URL, "--policy", str(policy)]) == 2
    err = capsys.readouterr().err
    assert "routing-env serve: error: store: a postgresql:// URL names a PostgreSQL store" in err
    assert "hunter2" not in err
    # Nothing but the policy directory: no local directory named "postgresql:".
    assert os.listdir(tmp_path) == ["policy"]
