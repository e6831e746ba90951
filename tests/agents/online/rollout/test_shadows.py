"""Shadow evaluation in the service: exact target probabilities stored per decision, a report whose paired
intervals cover the truth, failing shadows marked failed without failing a request, and registration errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from agents.online import OnlineRouter, create_app
from agents.online.rollout.shadows import Shadows, shadow_report
from tests.agents.online.rollout import policies as P

AUTH = {"Authorization": "Bearer t"}


@pytest.fixture()
def saved(tmp_path: Path) -> Path:
    root = tmp_path / "policies"
    P.better().save(root / "better")
    P.worse().save(root / "worse")
    P.BrokenPolicy(np.zeros((3, 2)), np.zeros(3), 0.3).save(root / "broken")
    P.ScorePolicy(np.zeros((3, 2)), np.zeros(3), 0.3).save(root / "uniformish")
    return root


@pytest.fixture()
def client(store_location: str, saved: Path) -> Iterator[TestClient]:
    router = OnlineRouter(P.live(), store_location)
    with TestClient(create_app(router, api_token="t", policy_root=str(saved))) as c:
        yield c
    router.store.close()


def _traffic(c: TestClient, n: int, seed: int = 0, **route: object) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.normal(size=2)
        r = c.post("/v1/route", json={"features": x.tolist(), **route})
        assert r.status_code == 200, r.text
        d = r.json()
        q = float(np.clip(P.quality(x)[0, P.MODELS.index(d["model"])] + rng.normal(scale=0.1), 0, 1))
        assert c.post("/v1/feedback", json={"decision_id": d["decision_id"], "quality": q}).status_code == 200
        out.append(d)
    return out


def test_reports_cover_the_truth_and_tell_better_from_worse(client: TestClient, saved: Path) -> None:
    for name in ("better", "worse"):
        r = client.post("/v1/shadows", json={"name": name, "path": str(saved / name)}, headers=AUTH)
        assert r.status_code == 201, r.text
    _traffic(client, 1200)
    live = P.truth(P.live())
    for name, policy in (("better", P.better()), ("worse", P.worse())):
        rep = client.get(f"/v1/shadows/{name}/report", headers=AUTH).json()
        assert rep["n_decisions"] == 1200 and rep["status"] == "active" and rep["pending"] == 0
        assert [e["estimator"] for e in rep["estimates"]] == ["IPS", "SNIPS", "DR"]
        truth = P.truth(policy) - live
        for e in rep["estimates"]:
            assert e["low"] < e["difference"] < e["high"]
            assert e["low"] - 0.02 < truth < e["high"] + 0.02, (name, e, truth)
        assert rep["ess"] > 100 and rep["unsupported_mass"] == 0.0
        assert rep["diagnostics"] is not None
    assert client.get("/v1/shadows/better/report", headers=AUTH).json()["gate"]["promote"] is True
    worse = client.get("/v1/shadows/worse/report", headers=AUTH).json()["gate"]
    assert worse["promote"] is False and worse["reason"] == "worse"


def test_the_stored_probabilities_are_the_shadows_own_restricted_to_the_allowed_models(
    client: TestClient, saved: Path
) -> None:
    client.post("/v1/shadows", json={"name": "better", "path": str(saved / "better")}, headers=AUTH)
    decisions = _traffic(client, 20, allowed_models=["small", "large"])
    service = client.app.state.service  # type: ignore[attr-defined]
    shadows: Shadows = service.shadows
    shadows.flush()
    rows = {r.decision.decision_id: r for r in shadows.store.shadow_traffic("better")}
    assert set(rows) == {str(d["decision_id"]) for d in decisions}
    for row in rows.values():
        p = P.better().action_probabilities(row.decision.features[None, :])[0]
        p[1] = 0.0
        np.testing.assert_allclose(row.probabilities, p / p.sum(), rtol=0, atol=1e-15)


def test_a_failing_shadow_never_fails_a_request_and_is_reported_failed(
    client: TestClient, saved: Path
) -> None:
    for name in ("broken", "better"):
        client.post("/v1/shadows", json={"name": name, "path": str(saved / name)}, headers=AUTH)
    _traffic(client, 50)  # every request answered 200 (checked inside)
    client.app.state.service.shadows.flush()  # type: ignore[attr-defined]
    listed = {s["name"]: s for s in client.get("/v1/shadows", headers=AUTH).json()["shadows"]}
    assert listed["broken"]["status"] == "failed"
    assert listed["broken"]["error"] == "RuntimeError: the shadow's model server is unreachable"
    assert listed["better"]["status"] == "active"
    rep = client.get("/v1/shadows/broken/report", headers=AUTH).json()
    assert rep["status"] == "failed" and "unreachable" in rep["error"] and rep["n_decisions"] == 0
    assert client.get("/v1/shadows/better/report", headers=AUTH).json()["n_decisions"] == 50


def test_registration_errors_are_4xx_with_their_reason(
    client: TestClient, saved: Path, tmp_path: Path
) -> None:
    body = {"name": "better", "path": str(saved / "better")}
    assert client.post("/v1/shadows", json=body).status_code == 401
    assert client.post("/v1/shadows", json=body, headers=AUTH).status_code == 201
    again = client.post("/v1/shadows", json=body, headers=AUTH)
    assert again.status_code == 409 and "already registered" in again.json()["detail"]
    outside = client.post("/v1/shadows", json={"name": "x", "path": str(tmp_path)}, headers=AUTH)
    assert outside.status_code == 422
    assert (
        client.post(
            "/v1/shadows", json={"name": "a/b", "path": str(saved / "worse")}, headers=AUTH
        ).status_code
        == 422
    )
    assert client.delete("/v1/shadows/nope", headers=AUTH).status_code == 404
    assert client.get("/v1/shadows/nope/report", headers=AUTH).status_code == 404
    bad = client.get("/v1/shadows/better/report?confidence=1.5", headers=AUTH)
    assert bad.status_code == 422
    assert client.delete("/v1/shadows/better", headers=AUTH).json() == {"removed": "better"}
    assert client.get("/v1/shadows", headers=AUTH).json() == {"shadows": []}


def test_a_shadow_over_other_models_or_features_is_refused(tmp_path: Path) -> None:
    from tests.agents.online.online_policies import FixedPolicy

    router = OnlineRouter(P.live(), tmp_path / "s.db")
    shadows = Shadows(router)
    try:
        FixedPolicy(("small", "medium", "huge"), [0.2, 0.3, 0.5], n_features=2).save(tmp_path / "other")
        FixedPolicy(P.MODELS, [0.2, 0.3, 0.5], n_features=5).save(tmp_path / "wide")
        with pytest.raises(Exception, match="same models"):
            shadows.register("other", tmp_path / "other")
        with pytest.raises(Exception, match="takes 5 features"):
            shadows.register("wide", tmp_path / "wide")
        assert shadows.records() == []
    finally:
        shadows.close()


def test_shadows_are_scored_again_after_a_restart(tmp_path: Path, saved: Path) -> None:
    router = OnlineRouter(P.live(), tmp_path / "s.db")
    shadows = Shadows(router)
    router.decision_hooks.append(shadows.submit)
    shadows.register("better", saved / "better")
    first = [router.route(np.zeros(2)) for _ in range(3)]
    shadows.close()
    router.store.close()
    again = OnlineRouter.restore(tmp_path / "s.db")
    reloaded = Shadows(again)
    again.decision_hooks.append(reloaded.submit)
    try:
        second = [again.route(np.ones(2)) for _ in range(2)]
        reloaded.flush()
        for d in first + second:
            again.feedback(d.decision_id, 0.5, cost=0.0)
        rep = shadow_report(reloaded, "better", min_decisions=2)
        assert rep.n_decisions == 5
    finally:
        reloaded.close()
        again.store.close()


def test_a_full_queue_drops_the_oldest_decisions_and_counts_them(tmp_path: Path, saved: Path) -> None:
    router = OnlineRouter(P.live(), tmp_path / "s.db")
    shadows = Shadows(router, interval_s=3600.0, max_pending=2)  # the thread never wakes: only drain() scores
    router.decision_hooks.append(shadows.submit)
    try:
        shadows.register("better", saved / "better")
        decisions = [router.route(np.full(2, float(i))) for i in range(5)]
        assert shadows.dropped == 3 and shadows.pending == 2
        assert shadows.drain() == 2 and shadows.pending == 0
        for d in decisions:
            router.feedback(d.decision_id, 0.5, cost=0.0)
        scored = [r.decision.decision_id for r in shadows.store.shadow_traffic("better")]
        assert scored == [d.decision_id for d in decisions[3:]]
        assert shadow_report(shadows, "better", min_decisions=2).dropped == 3
    finally:
        shadows.close()
        router.store.close()
