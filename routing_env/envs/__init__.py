"""Gymnasium environments that replay logged LLM outcomes: routing, cascades, and a batched vector env.

Importing this package (``import routing_env`` does) registers:

- ``routing_env/Routing-v0``: :class:`RoutingEnv`, with :class:`RoutingVectorEnv` as its ``vector_entry_point``
  (``gym.make_vec(id, num_envs=N)`` steps N queries at once with numpy);
- ``routing_env/Cascade-v0``: :class:`CascadeEnv` (fixed chain or free choice, ``action_masks()``), with
  :class:`CascadeVectorEnv` as its ``vector_entry_point``.

``gym.make(id)`` with no arguments replays the bundled sample (:func:`routing_env.data.load_sample`), generated
once per process and shared by every env instance.
"""

from __future__ import annotations

import gymnasium as gym

from routing_env.envs._stream import (
    COST_WEIGHT_SAMPLINGS,
    LOG_UNIFORM_OFFSET,
    CostWeightSampling,
    draw_cost_weights,
)
from routing_env.envs.cascade import CascadeEnv
from routing_env.envs.cascade_vector import CascadeVectorEnv
from routing_env.envs.outcome import OutcomeModel
from routing_env.envs.routing import RoutingEnv
from routing_env.envs.vector import RoutingVectorEnv
from routing_env.envs.wrappers import LatencyPenalty, Outcomes, StandardizeReward, TrueOutcomes

ROUTING_ID = "routing_env/Routing-v0"
CASCADE_ID = "routing_env/Cascade-v0"

__all__ = [
    "CASCADE_ID",
    "COST_WEIGHT_SAMPLINGS",
    "LOG_UNIFORM_OFFSET",
    "ROUTING_ID",
    "CascadeEnv",
    "CascadeVectorEnv",
    "CostWeightSampling",
    "LatencyPenalty",
    "OutcomeModel",
    "Outcomes",
    "RoutingEnv",
    "RoutingVectorEnv",
    "StandardizeReward",
    "TrueOutcomes",
    "draw_cost_weights",
]


def _register() -> None:
    if ROUTING_ID not in gym.registry:
        gym.register(
            id=ROUTING_ID,
            entry_point="routing_env.envs.routing:RoutingEnv",
            vector_entry_point="routing_env.envs.vector:RoutingVectorEnv",
        )
    if CASCADE_ID not in gym.registry:
        gym.register(
            id=CASCADE_ID,
            entry_point="routing_env.envs.cascade:CascadeEnv",
            vector_entry_point="routing_env.envs.cascade_vector:CascadeVectorEnv",
        )


_register()
