"""The HTTP app in process (FastAPI's TestClient): status codes, validation, auth, OpenAPI, and a body fuzz."""

from __future__ import annotations

import dataclasses
import json
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's deprecation notice about its httpx-based client
    from fastapi.testclient import TestClient
from agents.online import Call, OnlineRouter, SQLiteDecisionStore, create_app
from agents.online.http.app import ServiceSettings, build_app
from agents.online.http.schemas import RouteResponse
from tests.agents.online.online_policies import FixedPolicy, LearningThresholdCascade

MODELS = ("a", "b", "c")
TOKEN = "s3cret-token"


@pytest.fixture
def router(tmp_path: Path) -> OnlineRouter:
    return OnlineRouter(
        FixedPolicy(MODELS, [0.5, 0.3, 0.2]), SQLiteDecisionStore(tmp_path / "d.db"), feedback_timeout_s=60
    )


@pytest.fixture
def client(router: OnlineRouter) -> Iterator[TestClient]:
    with TestClient(
        create_app(router, api_token=TOKEN, max_body_bytes=4096), raise_server_exceptions=False
    ) as c:
        yield c


def test_route_feedback_and_get(client: TestClient) -> None:
    r = client.post("/v1/route", json={"features": [0.1, 0.2, 0.3], "allowed_models": ["a", "b"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] in ("a", "b") and body["probabilities"]["c"] == 0.0
    assert body["propensity"] == pytest.approx(body["probabilities"][body["model"]])
    f = client.post("/v1/feedback", json={"decision_id": body["decision_id"], "quality": 0.7, "cost": 0.001})
    assert f.status_code == 200 and f.json()["applied"] is True and f.json()["seq"] == 1
    g = client.get(f"/v1/decisions/{body['decision_id']}")
    assert g.status_code == 200
    assert g.json()["status"] == "closed" and g.json()["feedback"]["quality"] == 0.7
    assert g.json()["allowed_models"] == ["a", "b"]


def test_a_decision_shows_its_upstream_calls(client: TestClient, router: OnlineRouter) -> None:
    d = client.post("/v1/route", json={"features": [0.1, 0.2, 0.3]}).json()["decision_id"]
    assert client.get(f"/v1/decisions/{d}").json()["calls"] == []
    call = Call(d, 0, 0, "b", "answer", 1.7e9, "ok", 200, 100, 20, 3e-5, 0.25)
    router.store.insert_calls([call])
    shown = client.get(f"/v1/decisions/{d}").json()["calls"]
    assert shown == [{k: v for k, v in dataclasses.asdict(call).items() if k != "decision_id"}]


@pytest.mark.parametrize("request_id", [None, 'quote " and \\ and ü'])
def test_route_response_is_the_json_of_the_documented_fields(
    client: TestClient, request_id: str | None
) -> None:
    r = client.post("/v1/route", json={"features": [0.1, 0.2, 0.3], "request_id": request_id})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert list(body) == list(RouteResponse.model_fields)
    RouteResponse.model_validate(body)
    # Byte for byte what json.dumps writes (floats by repr), so clients can parse it with anything.
    assert r.content == json.dumps(body, separators=(",", ":")).encode()
    assert body["request_id"] == request_id


def test_error_statuses_carry_messages(client: TestClient) -> None:
    r = client.post("/v1/feedback", json={"decision_id": "missing", "quality": 0.5})
    assert r.status_code == 404 and "unknown decision_id 'missing'" in r.json()["detail"]
    assert client.get("/v1/decisions/missing").status_code == 404
    d = client.post("/v1/route", json={"features": [0, 0, 0]}).json()["decision_id"]
    assert client.post("/v1/feedback", json={"decision_id": d, "quality": 0.5}).status_code == 200
    r = client.post("/v1/feedback", json={"decision_id": d, "quality": 0.9})
    assert r.status_code == 409 and "feedback is accepted once per decision" in r.json()["detail"]
    r = client.post(f"/v1/decisions/{d}/observe", json={"signal": 0.3})
    assert r.status_code == 409 and "observe applies to cascade decisions" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"features": [0.0, 1.0]}, "width 2, but this policy was fitted on width 3"),
        ({"features": [0.0, 1.0, 2.0], "allowed_models": ["zz"]}, "allowed_models must name"),
        ({"features": [0.0, 1.0, 2.0], "extra": 1}, "Extra inputs are not permitted"),
        ({"features": [0.0, "x", 2.0]}, "valid number"),
        ({"features": [0.0, 1.0, 2.0], "cost_weight": -1}, "greater than or equal to 0"),
        ({}, "needs features=... or prompt=..."),
    ],
)
def test_route_validation_is_422(client: TestClient, body: dict[str, object], fragment: str) -> None:
    r = client.post("/v1/route", json=body)
    assert r.status_code == 422, r.text
    assert fragment in json.dumps(r.json())


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_422(client: TestClient, literal: str) -> None:
    raw = f'{{"features": [0, {literal}, 1]}}'
    r = client.post("/v1/route", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "finite" in r.text
    d = client.post("/v1/route", json={"features": [0, 0, 0]}).json()["decision_id"]
    raw = f'{{"decision_id": "{d}", "quality": {literal}}}'
    assert (
        client.post("/v1/feedback", content=raw, headers={"content-type": "application/json"}).status_code
        == 422
    )


def test_quality_outside_unit_interval_is_422(client: TestClient) -> None:
    d = client.post("/v1/route", json={"features": [0, 0, 0]}).json()["decision_id"]
    r = client.post("/v1/feedback", json={"decision_id": d, "quality": 1.5})
    assert r.status_code == 422 and "less than or equal to 1" in r.text


def test_oversized_body_is_413(client: TestClient) -> None:
    r = client.post("/v1/route", json={"features": [0.0] * 3, "prompt": "x" * 5000})
    assert r.status_code == 413 and "4096-byte limit" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        yield b'{"features": [0, 0, 0], "prompt": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    r = client.post("/v1/route", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_admin_endpoints_need_the_token(client: TestClient, router: OnlineRouter, tmp_path: Path) -> None:
    saved = FixedPolicy(MODELS, [0.1, 0.1, 0.8]).save(tmp_path / "new")
    body = {"path": str(saved), "version": "v2"}
    assert client.post("/v1/policy", json=body).status_code == 401
    r = client.post("/v1/policy", json=body, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = client.post("/v1/policy", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json() == {
        "version": "v2",
        "previous_version": "v1",
        "kind": "route",
        "models": list(MODELS),
    }
    assert client.post("/v1/route", json={"features": [0, 0, 0]}).json()["policy_version"] == "v2"
    r = client.post(
        "/v1/policy", json={"path": str(tmp_path / "nope")}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert r.status_code == 422 and "not a saved policy directory" in r.json()["detail"]
    # A pickle planted as the arrays file is refused, not loaded.
    bad = tmp_path / "bad"
    FixedPolicy(MODELS, [1, 0, 0]).save(bad)
    np.save(bad / "arrays.npz", np.array([object()], dtype=object), allow_pickle=True)
    (bad / "arrays.npz.npy").rename(bad / "arrays.npz")
    r = client.post("/v1/policy", json={"path": str(bad)}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 422
    assert client.get("/v1/export").status_code == 401
    assert client.post("/v1/checkpoint").status_code == 401


def test_export_and_checkpoint(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = client.get("/v1/export", headers=auth)
    assert r.status_code == 422 and "nothing to export" in r.json()["detail"]
    for i in range(5):
        d = client.post("/v1/route", json={"features": [i, 0, 0]}).json()
        client.post("/v1/feedback", json={"decision_id": d["decision_id"], "quality": 0.5, "cost": 0.01})
    r = client.get("/v1/export", params={"format": "jsonl"}, headers=auth)
    rows = [json.loads(line) for line in r.text.splitlines()]
    assert r.status_code == 200 and len(rows) == 5
    assert all(row["logged"] and 0 < row["propensity"] <= 1 for row in rows)
    ck = client.post("/v1/checkpoint", headers=auth).json()
    assert ck["last_feedback_seq"] == 5 and Path(ck["path"]).is_dir()


def test_health_metrics_and_openapi(client: TestClient) -> None:
    from openapi_spec_validator import validate

    d = client.post("/v1/route", json={"features": [0, 0, 0]}).json()
    client.post("/v1/feedback", json={"decision_id": d["decision_id"], "quality": 1.0})
    client.post("/v1/route", json={"features": [0, 0, 0]})
    h = client.get("/healthz").json()
    assert h == {
        "status": "ok",
        "reason": None,
        "policy_version": "v1",
        "kind": "route",
        "decisions": 2,
        "pending": 1,
        "log_position": 1,
        "log_lag": 0,
    }
    m = client.get("/metrics")
    assert m.headers["content-type"].startswith("text/plain")
    assert 'routing_env_feedback_total{source="client"} 1' in m.text
    assert (
        "routing_env_log_position 1\nrouting_env_log_head" not in m.text
    )  # each gauge has its HELP and TYPE
    assert "routing_env_log_head 1" in m.text and "routing_env_log_lag 0" in m.text
    assert "routing_env_pending_decisions 1" in m.text
    assert f'routing_env_reward_sum{{model="{d["model"]}"}} 1.0' in m.text
    assert 'routing_env_policy_info{version="v1",kind="route"} 1' in m.text
    spec = client.get("/openapi.json").json()
    validate(spec)
    paths = set(spec["paths"])
    assert {
        "/v1/route",
        "/v1/feedback",
        "/v1/decisions/{decision_id}/observe",
        "/v1/decisions/{decision_id}",
        "/v1/policy",
        "/v1/export",
        "/healthz",
        "/metrics",
    } <= paths
    assert "/v1/noop" not in paths


def test_service_expires_decisions_in_the_background(tmp_path: Path) -> None:
    router = OnlineRouter(
        FixedPolicy(MODELS, [0.5, 0.3, 0.2]), tmp_path / "e.db", feedback_timeout_s=0.2, default_quality=0.0
    )
    with TestClient(create_app(router, expire_interval_s=0.05)) as client:
        d = client.post("/v1/route", json={"features": [0, 0, 0]}).json()["decision_id"]
        deadline = time.monotonic() + 20
        while client.get(f"/v1/decisions/{d}").json()["status"] == "open" and time.monotonic() < deadline:
            time.sleep(0.05)
        view = client.get(f"/v1/decisions/{d}").json()
        assert view["status"] == "expired" and view["feedback"]["source"] == "default"
        r = client.post("/v1/feedback", json={"decision_id": d, "quality": 1.0})
        assert r.status_code == 409 and "default reward was applied" in r.json()["detail"]
        assert 'routing_env_feedback_total{source="default"} 1' in client.get("/metrics").text


def test_cascade_over_http(tmp_path: Path) -> None:
    router = OnlineRouter(LearningThresholdCascade(("s", "m", "l")), tmp_path / "c.db")
    with TestClient(create_app(router)) as client:
        d = client.post("/v1/route", json={"features": [0, 0, 0]}).json()
        assert d["kind"] == "cascade" and d["model"] == "s"
        ob = client.post(
            f"/v1/decisions/{d['decision_id']}/observe", json={"signal": -9, "cost": 0.01}
        ).json()
        assert ob["action"] == "call" and ob["model"] == "m"
        ob = client.post(f"/v1/decisions/{d['decision_id']}/observe", json={"signal": 9}).json()
        assert ob["action"] == "accept" and ob["model"] == "m"
        f = client.post("/v1/feedback", json={"decision_id": d["decision_id"], "quality": 1, "cost": 0.03})
        assert f.status_code == 200
        view = client.get(f"/v1/decisions/{d['decision_id']}").json()
        assert [s["stop"] for s in view["steps"]] == [False, True] and view["model"] == "m"


# ---------------------------------------------------------------------------------------------------- fuzz
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
numbers = (
    st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**400), 10**400) | st.text(max_size=5)
)
route_bodies = st.fixed_dictionaries(
    {},
    optional={
        "features": st.lists(numbers, max_size=6) | json_values,
        "prompt": st.text(max_size=30) | json_values,
        "request_id": st.text(max_size=10) | json_values,
        "allowed_models": st.lists(st.sampled_from([*MODELS, "zz", ""]), max_size=4) | json_values,
        "cost_weight": numbers | json_values,
    },
)
feedback_bodies = st.fixed_dictionaries(
    {},
    optional={
        "decision_id": st.text(max_size=40) | json_values,
        "quality": numbers | json_values,
        "cost": numbers | json_values,
        "latency_s": numbers | json_values,
    },
)


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    router = OnlineRouter(FixedPolicy(MODELS, [0.5, 0.3, 0.2]), tmp_path_factory.mktemp("fuzz") / "d.db")
    with TestClient(create_app(router, max_body_bytes=4096), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def cascade_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    router = OnlineRouter(LearningThresholdCascade(MODELS), tmp_path_factory.mktemp("fuzz") / "c.db")
    with TestClient(create_app(router, max_body_bytes=4096), raise_server_exceptions=False) as c:
        yield c


def _send(client: TestClient, path: str, body: object) -> int:
    raw = json.dumps(body, allow_nan=True)
    return client.post(path, content=raw, headers={"content-type": "application/json"}).status_code


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=route_bodies | json_values)
def test_fuzz_route_never_5xx(fuzz_client: TestClient, body: object) -> None:
    assert _send(fuzz_client, "/v1/route", body) < 500


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=feedback_bodies | json_values, use_real_id=st.booleans())
def test_fuzz_feedback_never_5xx(fuzz_client: TestClient, body: object, use_real_id: bool) -> None:
    if use_real_id and isinstance(body, dict):
        body["decision_id"] = fuzz_client.post("/v1/route", json={"features": [0, 0, 0]}).json()[
            "decision_id"
        ]
    assert _send(fuzz_client, "/v1/feedback", body) < 500


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.fixed_dictionaries({}, optional={"signal": numbers | json_values, "cost": numbers}) | json_values
)
def test_fuzz_observe_never_5xx(cascade_client: TestClient, body: object) -> None:
    d = cascade_client.post("/v1/route", json={"features": [0, 0, 0]}).json()["decision_id"]
    assert _send(cascade_client, f"/v1/decisions/{d}/observe", body) < 500
    assert _send(cascade_client, f"/v1/decisions/{d}/observe", body) < 500  # a second step, or 409
    assert _send(cascade_client, "/v1/decisions/unknown/observe", body) < 500


def test_production_app_has_none_of_the_bench_endpoints(router: OnlineRouter) -> None:
    with TestClient(create_app(router), raise_server_exceptions=False) as client:
        paths = client.get("/openapi.json").json()["paths"]
        for path in ("/v1/floor", "/v1/noop", "/v1/noop-fastapi"):
            assert client.post(path, json={"features": [0.1, 0.2, 0.3]}).status_code in (404, 405)
            assert path not in paths
    with pytest.raises(TypeError, match="bench_endpoints"):
        create_app(router, bench_endpoints=True)


def _exchange(client: TestClient, decision_id: str) -> list[tuple[int, object]]:
    """Statuses and bodies of a fixed series of route and feedback requests (ids and times left out)."""
    out: list[tuple[int, object]] = []
    requests: list[tuple[str, object]] = [
        ("/v1/route", {"features": [0.1, 0.2, 0.3], "allowed_models": ["a"], "request_id": "ü"}),
        ("/v1/route", {"features": [0.1, 0.2]}),
        ("/v1/route", {"features": [0.1, 0.2, 0.3], "extra": 1}),
        ("/v1/route", b'{"features": [0, NaN, 1]}'),
        ("/v1/route", b"{"),
        ("/v1/feedback", {"decision_id": "missing", "quality": 0.5}),
        ("/v1/feedback", {"decision_id": decision_id, "quality": 1.5}),
        ("/v1/feedback", {"decision_id": decision_id, "quality": 0.5, "cost": 0.01}),
        ("/v1/feedback", {"decision_id": decision_id, "quality": 0.5}),
    ]
    for path, body in requests:
        if isinstance(body, bytes):
            r = client.post(path, content=body, headers={"content-type": "application/json"})
        else:
            r = client.post(path, json=body)
        payload = r.json()
        if r.status_code == 200:
            assert r.content == json.dumps(payload, separators=(",", ":")).encode()
            payload = {
                k: v for k, v in payload.items() if k not in ("decision_id", "created_at", "received_at")
            }
        elif isinstance(payload["detail"], list):
            # Malformed JSON is reported by pydantic on one path and by the json module on the other.
            payload = [
                (e["type"], e["loc"], e["msg"]) if e["type"] != "json_invalid" else e["type"]
                for e in payload["detail"]
            ]
        else:
            # The two runs differ in their ids and clocks, not in what they say.
            payload = re.sub(
                r"\d{4}-\d\d-\d\dT[\d:.]+Z", "<time>", payload["detail"].replace(decision_id, "<id>")
            )
        out.append((r.status_code, payload))
    return out


def test_plain_fastapi_endpoints_answer_like_the_hot_path(tmp_path: Path) -> None:
    answers = []
    for name, build in (("hot", create_app), ("plain", lambda r: build_app(r, ServiceSettings()))):
        router = OnlineRouter(FixedPolicy(MODELS, [0.5, 0.3, 0.2]), tmp_path / f"{name}.db")
        with TestClient(build(router), raise_server_exceptions=False) as client:
            d = client.post("/v1/route", json={"features": [0, 0, 0]}).json()["decision_id"]
            answers.append(_exchange(client, d))
    assert answers[0] == answers[1]
    assert [status for status, _ in answers[0]] == [200, 422, 422, 422, 422, 404, 422, 200, 409]
