"""Routing metrics: exact policy value on full-information logs, the oracle, cost–quality frontiers, AIQ,
APGR, CPT and gap closed.

Two views of a router are used throughout:

- **A single operating point** (one cost weight λ): :func:`evaluate_policy` scores a :class:`~routing_env.policy.Policy`
  exactly on full-information logs — every model's outcome is known on every query, so the policy's expected
  quality, cost and reward are ``Σ_k p_ik · outcome_ik`` averaged over queries, with ``p = action_probabilities``.
  A stochastic policy is therefore scored by its expectation, never by one noisy sample.
- **A curve** of operating points (the same router family at several λ, or several thresholds): a set of
  ``(cost, quality)`` points. Mixing two routers at random attains every point on the segment between them, and
  spending more than needed never has to lower quality, so the attainable set is summarised by the
  *non-decreasing convex hull* (:func:`frontier`, RouterBench §3). :func:`aiq` is the mean height of that hull
  over a cost range (RouterBench's Average Improvement in Quality); :func:`gap_closed` is the share of the AIQ gap
  between the zero router (the hull of the single models) and the oracle that a router closes.

For two-model sets RouteLLM measures the curve against the share of calls that go to the strong model instead of
USD: the performance gap recovered ``PGR(c) = (q(c) − q_weak) / (q_strong − q_weak)``; :func:`apgr` is its average
over ``c ∈ [0, 1]`` and :func:`cpt` the smallest call share that recovers a given fraction of the gap.

Units: cost is USD per query; quality is in [0, 1] (mean correctness or normalised judge score); call shares are
fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from routing_env.data.dataset import CostScale, LoggedDataset
from routing_env.errors import ConfigurationError, ShapeError
from routing_env.policy import CascadePolicy, Policy, check_models

__all__ = [
    "PolicyEvaluation",
    "aiq",
    "apgr",
    "cost_at_quality",
    "cpt",
    "evaluate_cascade",
    "evaluate_policy",
    "evaluate_probabilities",
    "frontier",
    "frontier_value",
    "gap_closed",
    "oracle",
    "oracle_points",
    "single_model_points",
]

#: Tolerance on probability rows: float32 networks and softmaxes sum to 1 only up to rounding.
_PROB_ATOL = 1e-5


@dataclass(frozen=True)
class PolicyEvaluation:
    """The exact value of one policy at one cost weight on full-information logs.

    Attributes:
        models: the K model names, in the order of ``call_share``.
        cost_weight: λ used for ``mean_reward`` and ``regret``.
        n_queries: number of queries scored.
        mean_quality: expected quality per query, in [0, 1].
        mean_cost: expected USD cost per query.
        mean_reward: expected ``quality − λ·cost/cost_scale − latency_weight·latency_s`` per query.
        call_share: ``(K,)`` expected share of queries sent to each model (sums to 1).
        oracle_reward: mean reward of the per-query oracle at the same λ.
        regret: ``oracle_reward − mean_reward`` (≥ 0 up to rounding).
        cost_scale: USD amount one unit of λ charges (see :meth:`LoggedDataset.resolve_cost_scale`).
    """

    models: tuple[str, ...]
    cost_weight: float
    n_queries: int
    mean_quality: float
    mean_cost: float
    mean_reward: float
    call_share: tuple[float, ...]
    oracle_reward: float
    regret: float
    cost_scale: float

    @classmethod
    def from_outcomes(
        cls,
        models: tuple[str, ...],
        cost_weight: float,
        quality: np.ndarray,
        cost: np.ndarray,
        reward: np.ndarray,
        call_share: Iterable[float],
        oracle_reward: float,
        cost_scale: float,
    ) -> PolicyEvaluation:
        """The evaluation of per-query outcomes: ``quality``, ``cost`` (USD) and ``reward``, each ``(n,)``
        (expected values for a stochastic policy), with ``call_share (K,)`` and the oracle's mean reward."""
        mean_reward = float(reward.mean())
        return cls(
            models=models,
            cost_weight=cost_weight,
            n_queries=int(reward.shape[0]),
            mean_quality=float(quality.mean()),
            mean_cost=float(cost.mean()),
            mean_reward=mean_reward,
            call_share=tuple(float(v) for v in call_share),
            oracle_reward=oracle_reward,
            # Rounding can make a policy that equals the oracle look a hair better; regret is ≥ 0 by definition.
            regret=max(oracle_reward - mean_reward, 0.0),
            cost_scale=cost_scale,
        )

    def share(self, model: str) -> float:
        """Share of calls that go to ``model``."""
        if model not in self.models:
            raise ConfigurationError(f"model must be one of {list(self.models)}, got {model!r}")
        return self.call_share[self.models.index(model)]

    @property
    def point(self) -> tuple[float, float]:
        """``(mean_cost USD, mean_quality)``, the policy's point in the cost–quality plane."""
        return (self.mean_cost, self.mean_quality)

    def as_dict(self) -> dict[str, Any]:
        """A flat record for tables: scalars plus ``share_<model>`` columns."""
        row: dict[str, Any] = {
            "cost_weight": self.cost_weight,
            "n_queries": self.n_queries,
            "mean_quality": self.mean_quality,
            "mean_cost_usd": self.mean_cost,
            "mean_reward": self.mean_reward,
            "oracle_reward": self.oracle_reward,
            "regret": self.regret,
        }
        for m, s in zip(self.models, self.call_share):
            row[f"share_{m}"] = s
        return row


