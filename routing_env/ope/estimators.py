"""Off-policy estimators of a target policy's mean reward from logged bandit feedback.

Every estimator is a small frozen dataclass holding its hyperparameters, validated on construction; the data are
passed per call, as arrays (the convention of Open Bandit Pipeline's ``obp.ope``)::

    IPS(max_weight=100).estimate_policy_value(reward, action, pscore, action_dist)

Arrays (n logged rounds, K actions, P positions):

- ``reward (n,) float64``: reward of the logged action;
- ``action (n,) int``: logged action in ``[0, K)``;
- ``pscore (n,) float64``: the logging policy's probability of the logged action (at the logged position), in
  (0, 1]. A zero is an error unless ``min_pscore`` floors it explicitly;
- ``action_dist (n, K)`` or ``(n, K, P)``: the target policy's distribution (deterministic targets are one-hot);
- ``position (n,) int``: logged slot, needed when ``action_dist`` is 3-D;
- ``estimated_rewards (n, K)`` or ``(n, K, P)``: a reward model's predictions, for DM and the DR family (fit
  them with :class:`routing_env.ope.RewardModel`, cross-fitted).

Every estimate is written as a sum of ratios of means, ``V = Σ_k mean(u_k) / mean(v_k)`` (``v_k = 1`` for the
linear estimators). That one form gives the point estimate, the delta-method standard error
(influence values ``Σ_k (u_k − V_k·v_k) / mean(v_k)``) and the vectorised bootstrap of
:mod:`routing_env.ope.intervals`, for all estimators alike.

With importance weight ``w = π(a|x) / pscore`` and reward model ``q̂``, ``dm(x) = Σ_a π(a|x)·q̂(x, a)``:

========== ========================================================== =====================================
name       estimate                                                   reference
========== ========================================================== =====================================
DM         mean(dm)                                                   direct method
IPS        mean(w·r)                                                  Horvitz–Thompson
SNIPS      Σ w·r / Σ w                                                self-normalised IPS
DR         mean(dm + w·(r − q̂(x, a)))                                 Dudík et al. 2011
SNDR       mean(dm) + Σ w·(r − q̂(x, a)) / Σ w                         self-normalised DR
SwitchDR   mean(dm + 1[w ≤ τ]·w·(r − q̂(x, a)))                        Wang et al. 2017
DRos       mean(dm + w̃·(r − q̂(x, a))), w̃ = λw / (w² + λ)            Su et al. 2020 (optimistic shrinkage)
Replay     Σ π(a|x)·r / Σ π(a|x), uniform logs only                   Li et al. 2011 (rejection sampling)
========== ========================================================== =====================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from routing_env.errors import ConfigurationError, OPEWarning, SchemaError, ShapeError, warn


class Terms(NamedTuple):
    """An estimate as ``Σ_k mean(u_k) / mean(v_k)``; ``v_k`` is ``None`` for a plain mean."""

    parts: tuple[tuple[np.ndarray, np.ndarray | None], ...]
    #: importance weights the estimator applied, ``(n,)`` (``None`` for DM), for the effective sample size.
    weights: np.ndarray | None


class Interval(NamedTuple):
    """A point estimate with its standard error and a ``1 − alpha`` interval."""

    estimate: float
    std_error: float
    low: float
    high: float


class Inputs(NamedTuple):
    """Per-call arrays reduced to the logged position: what every estimator needs."""

    reward: np.ndarray  # (n,)
    pscore: np.ndarray  # (n,) floored by nothing yet
    pi_logged: np.ndarray  # (n,) target probability of the logged action
    q_logged: np.ndarray | None  # (n,) q̂ of the logged action
    dm: np.ndarray | None  # (n,) Σ_a π(a|x) q̂(x, a)
    action: np.ndarray  # (n,)
    position: np.ndarray | None  # (n,)
    #: importance weights already computed for these inputs, keyed by (min_pscore, max_weight): estimators of
    #: one table share them instead of dividing again.
    cache: dict[tuple[float, float], np.ndarray]


def prepare_inputs(
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    action_dist: np.ndarray,
    position: np.ndarray | None = None,
    estimated_rewards: np.ndarray | None = None,
    *,
    check_dist: bool = True,
) -> Inputs:
    """Validate the per-call arrays (see the module docstring) and reduce them to ``(n,)`` vectors."""
    reward = np.asarray(reward, dtype=np.float64)
    if reward.ndim != 1:
        raise ShapeError(f"reward must have shape (n,), got {reward.shape}")
    n = reward.shape[0]
    if n == 0:
        raise ShapeError("reward is empty: off-policy estimation needs at least one logged round")
    # A sum is one pass without temporaries; NaN and inf propagate into it (overflow is re-checked exactly).
    if not math.isfinite(float(reward.sum())) and not np.isfinite(reward).all():
        raise SchemaError("reward must be finite on every logged round")
    action = np.asarray(action)
    if action.shape != (n,):
        raise ShapeError(f"action must have shape (n,) = ({n},), got {action.shape}")
    if not np.issubdtype(action.dtype, np.integer):
        raise SchemaError(f"action must hold integer action indices, got dtype {action.dtype}")
    pscore = np.asarray(pscore, dtype=np.float64)
    if pscore.shape != (n,):
        raise ShapeError(f"pscore must have shape (n,) = ({n},), got {pscore.shape}")
    # NaN fails both comparisons, so no separate finiteness pass is needed.
    if not (pscore.min() >= 0 and pscore.max() <= 1):
        raise SchemaError(
            f"pscore must be probabilities in [0, 1], got values in [{pscore.min()}, {pscore.max()}]"
        )
    dist = np.asarray(action_dist, dtype=np.float64)
    if dist.ndim not in (2, 3) or dist.shape[0] != n:
        raise ShapeError(f"action_dist must have shape (n, K) or (n, K, P) with n = {n}, got {dist.shape}")
    k = dist.shape[1]
    amin, amax = int(action.min()), int(action.max())
    if amin < 0 or amax >= k:
        raise SchemaError(
            f"action must lie in [0, {k}) (K = action_dist.shape[1]), got {amin if amin < 0 else amax}"
        )
    rows = np.arange(n)
    pos: np.ndarray | None = None
    if dist.ndim == 3:
        if position is None:
            raise ConfigurationError(
                f"action_dist has shape {dist.shape} (n, K, P): pass position (n,) to pick each round's slot"
            )
        pos = np.asarray(position)
        if pos.shape != (n,) or not np.issubdtype(pos.dtype, np.integer):
            raise ShapeError(
                f"position must be an integer array of shape ({n},), got {pos.dtype} {pos.shape}"
            )
        if pos.min() < 0 or pos.max() >= dist.shape[2]:
            raise SchemaError(
                f"position must lie in [0, {dist.shape[2]}) (P = action_dist.shape[2]), got {pos.max()}"
            )
        dist = dist[rows, :, pos]
    elif position is not None:
        pos = np.asarray(position)
        if pos.shape != (n,):
            raise ShapeError(f"position must have shape ({n},), got {pos.shape}")
    if not dist.flags.c_contiguous:
        dist = np.ascontiguousarray(dist)
    if check_dist:
        # Row sums (NaN and inf propagate into them), then the sign: two passes over (n, K). einsum beats a BLAS
        # matrix-vector product on rows this short.
        sums = np.einsum("ij->i", dist)
        if not (sums.min() >= 1.0 - 1e-6 and sums.max() <= 1.0 + 1e-6 and dist.min() >= 0):
            bad_rows = np.flatnonzero(~(np.abs(sums - 1.0) <= 1e-6) | ~(dist >= 0).all(axis=1))
            bad = int(bad_rows[0])
            raise SchemaError(
                f"action_dist rows must be probabilities summing to 1; row {bad} is {dist[bad].tolist()} "
                f"({bad_rows.size} bad rows)"
            )
    flat_idx = rows * k + action
    pi_logged = dist.reshape(-1)[flat_idx]
    q_logged = dm = None
    if estimated_rewards is not None:
        q = np.asarray(estimated_rewards, dtype=np.float64)
        if q.ndim == 3:
            if pos is None or q.shape[0] != n or q.shape[1] != k:
                raise ShapeError(
                    f"estimated_rewards of shape {q.shape} needs (n, K, P) = ({n}, {k}, P) and position"
                )
            q = q[rows, :, pos]
        if q.shape != (n, k):
            raise ShapeError(f"estimated_rewards must have shape (n, K) = ({n}, {k}), got {q.shape}")
        if not q.flags.c_contiguous:
            q = np.ascontiguousarray(q)
        q_logged = q.reshape(-1)[flat_idx]
        dm = np.einsum("ij,ij->i", dist, q)
        if not math.isfinite(float(dm.sum())) and not np.isfinite(dm).all():
            raise SchemaError("estimated_rewards must be finite")
    return Inputs(reward, pscore, pi_logged, q_logged, dm, action, pos, {})


def effective_sample_size(weights: np.ndarray | None, n: int) -> float:
    """Kish's effective sample size ``(Σw)² / Σw²`` of importance weights (``n`` without weights)."""
    if weights is None:
        return float(n)
    s2 = float(np.dot(weights, weights))
    return float(weights.sum()) ** 2 / s2 if s2 > 0 else 0.0


