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


class BatchedStream:
    """N query streams in lockstep arrays: sub-stream ``i`` draws exactly what a :class:`QueryStream` driven by
    generator ``rngs[i]`` draws, at the same moments (a new pass only when that sub-stream's pass is used up).

    Per sub-stream state: a permutation of the query indices (``int32``), a position, and a λ block when λ is
    sampled. No per-step random calls: the only Python loop runs over sub-streams starting a new pass.
    """

    def __init__(self, num: int, n: int, lam_range: tuple[float, float] | None) -> None:
        from gymnasium.utils import seeding

        self.num, self.n, self.lam_range = num, n, lam_range
        self.rngs: list[np.random.Generator] = [seeding.np_random(None)[0] for _ in range(num)]
        self.order = np.zeros((num, n), dtype=np.int32)
        self.lam_block = None if lam_range is None else np.zeros((num, n))
        self.pos = np.full(num, n, dtype=np.int64)

    def seed(self, seeds: list[int]) -> None:
        """Reseed every sub-stream (as ``Env.reset(seed=…)`` does) and forget the current passes."""
        from gymnasium.utils import seeding

        self.rngs = [seeding.np_random(s)[0] for s in seeds]
        self.pos[:] = self.n

    def refill(self, idx: np.ndarray) -> None:
        """New passes for the sub-streams in ``idx`` whose current pass is used up (same draws as QueryStream)."""
        for i in idx[self.pos[idx] >= self.n]:
            rng = self.rngs[i]
            self.order[i] = rng.permutation(self.n)
            if self.lam_block is not None:
                assert self.lam_range is not None
                self.lam_block[i] = rng.uniform(self.lam_range[0], self.lam_range[1], size=self.n)
            self.pos[i] = 0

    def episode_lambdas(self, idx: np.ndarray) -> np.ndarray | None:
        """λ of episodes starting now in sub-streams ``idx`` (``None`` when λ is not sampled)."""
        if self.lam_block is None:
            return None
        self.refill(idx)
        return self.lam_block[idx, self.pos[idx]]

    def next(self, idx: np.ndarray) -> np.ndarray:
        """The next query of each sub-stream in ``idx``."""
        self.refill(idx)
        pos = self.pos[idx]
        self.pos[idx] = pos + 1
        return self.order[idx, pos].astype(np.int64)
