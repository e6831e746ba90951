"""The canary: split propensities, the mixture weights of both policies, and the sequential promote/rollback rule."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.online.rollout import (
    Canary,
    CanaryConfig,
    CanaryDecision,
    GateConfig,
    canary_draw,
    canary_propensity,
    mixture_feedback,
)
from routing_env.errors import ConfigurationError, SchemaError
from routing_env.ope import BanditFeedback
from routing_env.ope.paired import PairedDifference
from tests.agents.online.rollout.worlds import MODELS, World, make_world


@pytest.fixture(scope="module")
def world() -> World:
    return make_world(epsilon=0.2)


def _batch(world: World, cand: np.ndarray, split: float, n: int, rng: np.random.Generator) -> tuple:
    idx = rng.integers(0, world.rewards.shape[0], n)
    served, action, logged = canary_draw(split, cand[idx], world.live[idx], rng)
    quality = np.clip(world.rewards[idx, action] + rng.normal(scale=0.2, size=n), -1, 2)
    fb = BanditFeedback(
        models=MODELS, features=world.features[idx], action=action, propensity=logged, quality=quality
    )
    return fb, served, idx


def test_canary_draw_logs_the_product_of_split_and_policy_probability(world: World) -> None:
    rng = np.random.default_rng(0)
    fb, served, idx = _batch(world, world.better, 0.25, 20_000, rng)
    assert served.mean() == pytest.approx(0.25, abs=0.01)
    rows = np.arange(fb.n_rounds)
    expected = np.where(
        served, 0.25 * world.better[idx][rows, fb.action], 0.75 * world.live[idx][rows, fb.action]
    )
    np.testing.assert_allclose(fb.propensity, expected)
    mixed = mixture_feedback(fb, served, 0.25, world.better[idx], world.live[idx])
    mix = 0.25 * world.better[idx] + 0.75 * world.live[idx]
    np.testing.assert_allclose(mixed.propensity, mix[rows, fb.action])
    np.testing.assert_allclose(mixed.logging_dist, mix)
    # Both policies' weights divide by the mixture, so they are bounded by 1/split and 1/(1 − split).
    w_c = world.better[idx][rows, fb.action] / mixed.propensity
    w_l = world.live[idx][rows, fb.action] / mixed.propensity
    assert w_c.max() <= 1 / 0.25 + 1e-12 and w_l.max() <= 1 / 0.75 + 1e-12


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(2, 4), split=st.floats(0.05, 0.95))
def test_mixture_weights_make_the_difference_unbiased_over_every_arm_and_model(
    seed: int, k: int, split: float
) -> None:
    rng = np.random.default_rng(seed)
    cand, live = rng.dirichlet(np.ones(k), size=1), rng.dirichlet(np.ones(k), size=1)
    live = 0.8 * live + 0.2 / k
    rewards, qhat = rng.random((1, k)), rng.random((1, k))
    truth = float(((cand - live) * rewards).sum())
    expected = 0.0
    for served, a in itertools.product((True, False), range(k)):
        prob = (split if served else 1 - split) * (cand if served else live)[0, a]
        if prob == 0:
            continue
        logged = BanditFeedback(
            models=tuple(f"m{j}" for j in range(k)), features=None, action=[a],
            propensity=canary_propensity(split, np.array([served]), cand, live, np.array([a])), quality=rewards[:, a],
        )  # fmt: skip
        fb = mixture_feedback(logged, np.array([served]), split, cand, live)
        expected += (
            prob
            * PairedDifference("DR").terms(fb.quality, fb.action, fb.propensity, cand, live, qhat).estimate()
        )
    assert expected == pytest.approx(truth, rel=1e-9, abs=1e-12)


def test_mixture_feedback_refuses_propensities_the_split_did_not_log(world: World) -> None:
    fb, served, idx = _batch(world, world.better, 0.2, 100, np.random.default_rng(1))
    with pytest.raises(SchemaError, match=r"logged propensity of row 0 is .* but the split 0.3 and the"):
        mixture_feedback(fb, served, 0.3, world.better[idx], world.live[idx])
    with pytest.raises(ConfigurationError, match=r"split must be a share of traffic in \(0, 1\), got 1.0"):
        mixture_feedback(fb, served, 1.0, world.better[idx], world.live[idx])


def _run(canary: Canary, world: World, cand: np.ndarray, split: float, seed: int, batch: int = 250) -> object:
    rng = np.random.default_rng(seed)
    state = canary.start()
    while state.decision is CanaryDecision.CONTINUE:
        fb, served, idx = _batch(world, cand, split, batch, rng)
        fb = mixture_feedback(fb, served, split, cand[idx], world.live[idx])
        state = canary.step(state, fb, cand[idx], world.live[idx])
    return state


def test_canary_promotes_the_better_rolls_back_the_worse_and_expires_on_a_tie(world: World) -> None:
    gate = GateConfig(method="sequence", estimator="IPS", min_decisions=500, plan_decisions=2000)
    canary = Canary(CanaryConfig(split=0.3, gate=gate, max_decisions=6000))
    better = _run(canary, world, world.better, 0.3, seed=0)
    assert better.decision is CanaryDecision.PROMOTE and better.result.promote  # type: ignore[attr-defined]
    assert better.result.low > 0 and better.n_decisions >= 500  # type: ignore[attr-defined]
    worse = _run(canary, world, world.worse, 0.3, seed=1)
    assert worse.decision is CanaryDecision.ROLLBACK and worse.result.high < 0  # type: ignore[attr-defined]
    assert worse.result.message.startswith("rollback: the upper bound")  # type: ignore[attr-defined]
    tie = _run(canary, world, world.live, 0.3, seed=2)
    assert tie.decision is CanaryDecision.EXPIRE and tie.n_decisions == 6000  # type: ignore[attr-defined]
    assert tie.result.message.startswith("expire: no decision after 6000")  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match=r"already decided \(expire\)"):
        canary.step(
            tie,
            *_batch(world, world.live, 0.3, 10, np.random.default_rng(0))[:1],
            world.live[:10],
            world.live[:10],
        )  # type: ignore[arg-type]


def test_the_state_is_the_same_whatever_the_batching(world: World) -> None:
    gate = GateConfig(method="sequence", estimator="IPS", min_decisions=10_000)
    canary = Canary(CanaryConfig(split=0.2, gate=gate))
    fb, served, idx = _batch(world, world.better, 0.2, 1200, np.random.default_rng(3))
    fb = mixture_feedback(fb, served, 0.2, world.better[idx], world.live[idx])
    whole = canary.step(canary.start(), fb, world.better[idx], world.live[idx])
    parts = canary.start()
    for chunk in np.array_split(np.arange(1200), 5):
        sub = BanditFeedback(models=MODELS, features=fb.features[chunk], action=fb.action[chunk],
                             propensity=fb.propensity[chunk], quality=fb.quality[chunk])  # fmt: skip
        parts = canary.step(parts, sub, world.better[idx][chunk], world.live[idx][chunk])
    assert parts.batches == 5 and whole.batches == 1
    assert parts.sequence.bounds() == pytest.approx(whole.sequence.bounds(), rel=1e-9)
    assert parts.result.ess == pytest.approx(whole.result.ess)  # type: ignore[union-attr]
    assert parts.decision is whole.decision is CanaryDecision.CONTINUE


def test_repeated_looks_keep_the_false_promotion_rate_near_nominal(world: World) -> None:
    # A candidate exactly as good as live, re-tested every 200 decisions up to 4,000: promoted in at most about
    # 5% of the canaries (a fixed-sample test looked at 20 times would promote far more often).
    eta = -world.truth(world.worse) / (world.truth(world.better) - world.truth(world.worse))
    null = eta * world.better + (1 - eta) * world.worse
    gate = GateConfig(method="sequence", estimator="IPS", min_decisions=200, plan_decisions=2000)
    canary = Canary(CanaryConfig(split=0.5, gate=gate, max_decisions=4000))
    decisions = [_run(canary, world, null, 0.5, seed=s, batch=200).decision for s in range(120)]  # type: ignore[attr-defined]
    promoted = np.mean([d is CanaryDecision.PROMOTE for d in decisions])
    assert promoted <= 0.08, promoted
    # The same traffic judged by a fixed-sample one-sided 95% bound after every batch: promoted far more often.
    paired, z = PairedDifference("IPS"), 1.6448536269514722
    fixed = 0
    for seed in range(120):
        rng, terms = np.random.default_rng(seed), []
        for _ in range(20):
            fb, served, idx = _batch(world, null, 0.5, 200, rng)
            fb = mixture_feedback(fb, served, 0.5, null[idx], world.live[idx])
            terms.append(
                paired.terms(fb.quality, fb.action, fb.propensity, null[idx], world.live[idx]).round_values()
            )
            x = np.concatenate(terms)
            if x.mean() - z * x.std(ddof=1) / np.sqrt(x.size) > 0:
                fixed += 1
                break
    assert fixed / 120 > 0.15, fixed


def test_bad_canary_configuration_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="must use method='sequence'"):
        CanaryConfig(gate=GateConfig(method="normal"))
    with pytest.raises(ConfigurationError, match="linear estimator"):
        CanaryConfig(gate=GateConfig(method="sequence", estimator="SNIPS"))
    with pytest.raises(ConfigurationError, match=r"split must be a share of traffic in \(0, 1\), got 0"):
        CanaryConfig(split=0)
    with pytest.raises(
        ConfigurationError, match=r"max_decisions must be an integer ≥ gate.min_decisions=1000"
    ):
        CanaryConfig(max_decisions=10)
