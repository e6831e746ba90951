"""The promotion gate: its decisions on logs with known truth, its named refusals, and the store-backed entry."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from agents.online import OnlineRouter, SQLiteDecisionStore
from agents.online.rollout import GateConfig, GateReason, evaluate_gate, gate_from_store
from routing_env.errors import ConfigurationError, ShapeError
from routing_env.ope import BanditFeedback
from tests.agents.online.online_policies import FixedPolicy
from tests.agents.online.rollout.worlds import MODELS, World, draw, make_world


@pytest.fixture(scope="module")
def world() -> World:
    return make_world()


def test_promotes_a_better_candidate_and_refuses_worse_and_equal_ones(world: World) -> None:
    assert world.truth(world.better) > 0.05 and world.truth(world.worse) < -0.05
    fb, idx = draw(world, 4000, np.random.default_rng(0))
    cfg = GateConfig(min_decisions=1000, estimator="IPS")
    better = evaluate_gate(fb, world.better[idx], config=cfg)
    assert better.promote and better.reason is GateReason.PROMOTE
    assert better.low > 0 and better.low < better.estimate < better.high
    assert better.estimate == pytest.approx(world.truth(world.better), abs=4 * better.std_error)
    assert better.message.startswith("promote: the lower bound")
    worse = evaluate_gate(fb, world.worse[idx], config=cfg)
    assert not worse.promote and worse.reason is GateReason.WORSE and worse.high < 0
    same = evaluate_gate(fb, world.live[idx], config=cfg)
    assert same.reason is GateReason.NOT_BETTER and same.estimate == 0.0
    # A margin above the true gain refuses what a zero margin promotes.
    strict = evaluate_gate(fb, world.better[idx], config=GateConfig(min_decisions=1000, margin=0.5))
    assert strict.reason is GateReason.NOT_BETTER and "does not exceed the margin 0.5" in strict.message


def test_the_error_rate_at_the_margin_is_about_one_minus_confidence(world: World) -> None:
    # A candidate exactly as good as live: promoted in about 5% of the logs at confidence 0.95.
    eta = -world.truth(world.worse) / (world.truth(world.better) - world.truth(world.worse))
    null = eta * world.better + (1 - eta) * world.worse
    assert world.truth(null) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(1)
    promoted = []
    for _ in range(300):
        fb, idx = draw(world, 1000, rng)
        promoted.append(evaluate_gate(fb, null[idx], config=GateConfig(estimator="IPS")).promote)
    assert 0.01 <= np.mean(promoted) <= 0.09


def test_dr_uses_a_cross_fitted_reward_model_by_default_and_given_predictions(world: World) -> None:
    fb, idx = draw(world, 2000, np.random.default_rng(2))
    ips = evaluate_gate(fb, world.better[idx], config=GateConfig(estimator="IPS"))
    dr = evaluate_gate(fb, world.better[idx])
    exact = evaluate_gate(fb, world.better[idx], estimated_rewards=world.rewards[idx])
    assert dr.estimator == "DR" and dr.promote
    # A good reward model narrows the interval; the exact one most.
    assert exact.std_error < dr.std_error < ips.std_error


def test_deterministic_logger_is_refused_with_the_exploration_it_needs(world: World) -> None:
    greedy = np.eye(3)[np.full(world.rewards.shape[0], 1)]
    fb, idx = draw(world, 3000, np.random.default_rng(3), logger=greedy)
    result = evaluate_gate(fb, world.better[idx], config=GateConfig(detectable_difference=0.1))
    assert not result.promote and result.reason is GateReason.DETERMINISTIC_LOGGER
    assert result.deterministic_share == 1.0
    assert "enable exploration" in result.message
    plan = result.exploration
    assert plan is not None and plan.epsilon is not None and 0 < plan.epsilon < 1
    assert f"ε ≥ {plan.epsilon:.3f}" in result.message
    assert plan.expected_ess >= plan.required_ess


def test_support_violation_and_low_ess_are_refused(world: World) -> None:
    n = world.rewards.shape[0]
    # The logger never chooses "large": a candidate that does cannot be scored.
    never_large = np.tile([0.5, 0.5, 0.0], (n, 1))
    fb, idx = draw(world, 2000, np.random.default_rng(4), logger=never_large)
    result = evaluate_gate(fb, world.better[idx], config=GateConfig(estimator="IPS"))
    assert result.reason is GateReason.SUPPORT_VIOLATION and result.unsupported_mass > 0.1
    assert "support violation" in result.message
    # With the logger's full distribution known, the same verdict.
    known = BanditFeedback(
        models=MODELS, features=fb.features, action=fb.action, propensity=fb.propensity, quality=fb.quality,
        logging_dist=never_large[idx],
    )  # fmt: skip
    assert evaluate_gate(known, world.better[idx], config=GateConfig(estimator="IPS")).reason is (
        GateReason.SUPPORT_VIOLATION
    )
    # A logger that rarely takes "large": full support, but a few heavy weights carry the estimate.
    rare = np.tile([0.495, 0.495, 0.01], (n, 1))
    always_large = np.tile([0.0, 0.0, 1.0], (n, 1))
    fb, idx = draw(world, 2000, np.random.default_rng(5), logger=rare)
    low = evaluate_gate(fb, always_large[idx], config=GateConfig(estimator="IPS", min_ess=100))
    assert low.reason is GateReason.LOW_ESS and low.ess < 100
    assert f"effective sample size is {low.ess:.1f} of 2000" in low.message


def test_too_few_decisions_still_reports_the_evidence(world: World) -> None:
    fb, idx = draw(world, 50, np.random.default_rng(6))
    result = evaluate_gate(fb, world.better[idx], config=GateConfig(min_decisions=100, estimator="IPS"))
    assert result.reason is GateReason.TOO_FEW_DECISIONS and not result.promote
    assert "50 logged decisions, the gate needs at least min_decisions=100" in result.message
    assert math.isfinite(result.estimate) and result.n_decisions == 50


def test_a_log_too_short_for_the_reward_model_is_refused_not_crashed(world: World) -> None:
    for n in (1, 2, 4):
        fb, idx = draw(world, n, np.random.default_rng(n))
        result = evaluate_gate(fb, world.better[idx])  # DR: cross-fitting needs 5 rows
        assert result.reason is GateReason.TOO_FEW_DECISIONS and math.isnan(result.estimate)
    short = evaluate_gate(fb, world.better[idx], config=GateConfig(min_decisions=3))
    assert (
        short.reason is GateReason.TOO_FEW_DECISIONS and "too few to estimate the difference" in short.message
    )
    fb, idx = draw(world, 5, np.random.default_rng(9))
    assert math.isfinite(evaluate_gate(fb, world.better[idx]).estimate)


def test_sequence_and_bootstrap_methods(world: World) -> None:
    fb, idx = draw(world, 3000, np.random.default_rng(7))
    fixed = evaluate_gate(fb, world.better[idx], config=GateConfig(estimator="IPS"))
    seq = evaluate_gate(fb, world.better[idx], config=GateConfig(estimator="IPS", method="sequence"))
    boot = evaluate_gate(
        fb, world.better[idx], config=GateConfig(estimator="IPS", method="bootstrap", n_bootstrap=200)
    )
    assert seq.method == "sequence" and seq.low < fixed.low and seq.estimate == fixed.estimate
    assert boot.method == "bootstrap" and boot.low < boot.estimate < boot.high


def test_result_is_json_ready(world: World) -> None:
    fb, idx = draw(world, 10, np.random.default_rng(8))
    result = evaluate_gate(fb, world.better[idx], config=GateConfig(estimator="IPS"))
    doc = json.loads(json.dumps(result.to_dict()))
    assert doc["reason"] == "too_few_decisions" and doc["n_decisions"] == 10
    assert doc["diagnostics"]["n_rounds"] == 10
    one = evaluate_gate(fb.__class__(models=MODELS, features=fb.features[:1], action=fb.action[:1],
                                     propensity=fb.propensity[:1], quality=fb.quality[:1]),
                        world.better[idx[:1]], config=GateConfig(estimator="IPS"))  # fmt: skip
    assert json.loads(json.dumps(one.to_dict()))["estimate"] is None  # NaN below two decisions


def test_bad_configuration_is_refused_with_what_was_expected() -> None:
    with pytest.raises(ConfigurationError, match=r"margin must be a finite reward difference ≥ 0, got -0.1"):
        GateConfig(margin=-0.1)
    with pytest.raises(ConfigurationError, match=r"confidence must be in \[0.5, 1\)"):
        GateConfig(confidence=0.3)
    with pytest.raises(ConfigurationError, match="importance-weighted estimator"):
        GateConfig(estimator="DM")
    with pytest.raises(ConfigurationError, match="method must be 'normal', 'bootstrap' or 'sequence'"):
        GateConfig(method="exact")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"detectable_difference must exceed margin=0.05"):
        GateConfig(margin=0.05, detectable_difference=0.02)
    with pytest.raises(ConfigurationError, match="min_decisions must be an integer ≥ 2"):
        GateConfig(min_decisions=1)
    with pytest.raises(ConfigurationError, match="feedback must be a BanditFeedback"):
        evaluate_gate("log.parquet", np.ones((1, 3)) / 3)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- the store
def _serve(store_path: Path, world: World, n: int, seed: int = 0) -> SQLiteDecisionStore:
    """Route ``n`` queries with an exploring live policy (probabilities 0.2/0.6/0.2) and send their outcomes."""
    router = OnlineRouter(FixedPolicy(MODELS, [0.2, 0.6, 0.2], n_features=2), SQLiteDecisionStore(store_path))  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    for i in rng.integers(0, world.rewards.shape[0], n):
        d = router.route(world.features[i])
        router.feedback(d.decision_id, quality=float(world.rewards[i, d.action]), cost=0.0)
    return router.store


class Greedy:
    """A candidate that always picks the model of best true reward for the query's first feature sign."""

    models = MODELS
    n_features = 2

    def action_probabilities(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features)
        return 0.8 * np.eye(3)[np.where(x[:, 0] > 0, 2, 0)] + 0.2 / 3


