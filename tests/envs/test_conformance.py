"""One conformance test: every registered id, in every mode, over logs with and without latency, signal, tasks
and prompts, passes Gymnasium's and SB3's env checkers."""

from __future__ import annotations

import warnings
from functools import cache
from typing import Any

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import routing_env  # noqa: F401  (registers the ids)
from routing_env.data import LoggedDataset, load_sample
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


@cache
def _logs(kind: str) -> LoggedDataset:
    """The bundled sample (latency, signal, tasks, prompts), or the same queries with only the required columns."""
    sample = load_sample()
    if kind == "full":
        return sample
    return LoggedDataset(
        models=sample.models,
        query_ids=sample.query_ids,
        quality=sample.quality,
        cost=sample.cost,
        features=sample.features,
    )


LOGS = ("full", "bare")


def test_every_registered_id_is_covered() -> None:
    ours = {i for i in gym.registry if i.startswith("routing_env/")}
    assert ours == {ROUTING_ID, CASCADE_ID}
    assert {i for i, _ in CONFIGS} == ours


@pytest.mark.parametrize("logs", LOGS)
@pytest.mark.parametrize(("env_id", "kwargs"), CONFIGS, ids=[f"{i}-{sorted(k)}" for i, k in CONFIGS])
def test_env_passes_gymnasium_and_sb3_checkers(env_id: str, kwargs: dict[str, Any], logs: str) -> None:
    dataset = _logs(logs)
    if kwargs.get("latency_weight") and dataset.latency is None:
        kwargs = {k: v for k, v in kwargs.items() if k != "latency_weight"}  # a latency weight needs latency
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning is a failure
        env = gym.make(env_id, render_mode="ansi", dataset=dataset, **kwargs)
        gym_check_env(env.unwrapped)
        sb3_check_env(gym.make(env_id, dataset=dataset, **kwargs).unwrapped, warn=True)
    env.close()


def test_the_bare_logs_lack_every_optional_column() -> None:
    bare = _logs("bare")
    assert bare.latency is None and bare.signal is None and bare.tasks is None and bare.prompts is None
