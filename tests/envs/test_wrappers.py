"""Reward-variant wrappers and the evaluation-only true-outcomes wrapper."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from routing_env.data import LoggedDataset
from routing_env.envs import CascadeEnv, LatencyPenalty, RoutingEnv, StandardizeReward, TrueOutcomes
from routing_env.errors import ConfigurationError


def test_latency_penalty_wrapper_equals_the_latency_weight_argument(small: LoggedDataset) -> None:
    wrapped = LatencyPenalty(RoutingEnv(dataset=small, cost_weight=0.4), latency_weight=0.2)
    direct = RoutingEnv(dataset=small, cost_weight=0.4, latency_weight=0.2)
    for q in range(0, 300, 37):
        for env in (wrapped, direct):
            env.reset(seed=0, options={"query_index": q})
        a = q % 4
        assert float(wrapped.step(a)[1]) == pytest.approx(float(direct.step(a)[1]), rel=1e-6)


def test_latency_penalty_on_cascades_charges_every_call(small: LoggedDataset) -> None:
    wrapped = LatencyPenalty(CascadeEnv(dataset=small, mode="free"), latency_weight=0.3)
    direct = CascadeEnv(dataset=small, mode="free", latency_weight=0.3)
    for env in (wrapped, direct):
        env.reset(seed=4)
    totals = []
    for env in (wrapped, direct):
        totals.append(sum(float(env.step(a)[1]) for a in (2, 4, 0)))
    assert totals[0] == pytest.approx(totals[1], rel=1e-6)


def test_standardize_reward_is_affine_and_invertible(small: LoggedDataset) -> None:
    env = StandardizeReward(RoutingEnv(dataset=small, cost_weight=1.0))
    table = small.rewards(1.0)
    assert env.mean == pytest.approx(table.mean()) and env.std == pytest.approx(table.std())
    env.reset(seed=0)
    _, r, _, _, info = env.step(2)
    assert env.unscale(float(r)) == pytest.approx(info["raw_reward"])
    with pytest.raises(ConfigurationError, match="fixed cost_weight and no budget"):
        StandardizeReward(RoutingEnv(dataset=small, cost_weight_range=(0.0, 1.0)))


def test_true_outcomes_for_evaluation_only(small: LoggedDataset) -> None:
    base = RoutingEnv(dataset=small, cost_weight=0.5)
    env = TrueOutcomes(RoutingEnv(dataset=small, cost_weight=0.5))
    obs_w, _ = env.reset(seed=2)
    obs_b, _ = base.reset(seed=2)
    np.testing.assert_array_equal(obs_w, obs_b)
    out = env.true_outcomes()
    q = out.query_index
    np.testing.assert_array_equal(out.quality, small.quality[q])
    np.testing.assert_array_equal(out.cost, small.cost[q])
    np.testing.assert_allclose(out.rewards, small.rewards(0.5)[q])
    assert not out.imputed.any()
    obs_w, r, _, _, _ = env.step(3)
    assert float(r) == pytest.approx(out.rewards[3])
    # Works over gym.make's wrappers and on cascades too.
    cascade = TrueOutcomes(gym.make("routing_env/Cascade-v0", dataset=small))
    cascade.reset(seed=0)
    assert cascade.true_outcomes().quality.shape == (4,)


def test_wrappers_refuse_other_envs(small: LoggedDataset) -> None:
    with pytest.raises(
        ConfigurationError, match="needs a RoutingEnv or CascadeEnv underneath, got CartPoleEnv"
    ):
        TrueOutcomes(gym.make("CartPole-v1"))
    no_latency = LoggedDataset(
        models=("a",), query_ids=["q"], quality=[[1.0]], cost=[[1.0]], features=[[0.0]]
    )
    with pytest.raises(ConfigurationError, match="LatencyPenalty needs latency_s"):
        LatencyPenalty(RoutingEnv(dataset=no_latency), 0.1)
    with pytest.raises(ConfigurationError, match="latency_weight must be a finite number ≥ 0, got -1"):
        LatencyPenalty(RoutingEnv(dataset=small), -1)
