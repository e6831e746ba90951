"""Saveable policies with exactly known distributions for the rollout tests, and the world they route in.

``ScorePolicy`` takes the model of highest linear score with probability ``1 − ε`` (uniform with ``ε``);
``BrokenPolicy`` loads fine and raises whenever it is asked for a distribution (a shadow that fails at run time).
:func:`quality` is every model's expected quality on a query, so the truth of any policy is known.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from routing_env.policy import read_policy_dir, register_policy, write_policy_dir

MODELS = ("small", "medium", "large")
#: ``python -c`` program for a server process that must load these policies: it imports them, then runs the CLI.
WITH_TEST_POLICIES = "import sys, tests.agents.online.rollout.policies; from agents.cli import main; sys.exit(main(sys.argv[1:]))"
_SLOPE = np.array([-0.25, 0.05, 0.25])
_OFFSET = np.array([0.5, 0.55, 0.45])


def quality(features: np.ndarray) -> np.ndarray:
    """``(n, K)`` expected quality of each model on ``features (n, 2)``: small wins for x₀ < −0.1, large for
    x₀ > 0.5, medium between."""
    x = np.atleast_2d(features)
    return np.clip(_OFFSET + x[:, :1] * _SLOPE, 0.0, 1.0)


@register_policy
class ScorePolicy:
    """Scores ``x @ weights.T + bias``; the best model gets ``1 − ε + ε/K``, every other ``ε/K``."""

    def __init__(self, weights: np.ndarray, bias: np.ndarray, epsilon: float) -> None:
        self.models = MODELS
        self.n_features = 2
        self.weights = np.asarray(weights, dtype=np.float64)
        self.bias = np.asarray(bias, dtype=np.float64)
        self.epsilon = float(epsilon)

    def action_probabilities(self, features: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        best = np.argmax(x @ self.weights.T + self.bias, axis=1)
        k = len(self.models)
        return (1.0 - self.epsilon) * np.eye(k)[best] + self.epsilon / k

    def save(self, path: str | Path) -> Path:
        config = {"epsilon": self.epsilon}
        return write_policy_dir(path, type(self), config, {"weights": self.weights, "bias": self.bias})

    @classmethod
    def load(cls, path: str | Path) -> Any:
        _, config, arrays = read_policy_dir(path)
        return cls(arrays["weights"], arrays["bias"], config["epsilon"])


@register_policy
class BrokenPolicy(ScorePolicy):
    """A :class:`ScorePolicy` that raises when asked for a distribution."""

    def action_probabilities(self, features: np.ndarray) -> np.ndarray:
        raise RuntimeError("the shadow's model server is unreachable")


def live(epsilon: float = 0.3) -> ScorePolicy:
    """Mostly ``medium`` (ε of uniform exploration)."""
    return ScorePolicy(np.zeros((3, 2)), np.array([0.0, 1.0, 0.0]), epsilon)


def better(epsilon: float = 0.3) -> ScorePolicy:
    """The best model of each query (ε of uniform exploration)."""
    return ScorePolicy(np.c_[_SLOPE, np.zeros(3)], _OFFSET, epsilon)


def worse(epsilon: float = 0.3) -> ScorePolicy:
    """The worst model of each query (ε of uniform exploration)."""
    return ScorePolicy(-np.c_[_SLOPE, np.zeros(3)], -_OFFSET, epsilon)


def truth(policy: ScorePolicy, n: int = 200_000, seed: int = 0) -> float:
    """The policy's expected quality over queries x ~ N(0, I₂)."""
    x = np.random.default_rng(seed).normal(size=(n, 2))
    return float((policy.action_probabilities(x) * quality(x)).sum(axis=1).mean())
