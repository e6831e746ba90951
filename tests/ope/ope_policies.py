"""Small target and logging policies for the OPE tests, with exactly known action distributions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from routing_env.policy import check_features, read_policy_dir, register_policy, write_policy_dir


@register_policy
class LinearSoftmaxPolicy:
    """``softmax(x @ weights / temperature)`` over ``models``; ``temperature=0`` is the greedy (one-hot) policy,
    ties to the lower index. ``epsilon`` mixes in the uniform distribution."""

    def __init__(
        self, models: tuple[str, ...], weights: np.ndarray, temperature: float = 1.0, epsilon: float = 0.0
    ) -> None:
        self.models = tuple(models)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.temperature = float(temperature)
        self.epsilon = float(epsilon)
        self.n_features = self.weights.shape[0]

    def action_probabilities(self, features: np.ndarray) -> np.ndarray:
        x = check_features(features, self.n_features)
        z = x @ self.weights
        k = len(self.models)
        if self.temperature == 0:
            p = np.eye(k)[z.argmax(axis=1)]
        else:
            z = z / self.temperature
            e = np.exp(z - z.max(axis=1, keepdims=True))
            p = e / e.sum(axis=1, keepdims=True)
        return (1 - self.epsilon) * p + self.epsilon / k

    def save(self, path: str | Path) -> Path:
        return write_policy_dir(
            path,
            type(self),
            {"models": list(self.models), "temperature": self.temperature, "epsilon": self.epsilon},
            {"weights": self.weights},
        )

    @classmethod
    def load(cls, path: str | Path) -> LinearSoftmaxPolicy:
        _, config, arrays = read_policy_dir(path)
        return cls(tuple(config["models"]), arrays["weights"], config["temperature"], config["epsilon"])


class ConstantPolicy:
    """The same distribution ``probs`` on every query (not saved)."""

    def __init__(self, models: tuple[str, ...], probs: list[float] | np.ndarray) -> None:
        self.models = tuple(models)
        self.probs = np.asarray(probs, dtype=np.float64)

    def action_probabilities(self, features: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(features))
        return np.repeat(self.probs[None, :], x.shape[0], axis=0)


def random_linear(
    models: tuple[str, ...], n_features: int, seed: int, **kwargs: float
) -> LinearSoftmaxPolicy:
    rng = np.random.default_rng(seed)
    return LinearSoftmaxPolicy(models, rng.normal(size=(n_features, len(models))), **kwargs)
