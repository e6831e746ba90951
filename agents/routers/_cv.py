"""Cross-validation shared by every router that chooses a regularisation or smoothing hyperparameter on ``fit``.

- **Folds** (:func:`make_folds`): grouped K-fold over the training queries — every query with the same prompt text
  lands in one fold (duplicated prompts would otherwise leak their outcome), stratified by task (each task keeps its
  share in every fold), seeded.
- **Objective** (:class:`Objective`): scores routing decisions on held-out training queries with the reward
  ``quality − λ·cost/cost_scale``: with one λ the mean reward at that λ; with a grid of λ (a router serving a range
  of budgets) RouterBench's AIQ of the (cost, quality) points the router reaches at each λ, the hull anchored at the
  cheapest single model, over the single models' cost range. Values are exact on full-information logs, SNIPS
  estimates on bandit logs (propensities of the logged actions), and means over the observed choices on other
  partial logs.
- **Cheap solvers**: :func:`ridge_oof` gives the out-of-fold predictions of a per-model ridge for a whole grid of
  penalties from one eigendecomposition per fold; :func:`knn_oof` those of k-nearest-neighbour means for every k
  from one neighbour search per fold.

Feature statistics (standardisation, a clustering) are label-free and are fitted once on all training features;
the folds hide the outcomes only. Every router records the CV score of the values it chose (``cv_score_``), which
:func:`agents.routers.selection.select_router` compares across routers evaluated on the same folds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from routing_env.data.dataset import LoggedDataset
from routing_env.data.folds import DEFAULT_FOLDS, group_ids, make_folds
from routing_env.errors import ConfigurationError
from routing_env.metrics import aiq, frontier

__all__ = [
    "DEFAULT_FOLDS",
    "CVResult",
    "Objective",
    "Tunable",
    "default_cost_weights",
    "group_ids",
    "knn_oof",
    "make_folds",
    "outcome_weights",
    "paired_difference",
    "pick",
    "ridge_oof",
    "standardizer",
]

#: Scores closer than this to the best count as ties (won by the simpler value).
_TIE = 1e-6
#: Points of a λ grid between the cheapest and the dearest trade-off between single models.
_GRID_POINTS = 16


# ---------------------------------------------------------------------------------------------- settings
@dataclass(eq=False, kw_only=True)
class Tunable:
    """The cross-validation settings a router carries (a dataclass mixed into the router).

    Attributes:
        tune: choose the hyperparameters left at ``None`` by cross-validation on ``fit``; ``False`` uses each
            one's documented fallback instead. An explicit hyperparameter is never tuned.
        cv: number of grouped folds (≥ 2; capped at the number of distinct prompts).
        cv_cost_weights: the λ values the router is scored at: ``None`` scores mean reward at the λ given to
            ``fit``; several values score the AIQ over them (the router then serves that range at decision time).
    """

    tune: bool = True
    cv: int = DEFAULT_FOLDS
    cv_cost_weights: tuple[float, ...] | None = field(default=None, repr=False)

    #: Names of the attributes holding the values ``fit`` chose (shown by :meth:`chosen`).
    chosen_names: ClassVar[tuple[str, ...]] = ()

    def chosen(self) -> dict[str, Any]:
        """The hyperparameter values in use after ``fit`` (chosen by cross-validation or given), by name."""
        return {name.rstrip("_"): getattr(self, name) for name in self.chosen_names}

    def _validate_cv(self) -> None:
        if not isinstance(self.tune, (bool, np.bool_)):
            raise ConfigurationError(f"tune must be True or False, got {self.tune!r}")
        if isinstance(self.cv, bool) or not isinstance(self.cv, (int, np.integer)) or self.cv < 2:
            raise ConfigurationError(f"cv must be an int ≥ 2 (folds), got {self.cv!r}")
        self.cv = int(self.cv)
        if self.cv_cost_weights is not None:
            self.cv_cost_weights = check_cost_weights(self.cv_cost_weights, "cv_cost_weights")

    def _cv_hyperparameters(self) -> dict[str, Any]:
        weights = None if self.cv_cost_weights is None else list(self.cv_cost_weights)
        return {"tune": bool(self.tune), "cv": self.cv, "cv_cost_weights": weights}


def check_cost_weights(values: Any, name: str = "cost_weights") -> tuple[float, ...]:
    """``values`` as a sorted tuple of distinct finite λ ≥ 0 (at least one)."""
    if isinstance(values, (int, float, np.number)):
        values = (values,)
    try:
        weights = tuple(sorted({float(w) for w in values}))
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be a sequence of numbers ≥ 0, got {values!r}") from None
    if not weights or any(not math.isfinite(w) or w < 0 for w in weights):
        raise ConfigurationError(f"{name} must hold at least one finite number ≥ 0, got {values!r}")
    return weights


def default_cost_weights(dataset: LoggedDataset, cost_scale: float) -> tuple[float, ...]:
    """A λ grid that spans where the choice between the dataset's single models changes.

    The λ at which the best single model switches from one vertex of the single models' cost–quality hull to the
    next is the hull's slope ``Δquality / (Δcost / cost_scale)``; the grid is 0 plus ``16`` log-spaced values from a
    quarter of the smallest such slope to four times the largest, so that it adapts to any price structure (a
    10× or a 1000× price ratio alike). Returns ``(0.0, 1.0)`` when one model dominates.
    """
    with np.errstate(invalid="ignore"):
        q = np.nanmean(dataset.quality, axis=0)
        c = np.nanmean(dataset.cost, axis=0)
    ok = np.isfinite(q) & np.isfinite(c)
    if ok.sum() < 2:
        return (0.0, 1.0)
    hull = frontier(np.stack([c[ok], q[ok]], axis=1))
    if hull.shape[0] < 2:
        return (0.0, 1.0)
    slopes = np.diff(hull[:, 1]) / (np.diff(hull[:, 0]) / cost_scale)
    slopes = slopes[np.isfinite(slopes) & (slopes > 0)]
    if slopes.size == 0:
        return (0.0, 1.0)
    lo, hi = float(slopes.min()) / 4.0, float(slopes.max()) * 4.0
    return (0.0, *np.geomspace(lo, hi, _GRID_POINTS).tolist())


# ---------------------------------------------------------------------------------------------- data helpers
def outcome_weights(dataset: LoggedDataset, max_importance_weight: float | None = None) -> np.ndarray:
    """``(n, K) float64`` weight of each (query, model) cell when learning that model's outcomes.

    Full information: 1 everywhere. Bandit logs (propensities, not full information): the logged action's cell
    weighted by ``1/propensity`` (clipped at ``max_importance_weight``) and rescaled to average 1 per model, which
    corrects the logging policy's covariate shift without inflating a model's effective sample size. Other partial
    logs: 1 on the observed cells. Cells whose quality or cost is missing always weigh 0.
    """
    n, k = dataset.n_queries, dataset.n_models
    if dataset.is_full_information:
        weight = np.ones((n, k))
    elif dataset.has_propensities:
        assert dataset.logged_action is not None and dataset.propensity is not None
        iw = 1.0 / np.asarray(dataset.propensity, dtype=np.float64)
        if max_importance_weight is not None:
            iw = np.minimum(iw, float(max_importance_weight))
        weight = np.zeros((n, k))
        weight[np.arange(n), dataset.logged_action] = iw
        for a in range(k):
            m = weight[:, a] > 0
            if m.any():
                weight[m, a] /= weight[m, a].mean()
    else:
        weight = dataset.observed.astype(np.float64)
    return weight * (np.isfinite(dataset.quality) & np.isfinite(dataset.cost))


def standardizer(x: np.ndarray, center: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(mean (d,), scale (d,))`` that map ``x (n, d)`` to zero mean (when ``center``) and unit variance;
    constant columns keep scale 1."""
    mean = x.mean(axis=0) if center and x.shape[0] else np.zeros(x.shape[1])
    scale = x.std(axis=0) if x.shape[0] else np.ones(x.shape[1])
    scale = np.where(scale > 1e-12, scale, 1.0)
    return mean.astype(np.float64), scale.astype(np.float64)