# ---------------------------------------------------------------------- exact policy value
def _require_full_information(dataset: LoggedDataset, what: str) -> None:
    if not isinstance(dataset, LoggedDataset):
        raise ConfigurationError(f"dataset must be a LoggedDataset, got {type(dataset).__name__}")
    dataset.require_full_information(what)
    if dataset.n_queries == 0:
        raise ConfigurationError(f"{what} needs at least one query, got an empty dataset")


def _check_cost_weight(cost_weight: float) -> float:
    lam = float(cost_weight)
    if not np.isfinite(lam) or lam < 0:
        raise ConfigurationError(f"cost_weight must be a finite number ≥ 0, got {cost_weight!r}")
    return lam


def _check_probabilities(probs: Any, n: int, k: int, source: str) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.shape != (n, k):
        raise ShapeError(f"{source} must have shape (n, K) = ({n}, {k}), got {p.shape}")
    if not np.isfinite(p).all() or (p < -_PROB_ATOL).any():
        raise ShapeError(f"{source} must be finite and ≥ 0, got values down to {float(np.nanmin(p))!r}")
    sums = p.sum(axis=1)
    bad = np.abs(sums - 1.0) > _PROB_ATOL * max(1, k)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ShapeError(
            f"{source} rows must sum to 1; row {i} sums to {float(sums[i])!r} ({int(bad.sum())} rows)"
        )
    return np.clip(p, 0.0, None)


def evaluate_probabilities(
    dataset: LoggedDataset,
    probabilities: np.ndarray,
    cost_weight: float = 0.0,
    *,
    latency_weight: float = 0.0,
    cost_scale: CostScale = "max_mean",
) -> PolicyEvaluation:
    """Exact value of routing with ``probabilities (n, K)`` (rows summing to 1) on full-information ``dataset``.

    Useful when one set of action probabilities is scored at several cost weights without recomputing it.
    """
    _require_full_information(dataset, "evaluate_probabilities")
    lam = _check_cost_weight(cost_weight)
    n, k = dataset.n_queries, dataset.n_models
    p = _check_probabilities(probabilities, n, k, "probabilities")
    rewards = dataset.rewards(lam, latency_weight, cost_scale)
    best = dataset.oracle_actions(lam, latency_weight, cost_scale, rewards=rewards)
    share = p.mean(axis=0)
    return PolicyEvaluation.from_outcomes(
        dataset.models,
        lam,
        quality=(p * dataset.quality).sum(axis=1),
        cost=(p * dataset.cost).sum(axis=1),
        reward=(p * rewards).sum(axis=1),
        call_share=share / share.sum(),
        oracle_reward=float(rewards[np.arange(n), best].mean()),
        cost_scale=dataset.resolve_cost_scale(cost_scale),
    )