def combine(terms: Terms) -> tuple[float, np.ndarray]:
    """``(estimate, influence (n,))``: the point estimate and per-round influence values whose standard deviation
    over √n is the delta-method standard error. NaN when a self-normalising denominator is 0."""
    total = 0.0
    influence: np.ndarray | None = None
    for u, v in terms.parts:
        if v is None:
            mean_u = float(u.mean())
            total += mean_u
            psi = u
        else:
            mean_v = float(v.mean())
            if mean_v == 0:
                return math.nan, np.full(u.shape, np.nan)
            theta = float(u.mean()) / mean_v
            total += theta
            psi = theta + (u - theta * v) / mean_v
        influence = psi if influence is None else influence + psi
    assert influence is not None
    return total, influence


@dataclass(frozen=True)
class OffPolicyEstimator:
    """Common interface: :meth:`estimate_policy_value`, :meth:`estimate_round_rewards`,
    :meth:`estimate_interval`. Subclasses implement :meth:`terms`."""

    #: the estimator needs ``estimated_rewards`` from a reward model.
    needs_reward_model: ClassVar[bool] = False

    @property
    def label(self) -> str:
        name = getattr(self, "name", "")
        return str(name) if name else type(self).__name__

    def terms(self, inputs: Inputs) -> Terms:
        """The estimate as ratios of means (see the module docstring)."""
        raise TypeError(
            f"{type(self).__name__} is abstract; use DM, IPS, SNIPS, DR, SNDR, SwitchDR, DRos or Replay"
        )

    # ------------------------------------------------------------------ public, OBP-style calls
    def inputs(
        self,
        reward: np.ndarray,
        action: np.ndarray,
        pscore: np.ndarray,
        action_dist: np.ndarray,
        position: np.ndarray | None,
        estimated_rewards: np.ndarray | None,
    ) -> Inputs:
        """The checked arrays of one call (see the module docstring); refuses a missing reward model."""
        if self.needs_reward_model and estimated_rewards is None:
            raise ConfigurationError(
                f"{self.label} needs estimated_rewards (n, K) from a reward model; fit one with "
                "routing_env.ope.RewardModel().fit_predict(...) (or use IPS/SNIPS)"
            )
        # Estimators without a reward model skip the (n, K) work on estimated_rewards.
        q = estimated_rewards if self.needs_reward_model else None
        return prepare_inputs(reward, action, pscore, action_dist, position, q)

    def estimate_policy_value(
        self,
        reward: np.ndarray,
        action: np.ndarray,
        pscore: np.ndarray,
        action_dist: np.ndarray,
        position: np.ndarray | None = None,
        estimated_rewards: np.ndarray | None = None,
    ) -> float:
        """Estimated mean reward of the target policy (see the module docstring for the arrays)."""
        inputs = self.inputs(reward, action, pscore, action_dist, position, estimated_rewards)
        value, _ = combine(self.terms(inputs))
        self._warn_undefined(value)
        return value

    def _warn_undefined(self, value: float) -> None:
        # NaN comes only from a self-normalising denominator of 0: no logged round has target probability.
        if math.isnan(value):
            warn(
                f"{self.label}: no support: the target never chooses a logged action, so every importance weight "
                "is 0 and the self-normalised estimate is undefined (NaN); see routing_env.ope.diagnose",
                OPEWarning,
                stacklevel=None,
            )

    def estimate_round_rewards(
        self,
        reward: np.ndarray,
        action: np.ndarray,
        pscore: np.ndarray,
        action_dist: np.ndarray,
        position: np.ndarray | None = None,
        estimated_rewards: np.ndarray | None = None,
    ) -> np.ndarray:
        """``(n,)`` per-round contributions whose mean is the estimate (self-normalised parts are divided by the
        mean of their denominator, as Open Bandit Pipeline does)."""
        inputs = self.inputs(reward, action, pscore, action_dist, position, estimated_rewards)
        out = np.zeros(inputs.reward.shape[0])
        for u, v in self.terms(inputs).parts:
            out += u if v is None else u / float(v.mean())
        return out

    def estimate_interval(
        self,
        reward: np.ndarray,
        action: np.ndarray,
        pscore: np.ndarray,
        action_dist: np.ndarray,
        position: np.ndarray | None = None,
        estimated_rewards: np.ndarray | None = None,
        *,
        alpha: float = 0.05,
        method: str = "bootstrap",
        n_bootstrap: int = 1000,
        seed: int = 0,
    ) -> Interval:
        """The estimate with a ``1 − alpha`` interval: ``method="bootstrap"`` (Poisson bootstrap, percentile
        interval, standard error = standard deviation of the replicates) or ``"normal"`` (delta method)."""
        from routing_env.ope.intervals import bootstrap_values, normal_interval, percentile_interval

        check_alpha(alpha)
        inputs = self.inputs(reward, action, pscore, action_dist, position, estimated_rewards)
        terms = self.terms(inputs)
        value, influence = combine(terms)
        self._warn_undefined(value)
        if method == "normal":
            se, low, high = normal_interval(value, influence, alpha)
            return Interval(value, se, low, high)
        if method != "bootstrap":
            raise ConfigurationError(f"method must be 'bootstrap' or 'normal', got {method!r}")
        reps = bootstrap_values([terms], n_bootstrap=n_bootstrap, seed=seed)[0]
        se, low, high = percentile_interval(reps, alpha)
        return Interval(value, se, low, high)


