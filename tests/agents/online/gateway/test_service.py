"""The gateway end to end, with real parts: fake upstreams answering from the bundled sample's logs on loopback
ports, the gateway on another, and the real ``openai`` client — non-streaming, streaming, pass-through,
``router-<λ>``, fail-over, timeouts, an upstream's own 4xx, evaluator feedback and the upstream keys."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("openai")

import openai

from agents.online.stores.base import Decision
from experiments.fake_upstream import quality_of
from routing_env import LoggedDataset
from tests.agents.online.gateway.conftest import GatewayFactory, set_faults
from tests.agents.online.gateway.servers import ThreadServer

TEST_ROWS = range(3000, 3040)  # queries the policy was not fitted on


def client(gateway: ThreadServer, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=30)


def messages(sample: LoggedDataset, i: int) -> list[dict[str, str]]:
    assert sample.prompts is not None
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": str(sample.prompts[i])}]


def expected_answer(sample: LoggedDataset, i: int, model: str) -> str:
    q = float(sample.quality[i, sample.models.index(model)])
    return f"[{model}] answer to query {sample.query_ids[i]}: quality {q!r}"


def stored(gateway: ThreadServer, decision_id: str) -> Decision:
    return gateway.app.gateway.router.store.get_decision(decision_id)  # type: ignore[no-any-return]


def logged_outcome(sample: LoggedDataset, i: int, model: str) -> tuple[int, int, float]:
    assert sample.input_tokens is not None and sample.output_tokens is not None
    k = sample.models.index(model)
    return int(sample.input_tokens[i, k]), int(sample.output_tokens[i, k]), float(sample.cost[i, k])


def test_router_answers_as_the_routed_model_with_headers_and_a_logged_cost(
    make_gateway: GatewayFactory, sample: LoggedDataset
) -> None:
    gw = make_gateway()
    c = client(gw)
    for i in TEST_ROWS[:10]:
        raw = c.chat.completions.with_raw_response.create(model="router", messages=messages(sample, i))
        completion = raw.parse()
        model = raw.headers["x-routing-model"]
        d = stored(gw, raw.headers["x-routing-decision-id"])
        assert completion.model == model == d.model and raw.headers["x-routing-policy-version"] == "v1"
        assert completion.choices[0].message.content == expected_answer(sample, i, model)
        assert (
            float(raw.headers["x-routing-propensity"])
            == d.propensity
            == pytest.approx(d.probabilities[d.action])
        )
        assert d.prompt == sample.prompts[i] and d.status == "open"  # type: ignore[index]
        tokens_in, tokens_out, cost = logged_outcome(sample, i, model)
        assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (tokens_in, tokens_out)  # type: ignore[union-attr]
        (call,) = gw.app.gateway.router.store.calls(d.decision_id)
        assert (call.model, call.status, call.http_status, call.purpose) == (model, "ok", 200, "answer")
        assert (call.input_tokens, call.output_tokens) == (tokens_in, tokens_out)
        assert call.cost == pytest.approx(cost, rel=1e-12) and 0 < call.latency_s < 10
    shown = httpx.get(f"{gw.url}/v1/decisions/{d.decision_id}").json()
    assert shown["calls"][0]["cost"] == call.cost
    # Feedback without a cost takes the logged call's.
    fb = httpx.post(f"{gw.url}/v1/feedback", json={"decision_id": d.decision_id, "quality": 1.0}).json()
    assert fb["applied"] and gw.app.gateway.router.store.get_feedback(d.decision_id).cost == call.cost


@pytest.mark.parametrize("include_usage", [False, True])
def test_streams_pass_through_chunk_by_chunk_and_the_cost_is_logged_before_done(
    make_gateway: GatewayFactory, sample: LoggedDataset, include_usage: bool
) -> None:
    gw = make_gateway()
    c = client(gw)
    i = TEST_ROWS[0]
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    with c.chat.completions.with_streaming_response.create(
        model="router", messages=messages(sample, i), stream=True, **options
    ) as response:
        decision_id = response.headers["x-routing-decision-id"]
        model = response.headers["x-routing-model"]
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = list(response.parse())
    # The stream has ended ([DONE] received): its call is committed with the usage from the final chunk.
    (call,) = gw.app.gateway.router.store.calls(decision_id)
    tokens_in, tokens_out, cost = logged_outcome(sample, i, model)
    assert (call.input_tokens, call.output_tokens, call.status) == (tokens_in, tokens_out, "ok")
    assert call.cost == pytest.approx(cost, rel=1e-12)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == expected_answer(sample, i, model)
    assert {ch.model for ch in chunks} == {model}
    usage = [ch.usage for ch in chunks if ch.usage is not None]
    if include_usage:
        assert [(u.prompt_tokens, u.completion_tokens) for u in usage] == [(tokens_in, tokens_out)]
    else:
        assert usage == [] and all(
            ch.choices for ch in chunks
        )  # the usage chunk the gateway asked for is gone
    assert all(ch.choices[0].logprobs is None for ch in chunks if ch.choices)


def test_a_model_name_is_a_forced_pass_through_and_router_lambda_sets_the_cost_weight(
    make_gateway: GatewayFactory, sample: LoggedDataset
) -> None:
    gw = make_gateway()
    c = client(gw)
    raw = c.chat.completions.with_raw_response.create(model="open-70b", messages=messages(sample, 3001))
    d = stored(gw, raw.headers["x-routing-decision-id"])
    assert (d.model, d.propensity, d.allowed_models, raw.headers["x-routing-propensity"]) == (
        "open-70b", 1.0, ("open-70b",), "1.0"
    )  # fmt: skip
    assert raw.parse().choices[0].message.content == expected_answer(sample, 3001, "open-70b")
    raw = c.chat.completions.with_raw_response.create(model="router-2.5", messages=messages(sample, 3002))
    assert stored(gw, raw.headers["x-routing-decision-id"]).cost_weight == 2.5
    with pytest.raises(openai.NotFoundError, match=r"'router-<λ>' takes a cost weight λ ≥ 0"):
        c.chat.completions.create(model="router-cheap", messages=messages(sample, 3003))
    with pytest.raises(openai.NotFoundError, match=r"model 'gpt-5' does not exist here: use 'router'"):
        c.chat.completions.create(model="gpt-5", messages=messages(sample, 3003))
    assert [m.id for m in c.models.list()] == ["router", *sample.models]


def test_down_models_fail_over_with_renormalised_propensities_then_stay_excluded(
    make_gateway: GatewayFactory, sample: LoggedDataset, healthy: dict[str, ThreadServer]
) -> None:
    up = ("mini-frontier", "frontier-large")
    down = [m for m in sample.models if m not in up]
    for m in down:
        set_faults(healthy[m], fail_next=10_000, status=503)
    gw = make_gateway()
    c = client(gw)
    served = []
    for i in TEST_ROWS[:25]:
        raw = c.chat.completions.with_raw_response.create(model="router", messages=messages(sample, i))
        d = stored(gw, raw.headers["x-routing-decision-id"])
        calls = gw.app.gateway.router.store.calls(d.decision_id)
        assert raw.headers["x-routing-model"] == d.model and d.model in up
        assert raw.parse().choices[0].message.content == expected_answer(sample, i, d.model)
        failed = [cl for cl in calls if cl.status != "ok"]
        assert [cl.index for cl in calls] == list(range(len(calls))) and calls[-1].model == d.model
        assert all(cl.status == "error" and cl.http_status == 503 and cl.cost is None for cl in failed)
        # Each failed model was tried 1 + max_retries times, then left out of the distribution served from.
        tried = sorted({cl.model for cl in failed})
        assert all(sum(cl.model == m for cl in failed) == 2 for m in tried)
        assert not set(tried) & set(d.allowed_models or ())
        p = d.probabilities
        assert p.sum() == pytest.approx(1.0) and all(p[sample.models.index(m)] == 0 for m in tried)
        assert d.propensity == p[d.action]
        served.append((d, tried))
    assert any(tried for _, tried in served), "no decision drew a down model: the test proves nothing"
    # Every down model that failed is cooling down: later decisions leave it out from the start.
    cooling = gw.app.gateway.cooldown.down()
    assert set().union(*(set(t) for _, t in served)) <= cooling
    for m in sorted(set(down) - cooling):  # mark the rest down with a pass-through each (they answer 502)
        with pytest.raises(openai.InternalServerError, match=f"model '{m}' did not answer"):
            c.chat.completions.create(model=m, messages=messages(sample, 3030))
    assert gw.app.gateway.cooldown.down() == set(down)
    raw = c.chat.completions.with_raw_response.create(model="router", messages=messages(sample, 3031))
    d = stored(gw, raw.headers["x-routing-decision-id"])
    assert d.allowed_models == up and len(gw.app.gateway.router.store.calls(d.decision_id)) == 1
    assert "routing_env_gateway_fail_overs_total" in httpx.get(gw.url + "/metrics").text


def test_a_timeout_is_logged_and_a_pass_through_to_a_down_model_answers_502(
    make_gateway: GatewayFactory, sample: LoggedDataset, healthy: dict[str, ThreadServer]
) -> None:
    set_faults(healthy["open-8b"], delay_s=1.0)
    gw = make_gateway(model_overrides={"open-8b": {"timeout_s": 0.2, "max_retries": 0}})
    c = client(gw)
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as err:
        c.chat.completions.with_raw_response.create(model="open-8b", messages=messages(sample, 3004))
    assert time.monotonic() - started < 1.0
    assert "model 'open-8b' did not answer: open-8b (timeout)" in str(err.value)
    decision_id = err.value.response.headers["x-routing-decision-id"]
    (call,) = gw.app.gateway.router.store.calls(decision_id)
    assert (call.status, call.http_status) == ("timeout", None) and 0.19 <= call.latency_s < 1.0


def test_an_upstreams_own_4xx_passes_through_and_is_logged_as_rejected(
    make_gateway: GatewayFactory, sample: LoggedDataset
) -> None:
    gw = make_gateway(model_overrides={"small-3b": {"upstream_model": "no-such-model"}})
    with pytest.raises(
        openai.NotFoundError, match="the model 'no-such-model' does not exist on this server"
    ) as err:
        client(gw).chat.completions.create(model="small-3b", messages=messages(sample, 3005))
    (call,) = gw.app.gateway.router.store.calls(err.value.response.headers["x-routing-decision-id"])
    assert (call.status, call.http_status) == ("rejected", 404)
    assert gw.app.gateway.cooldown.down() == set()


def test_an_evaluator_scores_every_decision_exactly_with_its_logged_cost(
    make_gateway: GatewayFactory, sample: LoggedDataset
) -> None:
    gw = make_gateway(app_options={"evaluator": lambda ex: quality_of(ex.answer)})
    c = client(gw)
    ids = {}
    for i in TEST_ROWS:
        raw = c.chat.completions.with_raw_response.create(model="router", messages=messages(sample, i))
        ids[raw.headers["x-routing-decision-id"]] = i
    router = gw.app.gateway.router
    deadline = time.monotonic() + 30
    while router.stats()["pending"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert router.stats()["pending"] == 0 and router.stats()["applied_updates"] == len(TEST_ROWS)
    for fb, d in router.store.feedback():
        i = ids[d.decision_id]
        k = sample.models.index(d.model)
        assert fb.quality == sample.quality[i, k] and fb.source == "client" and fb.applied
        assert fb.cost == pytest.approx(sample.cost[i, k], rel=1e-12) and fb.latency_s is not None
        assert fb.reward == pytest.approx(fb.quality - d.cost_weight * fb.cost / router.policy.cost_scale_)


def test_upstream_keys_come_from_the_environment_and_client_keys_never_go_upstream(
    make_gateway: GatewayFactory,
    sample: LoggedDataset,
    healthy: dict[str, ThreadServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-upstream-secret")
    gw = make_gateway(
        api_keys=["client-key-123456"], model_overrides={"open-70b": {"api_key_env": "FAKE_UPSTREAM_KEY"}}
    )
    c = client(gw, "client-key-123456")
    c.chat.completions.create(model="open-70b", messages=messages(sample, 3006))
    c.chat.completions.create(model="small-3b", messages=messages(sample, 3006))
    seen = {
        m: set(httpx.get(healthy[m].url + "/fake/stats").json()["authorizations"])
        for m in ("open-70b", "small-3b")
    }
    assert "Bearer sk-upstream-secret" in seen["open-70b"] and "" in seen["small-3b"]
    assert not any("client-key" in a for a in seen["open-70b"] | seen["small-3b"])
    log_free = Path(gw.app.gateway.router.store.location).read_bytes()
    assert b"sk-upstream-secret" not in log_free and b"client-key" not in log_free


async def _garbage(scope: dict[str, object], receive: object, send: object) -> None:
    """An upstream that answers 200 with something that is not a chat completion."""
    if scope["type"] != "http":
        return
    body = b"<html>maintenance</html>"
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]}
    )  # type: ignore[operator]
    await send({"type": "http.response.body", "body": body})  # type: ignore[operator]


def test_an_answer_that_is_no_chat_completion_is_a_502_and_a_failed_call(
    make_gateway: GatewayFactory, sample: LoggedDataset
) -> None:
    bad = ThreadServer(_garbage).start()
    try:
        gw = make_gateway(model_overrides={"open-8b": {"base_url": bad.url + "/v1"}})
        with pytest.raises(openai.InternalServerError, match="answered something else") as err:
            client(gw).chat.completions.create(model="open-8b", messages=messages(sample, 3007))
        (call,) = gw.app.gateway.router.store.calls(err.value.response.headers["x-routing-decision-id"])
        assert (call.status, call.http_status, call.cost) == ("error", 200, None)
    finally:
        bad.stop()


def test_a_budget_paces_the_routers_cost_weight_from_the_costs_of_its_answers(
    make_gateway: GatewayFactory, sample: LoggedDataset
) -> None:
    cheapest = float(sample.cost.mean(axis=0).min())
    gw = make_gateway(
        budget={"target_per_query": cheapest, "initial_cost_weight": 0.01},
        app_options={"evaluator": lambda ex: quality_of(ex.answer)},
    )
    c = client(gw)
    router = gw.app.gateway.router
    for n, i in enumerate(TEST_ROWS, start=1):
        c.chat.completions.create(model="router", messages=messages(sample, i))
        deadline = time.monotonic() + 30
        # One answer at a time, its feedback applied before the next: the λ each decision logs is then exact.
        while router.stats()["applied_updates"] < n and time.monotonic() < deadline:
            time.sleep(0.01)
    forced = c.chat.completions.with_raw_response.create(model="router-0.2", messages=messages(sample, 3100))
    decisions = [d for _, d in router.store.feedback()]
    lams = [d.cost_weight for d in decisions]
    # Spending above a target of the cheapest model's mean cost raises λ from its start, decision by decision.
    assert lams[0] == pytest.approx(0.01) and lams[-1] > 0.05 and len(set(lams)) > 10
    budget = router.stats()["budget"]
    assert budget["cost_weight"] > 0.05 and budget["target_per_query"] == pytest.approx(cheapest)
    assert "budget" in httpx.get(gw.url + "/metrics").text
    # router-<λ> is an explicit λ: the pacer does not override it.
    assert router.store.get_decision(forced.headers["x-routing-decision-id"]).cost_weight == pytest.approx(
        0.2
    )