def evaluate_policy(
    dataset: LoggedDataset,
    policy: Policy,
    cost_weight: float = 0.0,
    *,
    latency_weight: float = 0.0,
    cost_scale: CostScale = "max_mean",
) -> PolicyEvaluation:
    """Exact expected quality, cost (USD), reward, call shares and regret of ``policy`` on ``dataset``.

    Args:
        dataset: full-information logs (every model observed on every query); partial logs need OPE.
        policy: any :class:`~routing_env.policy.Policy` over ``dataset.models`` (same names, same order). Its
            ``action_probabilities(dataset.features)`` is used as is — the policy is not asked to sample, and a
            cost-aware policy is scored at the cost weight it currently holds.
        cost_weight: λ ≥ 0 of the reward ``quality − λ·cost/cost_scale − latency_weight·latency_s``.
        latency_weight: weight per second of latency (needs latency in the data when non-zero).
        cost_scale: ``"max_mean"`` (mean cost of the most expensive model) or a USD amount.

    Returns:
        A frozen :class:`PolicyEvaluation`.
    """
    _require_full_information(dataset, "evaluate_policy")
    if not isinstance(policy, Policy):
        raise ConfigurationError(
            f"policy must implement the Policy protocol (models, action_probabilities), got {type(policy).__name__}"
        )
    check_models(policy.models, dataset.models)
    probs = policy.action_probabilities(dataset.features)
    return evaluate_probabilities(
        dataset,
        _check_probabilities(
            probs, dataset.n_queries, dataset.n_models, "policy.action_probabilities(features)"
        ),
        cost_weight,
        latency_weight=latency_weight,
        cost_scale=cost_scale,
    )


def oracle(
    dataset: LoggedDataset,
    cost_weight: float = 0.0,
    *,
    latency_weight: float = 0.0,
    cost_scale: CostScale = "max_mean",
) -> PolicyEvaluation:
    """The per-query oracle at ``cost_weight``: each query goes to ``argmax(reward)``, ties to the cheaper model.

    It sees the outcomes, so it is an upper bound for any router at that λ, not a router itself.
    """
    _require_full_information(dataset, "oracle")
    lam = _check_cost_weight(cost_weight)
    best = dataset.oracle_actions(lam, latency_weight, cost_scale)
    probs = np.zeros((dataset.n_queries, dataset.n_models))
    probs[np.arange(dataset.n_queries), best] = 1.0
    return evaluate_probabilities(dataset, probs, lam, latency_weight=latency_weight, cost_scale=cost_scale)


