"""The gateway app: bad input gets a 4xx naming the problem (a hypothesis fuzz finds no 5xx), the start-up checks
refuse a config that cannot work, and the documented FastAPI route answers like the fast path."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.online import OnlineRouter
from agents.online.gateway import GatewayConfig, create_gateway_app
from agents.online.gateway.app import gateway_routes
from agents.routers import LinUCB
from routing_env import LoggedDataset
from routing_env.errors import ConfigurationError, ModelMismatchError
from tests.agents.online.gateway.servers import ThreadServer, model_entries

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

GOOD = {"model": "router", "messages": [{"role": "user", "content": "explain recursion"}]}


@pytest.fixture(scope="module")
def gateway(
    sample: LoggedDataset,
    fakes: dict[str, ThreadServer],
    policy_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    urls = {m: s.url for m, s in fakes.items()}
    config = GatewayConfig(
        models=model_entries(sample, urls),  # type: ignore[arg-type]
        policy=str(policy_dir),
        store=str(tmp_path_factory.mktemp("app") / "g.db"),
        max_body_bytes=4096,
    )
    server = ThreadServer(create_gateway_app(config)).start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"model": "router"}, 400, "messages: Field required"),
        ({**GOOD, "messages": []}, 400, "messages: List should have at least 1 item"),
        ({**GOOD, "messages": "hi"}, 400, "messages: Input should be a valid list"),
        ({**GOOD, "messages": [{"role": "robot", "content": "x"}]}, 400, "messages.0.role: Input should be"),
        ({**GOOD, "messages": [{"role": "user", "content": 7}]}, 400, "messages.0.content"),
        (
            {**GOOD, "messages": [{"role": "system", "content": "x"}]},
            400,
            "at least one message with role 'user'",
        ),
        ({**GOOD, "stream": "yes"}, 400, "stream: Input should be a valid boolean"),
        ({**GOOD, "temperature": 9}, 400, "temperature: Input should be less than or equal to 2"),
        ({**GOOD, "model": 3}, 400, "model: Input should be a valid string"),
        ({**GOOD, "model": "gpt-9"}, 404, "model 'gpt-9' does not exist here"),
        ({**GOOD, "model": "router--1"}, 404, "'router-<λ>' takes a cost weight λ ≥ 0"),
        ([GOOD], 400, "must be a JSON object, got list"),
    ],
)
def test_bad_requests_get_a_4xx_in_openais_error_format(
    gateway: ThreadServer, body: Any, status: int, message: str
) -> None:
    r = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=10)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"


def test_unparsable_and_oversized_bodies(gateway: ThreadServer) -> None:
    url = gateway.url + "/v1/chat/completions"
    r = httpx.post(url, content=b'{"model": "router", "messages": [', timeout=10)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = httpx.post(url, content=b'{"model": "router", "temperature": NaN, "messages": []}', timeout=10)
    assert r.status_code == 400 and "NaN is not a JSON number" in r.json()["error"]["message"]
    r = httpx.post(url, content=b"\xff\xfe" * 10, timeout=10)
    assert r.status_code == 400
    big = {**GOOD, "messages": [{"role": "user", "content": "x" * 5000}]}
    r = httpx.post(url, json=big, timeout=10)
    assert r.status_code == 413 and "exceeds the 4096-byte limit" in r.json()["detail"]


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
_message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "system", "assistant", "tool", "x"]),
        "content": _json | st.text(max_size=50),
    }
)
_bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["router", "router-0.3", "router-", "small-3b", "nope"]) | _json,
        "messages": st.lists(_message, max_size=3) | _json,
        "stream": st.booleans() | _json,
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans() | _json}) | _json,
        "logprobs": st.booleans() | _json,
        "n": st.integers(-2, 3) | _json,
        "temperature": _json,
    },
)


@settings(max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=_bodies | _json)
def test_fuzzed_bodies_never_get_a_5xx(gateway: ThreadServer, body: Any) -> None:
    r = httpx.post(gateway.url + "/v1/chat/completions", content=json.dumps(body).encode(), timeout=30)
    assert r.status_code < 500, r.text


def test_models_openapi_metrics_and_the_router_api_on_the_same_port(gateway: ThreadServer) -> None:
    with httpx.Client(base_url=gateway.url, timeout=10) as c:
        models = c.get("/v1/models").json()
        assert models["object"] == "list" and models["data"][0]["id"] == "router"
        paths = c.get("/openapi.json").json()["paths"]
        assert {"/v1/chat/completions", "/v1/models", "/v1/feedback", "/v1/decisions/{decision_id}"} <= set(
            paths
        )
        c.post("/v1/chat/completions", json=GOOD)
        metrics = c.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "routing_env_decisions_total" in metrics.text or "routing_env_" in metrics.text
        assert 'routing_env_gateway_calls_total{model="' in metrics.text
        assert c.get("/healthz").json()["status"] == "ok"


def test_the_documented_fastapi_route_answers_like_the_fast_path(
    gateway: ThreadServer, sample: LoggedDataset, tmp_path: Path
) -> None:
    # Its own gateway: the upstream clients belong to the event loop that first uses them (here TestClient's).
    config = gateway.app.gateway.config.model_copy(update={"store": str(tmp_path / "other.db")})
    api = FastAPI()
    api.include_router(gateway_routes(create_gateway_app(config).gateway))
    assert sample.prompts is not None
    body = {"model": "small-3b", "messages": [{"role": "user", "content": str(sample.prompts[3000])}]}
    fast = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=10)
    with TestClient(api) as tc:
        r = tc.post("/v1/chat/completions", json=body)
        assert r.status_code == 200 and r.headers["x-routing-model"] == "small-3b"
        assert r.json()["choices"] == fast.json()["choices"] and r.json()["usage"] == fast.json()["usage"]
        assert tc.post("/v1/chat/completions", json={"model": "router"}).status_code == 400
        streamed = tc.post("/v1/chat/completions", json={**body, "stream": True})
        assert streamed.headers["content-type"].startswith("text/event-stream")
        assert streamed.text.endswith("data: [DONE]\n\n")


# ---------------------------------------------------------------------------------------------------- start-up
def _config(sample: LoggedDataset, tmp_path: Path, policy_path: Path, **changes: Any) -> GatewayConfig:
    urls = {m: "http://127.0.0.1:9" for m in sample.models}
    values: dict[str, Any] = {
        "models": model_entries(sample, urls),
        "policy": str(policy_path),
        "store": str(tmp_path / "g.db"),
    }
    values.update(changes)
    return GatewayConfig.model_validate(values)


def test_start_up_refuses_models_the_config_and_policy_disagree_on(
    sample: LoggedDataset, tmp_path: Path, policy_dir: Path
) -> None:
    urls = {m: "http://127.0.0.1:9" for m in sample.models[:-1]}
    few = _config(sample, tmp_path, policy_dir, models=model_entries(sample, urls))
    with pytest.raises(
        ModelMismatchError, match=r"routes to \['frontier-reasoning'\], which the gateway config"
    ):
        create_gateway_app(few)
    more = model_entries(sample, {m: "http://127.0.0.1:9" for m in sample.models})
    more.append({**more[0], "name": "extra-model"})
    with pytest.raises(ModelMismatchError, match=r"models: \['extra-model'\] are not models of the policy"):
        create_gateway_app(_config(sample, tmp_path / "b", policy_dir, models=more))


def test_start_up_refuses_a_policy_without_a_fitting_featurizer_or_of_the_wrong_kind(
    sample: LoggedDataset, tmp_path: Path, policy_dir: Path
) -> None:
    bare = (
        LinUCB(alpha=0.3, seed=0).fit(sample.select(np.arange(300)), cost_weight=0.5).save(tmp_path / "bare")
    )
    with pytest.raises(ConfigurationError, match="the policy carries no featurizer"):
        create_gateway_app(_config(sample, tmp_path / "a", bare))
    from routing_env.data import TextFeaturizer

    assert sample.prompts is not None
    wide = TextFeaturizer(n_components=5, seed=0).fit(list(sample.prompts[:300])).save(tmp_path / "wide")
    with pytest.raises(
        ConfigurationError, match=r"makes features of shape \(1, 5\), but the policy takes width 16"
    ):
        create_gateway_app(_config(sample, tmp_path / "b", bare, featurizer=str(wide)))
    with pytest.raises(
        ConfigurationError, match=r"cascade_policy: .* holds a routing policy; give it as policy"
    ):
        create_gateway_app(
            _config(sample, tmp_path / "c", policy_dir, policy=None, cascade_policy=str(policy_dir))
        )
    verifier = _config(sample, tmp_path / "d", policy_dir, cascade={"signal": "verifier"})
    with pytest.raises(ConfigurationError, match=r"give cascade.verifier_model .* or a verifier callable"):
        create_gateway_app(verifier)


def test_an_unset_upstream_key_variable_is_named_never_its_value(
    sample: LoggedDataset, tmp_path: Path, policy_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GW_MISSING_KEY", raising=False)
    entries = model_entries(sample, {m: "http://127.0.0.1:9" for m in sample.models})
    entries[2]["api_key_env"] = "GW_MISSING_KEY"
    with pytest.raises(
        ConfigurationError,
        match=r"models\[2\] \(mixture-47b\): api_key_env names the variable GW_MISSING_KEY",
    ):
        create_gateway_app(_config(sample, tmp_path, policy_dir, models=entries))


def test_an_existing_store_resumes_its_policy(
    sample: LoggedDataset, tmp_path: Path, policy_dir: Path
) -> None:
    config = _config(sample, tmp_path, policy_dir, version="first")
    create_gateway_app(config).gateway.router.store.close()
    resumed = create_gateway_app(config.model_copy(update={"version": "ignored"})).gateway.router
    assert isinstance(resumed, OnlineRouter) and resumed.version == "first"
