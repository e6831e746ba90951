"""Policies trained with RLlib, served without Ray: the RL module's policy network rebuilt in plain torch.

:func:`agents.training.rllib.train_rllib` trains :class:`~agents.training.rllib_module.RoutingPPOModule`, whose
policy head ``pi`` is the MLP built here by :func:`build_mlp`; the policies below load that head's parameters
into the same MLP, so their probabilities are the RL module's to the last bit and a deployed router needs torch
but not Ray.

- :class:`RLlibPolicy` (Routing-v0): the :class:`~routing_env.policy.Policy` protocol over the K models —
  ``action_probabilities(features (n, d)) -> (n, K)``, the softmax of the network's logits on the standardised
  features (with λ appended when trained λ-conditioned), ``act`` and ``greedy_actions``.
- :class:`RLlibCascadePolicy` (Cascade-v0): a distribution over the cascade env's actions from its observations
  and action masks (``observation_probabilities``), and :meth:`~RLlibCascadePolicy.evaluate`, which replays every
  query of a full-information dataset through the cascade with the most probable legal action.

Both save to the policy directory format of :mod:`routing_env.policy`: ``policy.json`` (architecture, models, λ
settings, the sampler's state) and ``arrays.npz`` (parameters and feature statistics); nothing is pickled.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.routers._common import rng_from_state, rng_state
from agents.training._acting import ActsFromProbabilities, draw
from routing_env.data.dataset import LoggedDataset
from routing_env.errors import ConfigurationError, PolicyFormatError, ShapeError
from routing_env.metrics import PolicyEvaluation, oracle
from routing_env.policy import check_features, read_policy_dir, register_policy, write_policy_dir

__all__ = ["ACTIVATIONS", "RLlibCascadePolicy", "RLlibPolicy", "build_mlp", "masked_logits"]

#: Hidden-layer nonlinearities the RL module and the policies can be built with.
ACTIVATIONS: dict[str, type[torch.nn.Module]] = {
    "tanh": torch.nn.Tanh,
    "relu": torch.nn.ReLU,
    "elu": torch.nn.ELU,
}
#: What a masked logit becomes: exp(FLOAT_MIN − max) is exactly 0 in float32, and no inf − inf can appear.
FLOAT_MIN = float(torch.finfo(torch.float32).min)


def build_mlp(
    n_inputs: int, hidden: Sequence[int], n_outputs: int, activation: str, output_gain: float
) -> torch.nn.Sequential:
    """``Linear → act → … → Linear`` from ``n_inputs`` to ``n_outputs`` through ``hidden`` widths.

    Weights are orthogonal (gain √2 on hidden layers, ``output_gain`` on the last), biases zero: with a small
    ``output_gain`` (0.01 for the policy head) the initial policy is close to uniform, the usual PPO start.
    The parameter names (``"0.weight"``, ``"0.bias"``, ``"2.weight"``…) follow from the layer order.
    """
    if activation not in ACTIVATIONS:
        raise ConfigurationError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    layers: list[torch.nn.Module] = []
    width = int(n_inputs)
    for h in hidden:
        layers += [torch.nn.Linear(width, int(h)), ACTIVATIONS[activation]()]
        width = int(h)
    layers.append(torch.nn.Linear(width, int(n_outputs)))
    linear = [m for m in layers if isinstance(m, torch.nn.Linear)]
    for i, m in enumerate(linear):
        torch.nn.init.orthogonal_(m.weight, gain=output_gain if i == len(linear) - 1 else math.sqrt(2.0))
        torch.nn.init.zeros_(m.bias)
    return torch.nn.Sequential(*layers)


def masked_logits(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``logits (n, A)`` with the actions where ``mask (n, A)`` is 0 pushed to :data:`FLOAT_MIN`."""
    if mask is None:
        return logits
    return logits + torch.clamp(torch.log(mask.to(logits.dtype)), min=FLOAT_MIN)


