"""Present a Gymnasium ``VectorEnv`` (the native batched routing envs) to Stable-Baselines3 as its ``VecEnv``."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv

from routing_env.errors import ConfigurationError, ShapeError

__all__ = ["CostWeightInput", "SB3VecEnv"]


@dataclass(frozen=True)
class CostWeightInput:
    """How a λ-conditioned network sees the cost weight: ``(log(λ + offset) − center) / scale``.

    Over a range ``(low, high)`` the input spans [−1, 1], evenly per decade of λ: the network can tell λ = 0.001
    from λ = 0.01 as easily as 0.1 from 1, where the raw λ would squeeze the small values, at which the
    cost–quality trade-off changes fastest, into a sliver of its input. ``offset`` is ``LOG_UNIFORM_OFFSET·high``
    when ``low = 0`` (as the log-uniform λ sampler uses), else 0.
    """

    offset: float
    center: float
    scale: float

    @classmethod
    def for_range(cls, low: float, high: float) -> CostWeightInput:
        from routing_env.envs import LOG_UNIFORM_OFFSET

        offset = LOG_UNIFORM_OFFSET * high if low <= 0.0 else 0.0
        a, b = math.log(low + offset), math.log(high + offset)
        return cls(offset=offset, center=(a + b) / 2.0, scale=max((b - a) / 2.0, 1e-12))

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> CostWeightInput:
        return cls(offset=float(doc["offset"]), center=float(doc["center"]), scale=float(doc["scale"]))

    def to_json(self) -> dict[str, float]:
        return {"offset": self.offset, "center": self.center, "scale": self.scale}

    def __call__(self, cost_weight: np.ndarray | float) -> np.ndarray:
        """``(…,) float32`` network inputs of cost weights ``λ ≥ 0``."""
        lam = np.maximum(np.asarray(cost_weight, dtype=np.float64), 0.0)
        return ((np.log(lam + self.offset + 1e-300) - self.center) / self.scale).astype(np.float32)


class SB3VecEnv(VecEnv):
    """Present a Gymnasium ``VectorEnv`` (one object stepping ``num_envs`` copies in numpy) as an SB3 ``VecEnv``.

    Works with either autoreset mode: with ``SAME_STEP`` the returned observation after a termination is already
    the next episode's and the final one comes in ``infos["final_obs"]``; with ``NEXT_STEP`` the finished copies
    are reset at once through ``reset(options={"reset_mask": dones})``. Each finished copy's last observation is
    passed to SB3 as ``terminal_observation`` when the episode was truncated (the only case SB3 reads it).
    Optional standardisation ``(obs[:, :d] − mean) / std`` of the first ``d`` observation entries (the query
    features) happens here, so the network sees standardised features; and with ``cost_weight_input`` the λ entry at
    ``cost_weight_index`` is mapped by it (:class:`CostWeightInput`).

    ``action_masks()`` of the vector env (``(n_envs, n_actions) bool``) is served to MaskablePPO when
    ``use_masks`` is true (default: whenever the vector env has it).
    """

    def __init__(
        self,
        venv: gym.vector.VectorEnv,
        feature_mean: np.ndarray | None = None,
        feature_std: np.ndarray | None = None,
        use_masks: bool | None = None,
        cost_weight_input: CostWeightInput | None = None,
        cost_weight_index: int | None = None,
    ) -> None:
        self.venv = venv
        if (cost_weight_input is None) != (cost_weight_index is None):
            raise ConfigurationError("give cost_weight_input and cost_weight_index together, or neither")
        self._lam_input, self._lam_index = cost_weight_input, cost_weight_index
        obs_space = venv.single_observation_space
        act_space = venv.single_action_space
        if not isinstance(obs_space, spaces.Box) or not isinstance(act_space, spaces.Discrete):
            raise ConfigurationError(
                f"SB3VecEnv needs Box observations and Discrete actions, got {obs_space} and {act_space}"
            )
        self._mean = None if feature_mean is None else np.asarray(feature_mean, dtype=np.float32)
        self._inv_std = None if feature_std is None else (1.0 / np.asarray(feature_std, dtype=np.float32))
        self._d = 0 if self._mean is None else int(self._mean.shape[0])
        if self._d > obs_space.shape[0]:
            raise ShapeError(f"feature_mean has {self._d} entries, the observation only {obs_space.shape[0]}")
        mode = venv.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        self._same_step = str(getattr(mode, "value", mode)) == gym.vector.AutoresetMode.SAME_STEP.value
        # SB3's VecEnv __init__ reads render_mode through get_attr; answer it directly.
        self.render_mode = None
        super().__init__(int(venv.num_envs), obs_space, act_space)
        self._actions: np.ndarray | None = None
        self._mask_fn: Callable[[], np.ndarray] | None = None
        if callable(getattr(venv, "action_masks", None)):
            self._mask_fn = venv.action_masks  # type: ignore[attr-defined]
        elif isinstance(venv, (gym.vector.SyncVectorEnv, gym.vector.AsyncVectorEnv)) and _sub_env_has_masks(
            venv
        ):
            # Gymnasium's generic vector envs reach the sub-envs' methods through call().
            self._mask_fn = lambda: np.stack(venv.call("action_masks"))
        has = self._mask_fn is not None
        if use_masks and not has:
            raise ConfigurationError(f"use_masks=True, but {type(venv).__name__} has no action_masks()")
        self._has_masks = has if use_masks is None else bool(use_masks)

    def _transform(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        if self._mean is None and self._lam_input is None:
            return obs
        out = np.array(obs, dtype=np.float32, copy=True)
        if self._mean is not None:
            assert self._inv_std is not None
            out[:, : self._d] -= self._mean
            out[:, : self._d] *= self._inv_std
        if self._lam_input is not None:
            out[:, self._lam_index] = self._lam_input(out[:, self._lam_index])
        return out

    def reset(self) -> np.ndarray:
        seeds = self._seeds
        seed: list[int | None] | int | None = None
        if any(s is not None for s in seeds):
            seed = seeds[0] if all(s is None for s in seeds[1:]) else list(seeds)
        options = self._options[0] if self._options and self._options[0] else None
        obs, _ = self.venv.reset(seed=seed, options=options)  # type: ignore[arg-type]  # vector envs take a list
        self._reset_seeds()
        self._reset_options()
        return self._transform(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        assert self._actions is not None
        obs, rewards, terminated, truncated, infos = self.venv.step(self._actions)
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        dones = terminated | truncated
        rewards = np.asarray(rewards, dtype=np.float32)
        out: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if not dones.any():
            return self._transform(obs), rewards, dones, out
        if self._same_step:
            # The returned observation already starts the next episode; the last one is in final_obs.
            nxt = obs
            final = infos.get("final_obs")
        else:
            final = obs
            reset_obs, _ = self.venv.reset(options={"reset_mask": dones})
            nxt = np.where(dones[:, None], reset_obs, obs)
        # SB3 reads terminal_observation only to bootstrap the value of truncated episodes; routing episodes
        # terminate, so the per-step cost of building it is paid only when something was truncated.
        cut = np.flatnonzero(truncated & ~terminated)
        if cut.size and final is not None:
            last = self._transform(np.stack([np.asarray(final[i], dtype=np.float32) for i in cut]))
            for j, i in enumerate(cut):
                out[i] = {"terminal_observation": last[j], "TimeLimit.truncated": True}
        return self._transform(nxt), rewards, dones, out

    def close(self) -> None:
        self.venv.close()

    def action_masks(self) -> np.ndarray:
        """``(n_envs, n_actions) bool`` masks of the current observations (all True without masks)."""
        if self._has_masks and self._mask_fn is not None:
            return np.asarray(self._mask_fn(), dtype=bool)
        n_actions = int(self.action_space.n)  # type: ignore[attr-defined]
        return np.ones((self.num_envs, n_actions), dtype=bool)

    def has_attr(self, attr_name: str) -> bool:
        if attr_name == "action_masks":
            return self._has_masks
        return hasattr(self.venv, attr_name)

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        value = getattr(self.venv, attr_name) if attr_name != "render_mode" else None
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any
    ) -> list[Any]:
        if method_name == "action_masks":
            masks = self.action_masks()
            return [masks[i] for i in self._indices(indices)]
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: Any = None) -> list[bool]:
        return [False for _ in self._indices(indices)]

    def _indices(self, indices: Any) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)


def _sub_env_has_masks(venv: gym.vector.VectorEnv) -> bool:
    envs = getattr(venv, "envs", None)
    if envs:
        return callable(getattr(envs[0].unwrapped, "action_masks", None))
    try:
        venv.call("action_masks")  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        return False
    return True
