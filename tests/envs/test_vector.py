"""The batched vector env behaves exactly like N single Routing-v0 envs, with Gymnasium's autoreset modes."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import routing_env  # noqa: F401  (registers the ids)
from routing_env.data import LoggedDataset
from routing_env.envs import OutcomeModel, RoutingEnv, RoutingVectorEnv
from routing_env.errors import ConfigurationError

N = 4


def _configs(small: LoggedDataset) -> list[dict[str, Any]]:
    return [
        {},
        {"cost_weight": 0.8, "latency_weight": 0.05},
        {"cost_weight_range": (0.0, 2.0), "observe_cost_weight": True},
        {"queries_per_episode": 3, "models": [small.models[2], small.models[0]]},
        {"budget": float(2.5 * small.mean_cost().max()), "queries_per_episode": 6, "cost_weight": 0.3},
        # A 7-query dataset: passes end every few steps, so the per-pass draws are exercised.
        {"dataset": small.select(np.arange(7)), "cost_weight_range": (0.0, 1.0), "queries_per_episode": 2},
        {"cost_weight_range": (0.0, 2.0), "cost_weight_sampling": "log_uniform", "observe_cost_weight": True},
        {
            "dataset": small.select(np.arange(7)),
            "cost_weight_range": (0.05, 1.0),
            "cost_weight_sampling": "log_uniform",
            "queries_per_episode": 2,
        },
    ]


def _run_single(
    kwargs: dict[str, Any], dataset: LoggedDataset, actions: np.ndarray, seed: int, same_step: bool
):
    """Drive N single envs by hand with the vector env's autoreset convention; return batched results."""
    envs = [RoutingEnv(dataset=dataset, **kwargs) for _ in range(N)]
    first = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)])
    ended = np.zeros(N, dtype=bool)
    out = []
    for act in actions:
        obs, rew, term, infos = [], [], [], []
        for i, env in enumerate(envs):
            if ended[i] and not same_step:
                o, _ = env.reset()
                obs.append(o), rew.append(0.0), term.append(False), infos.append(None)
                ended[i] = False
                continue
            o, r, te, tr, info = env.step(int(act[i]))
            assert not tr
            if te and same_step:
                o, _ = env.reset()
            obs.append(o), rew.append(float(r)), term.append(te), infos.append(info)
            ended[i] = te
        out.append((np.stack(obs), np.array(rew), np.array(term), infos))
    return first, out


@pytest.mark.parametrize("mode", ["next_step", "same_step"])
@pytest.mark.parametrize("config", range(8))
def test_vector_env_equals_n_single_envs(small: LoggedDataset, config: int, mode: str) -> None:
    kwargs = dict(_configs(small)[config])
    data = kwargs.pop("dataset", small)
    venv = RoutingVectorEnv(num_envs=N, dataset=data, autoreset_mode=mode, **kwargs)
    assert (
        venv.metadata["autoreset_mode"]
        == {"next_step": AutoresetMode.NEXT_STEP, "same_step": AutoresetMode.SAME_STEP}[mode]
    )
    k = venv.single_action_space.n
    actions = np.random.default_rng(config).integers(0, k, size=(40, N))
    first, expected = _run_single(kwargs, data, actions, seed=100, same_step=mode == "same_step")
    obs, _ = venv.reset(seed=100)
    np.testing.assert_array_equal(obs, first)
    for t, act in enumerate(actions):
        obs, rew, term, trunc, info = venv.step(act)
        e_obs, e_rew, e_term, e_infos = expected[t]
        np.testing.assert_array_equal(obs, e_obs, err_msg=f"step {t}")
        np.testing.assert_allclose(rew, e_rew, rtol=1e-12, atol=1e-12, err_msg=f"step {t}")
        np.testing.assert_array_equal(term, e_term)
        assert not trunc.any()
        for i, e in enumerate(e_infos):
            if e is None:
                assert "_quality" not in info or not info["_quality"][i]
                continue
            src = info
            if mode == "same_step" and e_term[i]:
                src = info["final_info"]
                np.testing.assert_array_equal(info["final_obs"][i].shape, obs[i].shape)
            assert src["_quality"][i]
            assert data.query_ids[src["query_index"][i]] == e["query_id"]
            for key in ("quality", "cost", "oracle_action", "oracle_reward", "regret"):
                assert src[key][i] == pytest.approx(e[key], rel=1e-12, abs=1e-12), (t, i, key)
            if "budget_left" in e:
                assert src["budget_left"][i] == pytest.approx(e["budget_left"])
                assert src["refused"][i] == e["refused"]


def test_make_vec_uses_the_native_vector_env(small: LoggedDataset) -> None:
    venv = gym.make_vec(
        "routing_env/Routing-v0", num_envs=8, vectorization_mode="vector_entry_point", dataset=small
    )
    assert isinstance(venv.unwrapped, RoutingVectorEnv)
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (8, small.n_features) and obs.dtype == np.float32
    assert venv.observation_space.contains(obs)
    obs, rew, term, trunc, _ = venv.step(venv.action_space.sample())
    assert rew.shape == term.shape == trunc.shape == (8,)
    assert term.all()  # one query per episode
    # Next step: every sub-env resets, reward 0, the actions are ignored.
    obs, rew, term, trunc, info = venv.step(np.zeros(8, dtype=np.int64))
    assert (rew == 0).all() and not term.any() and "_quality" not in info
    default = gym.make_vec("routing_env/Routing-v0", num_envs=2)
    assert isinstance(default.unwrapped, RoutingVectorEnv)


