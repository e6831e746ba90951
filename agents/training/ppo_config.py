"""Typed settings of PPO training: the PPO hyperparameters (:class:`PPOConfig`) and everything else
:func:`agents.training.ppo.train_ppo` does besides the data it is given (:class:`PPOTrainConfig`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.training.rllib_env import env_kwargs_with_cost_weight
from agents.training.sb3_networks import ACTIVATIONS
from agents.training.warm_start import WarmStartConfig
from routing_env.errors import ConfigurationError

__all__ = ["DEFAULT_CONDITIONED_SAMPLING", "PPOConfig", "PPOTrainConfig"]

#: How λ-conditioned training draws λ from ``cost_weight_range`` unless told otherwise.
DEFAULT_CONDITIONED_SAMPLING = "log_uniform"
#: Environment arguments that :class:`PPOTrainConfig` sets itself.
_RESERVED_ENV_KWARGS = ("cost_weight", "cost_weight_range", "cost_weight_sampling", "observe_cost_weight")


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
        linear_skip: the actor's head reads the network's input features as well as its last hidden layer
            (:class:`~agents.training.sb3_networks.SkipMlpExtractor`), so that the actor can represent a linear
            reward model's policy exactly (what the warm start sets it to) and PPO learns the nonlinear rest.
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
    linear_skip: bool = True

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
            _check_positive_int(f"PPOConfig.{name}", getattr(self, name))
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
        if self.activation not in ACTIVATIONS:
            raise ConfigurationError(
                f"PPOConfig.activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}"
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
                "activation_fn": ACTIVATIONS[self.activation],
            },
        }


@dataclass(frozen=True)
class PPOTrainConfig:
    """Everything :func:`train_ppo` does besides the data it is given: one typed, validated record (the
    command line and YAML files are views of these fields).

    Attributes:
        cost_weight: λ ≥ 0 of the reward ``quality − λ·cost/cost_scale`` (ignored when ``cost_weight_range`` is
            given).
        cost_weight_range: ``(low, high)``: λ-conditioned training — λ is drawn per episode and observed, so the
            resulting policy serves any λ in the range via :attr:`SB3Policy.cost_weight`.
        cost_weight_sampling: how λ is drawn from ``cost_weight_range`` (Routing-v0's option):
            ``"log_uniform"`` (the default for conditioned training: as many episodes per decade of λ, so the
            small λ where the frontier bends most are trained on as much as the large ones; with ``low = 0``
            log(λ + 1e-3·high) is uniform) or ``"uniform"``. Only with ``cost_weight_range``; ``None`` picks the
            default.
        cost_weight_interactions: a λ-conditioned network reads the products of λ and the features too
            (:class:`~agents.training.sb3_networks.CostWeightInteractions`), so that its first layer can represent
            a reward linear in the query at every λ; ``False``: the features and λ only.
        cascade: train on ``routing_env/Cascade-v0`` instead (MaskablePPO when the env exposes action masks).
        total_timesteps: environment steps (queries routed) to train for.
        n_envs: copies stepped together by the batched vector env.
        seed: seeds the env, the network initialisation, the validation split and the policy's sampler.
        validation: share in (0, 1) of the training data held out to keep the best parameters (split by the
            prompt when present), or ``None`` (no evaluation; the final parameters are kept). A validation
            dataset of its own is passed to :func:`train_ppo` as data instead.
        eval_freq: evaluate every this many environment steps (default: 10 evaluations per run).
        eval_cost_weights: λ values to average over when validating a conditioned policy (default: 5 evenly
            spaced over the range).
        eval_significance: a later evaluation replaces the best parameters so far only when its validation reward
            beats theirs by this many standard errors of the paired per-query difference (0: any higher mean), so
            that validation noise does not pick among nearly equal checkpoints.
        ppo: the PPO hyperparameters (:class:`PPOConfig`).
        warm_start: fit the policy and value networks to the full-information training rewards before PPO
            (:class:`~agents.training.warm_start.WarmStartConfig`; routing without a budget only); ``None``: PPO
            from a random initialisation.
        env_kwargs: extra keyword arguments for the environment (``models``, ``latency_weight``, ``mode``...).
        progress_bar: show SB3's progress bar (needs ``tqdm`` and ``rich``).
        torch_threads: ``torch.set_num_threads`` for training (1 by default: small networks run fastest on one
            thread and leave the other cores to the vectorised env and to other jobs); ``None`` leaves it.
        verbose: 1 prints each validation pass.
    """

    cost_weight: float = 0.0
    cost_weight_range: tuple[float, float] | None = None
    cost_weight_sampling: str | None = None
    cost_weight_interactions: bool = True
    cascade: bool = False
    total_timesteps: int = 100_000
    n_envs: int = 8
    seed: int = 0
    validation: float | None = 0.15
    eval_freq: int | None = None
    eval_cost_weights: tuple[float, ...] | None = None
    eval_significance: float = 2.0
    ppo: PPOConfig = field(default_factory=PPOConfig)
    warm_start: WarmStartConfig | None = field(default_factory=WarmStartConfig)
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    progress_bar: bool = False
    torch_threads: int | None = 1
    verbose: int = 0

    def __post_init__(self) -> None:
        lam = float(self.cost_weight)
        if not np.isfinite(lam) or lam < 0:
            raise ConfigurationError(f"cost_weight must be a finite number ≥ 0, got {self.cost_weight!r}")
        object.__setattr__(self, "cost_weight", lam)
        object.__setattr__(self, "cost_weight_range", _check_range(self.cost_weight_range))
        object.__setattr__(
            self, "cost_weight_sampling", _check_sampling(self.cost_weight_sampling, self.cost_weight_range)
        )
        for name in ("total_timesteps", "n_envs"):
            object.__setattr__(self, name, _check_positive_int(name, getattr(self, name)))
        if self.validation is not None:
            share = float(self.validation)
            if not 0.0 < share < 1.0:
                raise ConfigurationError(
                    f"validation must be a LoggedDataset, a share in (0, 1) or None, got {self.validation!r}"
                )
            object.__setattr__(self, "validation", share)
        if self.eval_freq is not None:
            object.__setattr__(self, "eval_freq", _check_positive_int("eval_freq", self.eval_freq))
        if not (np.isfinite(self.eval_significance) and self.eval_significance >= 0):
            raise ConfigurationError(
                f"eval_significance must be a number ≥ 0, got {self.eval_significance!r}"
            )
        if self.eval_cost_weights is not None:
            weights = tuple(float(w) for w in self.eval_cost_weights)
            if not weights or any(not np.isfinite(w) or w < 0 for w in weights):
                raise ConfigurationError(
                    f"eval_cost_weights must be finite numbers ≥ 0, got {self.eval_cost_weights!r}"
                )
            object.__setattr__(self, "eval_cost_weights", weights)
        if not isinstance(self.ppo, PPOConfig):
            raise ConfigurationError(f"ppo must be a PPOConfig, got {type(self.ppo).__name__}")
        if self.warm_start is not None and not isinstance(self.warm_start, WarmStartConfig):
            raise ConfigurationError(
                f"warm_start must be a WarmStartConfig or None, got {type(self.warm_start).__name__}"
            )
        for reserved in _RESERVED_ENV_KWARGS:
            if reserved in self.env_kwargs:
                raise ConfigurationError(
                    f"env_kwargs must not set {reserved!r}; pass cost_weight/cost_weight_range/"
                    "cost_weight_sampling to train_ppo"
                )
        if self.torch_threads is not None:
            object.__setattr__(
                self, "torch_threads", _check_positive_int("torch_threads", self.torch_threads, "or None")
            )

    @property
    def conditioned(self) -> bool:
        """Whether the policy is λ-conditioned (trained over ``cost_weight_range``)."""
        return self.cost_weight_range is not None

    def env_arguments(self) -> dict[str, Any]:
        """The environment's keyword arguments: ``env_kwargs`` plus the λ settings."""
        return env_kwargs_with_cost_weight(
            self.env_kwargs, self.cost_weight, self.cost_weight_range, self.cost_weight_sampling
        )

    def validation_cost_weights(self) -> tuple[float, ...]:
        """The λ values a validation pass averages over."""
        if self.cost_weight_range is None:
            return (self.cost_weight,)
        if not (np.isfinite(self.eval_significance) and self.eval_significance >= 0):
            raise ConfigurationError(
                f"eval_significance must be a number ≥ 0, got {self.eval_significance!r}"
            )
        if self.eval_cost_weights is not None:
            return self.eval_cost_weights
        lo, hi = self.cost_weight_range
        return tuple(np.linspace(lo, hi, 5).tolist())


def _check_positive_int(name: str, value: Any, alternative: str = "") -> int:
    integral = isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral or value < 1:
        extra = f" {alternative}" if alternative else ""
        raise ConfigurationError(f"{name} must be a positive integer{extra}, got {value!r}")
    return int(value)


def _check_range(cost_weight_range: tuple[float, float] | None) -> tuple[float, float] | None:
    if cost_weight_range is None:
        return None
    lo, hi = (float(v) for v in cost_weight_range)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi <= lo:
        raise ConfigurationError(
            f"cost_weight_range must be (low, high) with 0 ≤ low < high, got {cost_weight_range!r}"
        )
    return lo, hi


def _check_sampling(sampling: str | None, lam_range: tuple[float, float] | None) -> str | None:
    from routing_env.envs import COST_WEIGHT_SAMPLINGS

    if sampling is None:
        return None if lam_range is None else DEFAULT_CONDITIONED_SAMPLING
    if sampling not in COST_WEIGHT_SAMPLINGS:
        raise ConfigurationError(
            f"cost_weight_sampling must be one of {list(COST_WEIGHT_SAMPLINGS)}, got {sampling!r}"
        )
    if lam_range is None:
        raise ConfigurationError(
            f"cost_weight_sampling={sampling!r} needs cost_weight_range=(low, high) (λ-conditioned training)"
        )
    return sampling
