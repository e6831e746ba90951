"""PPO routers under their public import path ``agents.ppo``: every name of :mod:`agents.training.ppo`
(``train_ppo``, ``PPOTrainConfig``, ``PPOConfig``, ``PPOResult``, ``SB3Policy``, ``SB3VecEnv``...), where they live."""

from typing import Any

from agents.training import ppo as _ppo

__all__ = list(_ppo.__all__)


def __getattr__(name: str) -> Any:
    if name in _ppo.__all__:
        return getattr(_ppo, name)
    raise AttributeError(f"module 'agents.ppo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
