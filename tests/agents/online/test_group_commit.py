"""Group commit: concurrent requests share one SQLite commit, are acknowledged only after it, and a failed commit
rolls back both the store and the router's memory."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
from agents.online import OnlineRouter, SQLiteDecisionStore, create_app
from agents.routers import LinUCB
from tests.agents.online.online_policies import assert_same_state

MODELS = ("a", "b", "c")
D = 4


class CountingStore(SQLiteDecisionStore):
    """Counts commits of group transactions; fails the next ``fail`` of them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commits = 0
        self.fail = 0

    def _commit_sql(self) -> None:
        if self.fail > 0:
            self.fail -= 1
            raise sqlite3.OperationalError("disk I/O error (injected)")
        self.commits += 1
        super()._commit_sql()


def _router(tmp_path: Path) -> tuple[OnlineRouter, CountingStore]:
    rng = np.random.default_rng(0)
    policy = LinUCB(alpha=0.5, epsilon=0.1, models=list(MODELS), seed=0)
    x = rng.normal(size=(60, D))
    policy.update_outcomes(x, rng.integers(3, size=60), rng.random(60), rng.random(60) * 1e-3)
    store = CountingStore(tmp_path / "d.db", wal_checkpoint_s=None)
    return OnlineRouter(policy, store, checkpoint_every=25), store


async def _call(app: Any, path: str, payload: object) -> tuple[int, dict[str, Any]]:
    body = json.dumps(payload).encode()
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(b"content-length", b"%d" % len(body))],
    }
    await app(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


async def _concurrently(app: Any, path: str, payloads: list[object]) -> list[tuple[int, dict[str, Any]]]:
    return await asyncio.gather(*(_call(app, path, p) for p in payloads))


def _features(n: int, seed: int = 1) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    return [{"features": rng.normal(size=D).tolist()} for _ in range(n)]


def test_concurrent_requests_share_commits_and_all_are_stored(tmp_path: Path) -> None:
    router, store = _router(tmp_path)
    app = create_app(router)
    before = store.commits

    async def scenario() -> None:
        routed = await _concurrently(app, "/v1/route", _features(64))
        assert all(status == 200 for status, _ in routed)
        ids = [body["decision_id"] for _, body in routed]
        # Every acknowledged decision is committed: a fresh connection sees it.
        with sqlite3.connect(store.path) as conn:
            stored = {r[0] for r in conn.execute("SELECT decision_id FROM decisions")}
        assert set(ids) <= stored
        fed = await _concurrently(
            app, "/v1/feedback", [{"decision_id": d, "quality": 0.7, "cost": 1e-4} for d in ids]
        )
        assert all(status == 200 for status, _ in fed)
        with sqlite3.connect(store.path) as conn:
            assert conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 64

    asyncio.run(scenario())
    # 128 acknowledged writes (plus checkpoints, committed on their own) in far fewer group commits.
    assert 0 < store.commits - before < 32
    assert router.n_applied == 64
    restored = OnlineRouter.restore(SQLiteDecisionStore(store.path, readonly=True), checkpoint_every=25)
    assert_same_state(router.policy, restored.policy, tmp_path)


def test_a_failed_group_commit_is_a_503_and_rolls_back_the_router(tmp_path: Path) -> None:
    router, store = _router(tmp_path)
    app = create_app(router)

    async def scenario() -> None:
        routed = await _concurrently(app, "/v1/route", _features(8))
        ids = [body["decision_id"] for _, body in routed]
        store.fail = 1
        fed = await _concurrently(
            app, "/v1/feedback", [{"decision_id": d, "quality": 0.9, "cost": 2e-4} for d in ids]
        )
        statuses = [status for status, _ in fed]
        assert 503 in statuses, statuses
        failed = [d for d, (status, _) in zip(ids, fed) if status == 503]
        assert all(
            body["detail"].startswith("the decision store could not commit") for s, body in fed if s == 503
        )
        with sqlite3.connect(store.path) as conn:
            closed = {r[0] for r in conn.execute("SELECT decision_id FROM feedback")}
        assert not closed & set(failed)
        # The router forgot the rolled-back feedback: its policy equals a replay of the store, and the
        # decisions whose feedback failed still take feedback.
        restored = OnlineRouter.restore(SQLiteDecisionStore(store.path, readonly=True), checkpoint_every=25)
        assert_same_state(router.policy, restored.policy, tmp_path)
        retry = await _concurrently(
            app, "/v1/feedback", [{"decision_id": d, "quality": 0.9, "cost": 2e-4} for d in failed]
        )
        assert [s for s, _ in retry] == [200] * len(failed)

    asyncio.run(scenario())
