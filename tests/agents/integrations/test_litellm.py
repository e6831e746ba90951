"""The LiteLLM plug-in against the real ``litellm`` package: a ``Router`` of ``mock_response`` deployments routed by
a saved policy through :class:`PolicyRoutingStrategy`, outcomes recorded by :class:`OutcomeLogger`, no network."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# LiteLLM fetches its model cost map from GitHub at import unless told to use the copy it ships.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
litellm = pytest.importorskip(
    "litellm", reason="needs the litellm extra (pip install 'routing-env[litellm]')"
)

from agents.integrations.litellm import (  # noqa: E402
    DECISION_KEY,
    LiteLLMConfig,
    OutcomeLogger,
    PolicyRoutingStrategy,
    install,
    prompt_text,
)
from agents.online import BudgetPacer, DecisionConflictError, DecisionNotFoundError, OnlineRouter  # noqa: E402
from agents.routers import LinUCB  # noqa: E402
from routing_env.data import TextFeaturizer, make_synthetic, split_and_featurize  # noqa: E402
from routing_env.errors import ConfigurationError, ModelMismatchError  # noqa: E402
from tests.agents.online.online_policies import LearningThresholdCascade  # noqa: E402

# The policy's three models, each a LiteLLM deployment answering with a fixed mock text. The first two are in
# LiteLLM's cost map (it prices their calls); the third is not (LiteLLM reports 0).
UPSTREAM = {"small-3b": "openai/gpt-4o-mini", "open-8b": "openai/gpt-4o", "mixture-47b": "openai/house-model"}
QUESTION = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "prove the integer sum"}]


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Refuse (and record) every connection that leaves the machine; every test must make none."""
    attempts: list[Any] = []
    original = socket.socket.connect

    def guarded(sock: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else None
        try:
            local = host is None or ipaddress.ip_address(host).is_loopback
        except ValueError:
            local = host == "localhost"
        if not local:
            attempts.append(address)
            raise OSError(f"test reached the network: {address}")
        return original(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield attempts
    assert attempts == []


@pytest.fixture(autouse=True)
def clean_callbacks() -> Iterator[None]:
    """LiteLLM's callbacks are process-wide: each test's loggers leave with it."""
    yield
    manager = litellm.logging_callback_manager
    for callback in manager.get_all_callbacks():
        if isinstance(callback, OutcomeLogger):
            manager.remove_callback_from_all_lists(callback)


@pytest.fixture(scope="module")
def saved_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = make_synthetic(n_queries=300, models=3, n_features=4, seed=5)
    split = split_and_featurize(
        data, test_size=0.3, seed=0, featurizer=TextFeaturizer(n_components=8, seed=0)
    )
    policy = LinUCB(alpha=0.5, epsilon=0.3, seed=0).fit(
        split.train, cost_weight=0.5, featurizer=split.featurizer
    )
    assert policy.models == tuple(UPSTREAM)
    return policy.save(tmp_path_factory.mktemp("policy") / "linucb")


def online_router(saved_policy: Path, tmp_path: Path, **kwargs: Any) -> OnlineRouter:
    from routing_env.policy import load_policy

    return OnlineRouter(load_policy(saved_policy), tmp_path / "router.db", **kwargs)


def litellm_router(extra: dict[str, str] | None = None, rename: dict[str, str] | None = None) -> Any:
    names = {m: (rename or {}).get(m, m) for m in UPSTREAM}
    deployments = [
        {
            "model_name": names[m],
            "litellm_params": {"model": up, "mock_response": f"answer of {m}", "api_key": "k"},
        }
        for m, up in UPSTREAM.items()
    ]
    for name, up in (extra or {}).items():
        deployments.append(
            {"model_name": name, "litellm_params": {"model": up, "mock_response": "other", "api_key": "k"}}
        )
    return litellm.Router(model_list=deployments)


def wait_for(condition: Any, timeout: float = 30.0) -> None:
    """LiteLLM runs its success callbacks after the answer returns; wait (bounded) until they have."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("LiteLLM's success callback did not run in time")
        time.sleep(0.01)


async def async_wait_for(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("LiteLLM's success callback did not run in time")
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------------------------------------------- routing
def test_routes_logs_the_decision_and_records_the_outcome(saved_policy: Path, tmp_path: Path) -> None:
    online = online_router(saved_policy, tmp_path)
    router = litellm_router()
    plugin = install(router, online)

    async def run() -> list[tuple[dict[str, Any], Any]]:
        out = []
        for k in range(12):
            md: dict[str, Any] = {"caller": k}
            out.append((md, await router.acompletion(model="router", messages=QUESTION, metadata=md)))
        await async_wait_for(lambda: all(plugin.logger.outcome(md[DECISION_KEY]) for md, _ in out))
        return out

    calls = asyncio.run(run())
    decisions = online.store.decisions()
    assert len(decisions) == 12
    assert {d.model for d in decisions} == set(UPSTREAM)  # ε-greedy explores every model
    for (md, answer), d in zip(calls, decisions):
        assert md[DECISION_KEY] == d.decision_id and md["caller"] == md["caller"]  # the caller's keys stay
        assert md["routing_model"] == d.model and md["routing_propensity"] == d.propensity
        assert (
            answer.choices[0].message.content == f"answer of {d.model}"
        )  # the deployment routed to answered
        np.testing.assert_allclose(
            d.features, online.featurizer.transform([prompt_text(QUESTION)])[0], rtol=1e-6
        )
        assert 0 < d.propensity < 1 and d.prompt == "prove the integer sum"
        outcome = plugin.logger.outcome(d.decision_id)
        assert outcome is not None and outcome.model == d.model
        assert outcome.input_tokens is not None and outcome.input_tokens > 0 and outcome.output_tokens
        assert outcome.latency_s is not None and outcome.latency_s >= 0
        assert outcome.litellm_call_id == answer._hidden_params["litellm_call_id"]
        if d.model == "open-8b":  # priced by LiteLLM from its cost map
            assert outcome.cost_source == "litellm" and outcome.cost == pytest.approx(
                answer._hidden_params["response_cost"]
            )
    # Quality arrives later: each decision closes with the recorded cost and latency, and the policy learns.
    updates = online.policy.n_updates
    for md, _ in calls:
        fb = plugin.logger.feedback(md[DECISION_KEY], 0.75)
        assert fb is not None
        outcome = plugin.logger.outcome(md[DECISION_KEY])
        assert outcome is not None
        assert (fb.cost, fb.latency_s) == (outcome.cost or 0.0, outcome.latency_s)
    assert online.policy.n_updates == updates + 12
    assert [fb.quality for fb, _ in online.store.feedback()] == [0.75] * 12
    with pytest.raises(DecisionConflictError, match="already closed"):
        plugin.logger.feedback(calls[0][0][DECISION_KEY], 1.0)


def test_a_model_name_is_a_forced_decision_and_other_groups_pass_through(
    saved_policy: Path, tmp_path: Path
) -> None:
    online = online_router(saved_policy, tmp_path)
    router = litellm_router(extra={"embedder": "openai/gpt-4o-mini"})
    install(router, online)
    forced = router.completion(model="open-8b", messages=QUESTION, metadata=(md := {}))
    assert forced.choices[0].message.content == "answer of open-8b"
    d = online.store.get_decision(md[DECISION_KEY])
    assert (d.model, d.propensity, d.allowed_models) == ("open-8b", 1.0, ("open-8b",))
    other = router.completion(model="embedder", messages=QUESTION)
    assert other.choices[0].message.content == "other"
    assert len(online.store.decisions()) == 1  # a group outside the policy is not a routing decision
    with pytest.raises(
        ModelMismatchError, match="'nope' is neither a routing name \\['router'\\] nor a model group"
    ):
        router.completion(model="nope", messages=QUESTION, num_retries=0)


def test_sync_streaming_and_renamed_deployments(saved_policy: Path, tmp_path: Path) -> None:
    online = online_router(saved_policy, tmp_path)
    rename = {"small-3b": "mini", "open-8b": "big", "mixture-47b": "house"}
    router = litellm_router(rename=rename)
    config = LiteLLMConfig(route_names=("auto", "router"), model_map=rename, messages="all")
    plugin = install(router, online, config)
    answer = router.completion(model="auto", messages=QUESTION, metadata=(md := {}))
    d = online.store.get_decision(md[DECISION_KEY])
    assert answer.choices[0].message.content == f"answer of {d.model}"
    assert d.prompt == "be brief\nprove the integer sum"
    wait_for(lambda: plugin.logger.outcome(d.decision_id) is not None)

    async def stream() -> tuple[str, dict[str, Any]]:
        meta: dict[str, Any] = {}
        chunks = await router.acompletion(model="router", messages=QUESTION, stream=True, metadata=meta)
        text = "".join([c.choices[0].delta.content or "" async for c in chunks])
        await async_wait_for(lambda: plugin.logger.outcome(meta[DECISION_KEY]) is not None)
        return text, meta

    text, meta = asyncio.run(stream())
    streamed = online.store.get_decision(meta[DECISION_KEY])
    assert text == f"answer of {streamed.model}"
    outcome = plugin.logger.outcome(streamed.decision_id)
    assert outcome is not None and outcome.output_tokens


def test_prices_take_precedence_over_litellms_cost(saved_policy: Path, tmp_path: Path) -> None:
    online = online_router(saved_policy, tmp_path)
    router = litellm_router()
    prices = {"mixture-47b": (0.6, 0.6), "open-8b": (1.0, 2.0)}
    plugin = install(router, online, prices=prices)
    for model in ("mixture-47b", "open-8b", "small-3b"):
        router.completion(model=model, messages=QUESTION, metadata=(md := {}))
        wait_for(lambda md=md: plugin.logger.outcome(md[DECISION_KEY]) is not None)
        outcome = plugin.logger.outcome(md[DECISION_KEY])
        assert outcome is not None and outcome.input_tokens is not None and outcome.output_tokens is not None
        if model in prices:
            p_in, p_out = prices[model]
            assert outcome.cost_source == "prices"
            assert outcome.cost == pytest.approx(
                (outcome.input_tokens * p_in + outcome.output_tokens * p_out) / 1e6
            )
        else:
            assert outcome.cost_source == "litellm" and outcome.cost is not None and outcome.cost > 0


def test_an_evaluator_closes_each_decision_as_its_call_succeeds(saved_policy: Path, tmp_path: Path) -> None:
    online = online_router(saved_policy, tmp_path, pacer=BudgetPacer(target_per_query=1e-6))

    def grade(messages: Any, response: Any) -> float:
        return 1.0 if response.choices[0].message.content == "answer of open-8b" else 0.25

    router = litellm_router()
    # Every call costs something (LiteLLM prices mixture-47b's upstream at 0; the price card here does not).
    plugin = install(router, online, evaluator=grade, prices={"mixture-47b": (0.6, 0.6)})
    for _ in range(8):
        router.completion(model="router", messages=QUESTION)
    wait_for(lambda: online.store.max_feedback_seq() == 8)
    for fb, d in online.store.feedback():
        assert fb.quality == (1.0 if d.model == "open-8b" else 0.25)
        outcome = plugin.logger.outcome(d.decision_id)
        assert outcome is not None and fb.cost == (outcome.cost or 0.0)
    # The budget pacer saw every cost and raised λ (a target far below what every call costs); decisions log it.
    lams = [d.cost_weight for d in online.store.decisions()]
    assert lams == sorted(lams) and lams[-1] > lams[0]
    assert online.pacer is not None and online.pacer.state().n == 8


def test_quality_and_outcome_meet_in_either_order(saved_policy: Path, tmp_path: Path) -> None:
    online = online_router(saved_policy, tmp_path)
    router = litellm_router()
    strategy = PolicyRoutingStrategy(online, router)
    logger = OutcomeLogger(online)
    kwargs: dict[str, Any] = {"metadata": {"routing_request_id": "req-7"}, "messages": QUESTION}
    strategy.pick("router", QUESTION, request_kwargs=kwargs)
    decision_id = kwargs["metadata"][DECISION_KEY]
    # The quality first: it waits for the outcome.
    assert logger.feedback_for_request("req-7", 0.5) is None
    assert online.store.get_decision(decision_id).status == "open"
    event = {
        "litellm_params": {"metadata": kwargs["metadata"]},
        "response_cost": 0.002,
        "litellm_call_id": "c1",
    }
    response = {"usage": {"prompt_tokens": 11, "completion_tokens": 7}}
    outcome = logger.record(event, response, 10.0, 10.25)
    assert outcome is not None and (outcome.cost, outcome.latency_s, outcome.input_tokens) == (
        0.002,
        0.25,
        11,
    )
    fb = online.store.get_feedback(decision_id)
    assert fb is not None and (fb.quality, fb.cost, fb.latency_s) == (0.5, 0.002, 0.25)
    # The same request id routes to the same logged decision (a retry), and unknown ids are named.
    again: dict[str, Any] = {"metadata": {"routing_request_id": "req-7"}}
    strategy.pick("router", QUESTION, request_kwargs=again)
    assert again["metadata"][DECISION_KEY] == decision_id
    with pytest.raises(DecisionNotFoundError, match="no decision was made for request id 'req-9'"):
        logger.feedback_for_request("req-9", 1.0)
    with pytest.raises(ConfigurationError, match=r"quality must be a number in \[0, 1\], got 1.5"):
        logger.feedback(decision_id, 1.5)
    # Events that are not this router's decisions are ignored.
    assert logger.record({"litellm_params": {"metadata": {}}}, response, 0.0, 1.0) is None
    foreign = {"litellm_params": {"metadata": {DECISION_KEY: "0" * 32}}}
    assert logger.record(foreign, response, 0.0, 1.0) is None
    assert logger.errors == 0


def test_a_failing_evaluator_does_not_fail_the_call(saved_policy: Path, tmp_path: Path) -> None:
    online = online_router(saved_policy, tmp_path)
    router = litellm_router()

    def broken(messages: Any, response: Any) -> float:
        raise RuntimeError("grader down")

    plugin = install(router, online, evaluator=broken)
    answer = router.completion(model="router", messages=QUESTION, metadata=(md := {}))
    assert answer.choices[0].message.content.startswith("answer of")
    wait_for(lambda: plugin.logger.errors == 1)
    # The outcome waits for a quality given by hand instead.
    fb = plugin.logger.feedback(md[DECISION_KEY], 1.0)
    assert fb is not None and fb.quality == 1.0


# ---------------------------------------------------------------------------------------------------- refusals
def test_install_refuses_what_cannot_be_routed(saved_policy: Path, tmp_path: Path) -> None:
    online = online_router(saved_policy, tmp_path)
    partial = litellm.Router(
        model_list=[
            {"model_name": "small-3b", "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "k"}}
        ]
    )
    with pytest.raises(
        ModelMismatchError, match=r"models \['mixture-47b', 'open-8b'\] have no LiteLLM deployment"
    ):
        PolicyRoutingStrategy(online, partial)
    with pytest.raises(ConfigurationError, match=r"route_names \['open-8b'\] are deployment names"):
        PolicyRoutingStrategy(online, litellm_router(), LiteLLMConfig(route_names=("open-8b",)))
    with pytest.raises(ModelMismatchError, match=r"model_map names \['gpt'\]"):
        PolicyRoutingStrategy(online, litellm_router(), LiteLLMConfig(model_map={"gpt": "x"}))
    with pytest.raises(ConfigurationError, match="route_names must be a non-empty list"):
        LiteLLMConfig(route_names="router")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="messages must be 'last_user' or 'all'"):
        LiteLLMConfig(messages="first")  # type: ignore[arg-type]
    cascade = OnlineRouter(LearningThresholdCascade(tuple(UPSTREAM)), tmp_path / "c.db")
    with pytest.raises(ConfigurationError, match="serves route policies"):
        PolicyRoutingStrategy(cascade, litellm_router())
    blind = OnlineRouter(LinUCB(models=tuple(UPSTREAM), seed=0), tmp_path / "b.db")
    with pytest.raises(ConfigurationError, match="carries no featurizer"):
        PolicyRoutingStrategy(blind, litellm_router())
    with pytest.raises(ModelMismatchError, match=r"prices names \['gpt-4o'\]"):
        OutcomeLogger(online, prices={"gpt-4o": (1.0, 2.0)})
    with pytest.raises(ConfigurationError, match=r"prices\['open-8b'\] must be USD amounts ≥ 0"):
        OutcomeLogger(online, prices={"open-8b": (-1.0, 2.0)})
    strategy = PolicyRoutingStrategy(online, litellm_router())
    with pytest.raises(ConfigurationError, match="reads chat messages; this request has none"):
        strategy.pick("router", None, request_kwargs={"input": ["embed me"]})


def test_prompt_text_reads_text_parts() -> None:
    parts = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}],
        }
    ]
    assert prompt_text(parts) == "a b"
    assert prompt_text([{"role": "system", "content": "only"}]) == "only"
    with pytest.raises(ConfigurationError, match="messages must be a list of chat messages, got str"):
        prompt_text("hello")  # type: ignore[arg-type]


def test_uninstall_and_the_older_installation_hook(saved_policy: Path, tmp_path: Path) -> None:
    online = online_router(saved_policy, tmp_path)
    router = litellm_router()
    plugin = install(router, online)
    plugin.uninstall()
    assert plugin.logger not in litellm.logging_callback_manager.get_all_callbacks()
    router.completion(model="router", messages=QUESTION, metadata=(md := {}))
    time.sleep(0.2)
    assert plugin.logger.outcome(md[DECISION_KEY]) is None  # routed still, no longer recorded

    class OlderRouter:  # a LiteLLM Router from before register_plugin and the registry
        def __init__(self, model_list: list[dict[str, Any]]) -> None:
            self.model_list = model_list
            self.strategy: Any = None

        def set_custom_routing_strategy(self, strategy: Any) -> None:
            self.strategy = strategy

    older = OlderRouter([{"model_name": m, "litellm_params": {"model": up}} for m, up in UPSTREAM.items()])
    strategy = PolicyRoutingStrategy(online, older).install()
    assert older.strategy is strategy
    assert strategy.pick("router", QUESTION)["model_name"] in UPSTREAM


def test_the_network_guard_refuses_outside_connections(no_network: list[Any]) -> None:
    with pytest.raises(OSError, match="test reached the network"):
        socket.create_connection(("192.0.2.1", 443), timeout=1)
    no_network.clear()  # the guard worked; this test's own attempt is not a failure


def test_a_specific_deployment_is_served_as_asked(saved_policy: Path, tmp_path: Path) -> None:
    online = online_router(saved_policy, tmp_path)
    router = litellm_router(extra={"embedder": "openai/gpt-4o-mini"})
    strategy = PolicyRoutingStrategy(online, router)
    target = next(d for d in router.registry().deployments() if d["model_name"] == "mixture-47b")
    kwargs: dict[str, Any] = {"metadata": {}}
    chosen = strategy.pick(
        target["model_info"]["id"], QUESTION, specific_deployment=True, request_kwargs=kwargs
    )
    assert chosen["model_info"]["id"] == target["model_info"]["id"]
    d = online.store.get_decision(kwargs["metadata"][DECISION_KEY])
    assert (d.model, d.propensity) == ("mixture-47b", 1.0)  # logged as the forced decision it is
    other = strategy.pick("openai/gpt-4o-mini", QUESTION, specific_deployment=True, request_kwargs={})
    assert other["model_name"] in ("embedder", "small-3b")
    with pytest.raises(ModelMismatchError, match="specific deployment 'nope' is not a deployment id"):
        strategy.pick("nope", QUESTION, specific_deployment=True)
