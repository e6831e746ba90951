"""Paired off-policy comparison: is a candidate policy better than the live one, on the same logged rows?

Two separate intervals, one per policy, answer the wrong question: their overlap ignores that both estimates
are computed from the same rounds, so their errors are strongly correlated. The paired estimator scores the
*difference* ``V(candidate) − V(live)`` round by round and puts the interval on that difference.

With logged reward ``r``, logged action ``a``, propensity ``p``, the weights ``w_c = π_c(a|x)/p`` and
``w_l = π_l(a|x)/p`` and a reward model ``q̂``, the per-round differences are

=========== ===================================================================================================
IPS         ``(w_c − w_l)·r``
DR          ``Σ_a (π_c − π_l)(a|x)·q̂(x, a) + (w_c − w_l)·(r − q̂(x, a))``
SNIPS, SNDR the ratio forms of both policies; the delta method linearises the difference of ratios
=========== ===================================================================================================

Any estimator of :mod:`routing_env.ope.estimators` works: the difference is written in the same
ratio-of-means form (the candidate's parts plus the live policy's parts negated), so the point estimate equals
the difference of the two unpaired point estimates exactly, and the normal (delta-method) and Poisson-bootstrap
intervals of :mod:`routing_env.ope.intervals` apply unchanged — the bootstrap resamples the rounds of both
policies jointly. ``live_dist=None`` means the live policy *is* the logger: its value is the mean logged reward
(on-policy, every weight 1).

Intervals come in two flavours:

- ``sides="two-sided"``: ``[low, high]`` covers the difference with probability ``1 − alpha``;
- ``sides="one-sided"``: ``low`` is a one-sided ``1 − alpha`` lower confidence bound and ``high`` a one-sided
  ``1 − alpha`` upper bound (together a two-sided ``1 − 2·alpha`` interval). A promotion gate tests
  ``low > δ`` at error rate ``alpha``, and a rollback rule ``high < −δ``.

**Anytime-valid monitoring.** A canary re-tests after every batch of traffic. Looking repeatedly at a
fixed-sample interval and stopping at the first look that excludes the null inflates the error rate far beyond
``alpha`` (to 1 as the looks go on). A *confidence sequence* ``(low_t, high_t)`` covers the true difference at
every sample size simultaneously: ``P(∃t: difference ∉ [low_t, high_t]) ≤ alpha``, so it may be checked after
every batch and acted on at once. This module uses the normal-mixture uniform boundaries of

- S. R. Howard, A. Ramdas, J. McAuliffe, J. Sekhon, "Time-uniform, nonparametric, nonasymptotic confidence
  sequences", *Annals of Statistics* 49(2), 2021 — the two-sided (Robbins) normal-mixture boundary in closed form
  and the one-sided one (a half-normal mixture) by root finding, with the mixture scale ``ρ`` chosen to make the
  boundary tightest at a planned sample size ``n_opt``;

with the running sample variance plugged in as in

- I. Waudby-Smith, D. Arbour, R. Sinha, E. H. Kennedy, A. Ramdas, "Time-uniform central limit theory and
  asymptotic confidence sequences", *Annals of Statistics* 52(6), 2024 (asymptotic confidence sequences:
  ``μ̂_t ± σ̂_t·u(t)/t``, valid as ``t`` grows for any i.i.d. terms with finite variance, heavy-tailed
  importance-weighted terms included, without knowing a bound on them).

The boundary ``u`` needs per-round terms that are i.i.d. given a *fixed* reward model, so sequences are offered
for the linear estimators (IPS, DR, Switch-DR, DR-OS) only, with ``q̂`` fitted on data from before the monitored
rounds (a model from earlier logs), not cross-fitted on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import Literal, NamedTuple

import numpy as np

from routing_env.errors import ConfigurationError, ShapeError
from routing_env.ope.estimators import (
    OffPolicyEstimator,
    Terms,
    check_alpha,
    combine,
    effective_sample_size,
    make_estimator,
)
from routing_env.ope.intervals import bootstrap_values, normal_interval, percentile_interval

Sides = Literal["two-sided", "one-sided"]
Method = Literal["normal", "bootstrap", "sequence"]
_SIDES = ("two-sided", "one-sided")
_METHODS = ("normal", "bootstrap", "sequence")


class PairedTerms(NamedTuple):
    """The difference, the candidate's and the live policy's estimates, each as ``Σ_k mean(u_k)/mean(v_k)``."""

    difference: Terms
    candidate: Terms
    live: Terms

    def estimate(self) -> float:
        """``V̂(candidate) − V̂(live)`` (reward units)."""
        return combine(self.difference)[0]

    def round_values(self) -> np.ndarray:
        """``(n,)`` per-round differences whose mean is the estimate (for the self-normalised estimators, the
        delta-method influence values, which depend on the whole log)."""
        return round_values(self.difference)


@dataclass(frozen=True)
class PairedEstimate:
    """``V(candidate) − V(live)`` on one log, with its interval.

    Attributes:
        estimator: label of the estimator both policies were scored with.
        estimate: the paired difference (reward units: quality − λ·cost/cost_scale per query).
        std_error: its standard error (delta method; the replicates' standard deviation for the bootstrap; the
            plug-in ``σ̂/√n`` for a sequence).
        low, high: the interval's ends (see ``sides``).
        alpha: the error rate of each bound (``sides="one-sided"``) or of the interval (``"two-sided"``).
        sides: ``"two-sided"`` or ``"one-sided"``.
        method: ``"normal"``, ``"bootstrap"`` or ``"sequence"`` (anytime-valid at this ``n_rounds``).
        candidate_value, live_value: the two unpaired point estimates (their difference is ``estimate``).
        n_rounds: logged rounds used.
        ess_candidate, ess_live: Kish effective sample sizes of each policy's importance weights.
    """

    estimator: str
    estimate: float
    std_error: float
    low: float
    high: float
    alpha: float
    sides: str
    method: str
    candidate_value: float
    live_value: float
    n_rounds: int
    ess_candidate: float
    ess_live: float


def _negate(terms: Terms) -> tuple[tuple[np.ndarray, np.ndarray | None], ...]:
    return tuple((-u, v) for u, v in terms.parts)


def is_linear(terms: Terms) -> bool:
    """The estimate is a plain mean of per-round terms (no self-normalising denominator)."""
    return all(v is None for _, v in terms.parts)


def check_sides(sides: str) -> None:
    if sides not in _SIDES:
        raise ConfigurationError(f"sides must be one of {list(_SIDES)}, got {sides!r}")


@dataclass(frozen=True)
class PairedDifference:
    """Paired estimator of ``V(candidate) − V(live)`` from one log.

    Args:
        estimator: an estimator instance or short name (``"IPS"``, ``"SNIPS"``, ``"DR"``, ``"SNDR"``,
            ``"SwitchDR"``, ``"DRos"``); both policies are scored with it on the same rounds and the same reward
            model. ``"DM"`` is refused: a difference of reward-model predictions is not evidence from the log.

    The per-call arrays follow :mod:`routing_env.ope.estimators`: ``reward (n,)``, ``action (n,)``,
    ``pscore (n,)``, ``candidate_dist`` and ``live_dist`` ``(n, K)`` (``live_dist=None``: the live policy is the
    logger), ``estimated_rewards (n, K)`` for the DR family::

        paired = PairedDifference("DR")
        terms = paired.terms(reward, action, pscore, candidate_dist, live_dist, estimated_rewards)
        terms.estimate()                                   # V̂(candidate) − V̂(live)
        paired.interval(terms, alpha=0.05, sides="one-sided")  # PairedEstimate with its bounds
    """

    estimator: OffPolicyEstimator | str = "DR"

    def __post_init__(self) -> None:
        est = make_estimator(self.estimator)
        if not hasattr(est, "weights"):
            raise ConfigurationError(
                f"estimator {est.label!r} does not weight the logged rewards; a paired difference needs an "
                "importance-weighted estimator (IPS, SNIPS, DR, SNDR, SwitchDR or DRos)"
            )
        object.__setattr__(self, "estimator", est)

    @property
    def _est(self) -> OffPolicyEstimator:
        assert isinstance(self.estimator, OffPolicyEstimator)
        return self.estimator

    @property
    def label(self) -> str:
        return self._est.label

    @property
    def needs_reward_model(self) -> bool:
        """The estimator needs ``estimated_rewards`` (the DR family)."""
        return self._est.needs_reward_model

    def terms(
        self,
        reward: np.ndarray,
        action: np.ndarray,
        pscore: np.ndarray,
        candidate_dist: np.ndarray,
        live_dist: np.ndarray | None = None,
        estimated_rewards: np.ndarray | None = None,
    ) -> PairedTerms:
        """The three estimates in ratio-of-means form, sharing the logged arrays and the reward model."""
        est = self._est
        cand_inputs = est.inputs(reward, action, pscore, candidate_dist, None, estimated_rewards)
        cand = est.terms(cand_inputs)
        if live_dist is None:
            # The logger scored on its own log: every weight is 1 and the value is the logged mean.
            live = Terms(((cand_inputs.reward, None),), None)
        else:
            live_dist = np.asarray(live_dist, dtype=np.float64)
            if live_dist.shape != np.shape(candidate_dist):
                raise ShapeError(
                    f"live_dist must have the shape of candidate_dist {np.shape(candidate_dist)}, got {live_dist.shape}"
                )
            live = est.terms(est.inputs(reward, action, pscore, live_dist, None, estimated_rewards))
        return PairedTerms(Terms(cand.parts + _negate(live), cand.weights), cand, live)

    def interval(
        self,
        terms: PairedTerms,
        *,
        alpha: float = 0.05,
        sides: Sides = "two-sided",
        method: Method = "normal",
        n_bootstrap: int = 1000,
        seed: int = 0,
        n_opt: int | None = None,
    ) -> PairedEstimate:
        """The paired difference of ``terms`` (from :meth:`terms`) with an interval.

        Args:
            alpha: error rate (see the module docstring for ``sides``).
            sides: ``"two-sided"`` or ``"one-sided"``.
            method: ``"normal"`` (delta method), ``"bootstrap"`` (Poisson bootstrap, percentile interval) or
                ``"sequence"`` (the anytime-valid normal-mixture confidence sequence at this sample size: valid
                however often the log is re-tested as it grows; linear estimators only).
            n_bootstrap: bootstrap replicates.
            seed: seed of the bootstrap.
            n_opt: for ``"sequence"``: the planned sample size at which the sequence is tightest. It must be
                fixed before the data are seen (the same at every look); required for ``"sequence"``.
        """
        check_alpha(alpha)
        check_sides(sides)
        if method not in _METHODS:
            raise ConfigurationError(f"method must be one of {list(_METHODS)}, got {method!r}")
        t = terms
        value, influence = combine(t.difference)
        n = influence.shape[0]
        # Two-sided intervals split alpha between the ends; one-sided bounds spend all of it on each end.
        tail = alpha / 2 if sides == "two-sided" else alpha
        if method == "normal":
            se, low, high = normal_interval(value, influence, 2 * tail)
        elif method == "bootstrap":
            reps = bootstrap_values([t.difference], n_bootstrap=n_bootstrap, seed=seed)[0]
            se, low, high = percentile_interval(reps, 2 * tail)
        else:
            if not is_linear(t.difference):
                raise ConfigurationError(
                    f"method='sequence' needs a linear estimator (IPS, DR, SwitchDR, DRos), got {self.label}: "
                    "a self-normalised estimate is not a running mean of independent terms"
                )
            if n_opt is None:
                raise ConfigurationError(
                    "method='sequence' needs n_opt, the planned sample size the sequence is tuned for, fixed "
                    "before the data are seen"
                )
            seq = RunningSequence(SequenceConfig(alpha=alpha, sides=sides, n_opt=n_opt)).extend(influence)
            low, high = seq.bounds()
            se = seq.std_error
        return PairedEstimate(
            estimator=self.label,
            estimate=value,
            std_error=se,
            low=low,
            high=high,
            alpha=float(alpha),
            sides=sides,
            method=method,
            candidate_value=combine(t.candidate)[0],
            live_value=combine(t.live)[0],
            n_rounds=n,
            ess_candidate=effective_sample_size(t.candidate.weights, n),
            ess_live=effective_sample_size(t.live.weights, n),
        )


def round_values(terms: Terms) -> np.ndarray:
    """``(n,)`` per-round values whose mean is the estimate: the terms themselves for a linear estimator, the
    delta-method influence values otherwise."""
    if is_linear(terms):
        out = terms.parts[0][0].copy()
        for u, _ in terms.parts[1:]:
            out += u
        return out
    return combine(terms)[1]


# ---------------------------------------------------------------------------------------------- sequences
def _log_one_over(alpha: float) -> float:
    return math.log(1.0 / alpha)


def mixture_scale(n_opt: float, alpha: float, sides: Sides) -> float:
    """The normal mixture's scale ``ρ`` (in units of intrinsic time) that makes the boundary tightest at
    ``n_opt`` (Howard et al. 2021, Section 3.5): ``ρ = n_opt / (2·log(1/α) + log(1 + 2·log(1/α)))``; the one-sided
    boundary uses the two-sided rule at ``2α``."""
    a = alpha if sides == "two-sided" else min(2 * alpha, 0.999)
    la = _log_one_over(a)
    return float(n_opt) / (2 * la + math.log(1 + 2 * la))


def normal_mixture_boundary(
    v: np.ndarray | float, *, alpha: float, rho: float, sides: Sides = "two-sided"
) -> np.ndarray:
    """The normal-mixture uniform boundary ``u(v)`` at intrinsic time ``v`` (Howard et al. 2021, Eq. 14–15).

    For a sum ``S_v`` of 1-sub-Gaussian increments with variance process ``v``:

    - two-sided: ``P(∃v: |S_v| ≥ u(v)) ≤ α`` with ``u(v) = √((v + ρ)·(log(1 + v/ρ) + 2·log(1/α)))``;
    - one-sided: ``P(∃v: S_v ≥ u(v)) ≤ α`` where ``u(v)`` solves ``log M(u, v) = log(1/α)`` for the half-normal
      mixture ``log M(s, v) = ½·log(4ρ/(v + ρ)) + s²/(2(v + ρ)) + log Φ(s/√(v + ρ))`` (increasing in ``s``),
      found by vectorised bisection.

    Returns an array of ``v``'s shape.
    """
    from scipy.special import log_ndtr

    v_arr = np.asarray(v, dtype=np.float64)
    la = _log_one_over(alpha)
    vr = v_arr + rho
    if sides == "two-sided":
        return np.sqrt(vr * (np.log1p(v_arr / rho) + 2 * la))
    check_sides(sides)

    def excess(s: np.ndarray) -> np.ndarray:
        return 0.5 * np.log(4 * rho / vr) + s * s / (2 * vr) + log_ndtr(s / np.sqrt(vr)) - la

    # For s ≥ 0, 2·Φ ≥ 1 makes the half-normal mixture at least the full one, so the two-sided boundary (same
    # ρ) brackets the root from above; 0 brackets it from below (M(0, v) ≤ 1 < 1/α).
    hi = np.sqrt(vr * (np.log1p(v_arr / rho) + 2 * la))
    lo = np.zeros_like(hi)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        above = excess(mid) >= 0
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    return hi


@dataclass(frozen=True)
class SequenceConfig:
    """How a confidence sequence is built.

    Args:
        alpha: error rate over *all* sample sizes at once (of the interval for ``"two-sided"``, of each bound
            for ``"one-sided"``).
        sides: ``"two-sided"`` or ``"one-sided"`` (see the module docstring).
        n_opt: planned sample size at which the boundary is tightest; fix it before looking at the data.
            Any value keeps the guarantee; a poor one only widens the sequence away from it.
    """

    alpha: float = 0.05
    sides: Sides = "two-sided"
    n_opt: int = 10_000

    def __post_init__(self) -> None:
        check_alpha(self.alpha)
        check_sides(self.sides)
        if int(self.n_opt) != self.n_opt or self.n_opt < 1:
            raise ConfigurationError(
                f"n_opt must be an integer ≥ 1 (a planned sample size), got {self.n_opt!r}"
            )

    @property
    def rho(self) -> float:
        return mixture_scale(self.n_opt, self.alpha, self.sides)

    def radius(self, n: np.ndarray | float, std: np.ndarray | float) -> np.ndarray:
        """Half-width ``σ̂·u(n)/n`` of the sequence at sample size ``n`` with plug-in standard deviation ``σ̂``."""
        n_arr = np.asarray(n, dtype=np.float64)
        u = normal_mixture_boundary(n_arr, alpha=self.alpha, rho=self.rho, sides=self.sides)
        return np.asarray(std, dtype=np.float64) * u / n_arr


@dataclass(frozen=True)
class RunningSequence:
    """An asymptotic confidence sequence for the mean of a stream of i.i.d. terms, kept as running moments
    (count, mean, sum of squared deviations; batches merged with Chan et al.'s update), so a monitor can extend it
    batch by batch and read its bounds after each one.

    ``RunningSequence(config).extend(x1).extend(x2)`` equals ``RunningSequence(config).extend(concat(x1, x2))``.
    """

    config: SequenceConfig = field(default_factory=SequenceConfig)
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def extend(self, values: np.ndarray) -> RunningSequence:
        """The sequence after observing ``values (m,)`` more terms."""
        x = np.asarray(values, dtype=np.float64).reshape(-1)
        if x.size == 0:
            return self
        if not np.isfinite(x).all():
            raise ConfigurationError("the terms of a confidence sequence must be finite, got NaN or inf")
        m = x.size
        bmean = float(x.mean())
        d = x - bmean
        bm2 = float(np.dot(d, d))
        n = self.n + m
        delta = bmean - self.mean
        mean = self.mean + delta * m / n
        m2 = self.m2 + bm2 + delta * delta * self.n * m / n
        return replace(self, n=n, mean=mean, m2=m2)

    @property
    def std(self) -> float:
        """Sample standard deviation of the terms so far (NaN below two terms)."""
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else math.nan

    @property
    def std_error(self) -> float:
        return self.std / math.sqrt(self.n) if self.n > 1 else math.nan

    def bounds(self) -> tuple[float, float]:
        """``(low, high)`` at the current sample size (NaN below two terms)."""
        if self.n < 2:
            return math.nan, math.nan
        r = float(self.config.radius(self.n, self.std))
        return self.mean - r, self.mean + r


class ConfidenceSequence(NamedTuple):
    """A confidence sequence read at several sample sizes (``looks``)."""

    n: np.ndarray  # (m,) sample sizes of the looks
    estimate: np.ndarray  # (..., m) running means
    low: np.ndarray  # (..., m)
    high: np.ndarray  # (..., m)


def confidence_sequence(
    values: np.ndarray, config: SequenceConfig | None = None, *, looks: np.ndarray | None = None
) -> ConfidenceSequence:
    """The asymptotic normal-mixture confidence sequence of the running mean of ``values``, read at ``looks``.

    Args:
        values: ``(..., n)`` terms in arrival order; leading axes are independent streams (e.g. simulated runs).
        config: level, sides and planned sample size (default :class:`SequenceConfig`).
        looks: ``(m,)`` increasing sample sizes in ``[2, n]`` to report (default every size from 2 to n).

    Returns the running mean and bounds at each look; ``P(∃ look: mean ∉ [low, high]) ≤ alpha`` as ``n`` grows,
    whatever the looks (they may be chosen after seeing the data).
    """
    cfg = config or SequenceConfig()
    x = np.asarray(values, dtype=np.float64)
    if x.ndim < 1 or x.shape[-1] < 2:
        raise ShapeError(f"values must have shape (..., n) with n ≥ 2, got {x.shape}")
    n = x.shape[-1]
    at = np.arange(2, n + 1) if looks is None else np.asarray(looks, dtype=np.int64)
    if at.ndim != 1 or at.size == 0 or at.min() < 2 or at.max() > n or (np.diff(at) <= 0).any():
        raise ConfigurationError(f"looks must be increasing sample sizes in [2, {n}], got {looks!r}")
    # Moments about the first term: the variance is shift-invariant, and the shift keeps the running sum of
    # squares from cancelling catastrophically when the mean is large next to the spread.
    shifted = x - x[..., :1]
    s1 = np.cumsum(shifted, axis=-1)[..., at - 1]
    s2 = np.cumsum(shifted * shifted, axis=-1)[..., at - 1]
    mean_shifted = s1 / at
    var = np.maximum(s2 - at * mean_shifted * mean_shifted, 0.0) / (at - 1)
    r = cfg.radius(at, np.sqrt(var))
    mean = mean_shifted + x[..., :1]
    return ConfidenceSequence(at, mean, mean - r, mean + r)


def z_quantile(level: float) -> float:
    """Standard normal quantile ``Φ⁻¹(level)``."""
    return NormalDist().inv_cdf(level)
