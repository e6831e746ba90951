"""One conformance test: every registered id, in every mode, passes Gymnasium's and SB3's env checkers."""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import routing_env  # noqa: F401  (registers the ids)
from routing_env.envs import CASCADE_ID, ROUTING_ID

CONFIGS: list[tuple[str, dict[str, Any]]] = [
    (ROUTING_ID, {}),
    (ROUTING_ID, {"cost_weight": 1.0, "latency_weight": 0.1, "queries_per_episode": 4}),
    (ROUTING_ID, {"cost_weight_range": (0.0, 2.0), "observe_cost_weight": True}),
    (
        ROUTING_ID,
        {"cost_weight_range": (0.0, 2.0), "cost_weight_sampling": "log_uniform", "observe_cost_weight": True},
    ),
    (
        ROUTING_ID,
        {"budget": 0.05, "queries_per_episode": 8, "models": ["small-3b", "open-70b", "frontier-large"]},
    ),
    (CASCADE_ID, {}),
    (CASCADE_ID, {"order": ["small-3b", "open-70b", "frontier-reasoning"], "answer": "best_signal"}),
    (CASCADE_ID, {"mode": "free"}),
    (
        CASCADE_ID,
        {"mode": "free", "max_depth": 3, "cost_weight_range": (0.0, 1.0), "observe_cost_weight": True},
    ),
    (
        CASCADE_ID,
        {"cost_weight_range": (0.1, 1.0), "cost_weight_sampling": "log_uniform", "observe_cost_weight": True},
    ),
    (CASCADE_ID, {"mode": "free", "signal": "simulated", "verifier_auroc": 0.7}),
]


def test_every_registered_id_is_covered() -> None:
    ours = {i for i in gym.registry if i.startswith("routing_env/")}
    assert ours == {ROUTING_ID, CASCADE_ID}
    assert {i for i, _ in CONFIGS} == ours


@pytest.mark.parametrize(("env_id", "kwargs"), CONFIGS, ids=[f"{i}-{sorted(k)}" for i, k in CONFIGS])
def test_env_passes_gymnasium_and_sb3_checkers(env_id: str, kwargs: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning is a failure
        env = gym.make(env_id, render_mode="ansi", **kwargs)
        gym_check_env(env.unwrapped)
        sb3_check_env(gym.make(env_id, **kwargs).unwrapped, warn=True)
    env.close()
