"""The service's guards in process: admin closed without a token, policy directories checked before loading,
per-client rate limits, health that says why, metrics that follow Prometheus' rules, and errors that are never
a 500 for a client's mistake."""

from __future__ import annotations

import asyncio
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's deprecation notice about its httpx-based client
    from fastapi.testclient import TestClient

from agents.online import OnlineRouter, create_app
from agents.online.http.ratelimit import RateLimit
from tests.agents.online.online_policies import FixedPolicy
from tests.agents.online.test_group_commit import _call, _concurrently

MODELS = ("a", "b", "c")
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LOOPBACK = ("127.0.0.1", 40000)


def _router(tmp_path: Path, name: str = "d.db") -> OnlineRouter:
    return OnlineRouter(FixedPolicy(MODELS, [0.5, 0.3, 0.2]), tmp_path / name)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root").mkdir()
    return tmp_path / "root"


@pytest.fixture
def client(tmp_path: Path, root: Path) -> Iterator[TestClient]:
    app = create_app(_router(tmp_path), api_token=TOKEN, policy_root=root, max_policy_bytes=1 << 20)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


# ---------------------------------------------------------------------------------------------------- admin auth
def test_admin_is_closed_without_a_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROUTING_ENV_API_TOKEN", raising=False)
    with TestClient(create_app(_router(tmp_path)), client=LOOPBACK) as c:
        for method, path in (("post", "/v1/checkpoint"), ("get", "/v1/export"), ("post", "/v1/policy")):
            r = getattr(c, method)(path, **({"json": {"path": "x"}} if path == "/v1/policy" else {}))
            assert r.status_code == 403, (path, r.text)
            assert (
                "set to a secret token" in r.json()["detail"]
                and "ROUTING_ENV_API_TOKEN" in r.json()["detail"]
            )


def test_insecure_admin_opens_admin_to_loopback_clients_only(tmp_path: Path) -> None:
    app = create_app(_router(tmp_path), api_token=None, insecure_admin=True)
    with TestClient(app, client=LOOPBACK) as c:
        assert c.post("/v1/checkpoint").status_code == 200
    with TestClient(app, client=("10.1.2.3", 40000)) as c:
        assert c.post("/v1/checkpoint").status_code == 403


# ---------------------------------------------------------------------------------------------------- policy files
def _swap(c: TestClient, path: str | Path, **extra: object) -> Any:
    return c.post("/v1/policy", json={"path": str(path), **extra}, headers=AUTH)


def test_paths_outside_the_root_get_one_answer_whether_they_exist_or_not(
    client: TestClient, tmp_path: Path
) -> None:
    outside = FixedPolicy(MODELS, [1, 0, 0]).save(tmp_path / "outside")
    answers = {
        _swap(client, p).json()["detail"].replace(str(p), "<path>") for p in (outside, tmp_path / "nope")
    }
    assert len(answers) == 1 and "outside the policy root" in answers.pop()
    r = _swap(client, "x\x00y")
    assert r.status_code == 422, r.text


def test_links_out_of_the_root_are_refused(client: TestClient, root: Path, tmp_path: Path) -> None:
    secret = FixedPolicy(MODELS, [1, 0, 0]).save(tmp_path / "secret")
    inside = FixedPolicy(MODELS, [0.2, 0.3, 0.5]).save(root / "inside")
    (inside / "arrays.npz").unlink()
    os.symlink(secret / "arrays.npz", inside / "arrays.npz")
    r = _swap(client, inside)
    assert r.status_code == 422 and "a link that leads outside the policy root" in r.json()["detail"]
    os.symlink(secret, root / "linked")  # the directory itself is a link out of the root
    r = _swap(client, root / "linked")
    assert r.status_code == 422 and "outside the policy root" in r.json()["detail"]


def test_an_oversized_policy_directory_is_refused_before_loading(client: TestClient, root: Path) -> None:
    big = FixedPolicy(MODELS, [0.2, 0.3, 0.5]).save(root / "big")
    np.savez_compressed(big / "arrays.npz", updates=np.zeros((1 << 18, 2)))  # 4 MiB declared, ~4 KiB on disk
    r = _swap(client, big)
    assert r.status_code == 422 and "above the 1048576-byte limit" in r.json()["detail"]


def test_a_swap_changing_the_request_contract_is_409_unless_forced(client: TestClient, root: Path) -> None:
    other = FixedPolicy(("a", "b", "z"), [0.2, 0.3, 0.5]).save(root / "other")
    r = _swap(client, other, version="v2")
    assert r.status_code == 409 and "changes the request contract (models" in r.json()["detail"]
    assert client.post("/v1/route", json={"features": [0, 0, 0]}).json()["policy_version"] == "v1"
    r = _swap(client, other, version="v2", force=True)
    assert r.status_code == 200 and r.json()["models"] == ["a", "b", "z"]