def evaluate_cascade(
    dataset: LoggedDataset,
    policy: CascadePolicy,
    cost_weight: float = 0.0,
    *,
    cost_scale: CostScale = "max_mean",
) -> PolicyEvaluation:
    """Exact expected quality, cost (USD of every call made) and reward of a stop-or-escalate ``policy``.

    The chain's first model is always called; after ``s`` calls the policy sees the features and the ``s``
    logged signals and stops with probability ``stop_probabilities``; the last model's answer is always accepted.
    The expectation over the policy's randomness is computed in closed form (probability of reaching each stage),
    so stochastic cascades are scored exactly. Needs full-information logs with ``signal``.

    ``call_share`` is the expected share of answers returned by each of ``dataset.models``; the reward is
    ``quality of the accepted answer − cost_weight·(USD of all calls)/cost_scale``.
    """
    _require_full_information(dataset, "evaluate_cascade")
    lam = _check_cost_weight(cost_weight)
    if dataset.signal is None:
        raise ConfigurationError("evaluate_cascade needs per-call signals, and the dataset has no signal")
    chain = tuple(policy.chain)
    if len(chain) < 1:
        raise ConfigurationError(f"the policy's chain must name at least one model, got {list(chain)}")
    unknown = [m for m in chain if m not in dataset.models]
    if unknown:
        raise ConfigurationError(f"the policy's chain names models {unknown} that the dataset lacks")
    idx = np.array([dataset.model_index(m) for m in chain], dtype=np.int64)
    n = dataset.n_queries
    signals = np.nan_to_num(dataset.signal[:, idx].astype(np.float64))
    quality = dataset.quality[:, idx]
    spent = np.cumsum(dataset.cost[:, idx], axis=1)
    reach = np.ones(n)
    accept = np.zeros((n, len(chain)))
    for s in range(1, len(chain)):
        p_stop = np.asarray(policy.stop_probabilities(dataset.features, signals[:, :s]), dtype=np.float64)
        if p_stop.shape != (n,) or not np.isfinite(p_stop).all() or (p_stop < 0).any() or (p_stop > 1).any():
            raise ShapeError(
                f"stop_probabilities must return (n,) = ({n},) values in [0, 1], got {p_stop.shape}"
            )
        accept[:, s - 1] = reach * p_stop
        reach = reach * (1.0 - p_stop)
    accept[:, -1] = reach
    scale = dataset.resolve_cost_scale(cost_scale)
    q = (accept * quality).sum(axis=1)
    c = (accept * spent).sum(axis=1)
    reward = q - (lam / scale) * c
    rewards = dataset.rewards(lam, cost_scale=cost_scale)
    best = dataset.oracle_actions(lam, cost_scale=cost_scale, rewards=rewards)
    share = np.zeros(dataset.n_models)
    np.add.at(share, idx, accept.mean(axis=0))
    oracle_reward = float(rewards[np.arange(n), best].mean())
    return PolicyEvaluation.from_outcomes(dataset.models, lam, q, c, reward, share, oracle_reward, scale)


#: λ grid used to trace the oracle's frontier: 0, then log-spaced over eight decades.
DEFAULT_ORACLE_WEIGHTS = (0.0, *np.geomspace(1e-4, 1e4, 81).tolist())


def oracle_points(
    dataset: LoggedDataset,
    cost_weights: Sequence[float] = DEFAULT_ORACLE_WEIGHTS,
    *,
    cost_scale: CostScale = "max_mean",
) -> list[PolicyEvaluation]:
    """The oracle at every λ of ``cost_weights``; its ``point`` s trace the oracle's cost–quality frontier.

    Each λ gives a vertex of the oracle's convex hull (Lagrangian duality), so a dense log-spaced grid recovers
    the hull; the default spans λ from 1e-4 to 1e4 plus 0.
    """
    return [oracle(dataset, lam, cost_scale=cost_scale) for lam in cost_weights]


def single_model_points(dataset: LoggedDataset) -> np.ndarray:
    """``(K, 2)`` ``(mean cost USD, mean quality)`` of always calling each model (the zero router's vertices)."""
    _require_full_information(dataset, "single_model_points")
    return np.stack([dataset.cost.mean(axis=0), dataset.quality.mean(axis=0)], axis=1)


