"""The SB3 actor-critic networks PPO routers train: the activations, the λ-interaction input layer of a
λ-conditioned network and the linear skip path of the actor, and :func:`build_sb3_policy`, which rebuilds any of
them from the settings a saved :class:`~agents.training.sb3_policy.SB3Policy` records.

A routing reward is ``quality − λ·cost/scale``: the reward model a bandit fits is linear in the query features,
and bilinear in the features and λ when one policy serves every λ. SB3's default actor (an MLP, then a linear
head) can only approximate a linear function, so a warm start that behaviour-clones a linear reward model into it
loses part of that model's quality. With the inputs below and a skip path, the head reads the (interacted)
features directly as well as the MLP's hidden units: the actor can *be* a linear reward model's Boltzmann policy,
which the warm start sets it to exactly, and PPO adds the nonlinear part where it pays on validation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, MlpExtractor

from agents.training.sb3_env import CostWeightInput

__all__ = [
    "ACTIVATIONS",
    "CostWeightInteractions",
    "MaskableSkipActorCriticPolicy",
    "SkipActorCriticPolicy",
    "SkipMlpExtractor",
    "build_sb3_policy",
    "has_skip",
    "policy_class",
    "set_linear_actor",
]

#: The activations a policy network may use, by the name ``PPOConfig.activation`` and ``policy.json`` record.
ACTIVATIONS: dict[str, type[torch.nn.Module]] = {
    "tanh": torch.nn.Tanh,
    "relu": torch.nn.ReLU,
    "elu": torch.nn.ELU,
}


class CostWeightInteractions(BaseFeaturesExtractor):
    """The input layer of a λ-conditioned network: observations ``[x (d), u]`` (standardised features, then λ as
    :class:`~agents.training.sb3_env.CostWeightInput` maps it) become ``[x, u, w, w·x] (2d + 2)``, where
    ``w = λ / high ∈ [0, 1]`` is the raw cost weight recovered from ``u``, relative to the top of the trained range.

    With the products ``w·x`` a linear map of these inputs represents a linear reward model at every λ
    (``q̂(x) − λ·ĉ(x)``, what a conditioned bandit scores), whereas an MLP on ``[x, u]`` has to build every product
    out of its nonlinearities. No parameters: a saved network's state does not depend on it.
    """

    def __init__(
        self, observation_space: spaces.Box, offset: float, center: float, scale: float, high: float
    ):
        d = int(observation_space.shape[0]) - 1
        super().__init__(observation_space, features_dim=2 * d + 2)
        self.offset, self.center, self.scale, self.high = (
            float(offset),
            float(center),
            float(scale),
            float(high),
        )
        if not (np.isfinite(self.high) and self.high > 0 and self.scale > 0):
            raise ValueError(f"high and scale must be positive, got high={high!r}, scale={scale!r}")

    @classmethod
    def kwargs_for(cls, lam_input: CostWeightInput, high: float) -> dict[str, float]:
        """The ``features_extractor_kwargs`` of a network trained over ``(·, high)`` seeing λ through ``lam_input``."""
        return {
            "offset": lam_input.offset,
            "center": lam_input.center,
            "scale": lam_input.scale,
            "high": high,
        }

    def settings(self) -> dict[str, float]:
        """The keyword arguments that rebuild this layer (JSON-able)."""
        return {"offset": self.offset, "center": self.center, "scale": self.scale, "high": self.high}

    def linear_weights(
        self, base: np.ndarray, base_intercept: np.ndarray, per: np.ndarray, per_intercept: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(weight (K, 2d + 2), bias (K,))`` of the linear map of this layer's output that scores model ``k`` as
        ``base_k·x + base_intercept_k − λ·(per_k·x + per_intercept_k)`` (``base``/``per``: ``(K, d)``)."""
        k, d = base.shape
        weight = np.zeros((k, 2 * d + 2))
        weight[:, :d] = base
        weight[:, d + 1] = -self.high * per_intercept  # the w column (w = λ / high); u's stays 0
        weight[:, d + 2 :] = -self.high * per
        return weight, np.asarray(base_intercept, dtype=np.float64)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        x, u = observations[:, :-1], observations[:, -1:]
        w = torch.clamp(torch.exp(u * self.scale + self.center) - self.offset, min=0.0) / self.high
        return torch.cat([x, u, w, w * x], dim=1)


