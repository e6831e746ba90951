"""agents.training.warm_start: PPO starts from a policy fitted to the full-information training rewards, so that a
short run routes about as well as a bandit warm-started on the same logs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from agents.routers import LinUCB
from agents.routers._linear import RIDGE_GRID
from agents.training.ppo import PPOConfig, SB3Policy, train_ppo
from agents.training.warm_start import WarmStartConfig
from routing_env.data import LoggedDataset, make_synthetic
from routing_env.envs import RoutingEnv, RoutingVectorEnv
from routing_env.errors import ConfigurationError
from routing_env.metrics import evaluate_policy

SMALL = PPOConfig(n_steps=64, batch_size=128, n_epochs=2, net_arch=(32,))


@pytest.fixture(scope="module")
def splits() -> tuple[LoggedDataset, LoggedDataset]:
    data = make_synthetic(n_queries=1200, models=4, n_features=6, seed=5)
    return data.split(test_size=0.25, seed=0)


def test_a_short_run_routes_about_as_well_as_a_warm_started_bandit(
    splits: tuple[LoggedDataset, LoggedDataset],
) -> None:
    train, test = splits
    bandit = LinUCB(seed=0).fit(train)
    bandit.cost_weight = 0.3
    target = evaluate_policy(test, bandit, 0.3).mean_reward
    # train_ppo's defaults, 1,024 steps: PPO alone is still near its random start here.
    result = train_ppo(train, 0.3, total_timesteps=1024, seed=0)
    # The default network starts exactly at the ridge teacher's policy: no behaviour-cloning epoch.
    assert result.warm_start is not None and result.warm_start.epochs == 0
    assert result.policy is not None
    assert evaluate_policy(test, result.policy, 0.3).mean_reward >= target - 0.01
    cold = train_ppo(train, 0.3, total_timesteps=1024, seed=0, warm_start=None)
    assert cold.warm_start is None and cold.policy is not None
    assert evaluate_policy(test, cold.policy, 0.3).mean_reward < target - 0.02


def _ridge_choices(train: LoggedDataset, test: LoggedDataset, policy: SB3Policy, alpha: float, lam: float):
    """Greedy choices on ``test`` of a ridge fitted on every query of ``train`` (the network's standardisation,
    the training split's cost scale) with penalty ``alpha``: what the exact start should be."""
    x = ((train.features - policy.feature_mean) / policy.feature_std).astype(np.float64)
    fitted, _ = train.split(test_size=0.15, seed=0)  # train_ppo's validation split: its env's cost scale
    y = np.hstack([train.quality, train.cost / float(fitted.mean_cost().max())])
    mean = y.mean(axis=0)
    theta = np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ (y - mean))
    both = (test.features - policy.feature_mean) / policy.feature_std @ theta + mean
    k = train.n_models
    return (both[:, :k] - lam * both[:, k:]).argmax(axis=1)


def test_the_exact_start_is_the_ridge_teacher_fitted_on_every_training_query(
    splits: tuple[LoggedDataset, LoggedDataset],
) -> None:
    train, test = splits
    cold = WarmStartConfig(temperatures=(0.01,))
    # Conditioned: one network whose greedy choice is the ridge's at every λ of the range.
    result = train_ppo(
        train, cost_weight_range=(0.0, 3.0), total_timesteps=128, n_envs=2, seed=0, ppo=SMALL, warm_start=cold
    )
    policy, record = result.policy, result.warm_start
    assert policy is not None and record is not None and record.epochs == 0
    # Its penalty is one of the bandits' grid, chosen by grouped cross-validation of the routing reward.
    assert record.teacher_penalty is not None
    assert any(np.isclose(record.teacher_penalty, train.n_queries * r) for r in RIDGE_GRID)
    assert result.best_timesteps == 0  # 128 PPO steps did not beat it significantly
    for lam in (0.0, 0.5, 3.0):
        # The teacher saw the 15% held out for validation too.
        expected = _ridge_choices(train, test, policy, record.teacher_penalty, lam)
        chosen = policy.with_cost_weight(lam).action_probabilities(test.features).argmax(axis=1)
        assert np.mean(chosen == expected) > 0.97, lam
    # Without the skip path the network is behaviour-cloned instead, and stays close to the teacher.
    plain = replace(SMALL, linear_skip=False)
    cloned = train_ppo(train, 0.5, total_timesteps=128, n_envs=2, seed=0, ppo=plain, warm_start=cold)
    assert cloned.warm_start is not None and cloned.warm_start.best_epoch >= 1
    assert cloned.policy is not None and cloned.warm_start.teacher_penalty is not None
    expected = _ridge_choices(train, test, cloned.policy, cloned.warm_start.teacher_penalty, 0.5)
    assert np.mean(cloned.policy.action_probabilities(test.features).argmax(axis=1) == expected) > 0.8


