"""Acting from action probabilities: what the trained network policies (SB3 and RLlib) share."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from agents.routers._common import sample_rows


def draw(probs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One action per row of ``probs (n, K)`` (rows summing to 1) drawn with ``rng``:
    ``(actions (n,) int64, propensities (n,) float64)``."""
    actions = sample_rows(probs, rng)
    return actions, probs[np.arange(probs.shape[0]), actions]


class ActsFromProbabilities:
    """``act`` and ``greedy_actions`` of a policy given by ``action_probabilities(features (n, d)) -> (n, K)``
    and its seeded sampler ``_rng``."""

    _rng: np.random.Generator

    if TYPE_CHECKING:

        def action_probabilities(self, features: np.ndarray) -> np.ndarray: ...

    def act(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sample one model per query: ``(actions (n,) int64, propensities (n,) float64)``."""
        return draw(self.action_probabilities(features), self._rng)

    def greedy_actions(self, features: np.ndarray) -> np.ndarray:
        """``(n,) int64`` most probable model per query (ties to the lower index)."""
        return self.action_probabilities(features).argmax(axis=1).astype(np.int64)