class SkipMlpExtractor(MlpExtractor):
    """SB3's :class:`MlpExtractor` whose actor latent also holds its input: ``[MLP(f), f]``, so that the action
    head is a linear function of the features plus one of the hidden units (the critic is unchanged)."""

    def __init__(self, feature_dim: int, **kwargs: Any) -> None:
        super().__init__(feature_dim, **kwargs)
        self.hidden_dim_pi = self.latent_dim_pi
        self.latent_dim_pi = self.latent_dim_pi + feature_dim

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.policy_net(features), features], dim=1)


def set_linear_actor(policy: ActorCriticPolicy, weight: np.ndarray, bias: np.ndarray) -> None:
    """Make ``policy``'s action logits exactly ``weight @ features + bias`` (``weight (K, F)`` over the features
    extractor's F outputs): the skip path's head columns set, the hidden units' zeroed."""
    if not has_skip(policy):
        raise ValueError("set_linear_actor needs an actor with the linear skip path (SkipMlpExtractor)")
    head = policy.action_net
    assert isinstance(head, torch.nn.Linear)
    extractor = policy.mlp_extractor
    assert isinstance(extractor, SkipMlpExtractor)
    hidden = extractor.hidden_dim_pi
    if weight.shape != (head.out_features, head.in_features - hidden):
        raise ValueError(
            f"weight must be ({head.out_features}, {head.in_features - hidden}), got {tuple(weight.shape)}"
        )
    with torch.no_grad():
        head.weight.zero_()
        head.weight[:, hidden:] = torch.as_tensor(weight, dtype=head.weight.dtype)
        head.bias.copy_(torch.as_tensor(bias, dtype=head.bias.dtype))


class _SkipMixin:
    """Builds a :class:`SkipMlpExtractor` in place of SB3's MLP extractor."""

    features_dim: int
    net_arch: Any
    activation_fn: type[torch.nn.Module]
    device: torch.device
    mlp_extractor: MlpExtractor

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = SkipMlpExtractor(
            self.features_dim, net_arch=self.net_arch, activation_fn=self.activation_fn, device=self.device
        )


class SkipActorCriticPolicy(_SkipMixin, ActorCriticPolicy):
    """SB3's actor-critic policy with a linear skip path from the features to the action logits."""


class MaskableSkipActorCriticPolicy(_SkipMixin, MaskableActorCriticPolicy):
    """sb3-contrib's maskable actor-critic policy with the linear skip path."""


def has_skip(policy: ActorCriticPolicy) -> bool:
    """Whether ``policy``'s actor has the linear skip path."""
    return isinstance(policy.mlp_extractor, SkipMlpExtractor)


def policy_class(algorithm: str, skip: bool) -> Any:
    """The SB3 policy class of ``algorithm`` (``"PPO"`` or ``"MaskablePPO"``), with the skip path or without."""
    if algorithm == "MaskablePPO":
        return MaskableSkipActorCriticPolicy if skip else MaskableActorCriticPolicy
    return SkipActorCriticPolicy if skip else ActorCriticPolicy


def build_sb3_policy(
    algorithm: str,
    obs_dim: int,
    n_actions: int,
    net_arch: Sequence[int],
    activation: str,
    interactions: dict[str, float] | None = None,
    skip: bool = False,
) -> ActorCriticPolicy:
    """A fresh (untrained) SB3 actor-critic network of this architecture, for ``obs_dim`` inputs and
    ``n_actions`` actions (``"MaskablePPO"`` builds sb3-contrib's maskable variant).

    Args:
        interactions: the :class:`CostWeightInteractions` input layer's keyword arguments (λ-conditioned
            networks; ``None``: the observations as they are).
        skip: the actor's linear skip path (:class:`SkipMlpExtractor`).
    """
    obs_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    act_space: spaces.Discrete = spaces.Discrete(n_actions)
    kwargs: dict[str, Any] = {
        "net_arch": {"pi": list(net_arch), "vf": list(net_arch)},
        "activation_fn": ACTIVATIONS[activation],
    }
    if interactions is not None:
        kwargs["features_extractor_class"] = CostWeightInteractions
        kwargs["features_extractor_kwargs"] = dict(interactions)
    network: ActorCriticPolicy = policy_class(algorithm, skip)(obs_space, act_space, lambda _: 0.0, **kwargs)
    return network