# ---------------------------------------------------------------------------------------------- the objective
@dataclass(frozen=True)
class CVResult:
    """What a router's cross-validation chose.

    Attributes:
        values: the candidate values (or tuples of values) in grid order.
        scores: the CV score of each (higher is better): mean reward at one λ, or AIQ over a λ grid.
        best: index of the chosen value.
        metric: ``"mean_reward"`` or ``"aiq"``.
    """

    values: tuple[Any, ...]
    scores: tuple[float, ...]
    best: int
    metric: str

    @property
    def value(self) -> Any:
        return self.values[self.best]

    @property
    def score(self) -> float:
        return self.scores[self.best]


def pick(values: Sequence[Any], scores: Sequence[float], metric: str) -> CVResult:
    """The best-scoring value; among scores within ``1e-6`` of the best, the first (list the grid from the most
    regularised value on, so that ties — and differences of rounding size — go to the simpler model)."""
    arr = np.asarray(scores, dtype=np.float64)
    if arr.size == 0 or not np.isfinite(arr).any():
        raise ConfigurationError("cross-validation produced no finite score")
    arr = np.where(np.isfinite(arr), arr, -np.inf)
    best = int(np.flatnonzero(arr >= arr.max() - _TIE)[0])
    return CVResult(tuple(values), tuple(float(s) for s in arr), best, metric)


