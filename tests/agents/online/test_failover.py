"""Fail-over of route decisions (``OnlineRouter.fail_over``) and the cost of a decision from its logged calls."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.online import Call, DecisionConflictError, OnlineRouter
from routing_env.errors import ModelMismatchError
from tests.agents.online.online_policies import FixedPolicy, LearningThresholdCascade

MODELS = ("a", "b", "c", "d")
PROBS = [0.4, 0.3, 0.2, 0.1]


def _router(path: Path) -> OnlineRouter:
    return OnlineRouter(FixedPolicy(MODELS, PROBS), path)


def _serve(router: OnlineRouter, down: set[str]) -> tuple[str, float, tuple[str, ...] | None]:
    """Route one query; while the served model is down, fail over. The served model, its logged propensity and
    the allowed models logged."""
    d = router.route([0.0, 0.0, 0.0])
    failed: list[str] = []
    while d.model in down:
        failed.append(d.model)
        d = router.fail_over(d.decision_id, failed)
    stored = router.store.get_decision(d.decision_id)
    assert (stored.model, stored.propensity) == (d.model, d.propensity)
    return d.model, d.propensity, d.allowed_models


def test_fail_over_serves_the_up_models_with_their_renormalised_probabilities(tmp_path: Path) -> None:
    router = _router(tmp_path / "s.db")
    down = {"a", "c"}  # p(up) = 0.4
    served = [_serve(router, down) for _ in range(4000)]
    counts = {m: sum(s[0] == m for s in served) for m in MODELS}
    assert counts["a"] == counts["c"] == 0
    # Plackett–Luce: the first up model drawn without replacement is b with probability p_b / p(up) = 0.75.
    assert abs(counts["b"] / 4000 - 0.75) < 0.03
    # Every decision whose failed set reached the whole down set logged exactly that probability.
    for model, propensity, allowed in served:
        if allowed is not None and set(allowed) == {"b", "d"}:
            assert propensity == pytest.approx(PROBS[MODELS.index(model)] / 0.4)


def test_fail_over_is_deterministic_in_the_seed_and_counts_the_served_model(tmp_path: Path) -> None:
    a, b = _router(tmp_path / "a.db"), _router(tmp_path / "b.db")
    assert [_serve(a, {"a"}) for _ in range(50)] == [_serve(b, {"a"}) for _ in range(50)]
    by_model = a.stats()["decisions_by_model"]
    assert by_model.get("a", 0) == 0 and sum(by_model.values()) == 50


def test_fail_over_refuses_closed_decisions_cascades_and_an_empty_choice(tmp_path: Path) -> None:
    router = _router(tmp_path / "s.db")
    d = router.route([0.0, 0.0, 0.0], allowed_models=["a", "b"])
    with pytest.raises(ModelMismatchError, match=r"no model is left for decision .*\['a', 'b'\] failed"):
        router.fail_over(d.decision_id, ["a", "b"])
    router.feedback(d.decision_id, 1.0)
    with pytest.raises(DecisionConflictError, match="already closed; it cannot be re-routed"):
        router.fail_over(d.decision_id, [d.model])
    cascade = OnlineRouter(LearningThresholdCascade(("a", "b")), tmp_path / "c.db")
    c = cascade.route([0.0, 0.0, 0.0])
    with pytest.raises(DecisionConflictError, match="is a cascade"):
        cascade.fail_over(c.decision_id, ["a"])


def _call(decision_id: str, index: int, cost: float | None, status: str = "ok") -> Call:
    return Call(decision_id, index, 0, "a", "answer", 0.0, status, 200, 10, 10, cost, 0.1)  # type: ignore[arg-type]


def test_feedback_without_cost_takes_the_logged_calls_cost(tmp_path: Path) -> None:
    router = OnlineRouter(FixedPolicy(MODELS, PROBS), tmp_path / "s.db", model_costs={"a": 9.0, "b": 9.0})
    d = router.route([0.0, 0.0, 0.0], allowed_models=["a"])
    router.store.insert_calls([_call(d.decision_id, 0, None, "timeout"), _call(d.decision_id, 1, 0.25)])
    assert router.feedback(d.decision_id, 1.0).cost == 0.25
    explicit = router.route([0.0, 0.0, 0.0], allowed_models=["a"])
    router.store.insert_calls([_call(explicit.decision_id, 0, 0.25)])
    assert router.feedback(explicit.decision_id, 1.0, cost=0.5).cost == 0.5  # the client's figure wins
    unlogged = router.route([0.0, 0.0, 0.0], allowed_models=["b"])
    assert router.feedback(unlogged.decision_id, 1.0).cost == 9.0  # no calls logged: the price card as before


def test_expired_decisions_cost_their_logged_calls(tmp_path: Path) -> None:
    router = OnlineRouter(
        FixedPolicy(MODELS, PROBS), tmp_path / "s.db", feedback_timeout_s=1.0, default_quality=0.0
    )
    d = router.route([0.0, 0.0, 0.0])
    router.store.insert_calls([_call(d.decision_id, 0, 0.125)])
    assert router.expire(now=d.created_at + 5) == [d.decision_id]
    fb = router.store.get_feedback(d.decision_id)
    assert fb is not None and fb.cost == 0.125