def _check_lambda(value: float) -> float:
    lam = float(value)
    if not np.isfinite(lam) or lam < 0:
        raise ConfigurationError(f"cost_weight must be a finite number ≥ 0, got {value!r}")
    return lam


class _PolicyNetwork:
    """The parts both RLlib policies share: the policy head, the feature standardisation, λ and the sampler.

    Observations are those of the training env with their first ``d`` entries (the query features)
    standardised by ``(x − feature_mean) / feature_std``; a λ-conditioned network observes λ last.
    """

    def __init__(
        self,
        parameters: Mapping[str, np.ndarray],
        models: Sequence[str],
        feature_mean: np.ndarray,
        feature_std: np.ndarray,
        *,
        hidden: Sequence[int],
        activation: str,
        cost_weight: float = 0.0,
        conditioned: bool = False,
        cost_weight_range: tuple[float, float] | None = None,
        seed: int | None = 0,
    ) -> None:
        self.models: tuple[str, ...] = tuple(str(m) for m in models)
        self.feature_mean = np.asarray(feature_mean, dtype=np.float32)
        self.feature_std = np.asarray(feature_std, dtype=np.float32)
        if self.feature_mean.shape != self.feature_std.shape or self.feature_mean.ndim != 1:
            raise ShapeError(
                "feature_mean and feature_std must be (d,) arrays of one length, got "
                f"{self.feature_mean.shape} and {self.feature_std.shape}"
            )
        if not (self.feature_std > 0).all():
            raise ConfigurationError("feature_std must be > 0 in every entry")
        #: d, the query-feature width the network expects.
        self.n_features = int(self.feature_mean.shape[0])
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = str(activation)
        self.conditioned = bool(conditioned)
        self.cost_weight_range: tuple[float, float] | None = None
        if cost_weight_range is not None:
            low, high = cost_weight_range
            self.cost_weight_range = (float(low), float(high))
        self.cost_weight = cost_weight
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        k = len(self.models)
        n_actions = self._action_count(k)
        self.n_inputs = self.n_features + self._extra_inputs(k) + int(self.conditioned)
        self.network = build_mlp(self.n_inputs, self.hidden, n_actions, self.activation, 0.01)
        expected = self.network.state_dict()
        given = {str(k): np.asarray(v) for k, v in parameters.items()}
        if set(given) != set(expected):
            raise ShapeError(
                f"parameters {sorted(given)} do not match the network's {sorted(expected)} "
                f"({self.n_inputs} inputs, hidden {list(self.hidden)}, {n_actions} actions)"
            )
        for name, value in given.items():
            if tuple(value.shape) != tuple(expected[name].shape):
                raise ShapeError(
                    f"parameter {name!r} has shape {tuple(value.shape)}, the network expects "
                    f"{tuple(expected[name].shape)} ({self.n_inputs} inputs, hidden {list(self.hidden)}, "
                    f"{n_actions} actions)"
                )
        self.network.load_state_dict({k: torch.as_tensor(v, dtype=torch.float32) for k, v in given.items()})
        self.network.eval()

    def _action_count(self, k: int) -> int:
        """Actions of the env the network was trained on, for ``k`` models."""
        return k

    def _extra_inputs(self, k: int) -> int:
        """Observation entries between the features and λ, for ``k`` models."""
        return 0

    @property
    def cost_weight(self) -> float:
        """The λ fed to a λ-conditioned network (settable at decision time); the training λ otherwise."""
        return self._cost_weight

    @cost_weight.setter
    def cost_weight(self, value: float) -> None:
        self._cost_weight = _check_lambda(value)

    def parameters(self) -> dict[str, np.ndarray]:
        """The policy head's parameters as ``float32`` arrays, by name."""
        return {k: v.detach().cpu().numpy() for k, v in self.network.state_dict().items()}

    def _distribution(self, observations: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """``(n, A) float64`` softmax of the masked logits of already standardised ``observations``."""
        with torch.no_grad():
            logits = self.network(torch.as_tensor(observations, dtype=torch.float32))
            m = None if mask is None else torch.as_tensor(mask)
            probs = torch.softmax(masked_logits(logits, m), dim=1).double().numpy()
        return probs / probs.sum(axis=1, keepdims=True)

    def _with_lambda(self, x: np.ndarray) -> np.ndarray:
        if not self.conditioned:
            return x
        return np.concatenate([x, np.full((x.shape[0], 1), self._cost_weight, np.float32)], axis=1)

    def _standardize(self, x: np.ndarray) -> np.ndarray:
        out = np.array(x, dtype=np.float32, copy=True)
        out[:, : self.n_features] -= self.feature_mean
        out[:, : self.n_features] /= self.feature_std
        return out

    def _reseeded(self) -> Any:
        other = copy.copy(self)
        other._rng = np.random.default_rng(self.seed)
        return other

    # ------------------------------------------------------------------ save / load
    def _config(self) -> dict[str, Any]:
        return {
            "models": list(self.models),
            "n_features": self.n_features,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "conditioned": self.conditioned,
            "cost_weight": self._cost_weight,
            "cost_weight_range": None if self.cost_weight_range is None else list(self.cost_weight_range),
            "seed": self.seed,
            "rng_state": rng_state(self._rng),
        }

    def _arrays(self) -> dict[str, np.ndarray]:
        params = {f"pi/{k}": v for k, v in self.parameters().items()}
        return {"feature_mean": self.feature_mean, "feature_std": self.feature_std, **params}

    @staticmethod
    def _read(path: str | Path, cls: type) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(constructor keyword arguments, config)`` of a policy saved by ``cls.save``."""
        _, config, arrays = read_policy_dir(path, expect=cls)
        try:
            rng = config["cost_weight_range"]
            kwargs: dict[str, Any] = {
                "parameters": {k[len("pi/") :]: v for k, v in arrays.items() if k.startswith("pi/")},
                "models": [str(m) for m in config["models"]],
                "feature_mean": arrays["feature_mean"],
                "feature_std": arrays["feature_std"],
                "hidden": [int(h) for h in config["hidden"]],
                "activation": str(config["activation"]),
                "cost_weight": float(config["cost_weight"]),
                "conditioned": bool(config["conditioned"]),
                "cost_weight_range": None if rng is None else (float(rng[0]), float(rng[1])),
                "seed": config.get("seed"),
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyFormatError(f"{path}: saved {cls.__name__} lacks or garbles {exc}") from None
        return kwargs, config

    def _restore_sampler(self, config: Mapping[str, Any]) -> None:
        if "rng_state" in config:
            # The sampler continues where the saved policy stopped.
            self._rng = rng_from_state(config["rng_state"])


@register_policy
class RLlibPolicy(ActsFromProbabilities, _PolicyNetwork):
    """A Routing-v0 PPO policy trained with RLlib, as a :class:`~routing_env.policy.Policy` over ``models``.

    ``action_probabilities(features (n, d)) -> (n, K) float64`` is the softmax of the RL module's policy logits
    on the standardised features (λ appended when :attr:`conditioned`), so metrics, off-policy estimators and the
    online router score the exact stochastic policy. ``act`` samples from it with the policy's own seeded
    generator; ``greedy_actions`` takes the argmax.

    Args:
        parameters: the policy head's parameters by name (``"0.weight"`` …), as the RL module's ``pi`` holds them.
        models: the K model names (action ``j`` calls ``models[j]``).
        feature_mean, feature_std: ``(d,)`` standardisation of the query features (the training split's).
        hidden, activation: the head's hidden widths and nonlinearity.
        cost_weight: λ fed to a conditioned network (settable); the training λ otherwise.
        conditioned: the network observes λ (λ-conditioned training over ``cost_weight_range``).
        seed: seed of ``act``'s generator.
    """

    def action_probabilities(self, features: np.ndarray) -> np.ndarray:
        """``features (n, d)`` → ``(n, K) float64`` probabilities of the policy's categorical distribution."""
        x = check_features(features, self.n_features)
        return self._distribution(self._with_lambda(self._standardize(x)), None)

    def with_cost_weight(self, cost_weight: float) -> RLlibPolicy:
        """A shallow copy that feeds ``cost_weight`` to the network (parameters shared, sampler reseeded)."""
        other: RLlibPolicy = self._reseeded()
        other.cost_weight = cost_weight
        return other

    def save(self, path: str | Path) -> Path:
        """Write ``policy.json`` and ``arrays.npz`` (the head's parameters and the feature statistics)."""
        return write_policy_dir(path, RLlibPolicy, self._config(), self._arrays())

    @classmethod
    def load(cls, path: str | Path) -> RLlibPolicy:
        """Rebuild the policy head from ``policy.json`` and load its parameters from ``arrays.npz``."""
        kwargs, config = cls._read(path, cls)
        try:
            policy = cls(**kwargs)
        except ShapeError as exc:
            raise PolicyFormatError(f"{path}: {exc}") from None
        policy._restore_sampler(config)
        return policy


@register_policy
class RLlibCascadePolicy(_PolicyNetwork):
    """A Cascade-v0 PPO policy trained with RLlib: stop-or-call decisions from cascade observations.

    The observation is Cascade-v0's (``d`` query features, ``called (K)``, ``signals (K)``, spend so far
    over ``cost_scale``, then λ when :attr:`conditioned`); actions are the env's (chain: 0 accept, 1 escalate;
    free: 0 accept, ``1 + j`` call ``models[j]``). ``env_kwargs`` records the cascade the policy was trained on
    (``mode``, ``order``/``models``, ``max_depth``, …) so :meth:`evaluate` rebuilds it.

    Args:
        parameters, feature_mean, feature_std, hidden, activation, cost_weight, conditioned, cost_weight_range,
            seed: as for :class:`RLlibPolicy`.
        models: the cascade's K models, in the env's order (chain: call order).
        env_kwargs: Cascade-v0 keyword arguments of training (JSON-able; no dataset, no λ settings).
    """

    def __init__(self, *args: Any, env_kwargs: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        self.env_kwargs = dict(env_kwargs or {})
        self.mode = str(self.env_kwargs.get("mode", "chain"))
        if self.mode not in ("chain", "free"):
            raise ConfigurationError(f"env_kwargs['mode'] must be 'chain' or 'free', got {self.mode!r}")
        super().__init__(*args, **kwargs)

    def _action_count(self, k: int) -> int:
        return 2 if self.mode == "chain" else k + 1

    def _extra_inputs(self, k: int) -> int:
        return 2 * k + 1

    @property
    def n_actions(self) -> int:
        return self._action_count(len(self.models))

    def observation_probabilities(
        self, observations: np.ndarray, action_masks: np.ndarray | None = None
    ) -> np.ndarray:
        """``(n, A) float64`` action distribution for Cascade-v0 ``observations (n, width)`` (raw features; the
        policy standardises them and overwrites λ with :attr:`cost_weight` when conditioned). Actions where
        ``action_masks (n, A) bool`` is false get probability 0."""
        obs = np.asarray(observations, dtype=np.float64)
        if obs.ndim == 1:
            obs = obs[None, :]
        width = self.n_inputs
        if obs.ndim != 2 or obs.shape[1] != width:
            raise ShapeError(f"observations must have shape (n, {width}), got {obs.shape}")
        if not np.isfinite(obs).all():
            raise ShapeError("observations must be finite, got NaN or inf")
        x = self._standardize(obs)
        if self.conditioned:
            x[:, -1] = self._cost_weight
        mask = None
        if action_masks is not None:
            mask = np.asarray(action_masks, dtype=bool)
            if mask.shape != (x.shape[0], self.n_actions):
                raise ShapeError(
                    f"action_masks must have shape {(x.shape[0], self.n_actions)}, got {mask.shape}"
                )
            if not mask.any(axis=1).all():
                raise ConfigurationError("every row of action_masks must allow at least one action")
        return self._distribution(x, mask)

    def act(
        self, observations: np.ndarray, action_masks: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sample one action per observation: ``(actions (n,) int64, propensities (n,) float64)``."""
        return draw(self.observation_probabilities(observations, action_masks), self._rng)

    def with_cost_weight(self, cost_weight: float) -> RLlibCascadePolicy:
        """A shallow copy that feeds ``cost_weight`` to the network (parameters shared, sampler reseeded)."""
        other: RLlibCascadePolicy = self._reseeded()
        other.cost_weight = cost_weight
        return other

    def evaluate(self, dataset: LoggedDataset, cost_weight: float | None = None) -> PolicyEvaluation:
        """Replay every query of a full-information ``dataset`` once through Cascade-v0 (pinned with
        ``options={"query_index": i}``), taking the most probable legal action at each step: exact for that
        deterministic policy. ``cost_weight`` defaults to :attr:`cost_weight`. ``call_share`` is the share of
        answers returned by each of :attr:`models`."""
        import gymnasium as gym

        import routing_env.envs  # noqa: F401  (registers the env ids)

        lam = self._cost_weight if cost_weight is None else _check_lambda(cost_weight)
        if dataset.n_features != self.n_features:
            raise ShapeError(
                f"the dataset has features of width {dataset.n_features}, the policy was trained on width "
                f"{self.n_features}"
            )
        policy = self.with_cost_weight(lam)
        env = gym.make(
            "routing_env/Cascade-v0",
            dataset=dataset,
            cost_weight=lam,
            observe_cost_weight=self.conditioned,
            **self.env_kwargs,
        ).unwrapped
        masks = getattr(env, "action_masks", None)
        n = dataset.n_queries
        quality, cost, reward = np.zeros(n), np.zeros(n), np.zeros(n)
        answered = np.zeros(len(self.models))
        for i in range(n):
            obs, _ = env.reset(options={"query_index": i, "cost_weight": lam})
            done = False
            while not done:
                mask = None if masks is None else masks()[None, :]
                action = int(policy.observation_probabilities(obs, mask)[0].argmax())
                obs, r, terminated, truncated, info = env.step(action)
                reward[i] += float(r)
                done = bool(terminated or truncated)
            quality[i] = float(info.get("quality") or 0.0)
            cost[i] = float(info["total_cost"])
            if info.get("answer_model") in self.models:
                answered[self.models.index(info["answer_model"])] += 1
        scale = float(env.cost_scale)  # type: ignore[attr-defined]
        best = oracle(
            dataset, lam, latency_weight=float(self.env_kwargs.get("latency_weight", 0.0)), cost_scale=scale
        )
        return replace(
            best,
            models=self.models,
            mean_quality=float(quality.mean()),
            mean_cost=float(cost.mean()),
            mean_reward=float(reward.mean()),
            call_share=tuple(float(v) for v in answered / max(n, 1)),
            regret=max(best.oracle_reward - float(reward.mean()), 0.0),
        )

    def save(self, path: str | Path) -> Path:
        """Write ``policy.json`` (with the cascade's ``env_kwargs``) and ``arrays.npz``."""
        config = {**self._config(), "env_kwargs": self.env_kwargs}
        return write_policy_dir(path, RLlibCascadePolicy, config, self._arrays())

    @classmethod
    def load(cls, path: str | Path) -> RLlibCascadePolicy:
        """Rebuild the policy head from ``policy.json`` and load its parameters from ``arrays.npz``."""
        kwargs, config = cls._read(path, cls)
        env_kwargs = config.get("env_kwargs", {})
        if not isinstance(env_kwargs, dict):
            raise PolicyFormatError(f"{path}: env_kwargs must be a JSON object, got {env_kwargs!r}")
        try:
            policy = cls(**kwargs, env_kwargs=env_kwargs)
        except (ShapeError, ConfigurationError) as exc:
            raise PolicyFormatError(f"{path}: {exc}") from None
        policy._restore_sampler(config)
        return policy
