"""The :class:`SB3Policy` adapter: a trained SB3 actor-critic network as a :class:`~routing_env.policy.Policy`,
with exact action probabilities and a save format without pickle."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from stable_baselines3.common.policies import ActorCriticPolicy

from agents.routers._common import load_featurizer_dir, rng_from_state, rng_state, save_featurizer_dir
from agents.training._acting import ActsFromProbabilities
from agents.training.sb3_env import CostWeightInput
from agents.training.sb3_networks import ACTIVATIONS, CostWeightInteractions, build_sb3_policy, has_skip
from routing_env.errors import ConfigurationError, PolicyFormatError, ShapeError
from routing_env.policy import check_features, read_policy_dir, register_policy, write_policy_dir

# ACTIVATIONS and build_sb3_policy live in sb3_networks; re-exported for the callers that import them from here.
__all__ = ["ACTIVATIONS", "SB3Policy", "build_sb3_policy"]


@register_policy
class SB3Policy(ActsFromProbabilities):
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
        cost_weight_input: how a conditioned network sees λ (:class:`~agents.training.sb3_env.CostWeightInput`;
            ``None``: the raw λ).
        interactions: the keyword arguments of the network's
            :class:`~agents.training.sb3_networks.CostWeightInteractions` input layer, read off the network
            (``None``: the network reads its observations as they are).
        featurizer: what turns prompts into the ``d`` features (``transform(prompts) -> (n, d)``, ``save(dir)``),
            saved with the policy under ``featurizer/``, so a server can route ``{"prompt": …}``; ``None`` when
            the policy is given features only.
    """

    # +inf in feature_std marks a column the network ignores (a cost-only length column).
    nonfinite_arrays: ClassVar[tuple[str, ...]] = ("feature_std",)

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
        featurizer: Any = None,
        cost_weight_input: CostWeightInput | None = None,
    ) -> None:
        self.network = network
        self.featurizer = featurizer
        self.cost_weight_input = cost_weight_input
        self._models = tuple(str(m) for m in models)
        self.feature_mean = np.asarray(feature_mean, dtype=np.float32)
        self.feature_std = np.asarray(feature_std, dtype=np.float32)
        if self.feature_mean.shape != self.feature_std.shape or self.feature_mean.ndim != 1:
            raise ShapeError(
                f"feature_mean and feature_std must be (d,) arrays of one length, got "
                f"{self.feature_mean.shape} and {self.feature_std.shape}"
            )
        if (self.feature_std <= 0).any() or np.isnan(self.feature_std).any():
            raise ConfigurationError(
                "feature_std must be > 0 in every entry (+inf: a column the network ignores)"
            )
        self.conditioned = bool(conditioned)
        if self.interactions is not None and not self.conditioned:
            raise ConfigurationError(
                "the network's input layer reads λ interactions, which need a λ-conditioned policy (conditioned=True)"
            )
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

    @property
    def interactions(self) -> dict[str, float] | None:
        """The :class:`~agents.training.sb3_networks.CostWeightInteractions` settings of the network's input layer
        (``None`` without one): what rebuilding the network on load needs."""
        extractor = getattr(self.network, "features_extractor", None)
        return extractor.settings() if isinstance(extractor, CostWeightInteractions) else None

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
            lam = (
                self._cost_weight
                if self.cost_weight_input is None
                else float(self.cost_weight_input(self._cost_weight))
            )
            x = np.concatenate([x, np.full((x.shape[0], 1), lam, np.float32)], axis=1)
        return torch.as_tensor(x)

    def action_probabilities(self, features: np.ndarray) -> np.ndarray:
        """``features (n, d)`` → ``(n, K) float64`` probabilities of the policy's categorical distribution."""
        obs = self._observations(features)
        with torch.no_grad():
            dist = self.network.get_distribution(obs)
            probs = dist.distribution.probs.double().numpy()  # type: ignore[union-attr]
        return probs / probs.sum(axis=1, keepdims=True)

    def featurize(self, prompts: Sequence[str]) -> np.ndarray:
        """``(n, d)`` features of ``prompts`` from the policy's featurizer (what a server routes prompts with)."""
        if self.featurizer is None:
            raise ConfigurationError("SB3Policy carries no featurizer; pass features instead")
        return np.asarray(self.featurizer.transform(list(prompts)))

    def with_cost_weight(self, cost_weight: float) -> SB3Policy:
        """A shallow copy that feeds ``cost_weight`` to the network (the parameters are shared)."""
        other = copy.copy(self)
        other.cost_weight = cost_weight
        other._rng = np.random.default_rng(self.seed)
        return other

    # ------------------------------------------------------------------ save / load without pickle
    def save(self, path: str | Path) -> Path:
        """Write ``policy.json`` (architecture, models, λ settings), ``arrays.npz`` (parameters, statistics) and the
        featurizer, when there is one, under ``featurizer/``."""
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
            "has_featurizer": self.featurizer is not None,
            "cost_weight_input": None if self.cost_weight_input is None else self.cost_weight_input.to_json(),
            "interactions": self.interactions,
            "skip": has_skip(self.network),
        }
        arrays = {"feature_mean": self.feature_mean, "feature_std": self.feature_std, **state}
        root = write_policy_dir(path, SB3Policy, config, arrays)
        save_featurizer_dir(self.featurizer, root)
        return root

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
        if algorithm not in ("PPO", "MaskablePPO") or activation not in ACTIVATIONS:
            raise PolicyFormatError(f"{path}: unknown algorithm {algorithm!r} or activation {activation!r}")
        interactions = config.get("interactions")  # absent from policies saved before it existed
        try:
            network = build_sb3_policy(
                algorithm,
                int(mean.shape[0]) + int(conditioned),
                len(models),
                net_arch,
                activation,
                interactions,
                skip=bool(config.get("skip", False)),
            )
        except (TypeError, ValueError) as exc:
            raise PolicyFormatError(f"{path}: interactions {interactions!r} are malformed: {exc}") from None
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
        try:
            doc = config.get("cost_weight_input")
            lam_input = None if doc is None else CostWeightInput.from_json(doc)
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyFormatError(f"{path}: cost_weight_input is malformed: {exc}") from None
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
            featurizer=load_featurizer_dir(Path(path)) if config.get("has_featurizer") else None,
            cost_weight_input=lam_input,
        )
        if "rng_state" in config:
            # The sampler continues where the saved policy stopped.
            policy._rng = rng_from_state(config["rng_state"])
        return policy