@dataclass(eq=False)
class Objective:
    """Scores routing decisions on (held-out) training queries.

    Args:
        dataset: the training logs the folds partition.
        cost_weights: λ values; one → mean reward at that λ; several → AIQ over them.
        cost_scale: USD per unit of λ (the router's ``cost_scale_``).
    """

    dataset: LoggedDataset
    cost_weights: tuple[float, ...]
    cost_scale: float
    mode: Literal["exact", "snips", "observed"] = field(init=False)

    def __post_init__(self) -> None:
        ds = self.dataset
        self.cost_weights = check_cost_weights(self.cost_weights, "cost_weights")
        self._q = np.nan_to_num(np.asarray(ds.quality, dtype=np.float64))
        self._c = np.nan_to_num(np.asarray(ds.cost, dtype=np.float64))
        if ds.is_full_information:
            self.mode = "exact"
        elif ds.has_propensities:
            assert ds.logged_action is not None and ds.propensity is not None
            self.mode = "snips"
            self._a = np.asarray(ds.logged_action, dtype=np.int64)
            self._pi = np.asarray(ds.propensity, dtype=np.float64)
        else:
            self.mode = "observed"
            self._obs = (np.isfinite(ds.quality) & np.isfinite(ds.cost)).astype(np.float64)
        k = ds.n_models
        singles = np.array([self.value(np.broadcast_to(np.eye(k)[j], (ds.n_queries, k))) for j in range(k)])
        finite = np.isfinite(singles).all(axis=1)
        self._singles = singles[finite] if finite.any() else singles
        cheapest = int(np.argmin(self._singles[:, 0]))
        self._anchor = self._singles[cheapest]
        self._range = (float(self._singles[:, 0].min()), float(self._singles[:, 0].max()))

    @property
    def metric(self) -> str:
        return "mean_reward" if len(self.cost_weights) == 1 else "aiq"

    def value(self, probs: np.ndarray) -> tuple[float, float]:
        """``(mean cost USD, mean quality)`` of routing with ``probs (n, K)``."""
        if self.mode == "exact":
            return float((probs * self._c).sum(axis=1).mean()), float((probs * self._q).sum(axis=1).mean())
        if self.mode == "snips":
            rows = np.arange(len(self._a))
            w = probs[rows, self._a] / self._pi
            total = w.sum()
            if total <= 0:
                return math.nan, math.nan
            return float((w * self._c[rows, self._a]).sum() / total), float(
                (w * self._q[rows, self._a]).sum() / total
            )
        mass = probs * self._obs
        total = mass.sum()
        if total <= 0:
            return math.nan, math.nan
        return float((mass * self._c).sum() / total), float((mass * self._q).sum() / total)

    def score_probabilities(self, probs_at: Callable[[float], np.ndarray]) -> float:
        """The objective of a router whose ``(n, K)`` routing distribution at λ is ``probs_at(λ)``."""
        points = [self.value(probs_at(lam)) for lam in self.cost_weights]
        if len(self.cost_weights) == 1:
            cost, quality = points[0]
            return quality - self.cost_weights[0] * cost / self.cost_scale
        pts = np.array([*points, tuple(self._anchor)])
        pts = pts[np.isfinite(pts).all(axis=1)]
        return aiq(pts, self._range)

    def gap_closed(self, score: float) -> float:
        """The share of the AIQ gap between the single models and the oracle that an AIQ of ``score`` closes
        (full-information logs and a λ grid only; NaN otherwise)."""
        if self.mode != "exact" or self.metric != "aiq" or not math.isfinite(score):
            return math.nan
        if not hasattr(self, "_gap"):
            from routing_env.metrics import oracle_points

            zero = aiq(self._singles, self._range)
            # The oracle can always answer as the cheapest model does.
            oracle = np.vstack([np.array([e.point for e in oracle_points(self.dataset)]), self._anchor])
            best = aiq(oracle, self._range)
            self._gap = (zero, best - zero)
        zero, width = self._gap
        return (score - zero) / width if width > 1e-12 else math.nan

    def fold_scores(self, folds: np.ndarray, quality: np.ndarray, cost: np.ndarray) -> np.ndarray:
        """``(F,)`` the objective of routing on ``quality``/``cost (n, K)`` estimates, on each fold's rows alone
        (each fold scored against its own single models), for standard errors of cross-validated differences."""
        cached = getattr(self, "_per_fold", None)
        if cached is None or not np.array_equal(cached[0], folds):
            parts = [
                (folds == f, Objective(self.dataset.filter(folds == f), self.cost_weights, self.cost_scale))
                for f in np.unique(folds)
            ]
            cached = self._per_fold = (np.array(folds), parts)
        return np.array([obj.score(quality[rows], cost[rows]) for rows, obj in cached[1]])

    def score(self, quality: np.ndarray, cost: np.ndarray, bonus: np.ndarray | None = None) -> float:
        """The objective of routing to ``argmax(quality − λ·cost/cost_scale + bonus)`` (ties share the mass) with
        estimates ``quality (n, K)``, ``cost (n, K)`` USD and an optional exploration ``bonus (n, K)``."""
        from agents.routers._common import greedy_probabilities

        base = quality if bonus is None else quality + bonus

        def probs(lam: float) -> np.ndarray:
            return greedy_probabilities(base - (lam / self.cost_scale) * cost)

        return self.score_probabilities(probs)


