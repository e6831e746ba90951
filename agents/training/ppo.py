"""PPO routers trained with Stable-Baselines3 on the native batched routing environments.

- :func:`train_ppo` trains SB3's PPO (or sb3-contrib's MaskablePPO when the environment exposes action masks,
  e.g. free-choice cascades) on ``routing_env/Routing-v0`` or ``routing_env/Cascade-v0``, driving the native
  numpy-batched Gymnasium ``VectorEnv`` through :class:`SB3VecEnv`, with an evaluation callback on a validation
  split that keeps the best model.
- λ-conditioned training: with ``cost_weight_range=(low, high)`` the environment draws the cost weight λ per
  episode (log-uniformly by default, see ``cost_weight_sampling``) and shows it to the policy, so one network
  serves the whole cost–quality frontier; set :attr:`SB3Policy.cost_weight` at inference time to move along it.
- :class:`SB3Policy` adapts the trained network to the :class:`~routing_env.policy.Policy` protocol with exact
  action probabilities from the policy's categorical distribution, and saves/loads without pickle (parameter
  tensors in ``arrays.npz``, the architecture in ``policy.json``; the SB3 network is rebuilt on load).

Features are standardised with the training split's mean and standard deviation before they reach the network
(the statistics are part of the saved policy), so the same hyperparameters work for one-hot, TF-IDF-SVD or
embedding features.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import VecEnv

from agents.routers._common import rng_from_state, rng_state
from routing_env.data.dataset import LoggedDataset
from routing_env.errors import ConfigurationError, PolicyFormatError, ShapeError
from routing_env.metrics import PolicyEvaluation, evaluate_policy
from routing_env.policy import check_features, read_policy_dir, register_policy, write_policy_dir

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

ROUTING_ENV_ID = "routing_env/Routing-v0"
CASCADE_ENV_ID = "routing_env/Cascade-v0"
#: How λ-conditioned training draws λ from ``cost_weight_range`` unless told otherwise.
DEFAULT_CONDITIONED_SAMPLING = "log_uniform"

_ACTIVATIONS: dict[str, type[torch.nn.Module]] = {
    "tanh": torch.nn.Tanh,
    "relu": torch.nn.ReLU,
    "elu": torch.nn.ELU,
}


# ---------------------------------------------------------------------- hyperparameters and records
@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters (SB3 names). Defaults suit one-step routing episodes (a contextual bandit).

    Attributes:
        learning_rate: Adam step size.
        n_steps: environment steps per vectorised env per rollout (rollout size = ``n_steps · n_envs``).
        batch_size: minibatch size for each gradient step.
        n_epochs: passes over each rollout.
        gamma: discount; irrelevant for one-step episodes, matters for cascades and multi-query budgets.
        gae_lambda: GAE λ (not the cost weight).
        clip_range: PPO's ratio clip.
        ent_coef: entropy bonus (0: PPO's own stochastic policy explores enough on one-step episodes).
        vf_coef: value-loss weight.
        max_grad_norm: gradient clipping.
        net_arch: hidden layer widths of the (separate) policy and value networks.
        activation: ``"tanh"``, ``"relu"`` or ``"elu"``.
    """

    learning_rate: float = 1e-3
    n_steps: int = 256
    batch_size: int = 256
    n_epochs: int = 10
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    net_arch: tuple[int, ...] = (128, 128)
    activation: str = "tanh"

    def __post_init__(self) -> None:
        positive = {
            "learning_rate": self.learning_rate,
            "clip_range": self.clip_range,
            "max_grad_norm": self.max_grad_norm,
        }
        for name, value in positive.items():
            if not (np.isfinite(value) and value > 0):
                raise ConfigurationError(f"PPOConfig.{name} must be a positive number, got {value!r}")
        for name in ("n_steps", "batch_size", "n_epochs"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigurationError(f"PPOConfig.{name} must be a positive integer, got {value!r}")
        for name in ("gamma", "gae_lambda"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigurationError(f"PPOConfig.{name} must lie in [0, 1], got {value!r}")
        for name in ("ent_coef", "vf_coef"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ConfigurationError(f"PPOConfig.{name} must be a number ≥ 0, got {value!r}")
        arch = tuple(int(w) for w in self.net_arch)
        if any(w < 1 for w in arch):
            raise ConfigurationError(f"PPOConfig.net_arch must hold positive widths, got {self.net_arch!r}")
        object.__setattr__(self, "net_arch", arch)
        if self.activation not in _ACTIVATIONS:
            raise ConfigurationError(
                f"PPOConfig.activation must be one of {sorted(_ACTIVATIONS)}, got {self.activation!r}"
            )

    def sb3_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for SB3's ``PPO``/``MaskablePPO`` constructor."""
        return {
            "learning_rate": self.learning_rate,
            "n_steps": self.n_steps,
            "batch_size": self.batch_size,
            "n_epochs": self.n_epochs,
            "gamma": self.gamma,
            "gae_lambda": self.gae_lambda,
            "clip_range": self.clip_range,
            "ent_coef": self.ent_coef,
            "vf_coef": self.vf_coef,
            "max_grad_norm": self.max_grad_norm,
            "policy_kwargs": {
                "net_arch": {"pi": list(self.net_arch), "vf": list(self.net_arch)},
                "activation_fn": _ACTIVATIONS[self.activation],
            },
        }


@dataclass(frozen=True)
class EvalRecord:
    """One validation pass of the evaluation callback (averaged over ``cost_weights`` when λ-conditioned).

    Attributes:
        timesteps: environment steps taken when the evaluation ran.
        cost_weights: the λ values the policy was evaluated at.
        mean_quality: expected quality per query in [0, 1].
        mean_cost: expected USD per query.
        mean_reward: expected reward per query.
        regret: oracle reward minus ``mean_reward``.
    """

    timesteps: int
    cost_weights: tuple[float, ...]
    mean_quality: float
    mean_cost: float
    mean_reward: float
    regret: float


@dataclass(frozen=True)
class PPOResult:
    """What :func:`train_ppo` returns.

    Attributes:
        policy: the best policy found (by validation reward when a validation split is used, else the last).
        model: the SB3 algorithm object (its policy holds the same best parameters).
        history: one :class:`EvalRecord` per evaluation, in order.
        best_timesteps: timesteps at which ``policy`` was evaluated best (the total when not evaluated).
        train_seconds: wall time of ``model.learn``.
        fps: environment steps per second during training.
        feature_mean, feature_std: ``(d,)`` standardisation of the query features the network was trained on
            (the first ``d`` observation entries); apply it to observations fed to ``model`` directly.
        env_id, env_kwargs: the environment trained on (without ``dataset``), to rebuild it for evaluation.
    """

    policy: SB3Policy | None
    model: BaseAlgorithm
    history: tuple[EvalRecord, ...] = field(default_factory=tuple)
    best_timesteps: int = 0
    train_seconds: float = 0.0
    fps: float = 0.0
    feature_mean: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    feature_std: np.ndarray = field(default_factory=lambda: np.ones(0, np.float32))
    env_id: str = ROUTING_ENV_ID
    env_kwargs: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------- Gymnasium VectorEnv → SB3 VecEnv
class SB3VecEnv(VecEnv):
    """Present a Gymnasium ``VectorEnv`` (one object stepping ``num_envs`` copies in numpy) as an SB3 ``VecEnv``.

    Works with either autoreset mode: with ``SAME_STEP`` the returned observation after a termination is already
    the next episode's and the final one comes in ``infos["final_obs"]``; with ``NEXT_STEP`` the finished copies
    are reset at once through ``reset(options={"reset_mask": dones})``. Each finished copy's last observation is
    passed to SB3 as ``terminal_observation`` when the episode was truncated (the only case SB3 reads it). Optional standardisation ``(obs[:, :d] − mean) / std`` of the first
    ``d`` observation entries (the query features) happens here, so the network sees standardised features.

    ``action_masks()`` of the vector env (``(n_envs, n_actions) bool``) is served to MaskablePPO when
    ``use_masks`` is true (default: whenever the vector env has it).
    """

    def __init__(
        self,
        venv: gym.vector.VectorEnv,
        feature_mean: np.ndarray | None = None,
        feature_std: np.ndarray | None = None,
        use_masks: bool | None = None,
    ) -> None:
        self.venv = venv
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
        if self._mean is None:
            return obs
        assert self._inv_std is not None
        out = np.array(obs, dtype=np.float32, copy=True)
        out[:, : self._d] -= self._mean
        out[:, : self._d] *= self._inv_std
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


# ---------------------------------------------------------------------- the Policy adapter
def _build_sb3_policy(
    algorithm: str, obs_dim: int, n_actions: int, net_arch: Sequence[int], activation: str
) -> ActorCriticPolicy:
    obs_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    act_space: spaces.Discrete = spaces.Discrete(n_actions)
    kwargs: dict[str, Any] = {
        "net_arch": {"pi": list(net_arch), "vf": list(net_arch)},
        "activation_fn": _ACTIVATIONS[activation],
    }
    if algorithm == "MaskablePPO":
        from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy

        masked: ActorCriticPolicy = MaskableActorCriticPolicy(obs_space, act_space, lambda _: 0.0, **kwargs)  # type: ignore[assignment]
        return masked
    return ActorCriticPolicy(obs_space, act_space, lambda _: 0.0, **kwargs)


@register_policy
class SB3Policy:
    """A trained SB3 actor-critic network as a :class:`~routing_env.policy.Policy` over ``models``.

    ``action_probabilities(features (n, d)) -> (n, K) float64`` is the softmax of the policy network's logits on
    the standardised features (with the cost weight appended when the network was trained λ-conditioned), so
    off-policy estimators and :func:`routing_env.metrics.evaluate_policy` score the exact stochastic policy.
    ``act`` samples from it with the policy's own seeded generator; ``greedy_actions`` takes the argmax.

    Attributes:
        models: the K model names (action ``j`` calls ``models[j]``).
        n_features: d, the query-feature width the network expects.
        conditioned: the network observes the cost weight (λ-conditioned training).
        cost_weight: the λ fed to a conditioned network (settable at decision time); the training λ otherwise.
        cost_weight_range: the λ range a conditioned network was trained on (``None`` otherwise).
    """

    def __init__(
        self,
        network: ActorCriticPolicy,
        models: Sequence[str],
        feature_mean: np.ndarray,
        feature_std: np.ndarray,
        *,
        cost_weight: float = 0.0,
        conditioned: bool = False,
        cost_weight_range: tuple[float, float] | None = None,
        algorithm: str = "PPO",
        net_arch: Sequence[int] = (64, 64),
        activation: str = "tanh",
        seed: int | None = 0,
    ) -> None:
        self.network = network
        self._models = tuple(str(m) for m in models)
        self.feature_mean = np.asarray(feature_mean, dtype=np.float32)
        self.feature_std = np.asarray(feature_std, dtype=np.float32)
        if self.feature_mean.shape != self.feature_std.shape or self.feature_mean.ndim != 1:
            raise ShapeError(
                f"feature_mean and feature_std must be (d,) arrays of one length, got "
                f"{self.feature_mean.shape} and {self.feature_std.shape}"
            )
        if (self.feature_std <= 0).any():
            raise ConfigurationError("feature_std must be > 0 in every entry")
        self.conditioned = bool(conditioned)
        self.cost_weight_range = None if cost_weight_range is None else tuple(map(float, cost_weight_range))
        self.cost_weight = float(cost_weight)
        self.algorithm = algorithm
        self.net_arch = tuple(int(w) for w in net_arch)
        self.activation = activation
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        obs_dim = int(network.observation_space.shape[0])  # type: ignore[index]
        expected = self.n_features + int(self.conditioned)
        if obs_dim != expected:
            raise ShapeError(
                f"the network observes {obs_dim} values, but {self.n_features} features"
                f"{' + the cost weight' if self.conditioned else ''} make {expected}"
            )
        n_actions = int(network.action_space.n)  # type: ignore[attr-defined]
        if n_actions != len(self._models):
            raise ShapeError(f"the network has {n_actions} actions for {len(self._models)} models")

    # ------------------------------------------------------------------ Policy protocol
    @property
    def models(self) -> tuple[str, ...]:
        return self._models

    @property
    def n_features(self) -> int:
        return int(self.feature_mean.shape[0])

    @property
    def cost_weight(self) -> float:
        return self._cost_weight

    @cost_weight.setter
    def cost_weight(self, value: float) -> None:
        lam = float(value)
        if not np.isfinite(lam) or lam < 0:
            raise ConfigurationError(f"cost_weight must be a finite number ≥ 0, got {value!r}")
        self._cost_weight = lam

    def _observations(self, features: np.ndarray) -> torch.Tensor:
        x = check_features(features, self.n_features).astype(np.float32)
        x = (x - self.feature_mean) / self.feature_std
        if self.conditioned:
            x = np.concatenate([x, np.full((x.shape[0], 1), self._cost_weight, np.float32)], axis=1)
        return torch.as_tensor(x)

    def action_probabilities(self, features: np.ndarray) -> np.ndarray:
        """``features (n, d)`` → ``(n, K) float64`` probabilities of the policy's categorical distribution."""
        obs = self._observations(features)
        with torch.no_grad():
            dist = self.network.get_distribution(obs)
            probs = dist.distribution.probs.double().numpy()  # type: ignore[union-attr]
        return probs / probs.sum(axis=1, keepdims=True)

    def act(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sample one model per query: ``(actions (n,) int64, propensities (n,) float64)``."""
        probs = self.action_probabilities(features)
        u = self._rng.random((probs.shape[0], 1))
        actions = np.minimum((probs.cumsum(axis=1) < u).sum(axis=1), probs.shape[1] - 1).astype(np.int64)
        return actions, probs[np.arange(probs.shape[0]), actions]

    def greedy_actions(self, features: np.ndarray) -> np.ndarray:
        """``(n,) int64`` most probable model per query (ties to the lower index)."""
        return self.action_probabilities(features).argmax(axis=1).astype(np.int64)

    def with_cost_weight(self, cost_weight: float) -> SB3Policy:
        """A shallow copy that feeds ``cost_weight`` to the network (the parameters are shared)."""
        other = copy.copy(self)
        other.cost_weight = cost_weight
        other._rng = np.random.default_rng(self.seed)
        return other

    # ------------------------------------------------------------------ save / load without pickle
    def save(self, path: str | Path) -> Path:
        """Write ``policy.json`` (architecture, models, λ settings) and ``arrays.npz`` (parameters, statistics)."""
        state = {f"param/{k}": v.detach().cpu().numpy() for k, v in self.network.state_dict().items()}
        config = {
            "models": list(self._models),
            "n_features": self.n_features,
            "conditioned": self.conditioned,
            "cost_weight": self._cost_weight,
            "cost_weight_range": None if self.cost_weight_range is None else list(self.cost_weight_range),
            "algorithm": self.algorithm,
            "net_arch": list(self.net_arch),
            "activation": self.activation,
            "seed": self.seed,
            "rng_state": rng_state(self._rng),
            "torch_dtypes": {k: str(v.dtype) for k, v in self.network.state_dict().items()},
        }
        arrays = {"feature_mean": self.feature_mean, "feature_std": self.feature_std, **state}
        return write_policy_dir(path, SB3Policy, config, arrays)

    @classmethod
    def load(cls, path: str | Path) -> SB3Policy:
        """Rebuild the SB3 network from ``policy.json`` and load its parameters from ``arrays.npz``."""
        _, config, arrays = read_policy_dir(path, expect=cls)
        try:
            models = [str(m) for m in config["models"]]
            conditioned = bool(config["conditioned"])
            algorithm = str(config["algorithm"])
            activation = str(config["activation"])
            net_arch = [int(w) for w in config["net_arch"]]
            mean, std = arrays["feature_mean"], arrays["feature_std"]
        except KeyError as exc:
            raise PolicyFormatError(f"{path}: saved SB3Policy lacks {exc}") from None
        if algorithm not in ("PPO", "MaskablePPO") or activation not in _ACTIVATIONS:
            raise PolicyFormatError(f"{path}: unknown algorithm {algorithm!r} or activation {activation!r}")
        network = _build_sb3_policy(
            algorithm, int(mean.shape[0]) + int(conditioned), len(models), net_arch, activation
        )
        expected = network.state_dict()
        state = {k[len("param/") :]: torch.as_tensor(v) for k, v in arrays.items() if k.startswith("param/")}
        if set(state) != set(expected):
            raise PolicyFormatError(
                f"{path}: parameters {sorted(set(state) ^ set(expected))} do not match the rebuilt network"
            )
        for k, v in state.items():
            if tuple(v.shape) != tuple(expected[k].shape):
                raise PolicyFormatError(
                    f"{path}: parameter {k!r} has shape {tuple(v.shape)}, the network expects {tuple(expected[k].shape)}"
                )
        network.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
        network.set_training_mode(False)
        rng = config.get("cost_weight_range")
        policy = cls(
            network,
            models,
            mean,
            std,
            cost_weight=float(config.get("cost_weight", 0.0)),
            conditioned=conditioned,
            cost_weight_range=None if rng is None else (float(rng[0]), float(rng[1])),
            algorithm=algorithm,
            net_arch=net_arch,
            activation=activation,
            seed=config.get("seed"),
        )
        if "rng_state" in config:
            # The sampler continues where the saved policy stopped.
            policy._rng = rng_from_state(config["rng_state"])
        return policy


# ---------------------------------------------------------------------- evaluation callback
class ValidationCallback(BaseCallback):
    """At the end of the first rollout after every ``eval_freq`` environment steps, score the current policy
    exactly on a full-information validation split (averaged over ``cost_weights``) and keep a copy of the best
    parameters by mean reward."""

    def __init__(
        self,
        make_policy: Callable[[], SB3Policy],
        validation: LoggedDataset,
        cost_weights: Sequence[float],
        eval_freq: int,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        self.make_policy = make_policy
        self.validation = validation
        self.cost_weights = tuple(float(c) for c in cost_weights)
        self.eval_freq = int(eval_freq)
        self.history: list[EvalRecord] = []
        self.best_reward = -np.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_timesteps = 0
        self._next = self.eval_freq

    def evaluate(self) -> EvalRecord:
        policy = self.make_policy()
        evals: list[PolicyEvaluation] = []
        for lam in self.cost_weights:
            p = policy.with_cost_weight(lam) if policy.conditioned else policy
            evals.append(evaluate_policy(self.validation, p, lam))
        record = EvalRecord(
            timesteps=int(self.num_timesteps),
            cost_weights=self.cost_weights,
            mean_quality=float(np.mean([e.mean_quality for e in evals])),
            mean_cost=float(np.mean([e.mean_cost for e in evals])),
            mean_reward=float(np.mean([e.mean_reward for e in evals])),
            regret=float(np.mean([e.regret for e in evals])),
        )
        self.history.append(record)
        if record.mean_reward > self.best_reward:
            self.best_reward = record.mean_reward
            self.best_state = copy.deepcopy(self.model.policy.state_dict())
            self.best_timesteps = record.timesteps
        if self.verbose:
            print(
                f"[ppo] t={record.timesteps} quality={record.mean_quality:.4f} cost=${record.mean_cost:.6f} "
                f"reward={record.mean_reward:.4f} regret={record.regret:.4f}"
            )
        return record

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        # Parameters change only between rollouts, so that is when an evaluation can see something new.
        if self.num_timesteps >= self._next:
            self._next = self.num_timesteps + self.eval_freq
            self.evaluate()

    def _on_training_end(self) -> None:
        # The last rollout's update has not been scored yet: score the final parameters, then restore the best.
        self.evaluate()
        if self.best_state is not None:
            self.model.policy.load_state_dict(self.best_state)


# ---------------------------------------------------------------------- training
def _feature_stats(ds: LoggedDataset) -> tuple[np.ndarray, np.ndarray]:
    x = ds.features.astype(np.float64)
    mean = x.mean(axis=0) if x.shape[0] else np.zeros(x.shape[1])
    std = x.std(axis=0) if x.shape[0] else np.ones(x.shape[1])
    # Constant features (e.g. a task absent from the split) keep scale 1 instead of blowing up.
    std = np.where(std > 1e-6, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def _check_range(cost_weight_range: tuple[float, float] | None) -> tuple[float, float] | None:
    if cost_weight_range is None:
        return None
    lo, hi = (float(v) for v in cost_weight_range)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi <= lo:
        raise ConfigurationError(
            f"cost_weight_range must be (low, high) with 0 ≤ low < high, got {cost_weight_range!r}"
        )
    return lo, hi


def _check_sampling(sampling: str | None, lam_range: tuple[float, float] | None) -> str:
    from routing_env.envs import COST_WEIGHT_SAMPLINGS

    if sampling is None:
        return "uniform" if lam_range is None else DEFAULT_CONDITIONED_SAMPLING
    if sampling not in COST_WEIGHT_SAMPLINGS:
        raise ConfigurationError(
            f"cost_weight_sampling must be one of {list(COST_WEIGHT_SAMPLINGS)}, got {sampling!r}"
        )
    if lam_range is None:
        raise ConfigurationError(
            f"cost_weight_sampling={sampling!r} needs cost_weight_range=(low, high) (λ-conditioned training)"
        )
    return sampling


def train_ppo(
    dataset_or_env_id: LoggedDataset | str,
    cost_weight: float = 0.0,
    *,
    cascade: bool = False,
    total_timesteps: int = 100_000,
    n_envs: int = 8,
    seed: int = 0,
    cost_weight_range: tuple[float, float] | None = None,
    cost_weight_sampling: str | None = None,
    validation: LoggedDataset | float | None = 0.15,
    eval_freq: int | None = None,
    eval_cost_weights: Sequence[float] | None = None,
    config: PPOConfig | None = None,
    env_kwargs: dict[str, Any] | None = None,
    progress_bar: bool = False,
    torch_threads: int | None = 1,
    verbose: int = 0,
) -> PPOResult:
    """Train a PPO router with Stable-Baselines3 on the native batched routing environment.

    Args:
        dataset_or_env_id: the training logs (full-information :class:`LoggedDataset`), or a registered env id
            (``"routing_env/Routing-v0"``; its ``dataset`` comes from ``env_kwargs``, default the bundled sample).
        cost_weight: λ ≥ 0 of the reward ``quality − λ·cost/cost_scale`` (ignored when ``cost_weight_range`` is
            given).
        cascade: train on ``routing_env/Cascade-v0`` instead (MaskablePPO when the env exposes action masks).
            Cascade training returns ``policy=None``; use the SB3 model in ``model`` (or ``agents.routers.cascades``).
        total_timesteps: environment steps (queries routed) to train for.
        n_envs: copies stepped together by the batched vector env.
        seed: seeds the env, the network initialisation, the validation split and the policy's sampler.
        cost_weight_range: ``(low, high)``: λ-conditioned training — λ is drawn per episode and observed, so the
            resulting policy serves any λ in the range via :attr:`SB3Policy.cost_weight`.
        cost_weight_sampling: how λ is drawn from ``cost_weight_range`` (Routing-v0's option):
            ``"log_uniform"`` (the default for conditioned training: as many episodes per decade of λ, so the
            small λ where the frontier bends most are trained on as much as the large ones; with ``low = 0``
            log(λ + 1e-3·high) is uniform) or ``"uniform"``. Only with ``cost_weight_range``.
        validation: a full-information dataset, a share in (0, 1) of the training data to hold out (split by the
            prompt when present), or ``None`` (no evaluation; the final parameters are kept).
        eval_freq: evaluate every this many environment steps (default: 10 evaluations per run).
        eval_cost_weights: λ values to average over when validating a conditioned policy (default: 5 evenly
            spaced over the range).
        config: PPO hyperparameters (:class:`PPOConfig`).
        env_kwargs: extra keyword arguments for the environment (``models``, ``latency_weight``...).
        progress_bar: show SB3's progress bar (needs ``tqdm`` and ``rich``).
        torch_threads: ``torch.set_num_threads`` for training (1 by default: small networks run fastest on one
            thread and leave the other cores to the vectorised env and to other jobs); ``None`` leaves it.
        verbose: 1 prints each validation pass.

    Returns:
        :class:`PPOResult` with the best :class:`SB3Policy` and the training history.
    """
    cfg = config if config is not None else PPOConfig()
    if not isinstance(cfg, PPOConfig):
        raise ConfigurationError(f"config must be a PPOConfig, got {type(cfg).__name__}")
    if int(total_timesteps) < 1:
        raise ConfigurationError(f"total_timesteps must be a positive integer, got {total_timesteps!r}")
    if int(n_envs) < 1:
        raise ConfigurationError(f"n_envs must be a positive integer, got {n_envs!r}")
    lam = float(cost_weight)
    if not np.isfinite(lam) or lam < 0:
        raise ConfigurationError(f"cost_weight must be a finite number ≥ 0, got {cost_weight!r}")
    lam_range = _check_range(cost_weight_range)
    sampling = _check_sampling(cost_weight_sampling, lam_range)
    kwargs = dict(env_kwargs or {})
    for reserved in ("cost_weight", "cost_weight_range", "cost_weight_sampling", "observe_cost_weight"):
        if reserved in kwargs:
            raise ConfigurationError(
                f"env_kwargs must not set {reserved!r}; pass cost_weight/cost_weight_range/cost_weight_sampling "
                "to train_ppo"
            )

    # ---- data and validation split
    if isinstance(dataset_or_env_id, LoggedDataset):
        env_id = CASCADE_ENV_ID if cascade else ROUTING_ENV_ID
        data: LoggedDataset = dataset_or_env_id
        if "dataset" in kwargs:
            raise ConfigurationError("give the dataset either positionally or in env_kwargs, not both")
    elif isinstance(dataset_or_env_id, str):
        env_id = dataset_or_env_id
        given = kwargs.pop("dataset", None)
        if given is None:
            from routing_env.data import load_sample

            given = load_sample()
        if not isinstance(given, LoggedDataset):
            raise ConfigurationError(
                f"env_kwargs['dataset'] must be a LoggedDataset, got {type(given).__name__}"
            )
        data = given
    else:
        raise ConfigurationError(
            f"dataset_or_env_id must be a LoggedDataset or an env id string, got {type(dataset_or_env_id).__name__}"
        )
    if isinstance(validation, LoggedDataset):
        train, valid = data, validation
    elif validation is None:
        train, valid = data, None
    else:
        share = float(validation)
        if not 0.0 < share < 1.0:
            raise ConfigurationError(
                f"validation must be a LoggedDataset, a share in (0, 1) or None, got {validation!r}"
            )
        train, valid = data.split(test_size=share, seed=seed)
    if valid is not None and not valid.is_full_information:
        raise ConfigurationError("the validation split must be full-information to be scored exactly")
    mean, std = _feature_stats(train)

    # ---- environment
    import routing_env.envs  # noqa: F401  (registers the env ids)

    if lam_range is not None:
        kwargs.update(cost_weight_range=lam_range, cost_weight_sampling=sampling, observe_cost_weight=True)
    else:
        kwargs["cost_weight"] = lam
    # Standardise the features once, here, rather than on every step inside the training loop.
    scaled = train.with_features((train.features - mean) / std, names=train.feature_names)
    spec = gym.spec(env_id)
    if spec.vector_entry_point is not None:
        kwargs.setdefault("autoreset_mode", gym.vector.AutoresetMode.SAME_STEP)
        venv = gym.make_vec(
            env_id, num_envs=int(n_envs), vectorization_mode="vector_entry_point", dataset=scaled, **kwargs
        )
    else:
        # No native batched env for this id: Gymnasium's synchronous vector env over single copies.
        venv = gym.make_vec(
            env_id,
            num_envs=int(n_envs),
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
            dataset=scaled,
            **kwargs,
        )
    # Masks matter only where some actions can be illegal: cascades, and routing under a budget.
    maskable = cascade or kwargs.get("budget") is not None
    env = SB3VecEnv(venv, use_masks=None if maskable else False)
    env.seed(seed)
    n_actions = int(env.action_space.n)  # type: ignore[attr-defined]

    previous_threads = torch.get_num_threads()
    if torch_threads is not None:
        if int(torch_threads) < 1:
            raise ConfigurationError(
                f"torch_threads must be a positive integer or None, got {torch_threads!r}"
            )
        torch.set_num_threads(int(torch_threads))
    try:
        algo_kwargs = cfg.sb3_kwargs()
        algo_kwargs["batch_size"] = min(cfg.batch_size, cfg.n_steps * int(n_envs))
        if env.has_attr("action_masks"):
            from sb3_contrib import MaskablePPO

            model: BaseAlgorithm = MaskablePPO(
                "MlpPolicy", env, seed=seed, verbose=0, device="cpu", **algo_kwargs
            )
            algorithm = "MaskablePPO"
        else:
            model = PPO("MlpPolicy", env, seed=seed, verbose=0, device="cpu", **algo_kwargs)
            algorithm = "PPO"
        routing = env_id == ROUTING_ENV_ID or (not cascade and n_actions == train.n_models)
        models = tuple(kwargs.get("models") or train.models)

        def make_policy() -> SB3Policy:
            return SB3Policy(
                model.policy,  # type: ignore[arg-type]
                models,
                mean,
                std,
                cost_weight=lam if lam_range is None else lam_range[0],
                conditioned=lam_range is not None,
                cost_weight_range=lam_range,
                algorithm=algorithm,
                net_arch=cfg.net_arch,
                activation=cfg.activation,
                seed=seed,
            )

        callback: ValidationCallback | None = None
        if valid is not None and routing:
            if lam_range is None:
                weights: Sequence[float] = (lam,)
            elif eval_cost_weights is not None:
                weights = tuple(float(w) for w in eval_cost_weights)
            else:
                weights = tuple(np.linspace(lam_range[0], lam_range[1], 5).tolist())
            if kwargs.get("models"):
                valid = valid.subset_models(models)
            freq = int(eval_freq) if eval_freq is not None else max(int(total_timesteps) // 10, 1)
            callback = ValidationCallback(make_policy, valid, weights, freq, verbose)
        start = time.perf_counter()
        model.learn(total_timesteps=int(total_timesteps), callback=callback, progress_bar=progress_bar)
        seconds = time.perf_counter() - start
    finally:
        if torch_threads is not None:
            torch.set_num_threads(previous_threads)
        env.close()
    model.policy.set_training_mode(False)
    fps = model.num_timesteps / seconds if seconds > 0 else 0.0
    env_kwargs_out = {k: v for k, v in kwargs.items() if k != "autoreset_mode"}
    if not routing:
        return PPOResult(
            None, model, (), int(model.num_timesteps), seconds, fps, mean, std, env_id, env_kwargs_out
        )
    # Detach the returned policy from the model so further training does not change it.
    policy = make_policy()
    network = _build_sb3_policy(
        algorithm,
        int(np.prod(env.observation_space.shape or (0,))),
        n_actions,
        cfg.net_arch,
        cfg.activation,
    )
    network.load_state_dict(model.policy.state_dict())
    network.set_training_mode(False)
    policy.network = network
    return PPOResult(
        policy=policy,
        model=model,
        history=tuple(callback.history) if callback else (),
        best_timesteps=callback.best_timesteps if callback else int(model.num_timesteps),
        train_seconds=seconds,
        fps=fps,
        feature_mean=mean,
        feature_std=std,
        env_id=env_id,
        env_kwargs=env_kwargs_out,
    )


def evaluate_cascade_model(
    result: PPOResult, dataset: LoggedDataset, cost_weight: float | None = None
) -> PolicyEvaluation:
    """Score a PPO model trained on ``routing_env/Cascade-v0`` on every query of a full-information ``dataset``.

    Each query is replayed once through the cascade environment (pinned with ``options={"query_index": i}``)
    with the policy's most probable action at every step (masked in free mode), so the result is exact for that
    deterministic policy. ``cost_weight`` (default: the training λ; required for a λ-conditioned model) sets the
    reward. ``call_share`` is the share of answers returned by each model of the environment's ``models``.
    """
    import routing_env.envs  # noqa: F401  (registers the env ids)

    if result.env_id != CASCADE_ENV_ID:
        raise ConfigurationError(
            f"evaluate_cascade_model needs a Cascade-v0 model, got one for {result.env_id!r}"
        )
    kwargs = dict(result.env_kwargs)
    conditioned = "cost_weight_range" in kwargs
    kwargs.pop("cost_weight_range", None)
    kwargs.pop("cost_weight_sampling", None)
    if cost_weight is None:
        if conditioned:
            raise ConfigurationError("a λ-conditioned cascade model needs cost_weight= to be evaluated")
        lam = float(kwargs.get("cost_weight", 0.0))
    else:
        lam = float(cost_weight)
        if not np.isfinite(lam) or lam < 0:
            raise ConfigurationError(f"cost_weight must be a finite number ≥ 0, got {cost_weight!r}")
    kwargs["cost_weight"] = lam
    if dataset.n_features != result.feature_mean.shape[0]:
        raise ShapeError(
            f"the model was trained on {result.feature_mean.shape[0]} features, the dataset has {dataset.n_features}"
        )
    scaled = dataset.with_features(
        (dataset.features - result.feature_mean) / result.feature_std, names=dataset.feature_names
    )
    env = gym.make(CASCADE_ENV_ID, dataset=scaled, **kwargs).unwrapped
    policy = result.model.policy
    maskable = hasattr(policy, "action_dist") and "Maskable" in type(policy).__name__
    models = tuple(env.models)  # type: ignore[attr-defined]
    n = dataset.n_queries
    quality = np.empty(n)
    cost = np.empty(n)
    reward = np.empty(n)
    answer = np.zeros(n, dtype=np.int64)
    for i in range(n):
        obs, _ = env.reset(options={"query_index": i, "cost_weight": lam})
        total, done = 0.0, False
        info: dict[str, Any] = {}
        while not done:
            with torch.no_grad():
                x = torch.as_tensor(obs[None, :])
                if maskable:
                    masks = env.action_masks()[None, :]  # type: ignore[attr-defined]
                    action = int(policy.predict(obs[None, :], deterministic=True, action_masks=masks)[0][0])  # type: ignore[call-arg]
                else:
                    dist = cast(ActorCriticPolicy, policy).get_distribution(x)
                    action = int(dist.distribution.probs.argmax())  # type: ignore[union-attr]
            obs, r, terminated, truncated, info = env.step(action)
            total += float(r)
            done = terminated or truncated
        quality[i] = float(info.get("quality", 0.0) or 0.0)
        cost[i] = float(info["total_cost"])
        reward[i] = total
        model = info.get("answer_model")
        answer[i] = models.index(model) if model in models else 0
    rewards = dataset.rewards(lam, cost_scale=float(env.cost_scale))  # type: ignore[attr-defined]
    best = dataset.oracle_actions(lam, rewards=rewards)
    oracle_reward = float(rewards[np.arange(n), best].mean())
    share = np.bincount(answer, minlength=len(models)) / max(n, 1)
    return PolicyEvaluation(
        models=models,
        cost_weight=lam,
        n_queries=n,
        mean_quality=float(quality.mean()),
        mean_cost=float(cost.mean()),
        mean_reward=float(reward.mean()),
        call_share=tuple(float(v) for v in share),
        oracle_reward=oracle_reward,
        regret=max(oracle_reward - float(reward.mean()), 0.0),
        cost_scale=float(env.cost_scale),  # type: ignore[attr-defined]
    )
