"""Reward variants and evaluation helpers as Gymnasium wrappers.

- :class:`LatencyPenalty`: subtract ``latency_weight · latency_s`` of each call (the ``latency_weight``
  argument of the envs, as a wrapper over an env built without it).
- :class:`StandardizeReward`: a fixed affine rescaling of Routing-v0 rewards by the dataset's own reward
  statistics (unlike Gymnasium's running ``NormalizeReward``, it is the same on every step and invertible).
- :class:`TrueOutcomes`: gives *evaluation code* every model's true outcome on the current query through a
  method; the observation is untouched, so an agent never sees them.

The per-episode budget is an argument of Routing-v0 rather than a wrapper: it changes the observation (remaining
budget) and the action masks, which a reward wrapper cannot do consistently.
"""

from __future__ import annotations

from typing import Any, NamedTuple, SupportsFloat

import gymnasium as gym
import numpy as np

from routing_env.envs.cascade import CascadeEnv
from routing_env.envs.routing import RoutingEnv
from routing_env.errors import ConfigurationError


def _base(env: gym.Env[Any, Any]) -> RoutingEnv | CascadeEnv:
    inner = env.unwrapped
    if not isinstance(inner, (RoutingEnv, CascadeEnv)):
        raise ConfigurationError(
            f"this wrapper needs a RoutingEnv or CascadeEnv underneath, got {type(inner).__name__}"
        )
    return inner


class LatencyPenalty(gym.Wrapper[Any, Any, Any, Any]):
    """Subtract ``latency_weight · info["latency"]`` (seconds of the call made this step) from each reward.

    Args:
        env: a Routing-v0 or Cascade-v0 env over a dataset with latency.
        latency_weight: reward per second, ≥ 0.
    """

    def __init__(self, env: gym.Env[Any, Any], latency_weight: float) -> None:
        super().__init__(env)
        base = _base(env)
        w = float(latency_weight)
        if not np.isfinite(w) or w < 0:
            raise ConfigurationError(f"latency_weight must be a finite number ≥ 0, got {latency_weight!r}")
        if base.dataset.latency is None:
            raise ConfigurationError("LatencyPenalty needs latency_s in the data, and this dataset has none")
        self.latency_weight = w

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, float(reward) - self.latency_weight * info["latency"], terminated, truncated, info


class StandardizeReward(gym.Wrapper[Any, Any, Any, Any]):
    """``(reward − mean) / std`` with the mean and std of the env's reward table (every query × model, at the
    env's fixed λ), so that rewards of any λ and cost scale land on a comparable scale. ``info["raw_reward"]``
    keeps the unscaled reward; :meth:`unscale` inverts the map.

    Args:
        env: a Routing-v0 env with a fixed cost weight (no budget: refused calls would break the affine map).
    """

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        super().__init__(env)
        base = _base(env)
        if not isinstance(base, RoutingEnv) or base._fixed is None or base.budget is not None:
            raise ConfigurationError(
                "StandardizeReward needs a Routing-v0 env with a fixed cost_weight and no budget"
            )
        table = base._fixed.rewards_array
        self.mean = float(table.mean())
        std = float(table.std())
        self.std = std if std > 0 else 1.0

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["raw_reward"] = float(reward)
        return obs, (float(reward) - self.mean) / self.std, terminated, truncated, info

    def unscale(self, reward: float | np.ndarray) -> float | np.ndarray:
        """The raw reward behind a standardised one."""
        return reward * self.std + self.mean


class Outcomes(NamedTuple):
    """True outcomes of every model of the env on its current query.

    Attributes:
        query_index: dataset row of the query.
        quality: ``(K,) float64`` in [0, 1].
        cost: ``(K,) float64`` USD.
        latency: ``(K,) float64`` seconds, NaN when not logged.
        rewards: ``(K,) float64`` Routing-v0 reward of each model at the episode's λ.
        imputed: ``(K,) bool``, the outcome came from an outcome model.
    """

    query_index: int
    quality: np.ndarray
    cost: np.ndarray
    latency: np.ndarray
    rewards: np.ndarray
    imputed: np.ndarray


class TrueOutcomes(gym.Wrapper[Any, Any, Any, Any]):
    """Adds :meth:`true_outcomes` for evaluation code (oracle comparisons, regret curves, debugging).

    Nothing is added to observations or infos: an agent trained through this wrapper sees exactly what it sees
    without it.
    """

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        super().__init__(env)
        _base(env)

    def true_outcomes(self) -> Outcomes:
        """Every model's outcome on the current query (call after ``reset``)."""
        base = _base(self.env)
        ds = base.dataset
        q = base.query_index
        cols = list(base._columns)
        lat = np.full(len(cols), np.nan) if ds.latency is None else ds.latency[q, cols].astype(np.float64)
        imputed = (
            np.zeros(len(cols), dtype=bool) if base._imputed_rows is None else np.array(base._imputed_rows[q])
        )
        return Outcomes(
            query_index=q,
            quality=ds.quality[q, cols],
            cost=ds.cost[q, cols],
            latency=lat,
            rewards=np.asarray(base.true_rewards(), dtype=np.float64),
            imputed=imputed,
        )