def paired_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """``(mean, standard error)`` of ``a − b`` over paired fold scores ``a (F,)``, ``b (F,)``."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size < 2:
        return float(d.mean()) if d.size else math.nan, math.inf
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))


# ---------------------------------------------------------------------------------------------- solvers
def ridge_oof(
    x: np.ndarray,
    targets: Sequence[np.ndarray] | Callable[[np.ndarray], Sequence[np.ndarray]],
    folds: np.ndarray,
    alphas: Sequence[float],
    weight: np.ndarray | None = None,
    *,
    center_targets: bool = True,
    widths: bool = False,
) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Out-of-fold predictions of a per-model ridge regression for every penalty of ``alphas``.

    For model ``k`` and penalty ``α`` the fit on the other folds is ``θ = (α·I + XᵀW_kX)⁻¹ XᵀW_k (y_k − m_k)``
    plus ``m_k``, the weighted mean of ``y_k`` there (with ``center_targets``; the penalty then shrinks towards the
    model's mean rather than towards 0): one eigendecomposition of ``XᵀW_kX`` per fold (shared by all models when
    ``weight`` is ``None`` or equal across models, as on full-information logs) gives every ``α`` at the cost of
    matrix products. This is exactly the warm start of the linear bandits.

    Args:
        x: ``(n, p)`` design rows (the bandits append their constant column).
        targets: each ``(n, K)``: one target per model (e.g. quality and cost); cells of weight 0 are ignored.
            Or a function of the boolean ``(n,)`` training mask of a fold returning them (targets that depend on
            the fold, such as residuals of a model fitted on it); only the training rows are read.
        folds: ``(n,)`` fold ids from :func:`make_folds`.
        alphas: penalties > 0.
        weight: ``(n, K)`` row weights per model (0 = the cell does not train that model); ``None`` = all 1.
        center_targets: fit ``y − m_k`` and add ``m_k`` back.
        widths: also return ``sqrt(xᵀ(α·I + XᵀW_kX)⁻¹x)`` (LinUCB's confidence width).

    Returns:
        ``(predictions, widths)``: one ``(len(alphas), n, K)`` array per target, and ``(len(alphas), n, K)`` or
        ``None``.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    alphas_arr = np.asarray(alphas, dtype=np.float64)
    w_all = None if weight is None else np.asarray(weight, dtype=np.float64)
    shared = w_all is None or bool(np.all(w_all == w_all[:, :1]))
    preds: list[np.ndarray] = []
    width_out: np.ndarray | None = None
    for f in np.unique(folds):
        tr, va = folds != f, folds == f
        fold_targets = targets(tr) if callable(targets) else targets
        ys = [np.nan_to_num(np.asarray(t, dtype=np.float64)[tr]) for t in fold_targets]
        k = ys[0].shape[1]
        if not preds:
            preds = [np.zeros((len(alphas_arr), n, k)) for _ in ys]
            width_out = np.zeros((len(alphas_arr), n, k)) if widths else None
        w_tr = np.ones((int(tr.sum()), k)) if w_all is None else w_all[tr]
        xt, xv = x[tr], x[va]
        for arm in [None] if shared else range(k):
            cols = slice(None) if arm is None else slice(arm, arm + 1)
            w = w_tr[:, 0] if arm is None else w_tr[:, arm]
            y_arm = [y[:, cols] for y in ys]
            means = [
                (w @ y) / max(float(w.sum()), 1e-300) if center_targets else np.zeros(y.shape[1])
                for y in y_arm
            ]
            s, vecs = np.linalg.eigh(xt.T @ (xt * w[:, None]))
            s = np.maximum(s, 0.0)
            proj = xv @ vecs
            moments = [vecs.T @ (xt.T @ ((y - m) * w[:, None])) for y, m in zip(y_arm, means)]
            for i, a in enumerate(alphas_arr):
                inv = 1.0 / (s + a)
                for t, (mom, m) in enumerate(zip(moments, means)):
                    preds[t][i, va, cols] = proj @ (mom * inv[:, None]) + m
                if width_out is not None:
                    width_out[i, va, cols] = np.sqrt(np.maximum((proj**2) @ inv, 0.0))[:, None]
    return preds, width_out


def knn_oof(
    z: np.ndarray,
    targets: Sequence[np.ndarray],
    folds: np.ndarray,
    ks: Sequence[int],
    distance_weighted: bool = False,
) -> list[np.ndarray]:
    """Out-of-fold k-nearest-neighbour means (Euclidean on ``z (n, d)``) of each ``(n, K)`` target for every
    ``k`` of ``ks``, from one neighbour search per fold; NaN cells are skipped (a model's mean over the
    neighbours where it was observed), and a model no neighbour observed gets its fold mean.

    Returns one ``(len(ks), n, K)`` array per target.
    """
    from sklearn.neighbors import NearestNeighbors

    ks_arr = np.asarray(ks, dtype=np.int64)
    n = z.shape[0]
    out = [np.zeros((len(ks_arr), n, t.shape[1])) for t in targets]
    for f in np.unique(folds):
        tr, va = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        kmax = int(min(ks_arr.max(), len(tr)))
        dist, idx = NearestNeighbors(n_neighbors=kmax).fit(z[tr]).kneighbors(z[va])
        w = 1.0 / np.maximum(dist, 1e-12) if distance_weighted else np.ones_like(dist)
        for t, target in enumerate(targets):
            vals = np.asarray(target, dtype=np.float64)[tr][idx]  # (n_va, kmax, K)
            seen = ~np.isnan(vals)
            ww = w[:, :, None] * seen
            num = np.cumsum(ww * np.where(seen, vals, 0.0), axis=1)
            den = np.cumsum(ww, axis=1)
            with np.errstate(invalid="ignore"):
                fallback = np.nan_to_num(np.nanmean(np.asarray(target, dtype=np.float64)[tr], axis=0))
            for i, kk in enumerate(ks_arr):
                j = min(int(kk), kmax) - 1
                d = den[:, j]
                out[t][i, va] = np.where(d > 0, num[:, j] / np.maximum(d, 1e-300), fallback[None, :])
    return out
