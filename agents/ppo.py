"""PPO routers under their public import path ``agents.ppo`` (they live in :mod:`agents.training.ppo`)."""

from agents.training.ppo import (
    CASCADE_ENV_ID,
    DEFAULT_CONDITIONED_SAMPLING,
    ROUTING_ENV_ID,
    EvalRecord,
    PPOConfig,
    PPOResult,
    SB3Policy,
    SB3VecEnv,
    evaluate_cascade_model,
    train_ppo,
)

__all__ = [
    "CASCADE_ENV_ID",
    "DEFAULT_CONDITIONED_SAMPLING",
    "ROUTING_ENV_ID",
    "EvalRecord",
    "PPOConfig",
    "PPOResult",
    "SB3Policy",
    "SB3VecEnv",
    "evaluate_cascade_model",
    "train_ppo",
]
