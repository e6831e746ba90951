"""Routers on one PostgreSQL log: each applies every replica's feedback in log order, so every policy equals a
replay of the log; decision numbers are unique across them; the service follows the log in the background and
reports its position and lag."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from agents.online import OnlineRouter, open_store
from agents.online.follow import LogFollower, apply_log
from agents.routers import LinUCB
from tests.agents.online.online_policies import assert_same_state

MODELS = ("small", "medium", "large")


def _replicas(url: str, n: int) -> list[OnlineRouter]:
    first = OnlineRouter(LinUCB(alpha=0.5, epsilon=0.1, models=list(MODELS), seed=0), open_store(url), seed=1)
    return [first] + [OnlineRouter.restore(open_store(url), seed=1) for _ in range(n - 1)]


def test_replicas_apply_every_feedback_in_log_order_and_equal_a_replay(
    postgres_url: str, tmp_path: Path
) -> None:
    routers = _replicas(postgres_url, 3)
    rng = np.random.default_rng(7)
    decisions = []
    for i in range(90):
        d = routers[rng.integers(3)].route(rng.normal(size=4).tolist())
        decisions.append(d)
        if (
            i % 3 == 2
        ):  # feedback for an earlier decision, often at another replica than the one that routed it
            for d in decisions[-3:]:
                routers[rng.integers(3)].feedback(
                    d.decision_id, float(rng.random()), cost=1e-3 * rng.random()
                )
    assert len({d.seq for d in decisions}) == 90  # unique decision numbers across replicas
    store = routers[0].store
    assert store.log_position() == 90
    assert [fb.seq for fb, _ in store.feedback()] == list(range(1, 91))  # each acknowledged feedback once
    for r in routers:
        apply_log(r)
        assert r.stats()["last_feedback_seq"] == 90
    replay = OnlineRouter.restore(open_store(postgres_url), seed=1)
    for i, r in enumerate(routers):
        assert_same_state(replay.policy, r.policy, tmp_path / str(i))
    for r in (*routers, replay):
        r.store.close()


def test_a_swap_at_one_replica_switches_every_replica_at_its_log_position(
    postgres_url: str, tmp_path: Path
) -> None:
    a, b, c = _replicas(postgres_url, 3)
    rng = np.random.default_rng(11)

    def traffic(n: int) -> None:
        for _ in range(n):
            d = (a, b, c)[rng.integers(3)].route(rng.normal(size=4).tolist())
            (a, b, c)[rng.integers(3)].feedback(d.decision_id, float(rng.random()), cost=1e-3)

    traffic(20)
    open_before = b.route(rng.normal(size=4).tolist())  # routed by v1, closed after the swap
    version = a.swap_policy(LinUCB(alpha=2.0, epsilon=0.2, models=list(MODELS), seed=3))
    swap = [e for e in a.store.log_entries(limit=100) if e.kind == "swap"]
    assert version == "v2" and [e.position for e in swap] == [21] and a.stats()["last_feedback_seq"] == 21
    # b has not read the swap yet: its checkpoint of v1, before the swap's position, is the store's newest
    behind = b.checkpoint()
    assert b.version == behind.policy_version == "v1" and behind.last_feedback_seq < 21
    c.feedback(open_before.decision_id, 0.9, cost=1e-3)  # c applies the log (the swap) before it appends
    assert c.version == "v2" and c.store.get_feedback(open_before.decision_id).policy_version == "v2"
    traffic(20)
    for r in (a, b, c):
        apply_log(r)
        assert r.version == "v2" and r.stats()["last_feedback_seq"] == 42
    late = OnlineRouter.restore(open_store(postgres_url), seed=1)  # from b's v1 checkpoint, across the swap
    assert late.restored is not None and late.restored.version == "v1" and late.version == "v2"
    for i, r in enumerate((a, b, c)):
        assert_same_state(late.policy, r.policy, tmp_path / str(i))
    for r in (a, b, c, late):
        r.store.close()


def test_a_replica_that_cannot_serve_the_swapped_policy_stops_there_and_says_so(postgres_url: str) -> None:
    from agents.online import BudgetPacer
    from agents.online.errors import StoreError
    from tests.agents.online.online_policies import FixedPolicy

    a = OnlineRouter(
        LinUCB(alpha=0.5, epsilon=0.1, models=list(MODELS), seed=0), open_store(postgres_url), seed=1
    )
    paced = OnlineRouter.restore(open_store(postgres_url), seed=1, pacer=BudgetPacer(target_per_query=0.01))
    d = a.route([0.1, 0.2, 0.3, 0.4])
    a.feedback(d.decision_id, 0.5, cost=1e-3)
    a.swap_policy(FixedPolicy(MODELS, [0.2, 0.3, 0.5], n_features=4), force=True)  # not cost-aware: no pacing
    with pytest.raises(
        StoreError, match="swaps to policy version 'v2' at position 2, which this router cannot"
    ):
        apply_log(paced)
    assert paced.version == "v1" and paced.stats()["last_feedback_seq"] == 1  # it stopped at the swap
    for r in (a, paced):
        r.store.close()


def test_one_request_id_at_two_replicas_at_once_gets_one_decision(postgres_url: str) -> None:
    a, b = _replicas(postgres_url, 2)
    first = b.route([0.1, 0.2, 0.3, 0.4], request_id="req-1")
    # a looked the id up just before b's decision committed: its own insert meets b's row
    a.store.find_request = lambda rid, real=a.store.find_request, calls=[]: (  # type: ignore[method-assign]
        calls.append(rid) or (None if len(calls) <= 2 else real(rid))
    )
    again = a.route([0.9, 0.9, 0.9, 0.9], request_id="req-1")
    assert again.decision_id == first.decision_id and again.seq == first.seq
    assert [d.decision_id for d in a.store.decisions()] == [first.decision_id]
    with pytest.raises(
        Exception, match="already has a decision"
    ):  # an id clash without a request id stays one
        a.store.insert_decision(dataclasses.replace(first, decision_id="other", seq=99))
    for r in (a, b):
        r.store.close()


def test_feedback_that_keeps_losing_the_log_race_is_a_503_that_wrote_nothing(
    postgres_url: str, tmp_path: Path
) -> None:
    from agents.online.errors import LogConflictError
    from agents.online.http.responses import error_response

    (a,) = _replicas(postgres_url, 1)
    d = a.route([0.1, 0.2, 0.3, 0.4])
    tries = []

    def stale(fb: object) -> int:
        tries.append(fb)
        raise LogConflictError("another writer appended at that position first")

    a.store.insert_feedback = stale  # type: ignore[method-assign]
    with pytest.raises(LogConflictError) as refused:
        a.feedback(d.decision_id, 0.8, cost=1e-3)
    assert len(tries) > 1  # it caught up and tried again before giving up
    assert a.store.get_decision(d.decision_id).status == "open" and a.stats()["applied_updates"] == 0
    fresh = OnlineRouter.restore(open_store(postgres_url), seed=1)
    assert_same_state(fresh.policy, a.policy, tmp_path)  # every try was undone: the policy is the store's
    fresh.store.close()
    status, body = error_response(refused.value)
    assert status == 503 and b"another writer" in body  # retryable, not the client's fault
    a.store.close()


def test_a_second_feedback_is_a_conflict_at_any_replica(postgres_url: str) -> None:
    from agents.online import DecisionConflictError

    a, b = _replicas(postgres_url, 2)
    d = a.route([0.1, 0.2, 0.3, 0.4])
    b.feedback(d.decision_id, 0.5)
    for r in (a, b):
        with pytest.raises(DecisionConflictError, match="feedback is accepted once per decision"):
            r.feedback(d.decision_id, 0.9)
    a.store.close()
    b.store.close()


def test_the_follower_catches_up_and_the_service_reports_its_lag(postgres_url: str) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from agents.online import create_app

    a, b = _replicas(postgres_url, 2)
    with TestClient(create_app(b)) as client:
        for _ in range(20):
            d = a.route(np.zeros(4).tolist())
            a.feedback(d.decision_id, 0.7, cost=1e-4)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            health = client.get("/healthz").json()
            if health["log_position"] == 20:
                break
            time.sleep(0.05)
        assert health["status"] == "ok" and health["log_position"] == 20 and health["log_lag"] == 0
        metrics = client.get("/metrics").text
        assert "routing_env_log_position 20" in metrics and "routing_env_log_lag 0" in metrics
    a.store.close()
    b.store.close()


def test_a_follower_needs_a_positive_poll_interval(postgres_url: str) -> None:
    from routing_env.errors import ConfigurationError

    (a,) = _replicas(postgres_url, 1)
    with pytest.raises(ConfigurationError, match="poll_s must be > 0 seconds, got 0"):
        LogFollower(a, poll_s=0)
    a.store.close()


def test_feedback_in_a_group_holds_the_log_head_so_no_append_is_stale(
    postgres_url: str, tmp_path: Path
) -> None:
    import threading

    a, b = _replicas(postgres_url, 2)
    da, db = a.route([0.5, 0.1, 0.2, 0.3]), b.route([0.1, 0.9, 0.2, 0.3])
    b.store.begin_deferred()  # a request of b's service: its feedback's group holds the head until it commits
    assert b.feedback(db.decision_id, 0.8, cost=1e-3).seq == 1
    group = b.store.end_deferred()
    done = threading.Event()
    thread = threading.Thread(target=lambda: (a.feedback(da.decision_id, 0.3, cost=1e-3), done.set()))
    thread.start()
    assert not done.wait(0.5)  # a waits for b's group instead of appending at a stale position
    b.store.commit_group()
    assert b.store.group_error(group) is None
    thread.join(30)
    assert done.is_set() and a.store.log_position() == 2
    apply_log(b)
    replay = OnlineRouter.restore(open_store(postgres_url), seed=1)
    assert_same_state(replay.policy, a.policy, tmp_path / "a")
    assert_same_state(replay.policy, b.policy, tmp_path / "b")
    for r in (a, b, replay):
        r.store.close()