# ---------------------------------------------------------------------- frontiers
def _as_points(points: Any, name: str = "points") -> np.ndarray:
    if isinstance(points, PolicyEvaluation):
        points = [points]
    if isinstance(points, (list, tuple)) and points and isinstance(points[0], PolicyEvaluation):
        points = [p.point for p in points]
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] == 0:
        raise ShapeError(f"{name} must be a non-empty (m, 2) array of (cost, quality), got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise ShapeError(f"{name} must be finite, got NaN or inf")
    return pts


def frontier(points: Any) -> np.ndarray:
    """RouterBench's non-decreasing convex hull of ``points (m, 2)`` = ``(cost, quality)``.

    Returns the hull's vertices ``(h, 2)`` sorted by cost: the first is the cheapest point (the best quality at
    that cost), the last the best-quality point (the cheapest among equals); slopes strictly decrease and are
    positive, so the hull is increasing and concave. Between vertices the attainable quality is the linear
    interpolation (a random mix of the two operating points); past the last vertex it stays flat (more budget
    need not be spent).

    ``points`` may also be a sequence of :class:`PolicyEvaluation`.
    """
    pts = _as_points(points)
    # Sort by cost, then best quality first so the first point of each cost is the one that counts.
    order = np.lexsort((-pts[:, 1], pts[:, 0]))
    pts = pts[order]
    # Pareto filter: keep points strictly better than every cheaper one.
    keep = [0]
    for i in range(1, len(pts)):
        if pts[i, 1] > pts[keep[-1], 1]:
            keep.append(i)
    pareto = pts[keep]
    # Upper hull (Andrew's monotone chain) of the Pareto points.
    hull: list[np.ndarray] = []
    for p in pareto:
        while len(hull) >= 2:
            o, a = hull[-2], hull[-1]
            cross = (a[0] - o[0]) * (p[1] - o[1]) - (a[1] - o[1]) * (p[0] - o[0])
            if cross >= 0:  # a lies on or below the chord o→p
                hull.pop()
            else:
                break
        hull.append(p)
    return np.array(hull, dtype=np.float64)


def frontier_value(hull: np.ndarray, cost: np.ndarray | float) -> np.ndarray:
    """Quality of the hull vertices ``hull (h, 2)`` at ``cost`` (flat past the last vertex, NaN before the first)."""
    c = np.asarray(cost, dtype=np.float64)
    out = np.interp(c, hull[:, 0], hull[:, 1], left=np.nan, right=hull[-1, 1])
    return np.where(c < hull[0, 0] - 1e-12 * max(1.0, abs(hull[0, 0])), np.nan, out)


def _integral(hull: np.ndarray, lo: float, hi: float) -> float:
    """∫_lo^hi of the hull's piecewise-linear curve (flat past the last vertex); lo ≥ the first vertex."""
    xs = np.concatenate([[lo], hull[(hull[:, 0] > lo) & (hull[:, 0] < hi), 0], [hi]])
    ys = np.interp(xs, hull[:, 0], hull[:, 1], right=hull[-1, 1])
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))


def _integral_log(hull: np.ndarray, lo: float, hi: float) -> float:
    """∫_lo^hi hull(c) d(ln c) for 0 < lo ≤ hi: on a segment q = a + b·c this is a·ln(c2/c1) + b·(c2 − c1)."""
    xs = np.concatenate([[lo], hull[(hull[:, 0] > lo) & (hull[:, 0] < hi), 0], [hi]])
    ys = np.interp(xs, hull[:, 0], hull[:, 1], right=hull[-1, 1])
    x1, x2, y1, y2 = xs[:-1], xs[1:], ys[:-1], ys[1:]
    width = x2 - x1
    slope = np.divide(y2 - y1, width, out=np.zeros_like(width), where=width > 0)
    intercept = y1 - slope * x1
    return float(np.sum(intercept * np.log(x2 / x1) + slope * width))


def _check_range(cost_range: tuple[float, float] | None, default: tuple[float, float]) -> tuple[float, float]:
    lo, hi = default if cost_range is None else (float(cost_range[0]), float(cost_range[1]))
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi < lo:
        raise ConfigurationError(f"cost_range must be finite (low, high) with low ≤ high, got {cost_range!r}")
    return lo, hi


