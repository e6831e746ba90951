"""Cascade-stop bandits: warm start by backward induction, online learning on Cascade-v0's chain mode."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import routing_env.envs  # noqa: F401  (registers the env ids)
from agents.routers import ThresholdCascade, cascade_outcomes
from agents.routers.cascades import CascadeBandit
from agents.training.loop import run_cascade_online
from routing_env.data import LoggedDataset, make_synthetic
from routing_env.errors import ConfigurationError, PartialInformationError, ShapeError
from tests.agents.routers.bandit_logs import hide_outcomes

LAMBDA = 0.3


@pytest.fixture(scope="module")
def split() -> tuple[LoggedDataset, LoggedDataset]:
    return make_synthetic(n_queries=2000, models=4, n_features=6, seed=31).split(test_size=0.3, seed=0)


def _fixed_rules(data: LoggedDataset, chain: tuple[str, ...], lam: float, scale: float) -> list[float]:
    idx = [data.models.index(m) for m in chain]
    n = data.n_queries
    return [
        float(cascade_outcomes(data, idx, np.full(n, s), lam, scale)["reward"].mean())
        for s in range(len(idx))
    ]


def test_warm_started_cascade_beats_every_fixed_stopping_rule(split) -> None:
    train, test = split
    bandit = CascadeBandit(alpha=0.0, seed=0).fit(train, cost_weight=LAMBDA)
    assert bandit.chain == tuple(train.models[j] for j in np.argsort(train.mean_cost()))
    result = bandit.evaluate(test)
    fixed = _fixed_rules(test, bandit.chain, LAMBDA, bandit.cost_scale_)
    assert result["reward"] > max(fixed) + 0.01
    assert 1.0 <= result["calls"] <= len(bandit.chain)
    # It uses the signals: comparable to the tuned FrugalGPT thresholds.
    frugal = ThresholdCascade(cost_weight=LAMBDA).fit(train)
    idx = [test.models.index(m) for m in frugal.chain]
    assert test.signal is not None
    stages = frugal.accept_stages(np.asarray(test.signal, dtype=np.float64)[:, idx])
    frugal_value = cascade_outcomes(test, idx, stages, LAMBDA, frugal.cost_scale_)["reward"].mean()
    assert result["reward"] > frugal_value - 0.02


def test_cascade_bandit_learns_online_on_cascade_v0(split) -> None:
    train, _ = split
    chain = tuple(train.models[j] for j in np.argsort(train.mean_cost()))
    env = gym.make("routing_env/Cascade-v0", dataset=train, mode="chain", order=chain, cost_weight=LAMBDA)
    bandit = CascadeBandit(chain=chain, alpha=0.3, seed=0)
    result = run_cascade_online(env, bandit, n_rounds=3000, seed=0)
    assert result.rewards.shape == (3000,)
    assert np.all(np.diff(result.regret) >= -1e-12)
    fixed = _fixed_rules(train, chain, LAMBDA, env.unwrapped.cost_scale)
    # Once learned (last third), better than any fixed "stop after s calls" rule.
    assert result.window_mean(2000) > max(fixed) + 0.01
    assert result.window_mean(2000) > result.window_mean(0, 500)
    # Propensities are products of per-decision probabilities.
    assert ((result.propensities > 0) & (result.propensities <= 1)).all()


def test_online_run_is_seeded_and_updates_each_decision(split) -> None:
    train, _ = split
    chain = train.models
    runs = [
        run_cascade_online(
            train, CascadeBandit(chain=chain, algorithm="thompson", seed=3), 200, seed=1, cost_weight=0.2
        )
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].rewards, runs[1].rewards)
    np.testing.assert_array_equal(runs[0].actions, runs[1].actions)
    bandit = CascadeBandit(chain=chain, seed=3)
    res = run_cascade_online(train, bandit, 300, seed=2, cost_weight=0.2)
    # Every round makes one decision per call before the last one accepted (max depth ends without a decision).
    decisions = sum(stage.n_updates for stage in bandit.stages)
    expected = int(np.minimum(res.actions + 1, len(chain) - 1).sum())
    assert decisions == expected


def test_update_learns_stop_and_escalate_returns() -> None:
    bandit = CascadeBandit(
        chain=("a", "b", "c"), algorithm="egreedy", epsilon=0.0, seed=0, use_features=False
    )
    rng = np.random.default_rng(0)
    sig = rng.random((400, 1))
    x = np.zeros((400, 2))
    stop = rng.random(400) < 0.5
    # Accepting pays off when the first signal is high; escalating pays a constant.
    returns = np.where(stop, sig[:, 0], 0.5)
    bandit.update(x, sig, stop, returns)
    p = bandit.stop_probabilities(np.zeros((2, 2)), np.array([[0.9], [0.1]]))
    np.testing.assert_array_equal(p, [1.0, 0.0])
    with pytest.raises(ShapeError, match="stop must be a bool array"):
        bandit.update(x[:2], sig[:2], np.array([1, 0]), np.array([0.1, 0.2]))


def test_cascade_errors(split) -> None:
    train, _ = split
    with pytest.raises(ConfigurationError, match="algorithm must be 'linucb', 'thompson' or 'egreedy'"):
        CascadeBandit(algorithm="ucb1")
    with pytest.raises(ConfigurationError, match="at least two models"):
        CascadeBandit(chain=("a",))
    with pytest.raises(ConfigurationError, match="has no chain"):
        CascadeBandit().decide(np.zeros((1, 2)), np.ones((1, 1)))
    with pytest.raises(ConfigurationError, match="has no chain yet"):
        run_cascade_online(train, CascadeBandit(), 5)
    partial = hide_outcomes(train, np.arange(train.n_models) == 0, signal=train.signal)
    with pytest.raises(PartialInformationError, match="every model's outcome"):
        CascadeBandit().fit(partial)
