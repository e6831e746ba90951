"""The canary in the live service: the logged propensity is the split times the serving policy's probability,
a known better candidate is promoted and a known worse one rolled back on a replayed stream, and every change of
the serving mix is a numbered event in the store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from agents.online import OnlineRouter, create_app
from agents.online.rollout.live import active_canary, mixture_propensities
from agents.online.stores.rollout import ServingEvent
from tests.agents.online.rollout import policies as P

AUTH = {"Authorization": "Bearer t"}


CANARY = {"split": 0.2, "min_decisions": 300, "plan_decisions": 2000, "interval_s": 0.05}


@pytest.fixture()
def saved(tmp_path: Path) -> Path:
    P.better().save(tmp_path / "better")
    P.worse().save(tmp_path / "worse")
    return tmp_path


@pytest.fixture()
def served(store_location: str, saved: Path) -> Iterator[tuple[TestClient, OnlineRouter]]:
    router = OnlineRouter(P.live(), store_location)
    with TestClient(create_app(router, api_token="t", policy_root=str(saved))) as c:
        yield c, router
    router.store.close()


def start(c: TestClient, candidate: Path) -> None:
    r = c.post("/v1/canary", json={"candidate": str(candidate), **CANARY}, headers=AUTH)
    assert r.status_code == 201, r.text


def replay(c: TestClient, n: int, seed: int) -> int:
    """Route + feedback pairs until the canary ends (at most ``n``); how many were sent."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        x = rng.normal(size=2)
        d = c.post("/v1/route", json={"features": x.tolist()}).json()
        q = float(np.clip(P.quality(x)[0, P.MODELS.index(d["model"])] + rng.normal(scale=0.1), 0, 1))
        assert c.post("/v1/feedback", json={"decision_id": d["decision_id"], "quality": q}).status_code == 200
        if i % 50 == 49 and c.get("/v1/canary", headers=AUTH).status_code == 404:
            return i + 1
    return n


def test_a_better_canary_is_promoted_with_logged_product_propensities(
    served: tuple[TestClient, OnlineRouter], saved: Path
) -> None:
    c, router = served
    r = c.post("/v1/canary", json={"candidate": str(saved / "better"), **CANARY}, headers=AUTH)
    assert r.status_code == 201, r.text
    assert r.json()["version"] == "canary-1" and r.json()["decision"] == "continue"
    again = c.post("/v1/canary", json={"candidate": str(saved / "better"), **CANARY}, headers=AUTH)
    assert again.status_code == 422 and "already serves" in again.json()["detail"]
    sent = replay(c, 8000, seed=3)
    assert sent < 8000, "the canary never decided"
    assert router.version not in ("v1", "canary-1") and router.canary is None
    events = c.get("/v1/serving-events", headers=AUTH).json()["events"]
    assert [(e["id"], e["event"], e["split"]) for e in events] == [
        (1, "canary_start", 0.2),
        (2, "canary_promote", 0.0),
    ]
    assert events[1]["live_version"] == router.version and "promote: the lower bound" in events[1]["message"]
    served_by = {"canary-1": (0.2, P.better()), "v1": (0.8, P.live())}
    during = [d for d in router.store.decisions() if d.policy_version in served_by]
    assert {d.policy_version for d in during} == {"canary-1", "v1"}
    for d in during:
        share, policy = served_by[d.policy_version]
        p = policy.action_probabilities(d.features[None, :])[0]
        assert d.propensity == pytest.approx(share * p[d.action], rel=1e-12)
        assert d.probabilities.sum() == pytest.approx(share)
    # For off-policy evaluation the export's propensities are the mixture of the two stored distributions.
    exported = router.store.export()
    again = mixture_propensities(router.store, exported)
    np.testing.assert_array_equal(again.propensity, exported.propensity)  # already the mixture
    by_id = {str(q): i for i, q in enumerate(exported.query_ids)}
    for d in during:
        i = by_id[d.decision_id]
        x = d.features[None, :]
        mu = 0.2 * P.better().action_probabilities(x)[0] + 0.8 * P.live().action_probabilities(x)[0]
        assert exported.propensity[i] == pytest.approx(mu[exported.logged_action[i]], rel=1e-12)  # type: ignore[index]
    after = [
        d for d in router.store.decisions() if d.policy_version not in served_by and d.decision_id in by_id
    ]
    assert after  # decisions after the canary keep their own propensity
    assert [exported.propensity[by_id[d.decision_id]] for d in after] == [d.propensity for d in after]  # type: ignore[index]