def aiq(points: Any, cost_range: tuple[float, float] | None = None, *, log_cost: bool = False) -> float:
    """Average quality of the frontier of ``points (m, 2)`` over ``cost_range`` (RouterBench's AIQ).

    ``AIQ = 1/(c_max − c_min) · ∫_{c_min}^{c_max} hull(c) dc`` with the hull of :func:`frontier` (flat past its
    last vertex). ``cost_range`` defaults to the points' own cost range; compare several routers on one common
    range (e.g. from the cheapest to the most expensive single model). The range must not start below the
    hull's cheapest point — the router cannot operate there; add an anchor such as the cheapest model's point,
    which every router family can fall back to. A zero-width range returns the hull's quality at that cost.

    ``log_cost=True`` averages over ``log(cost)`` instead (the same hull, each factor of cost weighted alike),
    which keeps the cheap end visible when prices span orders of magnitude; it needs a range with low > 0.
    """
    hull = frontier(points)
    pts = _as_points(points)
    lo, hi = _check_range(cost_range, (hull[0, 0], float(pts[:, 0].max())))
    if lo < hull[0, 0] - 1e-9 * max(1.0, abs(hull[0, 0])):
        raise ConfigurationError(
            f"cost_range starts at {lo!r} USD, below the cheapest point of the frontier ({hull[0, 0]!r} USD); "
            "add an anchor point there (e.g. the cheapest single model) or start the range higher"
        )
    lo = max(lo, float(hull[0, 0]))
    if hi - lo <= 0:
        return float(frontier_value(hull, lo))
    if log_cost:
        if lo <= 0:
            raise ConfigurationError(f"log_cost=True needs a cost range above 0 USD, got ({lo!r}, {hi!r})")
        return _integral_log(hull, lo, hi) / float(np.log(hi / lo))
    return _integral(hull, lo, hi) / (hi - lo)


def gap_closed(
    router_points: Any,
    single_points: Any,
    oracle_points: Any,
    cost_range: tuple[float, float] | None = None,
    *,
    log_cost: bool = False,
) -> float:
    """Share of the AIQ gap between the zero router and the oracle that a router closes.

    ``(AIQ(router) − AIQ(zero)) / (AIQ(oracle) − AIQ(zero))`` where the zero router is the frontier of the single
    models ``single_points (K, 2)`` — what random mixing of fixed models attains without looking at the query.
    1 means oracle-level routing, 0 no better than mixing fixed models, < 0 worse. ``cost_range`` defaults to the
    single models' cost range (cheapest to most expensive model). ``log_cost`` as in :func:`aiq`.
    """
    single = _as_points(single_points, "single_points")
    lo, hi = _check_range(cost_range, (float(single[:, 0].min()), float(single[:, 0].max())))
    zero = aiq(single, (lo, hi), log_cost=log_cost)
    best = aiq(oracle_points, (lo, hi), log_cost=log_cost)
    if best - zero <= 1e-12:
        raise ConfigurationError(
            f"the oracle's AIQ ({best:.6g}) does not exceed the zero router's ({zero:.6g}) on cost range "
            f"({lo:.6g}, {hi:.6g}); gap closed is undefined"
        )
    return (aiq(router_points, (lo, hi), log_cost=log_cost) - zero) / (best - zero)


def cost_at_quality(points: Any, target: float) -> float:
    """Least cost at which the frontier of ``points (m, 2)`` reaches quality ``target`` (NaN if it never does).

    The first coordinate may be USD or, for two-model sets, the strong model's call share.
    """
    hull = frontier(points)
    t = float(target)
    if not np.isfinite(t):
        raise ConfigurationError(f"target must be a finite quality, got {target!r}")
    if t <= hull[0, 1]:
        return float(hull[0, 0])
    if t > hull[-1, 1] + 1e-12:
        return float("nan")
    # The hull is strictly increasing, so quality → cost is a function.
    return float(np.interp(t, hull[:, 1], hull[:, 0]))


