"""Training routers as RL agents: SB3 PPO on the batched envs (needs torch: :mod:`agents.training.ppo` trains,
:mod:`~agents.training.ppo_config` holds its settings, :mod:`~agents.training.sb3_env` adapts the vector envs to
SB3 and :mod:`~agents.training.sb3_policy` serves the trained network as a policy), RLlib PPO over many env runners
(:mod:`agents.training.rllib`, the ``ray`` extra) and the online replay loop (:mod:`agents.training.loop`). The PPO
and RLlib modules are imported on first use of their names, so ``import agents.training`` stays free of torch and
Ray."""

from __future__ import annotations

from typing import Any

from agents.training.loop import OnlineResult, run_cascade_online, run_online

__all__ = [
    "OnlineResult",
    "PPOConfig",
    "PPOResult",
    "PPOTrainConfig",
    "RLlibCascadePolicy",
    "RLlibPPOConfig",
    "RLlibPolicy",
    "RLlibResult",
    "SB3Policy",
    "run_cascade_online",
    "run_online",
    "train_ppo",
    "train_rllib",
]

_PPO_NAMES = ("PPOConfig", "PPOResult", "PPOTrainConfig", "SB3Policy", "train_ppo")
_RLLIB_NAMES = ("RLlibCascadePolicy", "RLlibPPOConfig", "RLlibPolicy", "RLlibResult", "train_rllib")


def __getattr__(name: str) -> Any:
    if name in _PPO_NAMES:
        from agents.training import ppo

        return getattr(ppo, name)
    if name in _RLLIB_NAMES:
        from agents.training import rllib

        return getattr(rllib, name)
    raise AttributeError(f"module 'agents.training' has no attribute {name!r}")