def check_alpha(alpha: float) -> None:
    if not 0.0 < float(alpha) < 1.0:
        raise ConfigurationError(f"alpha must be in (0, 1) (0.05 gives 95% intervals), got {alpha!r}")


# ---------------------------------------------------------------------- the estimators
@dataclass(frozen=True)
class DirectMethod(OffPolicyEstimator):
    """DM: the reward model's value of the target, ``mean_i Σ_a π(a|x_i)·q̂(x_i, a)``. Low variance, biased by
    the reward model's errors; ignores the logged rewards except through the model's fit.

    Args:
        name: label in result tables.
    """

    name: str = "DM"
    needs_reward_model: ClassVar[bool] = True

    def terms(self, inputs: Inputs) -> Terms:
        assert inputs.dm is not None
        return Terms(((inputs.dm, None),), None)


@dataclass(frozen=True)
class _Weighted(OffPolicyEstimator):
    """Shared propensity handling: ``min_pscore`` floors the propensities, ``max_weight`` clips the weights."""

    max_weight: float = math.inf
    min_pscore: float = 0.0
    name: str = ""
    #: divide by the mean weight (SNIPS) instead of n (IPS).
    self_normalized: ClassVar[bool] = False

    def __post_init__(self) -> None:
        mw = float(self.max_weight)
        if not mw > 0 or math.isnan(mw):
            raise ConfigurationError(
                f"max_weight must be > 0 (inf disables clipping), got {self.max_weight!r}"
            )
        mp = float(self.min_pscore)
        if not 0.0 <= mp <= 1.0:
            raise ConfigurationError(
                f"min_pscore must be in [0, 1] (0 disables the floor), got {self.min_pscore!r}"
            )

    def weights(self, inputs: Inputs) -> np.ndarray:
        """``(n,)`` importance weights ``π(a|x) / max(pscore, min_pscore)``, clipped at ``max_weight``.

        The array is shared through ``inputs.cache``: callers must not modify it in place.
        """
        key = (float(self.min_pscore), float(self.max_weight))
        cached = inputs.cache.get(key)
        if cached is not None:
            return cached
        p = inputs.pscore
        if self.min_pscore > 0:
            p = np.maximum(p, self.min_pscore)
        zero = p <= 0
        if zero.any():
            raise SchemaError(
                f"pscore is 0 on {int(zero.sum())} rounds (first: row {int(np.flatnonzero(zero)[0])}): the "
                f"importance weight is undefined. Floor it explicitly with {type(self).__name__}(min_pscore=...) "
                "or drop those rounds"
            )
        w = inputs.pi_logged / p
        if math.isfinite(self.max_weight):
            w = np.minimum(w, self.max_weight)
        inputs.cache[key] = w
        return w

    def terms(self, inputs: Inputs) -> Terms:
        """Weighted rewards: ``mean(w·r)``, divided by ``mean(w)`` when :attr:`self_normalized`."""
        w = self.weights(inputs)
        return Terms(((w * inputs.reward, w if self.self_normalized else None),), w)


