"""The online loop helper: cumulative reward and regret on Routing-v0, seeding, and input checks."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import routing_env.envs  # noqa: F401  (registers the env ids)
from agents.routers import BestSingleModel, EpsilonGreedy, LinUCB
from agents.training.loop import OnlineResult, run_online
from routing_env.data import LoggedDataset
from routing_env.errors import ConfigurationError, ModelMismatchError


def test_run_online_records_rewards_and_regret(small: LoggedDataset) -> None:
    lam = 0.3
    policy = LinUCB(alpha=0.5, models=small.models, seed=0)
    result = run_online(small, policy, n_rounds=500, seed=0, cost_weight=lam)
    assert isinstance(result, OnlineResult)
    assert result.rewards.shape == result.oracle_rewards.shape == result.actions.shape == (500,)
    rewards = small.rewards(lam)
    q = result.query_indices
    np.testing.assert_allclose(result.rewards, rewards[q, result.actions])
    np.testing.assert_allclose(result.oracle_rewards, rewards.max(axis=1)[q])
    np.testing.assert_allclose(result.cost, small.cost[q, result.actions])
    assert np.all(np.diff(result.regret) >= -1e-12)
    assert result.total_regret == pytest.approx(result.regret[-1])
    np.testing.assert_allclose(result.cumulative_reward[-1], result.rewards.sum())
    # The policy routes at the λ it is rewarded with, and learned quality and cost separately.
    assert policy.cost_weight == lam and policy.mode == "outcomes" and policy.n_updates == 500
    # Every query of a pass is seen once before any repeats (the env's shuffled passes).
    assert len(set(q[: small.n_queries].tolist())) == small.n_queries


def test_run_online_learns_and_is_seeded(small: LoggedDataset) -> None:
    runs = [
        run_online(small, LinUCB(alpha=0.3, models=small.models, seed=1), 900, seed=4, cost_weight=0.3)
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].actions, runs[1].actions)
    np.testing.assert_array_equal(runs[0].rewards, runs[1].rewards)
    late, early = runs[0].window_mean(600), runs[0].window_mean(0, 150)
    assert late > early
    best = BestSingleModel(cost_weight=0.3).fit(small).mean_reward_
    assert late > best


def test_run_online_on_a_made_env_with_reward_only_learning(small: LoggedDataset) -> None:
    env = gym.make("routing_env/Routing-v0", dataset=small, cost_weight=0.2)
    policy = EpsilonGreedy(epsilon=0.1, models=small.models, seed=0)
    policy.update(np.asarray(small.features[:1]), np.array([0]), np.array([0.5]))  # reward-only from here on
    result = run_online(env, policy, n_rounds=200, seed=0)
    assert policy.mode == "reward" and policy.n_updates == 201
    np.testing.assert_allclose(result.rewards, small.rewards(0.2)[result.query_indices, result.actions])


def test_run_online_errors(small: LoggedDataset) -> None:
    policy = LinUCB(models=small.models[:2])
    with pytest.raises(ModelMismatchError, match="routes over models"):
        run_online(small, policy, 10)
    with pytest.raises(ConfigurationError, match="n_rounds must be an int ≥ 1, got 0"):
        run_online(small, LinUCB(models=small.models), 0)
    env = gym.make("routing_env/Routing-v0", dataset=small)
    with pytest.raises(ConfigurationError, match="cost_weight is set by the env"):
        run_online(env, LinUCB(models=small.models), 5, cost_weight=0.3)
    with pytest.raises(ConfigurationError, match="needs a RoutingEnv or a LoggedDataset"):
        run_online(gym.make("routing_env/Cascade-v0", dataset=small), LinUCB(models=small.models), 5)
