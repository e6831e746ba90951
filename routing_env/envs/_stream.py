"""The query stream of one environment: passes over the data without replacement, shuffled by the env's RNG.

Randomness is drawn in blocks, one block per pass over the n queries, in a fixed order: first the permutation
``rng.permutation(n)``, then (when λ is sampled) ``n`` cost weights from :func:`draw_cost_weights` (one
``rng.uniform(·, ·, size=n)`` call whatever the sampling). The episode whose first query
sits at position ``p`` of the pass uses ``λ = block[p]``. Drawing whole blocks keeps ``np.random`` out of the
per-step path, and lets the batched vector env reproduce N single envs exactly by drawing the same blocks from N
generators seeded the same way.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

CostWeightSampling = Literal["uniform", "log_uniform"]
COST_WEIGHT_SAMPLINGS: tuple[str, ...] = ("uniform", "log_uniform")
#: With ``cost_weight_sampling="log_uniform"`` and ``low = 0``: the offset ε, as a share of ``high``.
LOG_UNIFORM_OFFSET = 1e-3


def draw_cost_weights(
    rng: np.random.Generator, lam_range: tuple[float, float], sampling: str, size: int
) -> np.ndarray:
    """``(size,) float64`` cost weights λ in ``[low, high]`` drawn from ``rng``.

    - ``"uniform"``: λ ~ U(low, high).
    - ``"log_uniform"``: log(λ + ε) ~ U(log(low + ε), log(high + ε)), with ε = 0 when ``low > 0`` (a plain
      log-uniform draw) and ε = ``LOG_UNIFORM_OFFSET · high`` (1e-3·high) when ``low = 0``, so that λ = 0 stays
      in the support without a point mass. The density ∝ 1/(λ + ε) puts as many draws in each decade of λ as in
      the next: small λ, where the cost–quality trade-off changes fastest, is trained on as much as large λ
      (with ``low = 0``, about a third of the draws fall below ``high/100`` and half below ``high/30``).

    Either way exactly one ``rng.uniform`` call of ``size`` draws is made, so streams stay in step.
    """
    lo, hi = lam_range
    if sampling == "uniform" or hi <= 0.0:
        return rng.uniform(lo, hi, size=size)
    eps = 0.0 if lo > 0.0 else LOG_UNIFORM_OFFSET * hi
    u = rng.uniform(math.log(lo + eps), math.log(hi + eps), size=size)
    # The clip only absorbs rounding of exp/log at the ends of the range.
    return np.clip(np.exp(u) - eps, lo, hi)


class QueryStream:
    """Queries ``0..n-1`` in shuffled passes, and a per-episode cost weight drawn alongside.

    Args:
        n: number of queries.
        lam_range: ``(low, high)`` to sample λ from per episode, or ``None`` for a fixed λ.
        sampling: how λ is drawn from the range (:func:`draw_cost_weights`).
    """

    def __init__(self, n: int, lam_range: tuple[float, float] | None, sampling: str = "uniform") -> None:
        self.n = n
        self.lam_range = lam_range
        self.sampling = sampling
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
                self.lam_block = draw_cost_weights(rng, self.lam_range, self.sampling, self.n)
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

    def __init__(
        self, num: int, n: int, lam_range: tuple[float, float] | None, sampling: str = "uniform"
    ) -> None:
        from gymnasium.utils import seeding

        self.num, self.n, self.lam_range, self.sampling = num, n, lam_range, sampling
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
                self.lam_block[i] = draw_cost_weights(rng, self.lam_range, self.sampling, self.n)
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