@dataclass(frozen=True)
class InverseProbabilityWeighting(_Weighted):
    """IPS: ``mean(w·r)``. Unbiased when the logger covers the target's support and nothing is clipped.

    Args:
        max_weight: clip importance weights at this value (bias for variance); ``inf`` = no clipping.
        min_pscore: floor propensities at this value before dividing (use for logs with rounded-to-0 values).
        name: label in result tables.
    """

    name: str = "IPS"


@dataclass(frozen=True)
class SelfNormalizedInverseProbabilityWeighting(_Weighted):
    """SNIPS: ``Σ w·r / Σ w``. Slightly biased, much less variable than IPS, invariant to a reward shift.

    Args: as :class:`InverseProbabilityWeighting`.
    """

    name: str = "SNIPS"
    self_normalized: ClassVar[bool] = True


@dataclass(frozen=True)
class _Corrected(_Weighted):
    """The DR family: ``mean(dm + w̃·(r − q̂(x, a)))`` with the importance weights ``w`` adjusted to ``w̃`` by
    :meth:`adjust` (identity for DR)."""

    needs_reward_model: ClassVar[bool] = True

    def adjust(self, w: np.ndarray) -> np.ndarray:
        """``(n,)`` the weights the correction term applies."""
        return w

    def terms(self, inputs: Inputs) -> Terms:
        assert inputs.dm is not None and inputs.q_logged is not None
        w = self.adjust(self.weights(inputs))
        return Terms(((inputs.dm + w * (inputs.reward - inputs.q_logged), None),), w)