# ---------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("plain", [False, True])
def test_invalid_utf8_in_a_body_is_422(tmp_path: Path, plain: bool) -> None:
    from agents.online.http.app import ServiceSettings, build_app

    router = _router(tmp_path)
    app = build_app(router, ServiceSettings()) if plain else create_app(router)
    with TestClient(app, raise_server_exceptions=False) as c:
        raw = b'{"features": [0, 0, 0], "request_id": "\xff\xfe"}'
        r = c.post("/v1/route", content=raw, headers={"content-type": "application/json"})
        if plain:  # FastAPI's own body parsing refuses it before validation
            assert r.status_code == 400 and "error parsing the body" in r.text
        else:
            assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"


def test_concurrent_duplicate_feedback_is_409_never_500(tmp_path: Path) -> None:
    router = _router(tmp_path)
    app = create_app(router)

    async def scenario() -> list[int]:
        routed = await _concurrently(app, "/v1/route", [{"features": [0, 0, 0]} for _ in range(8)])
        ids = [body["decision_id"] for _, body in routed]
        # Every decision gets its feedback eight times in the same event-loop turn.
        payloads = [{"decision_id": d, "quality": 0.5} for d in ids for _ in range(8)]
        return [status for status, _ in await _concurrently(app, "/v1/feedback", payloads)]

    statuses = asyncio.run(scenario())
    assert sorted(set(statuses)) == [200, 409] and statuses.count(200) == 8
    assert router.store.max_feedback_seq() == 8


def test_a_request_that_fails_after_writing_commits_nothing(tmp_path: Path) -> None:
    router = _router(tmp_path)
    app = create_app(router)
    committer = app.state.service.committer

    def writes_then_fails() -> None:
        router.route([0.0, 0.0, 0.0])
        raise RuntimeError("failed after its write (injected)")

    async def scenario() -> None:
        with pytest.raises(RuntimeError, match="injected"):
            await committer.run(writes_then_fails)
        status, _ = await _call(app, "/v1/route", {"features": [0, 0, 0]})
        assert status == 200

    asyncio.run(scenario())
    import sqlite3

    with sqlite3.connect(router.store.path) as conn:  # type: ignore[attr-defined]
        assert conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == 1


# ---------------------------------------------------------------------------------------------------- operations
def test_healthz_is_503_with_the_reason_when_the_policy_cannot_route(tmp_path: Path) -> None:
    router = _router(tmp_path)
    with TestClient(create_app(router)) as c:
        assert c.get("/healthz").status_code == 200
        router.policy.probs = np.array([np.nan, 0.5, 0.5])
        r = c.get("/healthz")
        assert r.status_code == 503 and r.json()["status"] == "unhealthy"
        assert "the policy 'v1' cannot route" in r.json()["reason"]


def test_metrics_follow_prometheus_rules(tmp_path: Path) -> None:
    router = OnlineRouter(FixedPolicy(MODELS, [0.5, 0.3, 0.2]), tmp_path / "d.db", cost_weight=1.0)
    with TestClient(create_app(router)) as c:
        d = c.post("/v1/route", json={"features": [0, 0, 0]}).json()
        c.post("/v1/feedback", json={"decision_id": d["decision_id"], "quality": 0.0, "cost": 0.5})
        text = c.get("/metrics").text
    assert "# TYPE routing_env_reward_sum gauge" in text  # negative sums are allowed in a gauge only
    assert f'routing_env_reward_sum{{model="{d["model"]}"}} -0.5' in text
    assert "routing_env_policy_updates_total 1" in text and "routing_env_policy_replays_total 0" in text
    router.store.close()
    restored = OnlineRouter.restore(tmp_path / "d.db", cost_weight=1.0)
    text = restored.prometheus()
    assert "routing_env_policy_updates_total 0" in text and "routing_env_policy_replays_total 1" in text


# ---------------------------------------------------------------------------------------------------- rate limits
def test_token_bucket_per_client() -> None:
    now = [0.0]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not called in this test")

    limit = RateLimit(app, rate=2.0, burst=3, clock=lambda: now[0])
    assert [limit.allow("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limit.allow("a") == pytest.approx(0.5)
    assert limit.allow("b") == 0.0  # another client has its own bucket
    now[0] += 0.5
    assert limit.allow("a") == 0.0


def test_rate_limited_clients_get_429_and_health_is_exempt(tmp_path: Path) -> None:
    app = create_app(_router(tmp_path), rate_limit_rps=0.001, rate_limit_burst=2)
    with TestClient(app, raise_server_exceptions=False) as c:
        statuses = [c.post("/v1/route", json={"features": [0, 0, 0]}).status_code for _ in range(4)]
        assert statuses == [200, 200, 429, 429]
        r = c.post("/v1/route", json={"features": [0, 0, 0]})
        assert int(r.headers["retry-after"]) > 0 and "rate limit" in json.loads(r.text)["detail"]
        assert all(c.get("/healthz").status_code == 200 for _ in range(5))
