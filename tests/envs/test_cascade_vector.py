"""The batched cascade vector env behaves exactly like N single Cascade-v0 envs."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import routing_env  # noqa: F401  (registers the ids)
from routing_env.data import LoggedDataset
from routing_env.envs import CascadeEnv, CascadeVectorEnv
from routing_env.errors import ConfigurationError

N = 4

CONFIGS: list[dict[str, Any]] = [
    {},
    {"cost_weight": 0.9, "latency_weight": 0.05, "max_depth": 3},
    {"mode": "free", "invalid_action_penalty": 0.1, "max_steps": 5},
    {"mode": "free", "answer": "best_signal", "cost_weight_range": (0.0, 2.0), "observe_cost_weight": True},
    {"mode": "free", "signal": "simulated", "max_depth": 2},
    {"cost_weight_range": (0.0, 1.0), "cost_weight_sampling": "log_uniform", "observe_cost_weight": True},
]


def _single_rollout(kwargs: dict[str, Any], ds: LoggedDataset, actions: np.ndarray, same_step: bool):
    envs = [CascadeEnv(dataset=ds, **kwargs) for _ in range(N)]
    first = np.stack([env.reset(seed=50 + i)[0] for i, env in enumerate(envs)])
    ended = np.zeros(N, dtype=bool)
    out = []
    for act in actions:
        obs, rew, term, trunc, infos = [], [], [], [], []
        for i, env in enumerate(envs):
            if ended[i] and not same_step:
                o, _ = env.reset()
                obs.append(o), rew.append(0.0), term.append(False), trunc.append(False), infos.append(None)
                ended[i] = False
                continue
            o, r, te, tr, info = env.step(int(act[i]))
            if (te or tr) and same_step:
                o, _ = env.reset()
            obs.append(o), rew.append(float(r)), term.append(te), trunc.append(tr), infos.append(info)
            ended[i] = te or tr
        out.append((np.stack(obs), np.array(rew), np.array(term), np.array(trunc), infos))
    return first, out


@pytest.mark.parametrize("mode", ["next_step", "same_step"])
@pytest.mark.parametrize("config", range(len(CONFIGS)))
def test_cascade_vector_equals_n_single_envs(small: LoggedDataset, config: int, mode: str) -> None:
    kwargs = CONFIGS[config]
    venv = CascadeVectorEnv(num_envs=N, dataset=small, autoreset_mode=mode, **kwargs)
    n_actions = venv.single_action_space.n
    actions = np.random.default_rng(config).integers(0, n_actions, size=(60, N))
    first, expected = _single_rollout(kwargs, small, actions, mode == "same_step")
    obs, _ = venv.reset(seed=50)
    np.testing.assert_array_equal(obs, first)
    for t, act in enumerate(actions):
        obs, rew, term, trunc, info = venv.step(act)
        e_obs, e_rew, e_term, e_trunc, e_infos = expected[t]
        np.testing.assert_array_equal(obs, e_obs, err_msg=f"step {t}")
        np.testing.assert_allclose(rew, e_rew, rtol=1e-12, atol=1e-12, err_msg=f"step {t}")
        np.testing.assert_array_equal(term, e_term)
        np.testing.assert_array_equal(trunc, e_trunc)
        for i, e in enumerate(e_infos):
            if e is None:
                continue
            src = info["final_info"] if mode == "same_step" and (e_term[i] or e_trunc[i]) else info
            assert src["_cost"][i]
            assert src["cost"][i] == pytest.approx(e["cost"], rel=1e-12, abs=1e-15)
            assert src["depth"][i] == e["depth"]
            if e_term[i]:
                assert venv.models[src["answer_model"][i]] == e["answer_model"]
                assert src["quality"][i] == e["quality"]


def test_make_vec_uses_the_native_cascade_vector_env(small: LoggedDataset) -> None:
    venv = gym.make_vec("routing_env/Cascade-v0", num_envs=3, dataset=small, mode="free")
    assert isinstance(venv.unwrapped, CascadeVectorEnv)
    obs, _ = venv.reset(seed=0)
    assert venv.observation_space.contains(obs)
    masks = venv.unwrapped.action_masks()
    assert masks.shape == (3, 5) and not masks[:, 0].any() and masks[:, 1:].all()
    venv.step(np.array([1, 2, 3]))
    masks = venv.unwrapped.action_masks()
    assert masks[:, 0].all() and not masks[0, 1] and not masks[1, 2] and not masks[2, 3]


def test_cascade_vector_shares_arrays_and_validates(small: LoggedDataset) -> None:
    a = CascadeVectorEnv(num_envs=2, dataset=small)
    b = CascadeVectorEnv(num_envs=2, dataset=small)
    assert a._features is small.features
    assert a._signal is b._signal and a._per_lambda is b._per_lambda and a._quality is b._quality
    with pytest.raises(ConfigurationError, match="takes no reset options"):
        a.reset(options={"query_index": [0, 1]})
    a.reset(seed=0)
    with pytest.raises(ConfigurationError, match=r"actions must lie in \[0, 2\), got values 0..2"):
        a.step(np.array([0, 2]))