@dataclass(frozen=True)
class DoublyRobust(_Corrected):
    """DR: ``mean(dm + w·(r − q̂(x, a)))``. Unbiased when the weights are right, whatever the reward model;
    low variance when the model is good.

    Args: as :class:`InverseProbabilityWeighting`.
    """

    name: str = "DR"


@dataclass(frozen=True)
class SelfNormalizedDoublyRobust(_Weighted):
    """SNDR: ``mean(dm) + Σ w·(r − q̂(x, a)) / Σ w``.

    Args: as :class:`InverseProbabilityWeighting`.
    """

    name: str = "SNDR"
    needs_reward_model: ClassVar[bool] = True

    def terms(self, inputs: Inputs) -> Terms:
        assert inputs.dm is not None and inputs.q_logged is not None
        w = self.weights(inputs)
        return Terms(((inputs.dm, None), (w * (inputs.reward - inputs.q_logged), w)), w)


@dataclass(frozen=True)
class SwitchDoublyRobust(_Corrected):
    """Switch-DR: DR on rounds whose weight is at most ``tau``, DM alone on the others.

    Args:
        tau: switching threshold on the importance weight (``inf`` gives DR, 0 gives DM). The default 10 keeps
            the correction for targets up to 10× more likely than the logger on the logged action.
        max_weight, min_pscore: as :class:`InverseProbabilityWeighting`.
        name: label in result tables.
    """

    tau: float = 10.0
    name: str = "SwitchDR"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not float(self.tau) >= 0:
            raise ConfigurationError(f"tau must be ≥ 0 (inf gives DR), got {self.tau!r}")

    def adjust(self, w: np.ndarray) -> np.ndarray:
        return np.where(w <= self.tau, w, 0.0)