def test_vector_env_shares_the_dataset_arrays(sample: LoggedDataset) -> None:
    a = RoutingVectorEnv(num_envs=16, dataset=sample)
    b = RoutingVectorEnv(num_envs=16, dataset=sample)
    assert a._features is sample.features and np.shares_memory(a._features, b._features)
    assert a._quality_cols is sample.quality
    assert a._fixed is b._fixed and np.shares_memory(a._fixed.rewards_array, b._fixed.rewards_array)
    sub = RoutingVectorEnv(num_envs=4, dataset=sample, models=list(sample.models[:2]))
    sub2 = RoutingVectorEnv(num_envs=4, dataset=sample, models=list(sample.models[:2]))
    assert sub._cost is sub2._cost


def test_vector_env_with_outcome_model(small: LoggedDataset) -> None:
    from sklearn.linear_model import Ridge

    observed = np.random.default_rng(0).random(small.quality.shape) < 0.6
    observed[:, 0] = True
    partial = replace(small, observed=observed)
    model = OutcomeModel.fit(partial, regressor=Ridge())
    venv = RoutingVectorEnv(num_envs=N, dataset=partial, outcome_model=model)
    venv.reset(seed=0)
    act = np.array([1, 2, 3, 0])
    _, _, _, _, info = venv.step(act)
    q = venv._q
    np.testing.assert_array_equal(info["imputed"], ~observed[q, act])


def test_vector_errors(small: LoggedDataset) -> None:
    with pytest.raises(ConfigurationError, match="num_envs must be an integer ≥ 1, got 0"):
        RoutingVectorEnv(num_envs=0, dataset=small)
    with pytest.raises(ConfigurationError, match="autoreset_mode must be 'next_step' or 'same_step'"):
        RoutingVectorEnv(num_envs=2, dataset=small, autoreset_mode="disabled")
    with pytest.raises(ConfigurationError, match=r"AutoresetMode\.DISABLED is not supported"):
        RoutingVectorEnv(num_envs=2, dataset=small, autoreset_mode=AutoresetMode.DISABLED)
    with pytest.raises(ConfigurationError, match="got 'sometimes'"):
        RoutingVectorEnv(num_envs=2, dataset=small, autoreset_mode="sometimes")
    with pytest.raises(ConfigurationError, match="cost_weight_sampling must be one of"):
        RoutingVectorEnv(num_envs=2, dataset=small, cost_weight_range=(0, 1), cost_weight_sampling="log")
    venv = RoutingVectorEnv(num_envs=2, dataset=small)
    with pytest.raises(ConfigurationError, match="step\\(\\) called before reset\\(\\)"):
        venv.step(np.zeros(2, dtype=np.int64))
    venv.reset(seed=0)
    with pytest.raises(ConfigurationError, match=r"actions must lie in \[0, 4\), got values 0..7"):
        venv.step(np.array([0, 7]))
    with pytest.raises(ConfigurationError, match="actions must be 2 ints"):
        venv.step(np.array([0.5, 1.0]))
    with pytest.raises(ConfigurationError, match="seed must be an int or 2 ints"):
        venv.reset(seed=[1, 2, 3])


def test_vector_reset_options_and_action_masks(small: LoggedDataset) -> None:
    budget = float(2 * small.mean_cost().max())
    venv = RoutingVectorEnv(num_envs=3, dataset=small, budget=budget, queries_per_episode=4)
    obs, info = venv.reset(seed=0, options={"query_index": np.array([5, 6, 7]), "cost_weight": 2.0})
    np.testing.assert_array_equal(info["query_index"], [5, 6, 7])
    np.testing.assert_array_equal(obs[:, :-1], small.features[[5, 6, 7]])
    np.testing.assert_array_equal(venv.action_masks(), small.cost[[5, 6, 7]] <= budget)
    _, rew, _, _, _ = venv.step(np.array([0, 1, 2]))
    np.testing.assert_allclose(rew, small.rewards(2.0)[[5, 6, 7], [0, 1, 2]])


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("next_step", AutoresetMode.NEXT_STEP),
        ("same_step", AutoresetMode.SAME_STEP),
        ("NextStep", AutoresetMode.NEXT_STEP),
        ("SameStep", AutoresetMode.SAME_STEP),
        ("SAME_STEP", AutoresetMode.SAME_STEP),
        (AutoresetMode.NEXT_STEP, AutoresetMode.NEXT_STEP),
        (AutoresetMode.SAME_STEP, AutoresetMode.SAME_STEP),
    ],
)
def test_autoreset_mode_accepts_names_values_and_members(
    small: LoggedDataset, given: Any, expected: AutoresetMode
) -> None:
    from routing_env.envs import CascadeVectorEnv

    for venv in (
        RoutingVectorEnv(num_envs=2, dataset=small, autoreset_mode=given),
        CascadeVectorEnv(num_envs=2, dataset=small, autoreset_mode=given),
        gym.make_vec(
            "routing_env/Routing-v0",
            num_envs=2,
            vectorization_mode="vector_entry_point",
            dataset=small,
            autoreset_mode=given,
        ),
    ):
        assert venv.metadata["autoreset_mode"] is expected
        assert venv.unwrapped.autoreset_mode is expected  # type: ignore[attr-defined]
    # The mode really changes behaviour: same-step reports the ended episode in final_info.
    venv = RoutingVectorEnv(num_envs=2, dataset=small, autoreset_mode=given)
    venv.reset(seed=0)
    _, _, terminated, _, info = venv.step(np.array([0, 1]))
    assert terminated.all()
    assert ("final_info" in info) is (expected is AutoresetMode.SAME_STEP)
