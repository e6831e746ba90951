"""Choosing a router for a user's logs: :func:`select_router` fits every candidate family with its own
cross-validation, scores their average too, and keeps a router by the one-standard-error rule.

Every candidate is scored on the same grouped folds (same seed) by the same objective (:mod:`agents.routers._cv`):
the AIQ over ``cost_weights`` (mean reward when one λ is given). Each candidate's score is the one of the values
its own cross-validation chose, so a family with more values to choose from gets a slightly optimistic score;
the families here choose among 4–16 values each.

Cross-validation sees the training logs' distribution only, and the routers' scores on it often differ by less
than their noise. So the router kept is the first of (the candidates' average, then the candidates from the
simplest) whose score is within one standard error of the best: the average unless one router is clearly better.

The candidates estimate a model's cost by its mean over a group of queries (a task, a cluster, neighbours), while a
call's price follows the prompt's length. So each candidate is also scored with the per-query costs of one
:class:`~agents.routers.CostModel` (rows ``<name>+cost-model``: an :class:`EnsembleRouter` of the candidate, or of
the average's members, with that cost model), and each candidate enters the rule with whichever of its two cost
sources scores higher; where every call of a model has one price, the cost model keeps its mean and nothing changes.

AIQ over linear USD weighs the expensive end of the cost range: a router can win it and still lose to the best
single model where cost dominates (large λ). So the kept router's out-of-fold reward is also compared with the
best single model's at every λ of the grid; where it is not higher by one standard error, :class:`GuardedRouter`
routes as the best single model at that λ instead.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agents.routers._common import (
    _finite,
    draw,
    greedy_probabilities,
    reading_saved,
    rng_from_state,
    rng_state,
)
from agents.routers._cv import (
    DEFAULT_FOLDS,
    Objective,
    check_cost_weights,
    default_cost_weights,
    group_ids,
    make_folds,
    outcome_weights,
    paired_difference,
)
from agents.routers.bandits import EpsilonGreedy, LinearThompsonSampling, LinUCB, SoftmaxBandit
from agents.routers.cost import CostModel
from agents.routers.ensemble import EnsembleRouter
from agents.routers.predictive import KNNRouter, LogisticRouter, MLPRouter
from agents.routers.tables import ClusterRouter, TaskTableRouter
from routing_env.data.dataset import LoggedDataset
from routing_env.errors import ConfigurationError, RoutingEnvError
from routing_env.policy import load_policy, register_policy, write_policy_dir

__all__ = [
    "DEFAULT_CANDIDATES",
    "ROUTER_FAMILIES",
    "GuardedRouter",
    "Selection",
    "make_router",
    "select_router",
]

#: Router families by the name ``select_router`` and ``routing-env train --router`` know them under.
ROUTER_FAMILIES: Mapping[str, type] = {
    "task-table": TaskTableRouter,
    "cluster": ClusterRouter,
    "linucb": LinUCB,
    "thompson": LinearThompsonSampling,
    "epsilon-greedy": EpsilonGreedy,
    "softmax": SoftmaxBandit,
    "logistic": LogisticRouter,
    "knn": KNNRouter,
    "mlp": MLPRouter,
}
#: What :func:`select_router` compares by default: the task table (the floor), the clustering router, the
#: cost-aware ridge bandit and the two cheapest predictive routers. The MLP is left out for its fitting time.
DEFAULT_CANDIDATES: tuple[str, ...] = ("task-table", "cluster", "linucb", "logistic", "knn")
#: Standard errors of the one-standard-error rule and of the guard against the best single model.
DEFAULT_SE = 1.0


@dataclass(frozen=True)
class Selection:
    """What :func:`select_router` chose.

    Attributes:
        router: the fitted router with the best cross-validated score; it serves every λ of ``cost_weights``
            (set ``router.cost_weight`` or pass ``cost_weight=`` to ``action_probabilities``).
        table: one row per candidate: ``router`` (name), ``kind`` (class), ``chosen`` (its hyperparameters after
            fitting), ``cv_score`` (AIQ over ``cost_weights``, or mean reward for one λ), ``cv_gap_closed`` (share
            of the gap between the single models and the oracle closed, on full-information logs), ``fit_seconds``
            (for a ``+cost-model`` row: fitting the cost model, the candidate's own time is on its row),
            ``selected``, and ``note`` (why a candidate was skipped).
        cost_weights: the λ values the candidates were scored at.
        metric: ``"aiq"`` or ``"mean_reward"``.
        candidates: every fitted candidate in table order (``None`` where one was skipped), unguarded.
    """

    router: Any
    table: pd.DataFrame
    cost_weights: tuple[float, ...]
    metric: str
    candidates: tuple[Any, ...] = ()


@register_policy
@dataclass(eq=False)
class GuardedRouter:
    """A router that defers to the best single model at the λ where cross-validation found it worse.

    ``fallback[i]`` says whether λ in ``[cost_weights[i], cost_weights[i + 1])`` (the last value: from it on; λ
    below the first: the first) is routed as the best single model — the model of highest mean
    ``quality − λ·cost/cost_scale`` on the training logs (``mean_quality``, ``mean_cost``; ties to the cheaper) —
    instead of by ``router``. Everything else (``models``, the featurizer, ``add_model``/``remove_model``, online
    updates when the router learns) is the wrapped router's. Built by :func:`select_router`.
    """

    router: Any
    cost_weights: tuple[float, ...]
    fallback: tuple[bool, ...]
    mean_quality: np.ndarray
    mean_cost: np.ndarray
    seed: int | None = 0

    def __post_init__(self) -> None:
        self.cost_weights = tuple(float(w) for w in self.cost_weights)
        self.fallback = tuple(bool(f) for f in self.fallback)
        if len(self.cost_weights) != len(self.fallback) or not self.cost_weights:
            raise ConfigurationError(
                f"cost_weights and fallback must have one entry per λ, got {len(self.cost_weights)} and "
                f"{len(self.fallback)}"
            )
        self.mean_quality = np.asarray(self.mean_quality, dtype=np.float64)
        self.mean_cost = np.asarray(self.mean_cost, dtype=np.float64)
        self._rng = np.random.default_rng(self.seed)

    # ------------------------------------------------------------------ what the wrapped router provides
    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self.router.models)

    @property
    def n_features(self) -> int | None:
        return getattr(self.router, "n_features", None)

    @property
    def featurizer(self) -> Any:
        return getattr(self.router, "featurizer", None)

    @property
    def cost_scale_(self) -> float:
        return float(self.router.cost_scale_)

    @property
    def cost_weight(self) -> float:
        return float(self.router.cost_weight)

    @cost_weight.setter
    def cost_weight(self, value: float) -> None:
        self.router.cost_weight = _finite("cost_weight", value, 0.0)

    def __getattr__(self, name: str) -> Any:
        # Anything else — online updates, the learning mode, chosen(), featurize(), estimates — is the wrapped
        # router's (absent when it has none, so protocol checks see what it can do).
        if name == "router" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.router, name)

    # ------------------------------------------------------------------ routing
    def defers_at(self, cost_weight: float) -> bool:
        """Whether λ = ``cost_weight`` is routed as the best single model."""
        i = int(np.searchsorted(self.cost_weights, float(cost_weight), side="right")) - 1
        return self.fallback[max(i, 0)]

    def action_probabilities(self, features: np.ndarray, cost_weight: float | None = None) -> np.ndarray:
        """``(n, K)`` routing distribution at λ = ``cost_weight`` (default: ``self.cost_weight``)."""
        lam = self.cost_weight if cost_weight is None else _finite("cost_weight", cost_weight, 0.0)
        probs = np.asarray(self.router.action_probabilities(features, cost_weight=lam))
        if not self.defers_at(lam):
            return probs
        reward = self.mean_quality - lam * self.mean_cost / self.cost_scale_
        ties = np.flatnonzero(reward >= reward.max() - 1e-12)
        out = np.zeros_like(probs)
        out[:, int(ties[np.argmin(self.mean_cost[ties])])] = 1.0
        return out

    def act(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(actions (n,) int64, propensities (n,) float64)`` drawn from :meth:`action_probabilities`."""
        return draw(self.action_probabilities(features), self._rng)

    # ------------------------------------------------------------------ models come and go
    def add_model(self, name: str, dataset: LoggedDataset) -> GuardedRouter:
        """Onboard ``name`` in the wrapped router; its mean outcomes on ``dataset`` join the fallback's table."""
        self.router.add_model(name, dataset)
        j = dataset.model_index(name)
        with np.errstate(invalid="ignore"):
            q, c = float(np.nanmean(dataset.quality[:, j])), float(np.nanmean(dataset.cost[:, j]))
        self.mean_quality = np.append(self.mean_quality, q)
        self.mean_cost = np.append(self.mean_cost, c)
        return self

    def remove_model(self, name: str) -> GuardedRouter:
        """Retire ``name`` in the wrapped router and in the fallback's table."""
        j = self.models.index(name) if name in self.models else -1
        self.router.remove_model(name)
        keep = np.arange(len(self.mean_quality)) != j
        self.mean_quality, self.mean_cost = self.mean_quality[keep], self.mean_cost[keep]
        return self

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write ``policy.json`` + ``arrays.npz`` into ``path`` and the wrapped router into ``path/router``."""
        root = Path(path)
        config = {
            "cost_weights": list(self.cost_weights),
            "fallback": list(self.fallback),
            "seed": self.seed,
            "rng_state": rng_state(self._rng),
        }
        write_policy_dir(
            root, type(self), config, {"mean_quality": self.mean_quality, "mean_cost": self.mean_cost}
        )
        self.router.save(root / "router")
        return root

    @classmethod
    def load(cls, path: str | Path) -> GuardedRouter:
        """Restore a router written by :meth:`save`."""
        with reading_saved(path, cls) as (root, config, arrays):
            obj = cls(
                load_policy(root / "router"),
                tuple(config["cost_weights"]),
                tuple(config["fallback"]),
                arrays["mean_quality"],
                arrays["mean_cost"],
                seed=config["seed"],
            )
            obj._rng = rng_from_state(config["rng_state"])
        return obj


def guard(
    router: Any, train: LoggedDataset, objective: Objective, folds: np.ndarray, se: float | None = DEFAULT_SE
) -> tuple[Any, str]:
    """``router`` wrapped in a :class:`GuardedRouter` at every λ of ``objective.cost_weights`` where its
    out-of-fold reward does not beat the best single model's by ``se`` standard errors, and a note saying where
    (``router`` itself when nowhere, or when ``se`` is ``None``).

    The best single model of each fold is chosen on the other folds, as the router's estimates were. On
    full-information logs the standard error is that of the mean per-query reward difference, with the queries
    of one prompt counted as one cluster; on partial logs only the point estimates are compared."""
    oof = getattr(router, "_cv_oof", None)
    if se is None:
        return router, ""
    if oof is None:
        return router, "no out-of-fold predictions to check against the best single model"
    q_hat, c_hat = oof
    scale = objective.cost_scale
    weight = outcome_weights(train)
    quality, cost = np.nan_to_num(train.quality), np.nan_to_num(train.cost)
    groups = group_ids(train)
    flags = []
    for lam in objective.cost_weights:
        single = np.zeros_like(q_hat)
        for f in np.unique(folds):
            tr, va = folds != f, folds == f
            w = np.maximum(weight[tr].sum(axis=0), 1e-300)
            mq, mc = (weight[tr] * quality[tr]).sum(axis=0) / w, (weight[tr] * cost[tr]).sum(axis=0) / w
            single[va, _best_single(mq, mc, lam, scale)] = 1.0
        routed = greedy_probabilities(q_hat - (lam / scale) * c_hat)
        if objective.mode == "exact":
            reward = quality - (lam / scale) * cost
            diff = np.bincount(groups, weights=((routed - single) * reward).sum(axis=1))
            n = len(groups)
            mean, err = diff.sum() / n, math.sqrt(len(diff)) * float(diff.std()) / n
        else:
            (rc, rq), (fc, fq) = objective.value(routed), objective.value(single)
            mean, err = (rq - lam * rc / scale) - (fq - lam * fc / scale), 0.0
        flags.append(bool(mean - float(se) * err <= 1e-12))
    if not any(flags):
        return router, ""
    w = np.maximum(weight.sum(axis=0), 1e-300)
    guarded = GuardedRouter(
        router,
        objective.cost_weights,
        tuple(flags),
        (weight * quality).sum(axis=0) / w,
        (weight * cost).sum(axis=0) / w,
        seed=getattr(router, "seed", 0),
    )
    where = [f"{lam:.3g}" for lam, flag in zip(objective.cost_weights, flags) if flag]
    return guarded, (
        f"routes as the best single model at λ ∈ {{{', '.join(where)}}} (no cross-validated advantage of "
        f"{float(se):g} standard error{'s' if se != 1 else ''})"
    )


def _best_single(mean_quality: np.ndarray, mean_cost: np.ndarray, lam: float, scale: float) -> int:
    reward = mean_quality - lam * mean_cost / scale
    ties = np.flatnonzero(reward >= reward.max() - 1e-12)
    return int(ties[np.argmin(mean_cost[ties])])


def make_router(candidate: str | Any, **settings: Any) -> Any:
    """A fresh router for ``candidate`` — a name from :data:`ROUTER_FAMILIES`, or an unfitted router whose own
    hyperparameters are kept — with the cross-validation ``settings`` (``cv``, ``cv_cost_weights``, ``seed``, …)
    applied."""
    if isinstance(candidate, str):
        if candidate not in ROUTER_FAMILIES:
            raise ConfigurationError(
                f"unknown router {candidate!r}; choose from {sorted(ROUTER_FAMILIES)} or pass a router instance"
            )
        return ROUTER_FAMILIES[candidate](**settings)
    if not dataclasses.is_dataclass(candidate) or not hasattr(candidate, "fit"):
        raise ConfigurationError(
            f"candidates must be router names or unfitted router instances, got {type(candidate).__name__}"
        )
    fields = {f.name for f in dataclasses.fields(candidate) if f.init}
    return dataclasses.replace(candidate, **{k: v for k, v in settings.items() if k in fields})  # type: ignore[type-var]


def _name(candidate: str | Any) -> str:
    return candidate if isinstance(candidate, str) else type(candidate).__name__


def select_router(
    train: LoggedDataset,
    candidates: Sequence[str | Any] = DEFAULT_CANDIDATES,
    cost_weights: Sequence[float] | float | None = None,
    cv: int = DEFAULT_FOLDS,
    *,
    seed: int = 0,
    cost_scale: float | None = None,
    featurizer: Any = None,
    ensemble: bool = True,
    selection_se: float = DEFAULT_SE,
    guard_se: float | None = DEFAULT_SE,
    cost_model: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Selection:
    """Fit every candidate with its own cross-validation on ``train``; return the router the one-standard-error
    rule picks among them and their average.

    1. Every candidate is fitted with its own grouped cross-validation (same folds for all); its out-of-fold
       estimates give its CV score (AIQ over ``cost_weights``, or mean reward at one λ) and its score on each
       fold.
    2. With ``ensemble``, the :class:`~agents.routers.ensemble.EnsembleRouter` averaging the candidates' quality
       and cost estimates (equal weights) is scored the same way.
    3. With ``cost_model``, a :class:`~agents.routers.CostModel` (each model's cost of a query from its features)
       is fitted on the same folds, and every candidate that predicts outcomes, and the ensemble, is scored
       again with its quality estimates and the cost model's costs (rows ``<name>+cost-model``).
    4. One-standard-error rule: in the order ensemble, then the candidates as listed (list them from the
       simplest, as :data:`DEFAULT_CANDIDATES` does), each with the cost source (its own estimates or the cost
       model's) of the higher CV score, the first whose CV score is within ``selection_se`` standard errors (of
       its paired fold-level difference) of the best score is kept. Cross-validation
       measures the training logs' distribution; when it cannot separate routers, the average hedges against a
       shift between those logs and the deployed traffic, and a simpler router varies less.
    5. Guard: at each λ of the grid where the kept router's out-of-fold reward does not beat the best single
       model's by ``guard_se`` standard errors, the returned :class:`GuardedRouter` routes as that model.

    Args:
        train: training logs with features (full-information logs are scored exactly; bandit logs by SNIPS).
        candidates: router names from :data:`ROUTER_FAMILIES` or unfitted router instances (their explicit
            hyperparameters are kept; the CV settings below are applied to them).
        cost_weights: the λ values the router must serve; several → scored by AIQ over them, one → by mean
            reward at it. ``None``: a grid spanning the single models' trade-offs (:func:`default_cost_weights`).
        cv: number of grouped folds (≥ 2).
        seed: seeds the folds (shared by all candidates) and every router.
        cost_scale: USD per unit of λ (default: the dataset's ``resolve_cost_scale("max_mean")``).
        featurizer: the featurizer that produced ``train.features``, saved with the chosen router.
        ensemble: also score the average of the candidates (step 2).
        cost_model: also score the candidates with per-query cost estimates (step 3).
        selection_se: width of the one-standard-error rule (≥ 0; 0 keeps the best CV score).
        guard_se: standard errors of advantage over the best single model the router needs at a λ (≥ 0);
            ``None`` = no guard.
        progress: called with each candidate's name before it is fitted.

    Returns:
        A :class:`Selection`; its ``router`` routes at the smallest λ of ``cost_weights`` until told otherwise.

    Raises:
        ConfigurationError: no candidate, an unknown name, a bad setting, or no candidate could be fitted.
    """
    if not isinstance(train, LoggedDataset):
        raise ConfigurationError(f"select_router expects a LoggedDataset, got {type(train).__name__}")
    if not candidates or isinstance(candidates, str):
        raise ConfigurationError(f"candidates must be a non-empty sequence of routers, got {candidates!r}")
    selection_se = _finite("selection_se", selection_se, 0.0)
    if guard_se is not None:
        guard_se = _finite("guard_se", guard_se, 0.0)
    scale = float(cost_scale) if cost_scale is not None else train.resolve_cost_scale("max_mean")
    weights = (
        default_cost_weights(train, scale)
        if cost_weights is None
        else check_cost_weights(cost_weights, "cost_weights")
    )
    from threadpoolctl import threadpool_limits

    rules = _Rules(bool(ensemble), selection_se, guard_se, bool(cost_model))
    # The cross-validation multiplies many small matrices, where BLAS threads cost more than they give.
    with threadpool_limits(limits=1, user_api="blas"):
        return _select(train, candidates, weights, scale, cv, seed, cost_scale, featurizer, rules, progress)


@dataclass(frozen=True)
class _Rules:
    ensemble: bool
    selection_se: float
    guard_se: float | None
    cost_model: bool = True


def _select(
    train: LoggedDataset,
    candidates: Sequence[str | Any],
    weights: tuple[float, ...],
    scale: float,
    cv: int,
    seed: int,
    cost_scale: float | None,
    featurizer: Any,
    rules: _Rules,
    progress: Callable[[str], None] | None,
) -> Selection:
    folds = make_folds(train, cv, seed)  # refuses data too small to cross-validate, before any fitting
    objective = Objective(train, weights, scale)
    settings = {"cv": cv, "cv_cost_weights": weights, "seed": seed, "cost_scale": cost_scale, "tune": True}
    rows: list[dict[str, Any]] = []
    fitted: list[Any] = []
    for candidate in candidates:
        router = make_router(candidate, **settings)
        if progress is not None:
            progress(_name(candidate))
        start = time.perf_counter()
        try:
            router.fit(train, cost_weight=weights[0], featurizer=featurizer)
        except RoutingEnvError as exc:
            rows.append(
                {"router": _name(candidate), "kind": type(router).__name__, "note": f"skipped: {exc}"}
            )
            fitted.append(None)
            continue
        rows.append(_row(_name(candidate), router, objective, time.perf_counter() - start))
        fitted.append(router)
    if rules.ensemble:
        members = [r for r in fitted if r is not None and _averageable(r)]
        if len(members) >= 2:
            start = time.perf_counter()
            mean = EnsembleRouter(tuple(members), cost_weight=weights[0], seed=seed, featurizer=featurizer)
            q, c = (np.mean([m._cv_oof[i] for m in members], axis=0) for i in (0, 1))
            mean._cv_oof = (q, c)  # type: ignore[attr-defined]
            mean.cv_score_ = objective.score(q, c)  # type: ignore[attr-defined]
            rows.append(_row("ensemble", mean, objective, time.perf_counter() - start))
            fitted.append(mean)
    if rules.cost_model:
        _pair_with_cost_model(train, folds, cv, seed, featurizer, weights[0], objective, rows, fitted)
    table = pd.DataFrame(
        rows, columns=["router", "kind", "chosen", "cv_score", "cv_gap_closed", "fit_seconds", "note"]
    )
    scores = table["cv_score"].astype(float).fillna(-math.inf).to_numpy()
    if not any(r is not None for r in fitted) or not (scores > -math.inf).any():
        raise ConfigurationError(
            "select_router could not fit any candidate on these logs: "
            + "; ".join(f"{r['router']}: {r.get('note', '')}" for r in rows)
        )
    per_fold = [
        objective.fold_scores(folds, *r._cv_oof) if r is not None and hasattr(r, "_cv_oof") else None
        for r in fitted
    ]
    order = _preference(list(table["router"]), scores)
    kept, behind, errors = _one_se(scores, per_fold, order, rules.selection_se)
    table["cv_behind_best"], table["cv_se"] = behind, errors
    table["selected"] = [i == kept for i in range(len(table))]
    table["chosen"] = table["chosen"].fillna("")
    router, note = guard(fitted[kept], train, objective, folds, rules.guard_se)
    if note:
        table.loc[kept, "note"] = note
    columns = ["router", "kind", "chosen", "cv_score", "cv_gap_closed", "cv_behind_best", "cv_se"]
    table = table[[*columns, "fit_seconds", "selected", "note"]]
    return Selection(router, table, weights, objective.metric, tuple(fitted))


#: Suffix of a candidate paired with the per-query cost model in the selection table.
COST_MODEL_SUFFIX = "+cost-model"


def _pair_with_cost_model(
    train: LoggedDataset,
    folds: np.ndarray,
    cv: int,
    seed: int,
    featurizer: Any,
    cost_weight: float,
    objective: Objective,
    rows: list[dict[str, Any]],
    fitted: list[Any],
) -> None:
    """Append, for every candidate that predicts outcomes (and the ensemble), the same quality estimates with the
    per-query costs of one :class:`CostModel` fitted on the same folds, scored on their out-of-fold estimates."""
    bases = [(row["router"], r) for row, r in zip(rows, fitted) if r is not None and _averageable(r)]
    if not bases:
        return
    start = time.perf_counter()
    try:
        costs = CostModel(cv=cv, seed=seed).fit(train, folds=folds)
    except RoutingEnvError as exc:
        rows.append({"router": "cost-model", "kind": "CostModel", "note": f"skipped: {exc}"})
        fitted.append(None)
        return
    seconds = time.perf_counter() - start
    assert costs.oof_ is not None
    for name, router in bases:
        if isinstance(router, EnsembleRouter):
            members, w = router.members, router.weights
        else:
            members, w = (router,), None
        paired = EnsembleRouter(
            members, w, cost_weight=cost_weight, seed=seed, featurizer=featurizer, cost_model=costs
        )
        q = router._cv_oof[0]
        paired._cv_oof = (q, costs.oof_)  # type: ignore[attr-defined]
        paired.cv_score_ = objective.score(q, costs.oof_)  # type: ignore[attr-defined]
        rows.append(_row(f"{name}{COST_MODEL_SUFFIX}", paired, objective, seconds))
        fitted.append(paired)


def _preference(names: Sequence[str], scores: np.ndarray) -> list[int]:
    """Row indices in the one-standard-error rule's order: the ensemble, then the candidates as listed; each
    represented by its pairing with the cost model where that pairing has the higher CV score.

    The cost model is one estimator, tuned by its own cross-validation, that every candidate can use; it is not
    a more flexible router family, so the candidate's two cost sources are compared by their scores alone."""
    paired = {n[: -len(COST_MODEL_SUFFIX)]: i for i, n in enumerate(names) if n.endswith(COST_MODEL_SUFFIX)}
    bases = [i for i, n in enumerate(names) if not n.endswith(COST_MODEL_SUFFIX)]
    bases.sort(key=lambda i: (names[i] != "ensemble", i))
    out = []
    for i in bases:
        j = paired.get(names[i])
        out.append(j if j is not None and scores[j] > scores[i] else i)
    return out


def _row(name: str, router: Any, objective: Objective, seconds: float) -> dict[str, Any]:
    score = getattr(router, "cv_score_", None)
    score = math.nan if score is None else float(score)
    return {
        "router": name,
        "kind": type(router).__name__,
        "chosen": ", ".join(f"{k}={_fmt(v)}" for k, v in router.chosen().items()),
        "cv_score": score,
        "cv_gap_closed": objective.gap_closed(score) if objective.metric == "aiq" else math.nan,
        "fit_seconds": seconds,
        "note": "",
    }


def _averageable(router: Any) -> bool:
    """Whether ``router`` can join the average: it predicts outcomes and has out-of-fold estimates of them."""
    return getattr(router, "_cv_oof", None) is not None and callable(
        getattr(router, "predict_outcomes", None)
    )


def _one_se(
    scores: np.ndarray, per_fold: Sequence[np.ndarray | None], order: Sequence[int], width: float
) -> tuple[int, np.ndarray, np.ndarray]:
    """``(kept, behind (R,), se (R,))``: the first router of ``order`` whose score is within ``width`` standard
    errors of the best one, and every router's mean fold-level shortfall from the best with its standard error
    (NaN where a router has no fold scores). The best is kept when no other router can be compared with it."""
    best = int(np.argmax(scores))
    behind, errors = np.full(len(scores), np.nan), np.full(len(scores), np.nan)
    top = per_fold[best]
    if top is None:
        return best, behind, errors
    for i, fold in enumerate(per_fold):
        if fold is not None and np.isfinite(scores[i]):
            behind[i], errors[i] = paired_difference(top, fold)
    for i in order:
        if np.isfinite(behind[i]) and behind[i] <= width * errors[i] + 1e-12:
            return int(i), behind, errors
    return best, behind, errors


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