@dataclass(frozen=True)
class DoublyRobustWithShrinkage(_Corrected):
    """DR-OS: DR with the weights shrunk to ``λw / (w² + λ)`` (optimistic shrinkage).

    Args:
        shrinkage: λ > 0; large values approach DR, small ones DM. The default 100 barely touches weights
            below 10 and damps the heavy tail.
        max_weight, min_pscore: as :class:`InverseProbabilityWeighting`.
        name: label in result tables.
    """

    shrinkage: float = 100.0
    name: str = "DRos"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not float(self.shrinkage) > 0:
            raise ConfigurationError(f"shrinkage must be > 0, got {self.shrinkage!r}")

    def adjust(self, w: np.ndarray) -> np.ndarray:
        lam = float(self.shrinkage)
        return w if math.isinf(lam) else lam * w / (w * w + lam)


@dataclass(frozen=True)
class Replay(OffPolicyEstimator):
    """Replay (rejection sampling, Li et al. 2011) for logs of a uniformly random logger.

    A logged round is kept when the target would have chosen the logged action; the estimate is the mean reward
    of kept rounds. For a stochastic target a round is kept with probability ``π(a|x)``; the expected-acceptance
    form ``Σ π(a|x)·r / Σ π(a|x)`` is used, which removes the acceptance draw's noise and is deterministic.

    Args:
        rtol: how far propensities may differ (relative) within a position and still count as uniform.
        name: label in result tables.

    Raises ``SchemaError`` when the propensities are not uniform: use SNIPS for other loggers.
    """

    rtol: float = 1e-6
    name: str = "Replay"

    def __post_init__(self) -> None:
        if not float(self.rtol) >= 0:
            raise ConfigurationError(f"rtol must be ≥ 0, got {self.rtol!r}")

    def terms(self, inputs: Inputs) -> Terms:
        p = inputs.pscore
        groups = (
            [np.ones(p.shape, dtype=bool)]
            if inputs.position is None
            else [inputs.position == s for s in np.unique(inputs.position)]
        )
        for g in groups:
            lo, hi = float(p[g].min()), float(p[g].max())
            if hi - lo > self.rtol * hi:
                raise SchemaError(
                    f"Replay needs a uniformly random logger, but pscore ranges over [{lo:.6g}, {hi:.6g}]"
                    f"{'' if inputs.position is None else ' within a position'}; use SNIPS or DR instead"
                )
        accept = inputs.pi_logged
        return Terms(((accept * inputs.reward, accept),), accept)


# Short names, as used in the literature and in result tables.
DM = DirectMethod
IPS = InverseProbabilityWeighting
SNIPS = SelfNormalizedInverseProbabilityWeighting
DR = DoublyRobust
SNDR = SelfNormalizedDoublyRobust
SwitchDR = SwitchDoublyRobust
DRos = DoublyRobustWithShrinkage

#: Estimator classes by their short name (lower-case lookups are accepted by :func:`make_estimator`).
ESTIMATORS: dict[str, type[OffPolicyEstimator]] = {
    "DM": DirectMethod,
    "IPS": InverseProbabilityWeighting,
    "SNIPS": SelfNormalizedInverseProbabilityWeighting,
    "DR": DoublyRobust,
    "SNDR": SelfNormalizedDoublyRobust,
    "SwitchDR": SwitchDoublyRobust,
    "DRos": DoublyRobustWithShrinkage,
    "Replay": Replay,
}
#: What :func:`routing_env.ope.estimate_policy_value` runs when no estimators are named.
DEFAULT_ESTIMATORS: tuple[str, ...] = ("DM", "IPS", "SNIPS", "DR", "SNDR", "SwitchDR", "DRos")


def make_estimator(spec: OffPolicyEstimator | str) -> OffPolicyEstimator:
    """An estimator instance from an instance (returned as is) or a short name such as ``"snips"``."""
    if isinstance(spec, OffPolicyEstimator):
        return spec
    if isinstance(spec, str):
        lookup = {k.lower(): v for k, v in ESTIMATORS.items()}
        cls = lookup.get(spec.strip().lower())
        if cls is not None:
            return cls()
    raise ConfigurationError(
        f"unknown estimator {spec!r}; expected an estimator instance or one of {list(ESTIMATORS)}"
    )
