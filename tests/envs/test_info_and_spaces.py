"""What every env reports beside the observation: the step info names the model and carries latency only when it
was logged; and the observation space admits any query's features (the whole float32 range), not only the training logs' range."""

from __future__ import annotations

from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest

from routing_env import envs  # importing the package registers the env ids
from routing_env.data import LoggedDataset


@pytest.fixture(scope="module")
def no_latency(small: LoggedDataset) -> LoggedDataset:
    return replace(small, latency=None)


@pytest.mark.parametrize("kwargs", [{}, {"cost_weight_range": (0.0, 1.0)}], ids=["fixed", "sampled"])
def test_routing_info_names_the_model_and_its_latency_when_logged(small: LoggedDataset, kwargs: dict) -> None:
    env = envs.RoutingEnv(dataset=small, **kwargs)
    env.reset(seed=0, options={"query_index": 5})
    *_, info = env.step(2)
    assert info["model"] == small.models[2]
    assert info["latency"] == pytest.approx(float(small.latency[5, 2]))  # type: ignore[index]


@pytest.mark.parametrize("kwargs", [{}, {"cost_weight_range": (0.0, 1.0)}], ids=["fixed", "sampled"])
def test_routing_info_leaves_latency_out_when_not_logged(no_latency: LoggedDataset, kwargs: dict) -> None:
    env = envs.RoutingEnv(dataset=no_latency, **kwargs)
    env.reset(seed=0)
    *_, info = env.step(1)
    assert "latency" not in info and info["model"] == no_latency.models[1]
    # Two runs from one seed give equal infos (NaN would not equal itself: Gymnasium's determinism check).
    again = envs.RoutingEnv(dataset=no_latency, **kwargs)
    again.reset(seed=0)
    assert again.step(1)[4] == info


@pytest.mark.parametrize("kwargs", [{}, {"cost_weight_range": (0.0, 1.0)}], ids=["fixed", "sampled"])
def test_vector_info_matches_the_single_env_keys(
    small: LoggedDataset, no_latency: LoggedDataset, kwargs: dict
) -> None:
    for data in (small, no_latency):
        venv = envs.RoutingVectorEnv(num_envs=3, dataset=data, autoreset_mode="same_step", **kwargs)
        venv.reset(seed=1)
        actions = np.array([0, 2, 1])
        *_, info = venv.step(actions)
        final = info["final_info"]
        np.testing.assert_array_equal(final["model"], actions)
        assert ("latency" in final) == (data.latency is not None)


def test_cascade_infos_leave_latency_out_when_not_logged(
    small: LoggedDataset, no_latency: LoggedDataset
) -> None:
    for data in (small, no_latency):
        env = envs.CascadeEnv(dataset=data, mode="free")
        env.reset(seed=0)
        *_, info = env.step(1)
        assert ("latency" in info) == (data.latency is not None)
        venv = envs.CascadeVectorEnv(num_envs=2, dataset=data, mode="free")
        venv.reset(seed=0)
        *_, vinfo = venv.step(np.array([1, 2]))
        assert ("latency" in vinfo) == (data.latency is not None)


@pytest.mark.parametrize("env_id", [envs.ROUTING_ID, envs.CASCADE_ID])
@pytest.mark.parametrize("vector", [False, True], ids=["single", "vector"])
def test_features_are_unbounded_so_new_queries_fit_the_space(
    small: LoggedDataset, env_id: str, vector: bool
) -> None:
    d = small.n_features
    if vector:
        space = gym.make_vec(env_id, num_envs=2, dataset=small).single_observation_space
    else:
        space = gym.make(env_id, dataset=small).observation_space
    assert isinstance(space, gym.spaces.Box)
    # The whole float32 range (finite bounds: Gymnasium's checker warns about infinite ones).
    big = np.finfo(np.float32).max
    assert (space.low[:d] == -big).all() and (space.high[:d] == big).all()
    # A query far outside the training logs' feature range is a valid observation.
    env = gym.make(env_id, dataset=small).unwrapped
    obs, _ = env.reset(seed=0)
    obs[:d] = 1e6 * np.sign(obs[:d] + 0.5)
    assert space.contains(obs)
