"""The benchmark's own app (``experiments/_bench_app.py``): its reference endpoints, kept out of production."""

from __future__ import annotations

import importlib.util
import sqlite3
import warnings
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("fastapi")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's deprecation notice about its httpx-based client
    from fastapi.testclient import TestClient
from agents.online import OnlineRouter, SQLiteDecisionStore
from tests.agents.online.online_policies import FixedPolicy, LearningThresholdCascade

MODELS = ("a", "b", "c")
EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def bench_app_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("experiments_bench_app", EXPERIMENTS / "_bench_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def router(tmp_path: Path) -> OnlineRouter:
    return OnlineRouter(FixedPolicy(MODELS, [0.5, 0.3, 0.2]), SQLiteDecisionStore(tmp_path / "d.db"))


def test_floor_bench_endpoint_logs_apart_from_the_decisions(router: OnlineRouter) -> None:
    bench = bench_app_module()
    with TestClient(bench.bench_app(router), raise_server_exceptions=False) as client:
        answers = [client.post("/v1/floor", json={"features": [0.1, 0.2, 0.3]}) for _ in range(5)]
        for r in answers:
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["model"] in MODELS
            assert body["propensity"] == pytest.approx(body["probabilities"][body["model"]])
            assert sum(body["probabilities"].values()) == pytest.approx(1.0)
        assert client.post("/v1/floor", json={"features": [0.1, 0.2]}).status_code == 422
        assert client.post("/v1/floor", json={"prompt": "hi"}).status_code == 422
        assert client.post("/v1/floor", content=b"{").status_code == 422
        assert client.post("/v1/noop", content=b"{}").json() == {"ok": True}
        assert client.post("/v1/noop-fastapi", json={}).json() == {"ok": True}
    with sqlite3.connect(router.store.path) as conn:
        ids = [row[0] for row in conn.execute("SELECT decision_id FROM bench_floor ORDER BY seq")]
        assert ids == [r.json()["decision_id"] for r in answers]
        # Nothing of it reaches the decisions (and so no export, OPE or learning).
        assert conn.execute("SELECT count(*) FROM decisions").fetchone()[0] == 0
    assert router.stats()["decisions"] == 0
    cascade = OnlineRouter(
        LearningThresholdCascade(MODELS), SQLiteDecisionStore(router.store.path.parent / "c.db")
    )
    with TestClient(bench.bench_app(cascade), raise_server_exceptions=False) as client:
        r = client.post("/v1/floor", json={"features": [0.1, 0.2, 0.3]})
        assert r.status_code == 422 and "cascade" in r.json()["detail"]


@pytest.mark.parametrize("path", ["hot", "fastapi"])
def test_both_paths_route_and_learn(router: OnlineRouter, path: str) -> None:
    bench = bench_app_module()
    with TestClient(bench.bench_app(router, path), raise_server_exceptions=False) as client:
        d = client.post("/v1/route", json={"features": [0.1, 0.2, 0.3]}).json()
        f = client.post("/v1/feedback", json={"decision_id": d["decision_id"], "quality": 0.5, "cost": 0.01})
        assert f.status_code == 200 and f.json()["applied"] is True
    assert router.n_applied == 1


def test_bench_app_refuses_an_unknown_path(router: OnlineRouter) -> None:
    from routing_env.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"path must be one of \['hot', 'fastapi'\], got 'raw'"):
        bench_app_module().bench_app(router, "raw")
