"""Training routers as RL agents: SB3 PPO on the batched envs (needs torch: :mod:`agents.training.ppo` trains,
:mod:`~agents.training.ppo_config` holds its settings, :mod:`~agents.training.sb3_env` adapts the vector envs to
SB3 and :mod:`~agents.training.sb3_policy` serves the trained network as a policy) and the online replay loop
(:mod:`agents.training.loop`). The PPO modules are imported on first use of their names, so
``import agents.training`` stays free of torch."""

from __future__ import annotations

from typing import Any

from agents.training.loop import OnlineResult, run_cascade_online, run_online

__all__ = [
    "OnlineResult",
    "PPOConfig",
    "PPOResult",
    "PPOTrainConfig",
    "SB3Policy",
    "run_cascade_online",
    "run_online",
    "train_ppo",
]

_PPO_NAMES = ("PPOConfig", "PPOResult", "PPOTrainConfig", "SB3Policy", "train_ppo")


def __getattr__(name: str) -> Any:
    if name in _PPO_NAMES:
        from agents.training import ppo

        return getattr(ppo, name)
    raise AttributeError(f"module 'agents.training' has no attribute {name!r}")
