"""A tiny routing world with exactly known rewards, and logs drawn from it, for the rollout tests."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from routing_env.ope import BanditFeedback
from routing_env.ope.feedback import sample_actions

MODELS = ("small", "medium", "large")


class World(NamedTuple):
    """``rewards (N, K)`` of every model on every query, and policies as ``(N, K)`` distributions."""

    features: np.ndarray
    rewards: np.ndarray
    live: np.ndarray
    better: np.ndarray
    worse: np.ndarray

    def truth(self, dist: np.ndarray) -> float:
        return float(((dist - self.live) * self.rewards).sum(axis=1).mean())


def make_world(seed: int = 0, n: int = 400, epsilon: float = 0.3) -> World:
    rng = np.random.default_rng(seed)
    k = len(MODELS)
    features = rng.normal(size=(n, 2)).astype(np.float32)
    slope, offset = np.array([[-1.0, 0.2, 1.0]]), np.array([[0.0, 0.05, -0.05]])
    rewards = np.clip(0.5 + 0.25 * features[:, :1] * slope + offset, 0, 1)
    eye = np.eye(k)

    def deploy(choice: np.ndarray) -> np.ndarray:
        return (1 - epsilon) * eye[choice] + epsilon / k

    return World(
        features=features,
        rewards=rewards,
        live=deploy(np.full(n, 1)),
        better=deploy(rewards.argmax(axis=1)),
        worse=deploy(rewards.argmin(axis=1)),
    )


def draw(
    world: World, n: int, rng: np.random.Generator, logger: np.ndarray | None = None, noise: float = 0.2
) -> tuple[BanditFeedback, np.ndarray]:
    """``n`` decisions logged by ``logger`` (default live) on queries drawn from the world, and their indices."""
    mu = world.live if logger is None else logger
    idx = rng.integers(0, world.rewards.shape[0], n)
    action = sample_actions(mu[idx], rng)
    quality = np.clip(world.rewards[idx, action] + rng.normal(scale=noise, size=n), -1, 2)
    fb = BanditFeedback(
        models=MODELS,
        features=world.features[idx],
        action=action,
        propensity=mu[idx, action],
        quality=quality,
    )
    return fb, idx