def test_gate_from_store_reads_the_export_only(tmp_path: Path, world: World) -> None:
    store = _serve(tmp_path / "d.db", world, 1500)
    before = store.counts()
    result = gate_from_store(store, Greedy(), min_decisions=1000, margin=0.0, confidence=0.95)
    assert result.n_decisions == 1500 and result.reason is GateReason.PROMOTE, result.message
    after = store.counts()
    assert (after.decisions, after.feedback) == (before.decisions, before.feedback)
    # The keywords override the config's; the rest of the config applies.
    refused = gate_from_store(
        store, Greedy(), min_decisions=2000, margin=0.0, confidence=0.95, config=GateConfig(estimator="IPS")
    )
    assert refused.reason is GateReason.TOO_FEW_DECISIONS and refused.estimator == "IPS"


def test_gate_from_store_loads_a_saved_candidate_and_refuses_an_empty_store(
    tmp_path: Path, world: World
) -> None:
    store = _serve(tmp_path / "d.db", world, 300)
    saved = FixedPolicy(MODELS, [0.2, 0.6, 0.2], n_features=2).save(tmp_path / "candidate")
    # The live policy against itself: IPS weights are exactly 1, so the difference is exactly 0; DR scores the
    # logged mean reward against its own model-based version, equal in expectation.
    ips = GateConfig(estimator="IPS")
    same = gate_from_store(store, saved, min_decisions=100, margin=0.0, confidence=0.9, config=ips)
    assert same.reason is GateReason.NOT_BETTER and same.estimate == pytest.approx(0.0, abs=1e-12)
    dr = gate_from_store(store, saved, min_decisions=100, margin=0.0, confidence=0.9)
    assert dr.reason is GateReason.NOT_BETTER and dr.low < 0 < dr.high
    empty = SQLiteDecisionStore(tmp_path / "empty.db")
    result = gate_from_store(empty, saved, min_decisions=100, margin=0.0, confidence=0.9)
    assert result.reason is GateReason.TOO_FEW_DECISIONS and result.n_decisions == 0
    assert "0 logged decisions" in result.message
    wide = FixedPolicy(MODELS, [0.2, 0.6, 0.2], n_features=5)
    with pytest.raises(ShapeError, match="the candidate takes 5 features, but the logged decisions have 2"):
        gate_from_store(store, wide, min_decisions=100, margin=0.0, confidence=0.9)
    with pytest.raises(ConfigurationError, match=r"candidate must be a routing_env.policy.Policy"):
        gate_from_store(store, 3, min_decisions=100, margin=0.0, confidence=0.9)  # type: ignore[arg-type]
