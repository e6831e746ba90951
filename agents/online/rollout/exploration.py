"""How much exploration the live policy needs for a candidate to be evaluable from its logs.

A live policy that puts probability 1 on one model per query makes every other choice invisible: a candidate
that disagrees with it cannot be scored off-policy at all. Mixing in uniform exploration,
``μ_ε(a|x) = (1 − ε)·π_live(a|x) + ε/K``, makes every model loggable, and the off-policy estimate of a candidate
``π_c`` then has (in expectation over the log) the Kish effective sample size

    ESS(ε) = n / mean_x Σ_a π_c(a|x)² / μ_ε(a|x)          (since E[w] = 1 and E[w² | x] = Σ_a π_c²/μ_ε).

The gate can only tell a difference ``d`` above its margin ``δ`` apart from noise when the estimate's standard
error is about ``(d − δ)/(z_conf + z_power)``; for per-query rewards of standard deviation ``σ`` that takes

    ESS ≥ ((z_conf + z_power)·σ / (d − δ))²   (:func:`required_ess`),

and :func:`smallest_epsilon` returns the smallest ε that reaches it with ``n`` logged decisions. The expected
``1/ESS(ε)`` is convex in ε (a sum of ``1/linear`` terms), so the set of ε that reach a target is an interval: the
search finds its left end exactly, by bisection below the ε of largest ESS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from routing_env.errors import ConfigurationError, ShapeError
from routing_env.ope.paired import z_quantile


@dataclass(frozen=True)
class ExplorationPlan:
    """The answer of :func:`smallest_epsilon`.

    Attributes:
        epsilon: the smallest uniform-exploration share that reaches ``required_ess`` (``None`` when no ε does).
        expected_ess: the expected effective sample size at ``epsilon`` (at the best ε when unreachable).
        required_ess: the target.
        n_decisions: logged decisions the plan assumes.
        best_epsilon: the ε of largest expected ESS (the most informative exploration for this candidate).
    """

    epsilon: float | None
    expected_ess: float
    required_ess: float
    n_decisions: int
    best_epsilon: float = 0.0

    @property
    def reachable(self) -> bool:
        return self.epsilon is not None


def required_ess(
    difference: float,
    *,
    reward_std: float,
    margin: float = 0.0,
    confidence: float = 0.95,
    power: float = 0.8,
) -> float:
    """Effective sample size at which a true improvement of ``difference`` clears the gate's one-sided
    ``confidence`` bound above ``margin`` with probability ``power`` (normal approximation).

    Args:
        difference: the improvement to detect, in reward units (> ``margin``).
        reward_std: standard deviation of the per-query reward (reward units, > 0).
        margin: the gate's margin δ.
        confidence: the gate's confidence, in (0, 1).
        power: the probability of promoting at that difference, in (0, 1).
    """
    if not (math.isfinite(difference) and math.isfinite(margin) and difference > margin):
        raise ConfigurationError(
            f"difference must be a finite improvement above margin={margin!r}, got {difference!r}"
        )
    if not (math.isfinite(reward_std) and reward_std > 0):
        raise ConfigurationError(f"reward_std must be a positive standard deviation, got {reward_std!r}")
    for name, value in (("confidence", confidence), ("power", power)):
        if not 0.0 < value < 1.0:
            raise ConfigurationError(f"{name} must be in (0, 1), got {value!r}")
    z = z_quantile(confidence) + z_quantile(power)
    return (z * reward_std / (difference - margin)) ** 2


def _check_dists(live_dist: np.ndarray, candidate_dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    live = np.asarray(live_dist, dtype=np.float64)
    cand = np.asarray(candidate_dist, dtype=np.float64)
    if live.ndim != 2 or live.shape != cand.shape or live.shape[0] == 0:
        raise ShapeError(
            f"live_dist and candidate_dist must both have shape (n, K) with n ≥ 1, got {live.shape} and {cand.shape}"
        )
    for name, d in (("live_dist", live), ("candidate_dist", cand)):
        if not np.isfinite(d).all() or (d < 0).any() or not np.allclose(d.sum(axis=1), 1.0, atol=1e-6):
            raise ConfigurationError(f"{name} rows must be probabilities summing to 1")
    return live, cand


def expected_ess(
    live_dist: np.ndarray, candidate_dist: np.ndarray, epsilon: float | np.ndarray, n_decisions: int
) -> np.ndarray:
    """Expected Kish ESS of ``candidate_dist (n, K)`` on ``n_decisions`` logged by the ε-mixture of
    ``live_dist (n, K)`` with the uniform distribution (the rows stand for the query population).

    ``epsilon`` may be an array; the result has its shape (0 where the candidate leaves the logger's support).
    """
    live, cand = _check_dists(live_dist, candidate_dist)
    eps = np.asarray(epsilon, dtype=np.float64)
    if (eps < 0).any() or (eps > 1).any():
        raise ConfigurationError(f"epsilon must lie in [0, 1], got {epsilon!r}")
    return _expected_ess(live, cand, eps, int(n_decisions))


def _expected_ess(live: np.ndarray, cand: np.ndarray, eps: np.ndarray, n: int) -> np.ndarray:
    k = live.shape[1]
    # Only cells the candidate uses contribute to Σ π_c²/μ.
    rows, cols = np.nonzero(cand > 0)
    pc2 = cand[rows, cols] ** 2
    base = live[rows, cols]
    flat = eps.reshape(-1)
    out = np.empty(flat.shape)
    for i, e in enumerate(flat):
        mu = (1.0 - e) * base + e / k
        with np.errstate(divide="ignore"):
            second = float(np.sum(np.where(mu > 0, pc2 / np.where(mu > 0, mu, 1.0), np.inf)))
        out[i] = n * live.shape[0] / second if second > 0 and math.isfinite(second) else 0.0
    return out.reshape(eps.shape)


def smallest_epsilon(
    live_dist: np.ndarray,
    candidate_dist: np.ndarray,
    *,
    n_decisions: int,
    required: float,
    tolerance: float = 1e-4,
) -> ExplorationPlan:
    """The smallest ε in [0, 1] whose ε-greedy mixture of ``live_dist`` gives ``candidate_dist`` an expected
    effective sample size of at least ``required`` over ``n_decisions`` logged decisions.

    Args:
        live_dist: ``(n, K)`` the live policy's distribution on a sample of queries (one-hot when deterministic).
        candidate_dist: ``(n, K)`` the candidate's distribution on the same queries.
        n_decisions: decisions the evaluation will have (≥ 1).
        required: the ESS to reach (e.g. :func:`required_ess`), > 0.
        tolerance: the ε returned is within this of the exact smallest one (and never below it).
    """
    live, cand = _check_dists(live_dist, candidate_dist)
    if int(n_decisions) != n_decisions or n_decisions < 1:
        raise ConfigurationError(f"n_decisions must be an integer ≥ 1, got {n_decisions!r}")
    if not (math.isfinite(required) and required > 0):
        raise ConfigurationError(f"required must be a positive effective sample size, got {required!r}")
    if not 0 < tolerance < 1:
        raise ConfigurationError(f"tolerance must be in (0, 1), got {tolerance!r}")
    n = int(n_decisions)

    def ess(e: float) -> float:
        return float(_expected_ess(live, cand, np.array(e), n))

    if ess(0.0) >= required:
        return ExplorationPlan(0.0, ess(0.0), float(required), n, best_epsilon=0.0)
    # 1/ESS is convex in ε: golden-section search for the ε of largest ESS, then bisection below it.
    golden = (math.sqrt(5) - 1) / 2
    a, b = 0.0, 1.0
    c, d = b - golden * (b - a), a + golden * (b - a)
    fc, fd = ess(c), ess(d)
    while b - a > tolerance:
        if fc >= fd:
            b, d, fd = d, c, fc
            c = b - golden * (b - a)
            fc = ess(c)
        else:
            a, c, fc = c, d, fd
            d = a + golden * (b - a)
            fd = ess(d)
    best_e = max((a, ess(a)), (b, ess(b)), key=lambda t: t[1])
    if ess(1.0) >= best_e[1]:
        best_e = (1.0, ess(1.0))
    if best_e[1] < required:
        return ExplorationPlan(None, best_e[1], float(required), n, best_epsilon=best_e[0])
    lo, hi = 0.0, best_e[0]
    while hi - lo > tolerance:
        mid = 0.5 * (lo + hi)
        if ess(mid) >= required:
            hi = mid
        else:
            lo = mid
    return ExplorationPlan(hi, ess(hi), float(required), n, best_epsilon=best_e[0])