def test_a_worse_canary_is_rolled_back_and_serving_returns_to_live(
    served: tuple[TestClient, OnlineRouter], saved: Path
) -> None:
    c, router = served
    start(c, saved / "worse")
    assert replay(c, 3000, seed=4) < 3000
    assert router.version == "v1" and router.canary is None
    events = c.get("/v1/serving-events", headers=AUTH).json()["events"]
    assert [e["event"] for e in events] == ["canary_start", "canary_rollback"]
    assert "rollback: the upper bound" in events[1]["message"]
    assert c.post("/v1/route", json={"features": [0.0, 0.0]}).json()["policy_version"] == "v1"


def test_stopping_a_canary_and_bad_requests(served: tuple[TestClient, OnlineRouter], saved: Path) -> None:
    c, router = served
    assert c.get("/v1/canary", headers=AUTH).status_code == 404
    assert c.delete("/v1/canary", headers=AUTH).status_code == 404
    bad = c.post("/v1/canary", json={"candidate": str(saved / "better"), "split": 1.0}, headers=AUTH)
    assert bad.status_code == 422
    assert c.post("/v1/canary", json={"candidate": str(saved / "better")}).status_code == 401
    start(c, saved / "better")
    assert c.delete("/v1/canary", headers=AUTH).json() == {"stopped": "canary-1", "live_version": "v1"}
    assert router.canary is None
    assert [e["event"] for e in c.get("/v1/serving-events", headers=AUTH).json()["events"]] == [
        "canary_start",
        "canary_stop",
    ]


def test_a_swap_of_the_live_policy_ends_the_canary(
    served: tuple[TestClient, OnlineRouter], saved: Path
) -> None:
    c, router = served
    start(c, saved / "worse")
    swap = c.post("/v1/policy", json={"path": str(saved / "better"), "version": "hand-1"}, headers=AUTH)
    assert swap.status_code == 200, swap.text
    for _ in range(100):  # bounded wait for the canary loop (every 0.25 s)
        if c.get("/v1/canary", headers=AUTH).status_code == 404:
            break
        time.sleep(0.05)
    events = c.get("/v1/serving-events", headers=AUTH).json()["events"]
    assert [e["event"] for e in events] == ["canary_start", "canary_stop"]
    assert "the live policy was swapped" in events[1]["message"] and events[1]["live_version"] == "hand-1"
    assert c.post("/v1/route", json={"features": [0.0, 0.0]}).json()["policy_version"] == "hand-1"
    assert router.canary is None


def test_the_active_canary_is_the_newest_start_no_later_event_ended() -> None:
    def e(i: int, kind: str, version: str) -> ServingEvent:
        return ServingEvent(i, float(i), kind, "v1", version, 0.1 if kind == "canary_start" else 0.0, "")

    assert active_canary([]) is None
    started = e(1, "canary_start", "canary-1")
    assert active_canary([started]) == started
    assert active_canary([started, e(2, "canary_rollback", "canary-1")]) is None
    again = e(3, "canary_start", "canary-2")
    assert active_canary([started, e(2, "canary_stop", "canary-1"), again]) == again
    assert active_canary([again, e(4, "canary_stop", "canary-1")]) == again  # another canary's end: no change
    assert active_canary([again, e(5, "canary_promote", "canary-2")]) is None
