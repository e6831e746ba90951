"""The query stream of one environment: passes over the data without replacement, shuffled by the env's RNG.

Randomness is drawn in blocks, one block per pass over the n queries, in a fixed order: first the permutation
``rng.permutation(n)``, then (when λ is sampled) ``rng.uniform(low, high, size=n)``. The episode whose first query
sits at position ``p`` of the pass uses ``λ = block[p]``. Drawing whole blocks keeps ``np.random`` out of the
per-step path, and lets the batched vector env reproduce N single envs exactly by drawing the same blocks from N
generators seeded the same way.
"""

from __future__ import annotations

import numpy as np


class QueryStream:
    """Queries ``0..n-1`` in shuffled passes, and a per-episode cost weight drawn alongside.

    Args:
        n: number of queries.
        lam_range: ``(low, high)`` to sample λ from per episode, or ``None`` for a fixed λ.
    """

    def __init__(self, n: int, lam_range: tuple[float, float] | None) -> None:
        self.n = n
        self.lam_range = lam_range
        self.order: list[int] = []
        self.lam_block: np.ndarray | None = None
        self.pos = n

    def restart(self) -> None:
        """Forget the current pass: the next draw starts a new one (used when the env is reseeded)."""
        self.pos = self.n

    def ensure(self, rng: np.random.Generator) -> None:
        """Start a new pass when the current one is used up."""
        if self.pos >= self.n:
            self.order = rng.permutation(self.n).tolist()
            if self.lam_range is not None:
                self.lam_block = rng.uniform(self.lam_range[0], self.lam_range[1], size=self.n)
            self.pos = 0

    def episode_lambda(self, rng: np.random.Generator, fixed: float) -> float:
        """λ of an episode starting at the current position (``fixed`` when λ is not sampled)."""
        if self.lam_range is None:
            return fixed
        self.ensure(rng)
        assert self.lam_block is not None
        return float(self.lam_block[self.pos])

    def next(self, rng: np.random.Generator) -> int:
        """The next query index of the pass."""
        if self.pos >= self.n:
            self.ensure(rng)
        q = self.order[self.pos]
        self.pos += 1
        return q