# ---------------------------------------------------------------------- two-model metrics (RouteLLM)
def _two_model_curve(
    strong_share: Iterable[float] | np.ndarray,
    quality: Iterable[float] | np.ndarray,
    weak_quality: float,
    strong_quality: float,
    hull: bool,
) -> np.ndarray:
    share = np.asarray(
        list(strong_share) if not isinstance(strong_share, np.ndarray) else strong_share, float
    )
    qual = np.asarray(list(quality) if not isinstance(quality, np.ndarray) else quality, float)
    if share.ndim != 1 or share.shape != qual.shape:
        raise ShapeError(
            f"strong_share and quality must be 1-D arrays of one length, got {share.shape} and {qual.shape}"
        )
    if not (np.isfinite(share).all() and np.isfinite(qual).all()):
        raise ShapeError("strong_share and quality must be finite")
    if ((share < -1e-9) | (share > 1 + 1e-9)).any():
        raise ConfigurationError(
            f"strong_share holds call shares in [0, 1], got values {float(share.min())!r}..{float(share.max())!r} "
            "(percentages must be divided by 100)"
        )
    wq, sq = float(weak_quality), float(strong_quality)
    if not (np.isfinite(wq) and np.isfinite(sq)) or sq <= wq:
        raise ConfigurationError(
            f"strong_quality must exceed weak_quality for a performance gap, got weak={weak_quality!r}, "
            f"strong={strong_quality!r}"
        )
    # Every threshold router reaches both ends: all-weak at share 0, all-strong at share 1.
    pts = np.concatenate([[[0.0, wq]], np.stack([np.clip(share, 0, 1), qual], axis=1), [[1.0, sq]]])
    if hull:
        return frontier(pts)
    # RouteLLM's raw curve: points in call-share order, joined by straight lines; a share logged twice keeps
    # its mean quality.
    xs, inv = np.unique(pts[:, 0], return_inverse=True)
    ys = np.bincount(inv, weights=pts[:, 1]) / np.bincount(inv)
    return np.stack([xs, ys], axis=1)


def apgr(
    strong_share: Iterable[float] | np.ndarray,
    quality: Iterable[float] | np.ndarray,
    *,
    weak_quality: float,
    strong_quality: float,
    hull: bool = True,
) -> float:
    """Average performance gap recovered over the strong model's call share (RouteLLM).

    ``APGR = ∫_0^1 (q(c) − q_weak) / (q_strong − q_weak) dc`` where ``q(c)`` is the router's quality when a share
    ``c`` of the queries goes to the strong model. The curve runs through the router's operating points
    ``(strong_share[i], quality[i])`` and the two ends every threshold router reaches, ``(0, weak_quality)`` and
    ``(1, strong_quality)``. With ``hull=True`` (default) it is the non-decreasing convex hull of those points
    (random mixing attains it; extra strong calls need not lower quality), which is how the oracle's ≈ 1.30 on
    MMLU arises; ``hull=False`` joins the points in share order as RouteLLM's evaluation does.
    A random router scores 0.5; the weak model alone 0.
    """
    curve = _two_model_curve(strong_share, quality, weak_quality, strong_quality, hull)
    area = _integral(curve, 0.0, 1.0) if hull else float(np.trapezoid(curve[:, 1], curve[:, 0]))
    wq, sq = float(weak_quality), float(strong_quality)
    return (area - wq) / (sq - wq)


def cpt(
    strong_share: Iterable[float] | np.ndarray,
    quality: Iterable[float] | np.ndarray,
    x: float,
    *,
    weak_quality: float,
    strong_quality: float,
    hull: bool = True,
) -> float:
    """Call-performance threshold: the least strong-model call share at which the router recovers a fraction
    ``x`` of the performance gap, i.e. reaches ``q_weak + x·(q_strong − q_weak)`` (RouteLLM's CPT(x)).

    ``x`` is a fraction in [0, 1] (``0.5`` for CPT(50%)). Returns a call share in [0, 1]; the curve always
    reaches the target by share 1, where every router is the strong model.
    """
    xf = float(x)
    if not 0.0 <= xf <= 1.0:
        raise ConfigurationError(f"x must be a fraction of the gap in [0, 1] (0.5 for CPT(50%)), got {x!r}")
    curve = _two_model_curve(strong_share, quality, weak_quality, strong_quality, hull)
    target = float(weak_quality) + xf * (float(strong_quality) - float(weak_quality))
    if hull:
        return cost_at_quality(curve, target)
    reached = curve[:, 1] >= target - 1e-12
    i = int(np.argmax(reached))
    if i == 0:
        return float(curve[0, 0])
    (x0, y0), (x1, y1) = curve[i - 1], curve[i]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))