def test_the_warm_start_is_seeded_and_scored_first(splits: tuple[LoggedDataset, LoggedDataset]) -> None:
    train, _ = splits
    runs = [train_ppo(train, 0.3, total_timesteps=256, n_envs=2, seed=4, ppo=SMALL) for _ in range(2)]
    a, b = (r.policy for r in runs)
    assert a is not None and b is not None
    np.testing.assert_allclose(a.action_probabilities(train.features), b.action_probabilities(train.features))
    record = runs[0].warm_start
    assert record is not None and record.temperature in WarmStartConfig().temperatures
    # The validation callback scores the warm-started parameters before PPO changes them.
    first = runs[0].history[0]
    assert first.timesteps == 0 and first.mean_reward == pytest.approx(record.validation_reward)


def test_a_conditioned_warm_start_follows_the_cost_weight(
    splits: tuple[LoggedDataset, LoggedDataset],
) -> None:
    train, test = splits
    result = train_ppo(train, cost_weight_range=(0.0, 3.0), total_timesteps=256, n_envs=2, seed=0, ppo=SMALL)
    policy = result.policy
    assert policy is not None and result.warm_start is not None
    cheap = evaluate_policy(test, policy.with_cost_weight(3.0), 3.0)
    rich = evaluate_policy(test, policy.with_cost_weight(0.0), 0.0)
    assert cheap.mean_cost < 0.8 * rich.mean_cost
    # Over the range it routes better than the best single model at each λ does, on average.
    lams = (0.0, 0.3, 1.0, 3.0)
    routed = [evaluate_policy(test, policy.with_cost_weight(lam), lam).mean_reward for lam in lams]
    single = [float(np.max(test.rewards(lam).mean(axis=0))) for lam in lams]
    assert np.mean(routed) > np.mean(single)


def test_the_warm_start_skips_what_it_cannot_fit(splits: tuple[LoggedDataset, LoggedDataset]) -> None:
    train, _ = splits
    budget = float(3 * train.mean_cost().max())
    result = train_ppo(
        train,
        0.3,
        total_timesteps=256,
        n_envs=2,
        ppo=SMALL,
        env_kwargs={"budget": budget, "queries_per_episode": 4},
    )
    # The network also observes the budget left: no per-query policy to warm-start or to return.
    assert result.warm_start is None and result.policy is None and result.model.num_timesteps >= 256


def test_warm_start_settings_are_validated() -> None:
    with pytest.raises(
        ConfigurationError, match=r"WarmStartConfig\.patience must be a positive integer, got 0"
    ):
        WarmStartConfig(patience=0)
    with pytest.raises(ConfigurationError, match=r"WarmStartConfig\.temperatures must be positive numbers"):
        WarmStartConfig(temperatures=(0.1, -1.0))
    with pytest.raises(ConfigurationError, match=r"WarmStartConfig\.learning_rate must be a positive number"):
        WarmStartConfig(learning_rate=0.0)
    with pytest.raises(ConfigurationError, match="warm_start must be a WarmStartConfig or None, got dict"):
        train_ppo(make_synthetic(n_queries=50, models=2, n_features=2), warm_start={})  # type: ignore[arg-type]
    assert WarmStartConfig(temperatures=(0.5, 0.1)).temperatures == (0.1, 0.5)


def test_reward_table_is_what_a_step_pays(splits: tuple[LoggedDataset, LoggedDataset]) -> None:
    train, _ = splits
    env = RoutingEnv(dataset=train, cost_weight=0.7, latency_weight=0.01)
    table = env.reward_table(0.7)
    env.reset(seed=0, options={"query_index": 9})
    assert env.step(2)[1] == pytest.approx(table[9, 2])
    np.testing.assert_allclose(table, train.rewards(0.7, 0.01))
    per_query = np.linspace(0.0, 2.0, train.n_queries)[:, None]
    np.testing.assert_allclose(env.reward_table(per_query)[5], train.rewards(float(per_query[5, 0]), 0.01)[5])
    venv = RoutingVectorEnv(num_envs=2, dataset=train, cost_weight=0.7, latency_weight=0.01)
    np.testing.assert_array_equal(venv.reward_table(0.7), table)
