"""Cascades through the gateway: the chain's models called cheapest first, each answer's signal (log-probs, a
grading model, or a verifier callable) observed, and the answer the policy accepts returned — exactly the stage
the same policy accepts offline on the logged signals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("openai")

import openai

from agents.routers import ThresholdCascade
from experiments.fake_upstream import ANSWER
from routing_env import LoggedDataset
from routing_env.data import TextFeaturizer
from tests.agents.online.gateway.conftest import GatewayFactory
from tests.agents.online.gateway.test_service import client, expected_answer, messages

CHAIN = ("open-8b", "mini-frontier", "frontier-large")
GRADER = "small-3b"
ROWS = range(3000, 3030)


@pytest.fixture(scope="module")
def cascade(sample: LoggedDataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[ThresholdCascade, Path]:
    assert sample.prompts is not None
    train = sample.select(np.arange(2500))
    featurizer = TextFeaturizer(n_components=8, seed=0).fit(list(train.prompts))  # type: ignore[arg-type]
    policy = ThresholdCascade(chain=CHAIN).fit(train, cost_weight=0.5, featurizer=featurizer)
    return policy, policy.save(tmp_path_factory.mktemp("cascade") / "threshold")


def offline_stages(sample: LoggedDataset, policy: ThresholdCascade) -> np.ndarray:
    assert sample.signal is not None
    idx = [sample.models.index(m) for m in CHAIN]
    return policy.accept_stages(sample.signal[list(ROWS)][:, idx])


def _run(gw: Any, sample: LoggedDataset, stream: bool = False) -> list[tuple[str, str, str]]:
    """``(decision id, model header, answer text)`` per row."""
    c = client(gw)
    out = []
    for i in ROWS:
        if stream:
            with c.chat.completions.with_streaming_response.create(
                model="router", messages=messages(sample, i), stream=True
            ) as r:
                chunks = list(r.parse())
                text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
                out.append((r.headers["x-routing-decision-id"], r.headers["x-routing-model"], text))
        else:
            raw = c.chat.completions.with_raw_response.create(model="router", messages=messages(sample, i))
            text = raw.parse().choices[0].message.content or ""
            out.append((raw.headers["x-routing-decision-id"], raw.headers["x-routing-model"], text))
    return out


def test_a_grading_model_gives_the_logged_signals_and_the_offline_stages(
    make_gateway: GatewayFactory, sample: LoggedDataset, cascade: tuple[ThresholdCascade, Path]
) -> None:
    policy, path = cascade
    gw = make_gateway(
        models=[*CHAIN, GRADER],
        cascade_policy=str(path),
        cascade={"signal": "verifier", "verifier_model": GRADER},
    )
    stages = offline_stages(sample, policy)
    assert len(set(stages.tolist())) == 3, "the rows must exercise every stage"
    store = gw.app.gateway.router.store
    assert sample.signal is not None
    for (decision_id, model, text), i, stage in zip(_run(gw, sample), ROWS, stages):
        assert model == CHAIN[stage] and text == expected_answer(sample, i, model)
        d = store.get_decision(decision_id)
        steps = store.steps(decision_id)
        assert (d.kind, d.n_calls, [s.stop for s in steps]) == (
            "cascade",
            stage + 1,
            [False] * stage + [True],
        )
        signals = [float(sample.signal[i, sample.models.index(m)]) for m in CHAIN[: stage + 1]]
        assert [s.signal for s in steps] == signals  # exact: the grader answers the logged signal
        calls = store.calls(decision_id)
        assert [(c.model, c.purpose, c.step) for c in calls] == [
            x for t in range(stage + 1) for x in ((CHAIN[t], "answer", t), (GRADER, "verify", t))
        ]
        # Each step's cost is its answer's plus its grading call's.
        for t, s in enumerate(steps):
            assert s.cost == pytest.approx(sum(c.cost or 0 for c in calls if c.step == t), rel=1e-12)


def test_logprob_signals_reach_the_same_stages_and_streams_replay_the_accepted_answer(
    make_gateway: GatewayFactory, sample: LoggedDataset, cascade: tuple[ThresholdCascade, Path]
) -> None:
    policy, path = cascade
    gw = make_gateway(models=list(CHAIN), cascade_policy=str(path), cascade={"signal": "probability"})
    stages = offline_stages(sample, policy)
    assert sample.signal is not None and policy.thresholds is not None
    idx = [sample.models.index(m) for m in CHAIN[:-1]]
    # exp(mean log p) equals the logged signal to a few ulps: rows on a threshold could tip either way.
    clear = np.abs(sample.signal[list(ROWS)][:, idx] - np.asarray(policy.thresholds)).min(axis=1) > 1e-9
    for stream in (False, True):
        for (decision_id, model, text), i, stage, ok in zip(_run(gw, sample, stream), ROWS, stages, clear):
            if ok:
                assert model == CHAIN[stage]
            assert text == expected_answer(sample, i, model)
            steps = gw.app.gateway.router.store.steps(decision_id)
            assert steps[-1].stop and all(
                s.signal == pytest.approx(sample.signal[i, sample.models.index(CHAIN[s.step])], rel=1e-9)
                for s in steps
            )
    # The gateway asked for log-probs on its own behalf: the client, who did not, gets none.
    c = client(gw)
    assert (
        c.chat.completions.create(model="router", messages=messages(sample, 3000)).choices[0].logprobs is None
    )
    chunks = list(c.chat.completions.create(model="router", messages=messages(sample, 3000), stream=True))
    assert all(ch.choices[0].logprobs is None for ch in chunks if ch.choices)
    with_lp = c.chat.completions.create(model="router", messages=messages(sample, 3000), logprobs=True)
    assert with_lp.choices[0].logprobs is not None and with_lp.choices[0].logprobs.content


def test_a_verifier_callable_grades_each_answer(
    make_gateway: GatewayFactory, sample: LoggedDataset, cascade: tuple[ThresholdCascade, Path]
) -> None:
    _, path = cascade
    graded: list[tuple[str, str]] = []

    def verifier(msgs: Sequence[Mapping[str, Any]], answer: str, model: str) -> float:
        graded.append((str(msgs[-1]["content"]), model))
        match = ANSWER.search(answer)
        assert match is not None and match.group("model") == model
        return 1.0 if model == "mini-frontier" else 0.0  # accept the second model's answer, never the first

    gw = make_gateway(
        models=list(CHAIN),
        cascade_policy=str(path),
        cascade={"signal": "verifier"},
        app_options={"verifier": verifier},
    )
    c = client(gw)
    for i in ROWS[:5]:
        raw = c.chat.completions.with_raw_response.create(model="router", messages=messages(sample, i))
        assert raw.headers["x-routing-model"] == "mini-frontier"
        assert raw.parse().choices[0].message.content == expected_answer(sample, i, "mini-frontier")
    assert graded[:2] == [
        (str(sample.prompts[3000]), "open-8b"),
        (str(sample.prompts[3000]), "mini-frontier"),
    ]  # type: ignore[index]
    assert len(graded) == 10


def test_a_cascade_without_logprobs_from_its_upstream_says_what_to_configure(
    make_gateway: GatewayFactory, sample: LoggedDataset, cascade: tuple[ThresholdCascade, Path]
) -> None:
    _, path = cascade
    gw = make_gateway(models=list(CHAIN), cascade_policy=str(path), cascade={"signal": "logprob"})
    gw.app.gateway._payload = _without_logprobs(gw.app.gateway._payload)
    with pytest.raises(
        openai.InternalServerError, match=r"returned no logprobs.*set cascade.signal: verifier"
    ):
        client(gw).chat.completions.create(model="router", messages=messages(sample, 3000))


def _without_logprobs(payload: Any) -> Any:
    def wrapped(body: dict[str, Any], up: Any, *, stream: bool, logprobs: bool) -> bytes:
        return payload(body, up, stream=stream, logprobs=False)  # type: ignore[no-any-return]

    return wrapped
