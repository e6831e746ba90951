"""Routers from the clustering and shrinkage paradigms: :class:`TaskTableRouter` and :class:`ClusterRouter`.

Both estimate every model's quality and cost (USD) per group of queries and route to
``argmax_k q̂_k − λ·ĉ_k/cost_scale`` (λ settable at decision time). The estimates form a chain of levels, each
fitted to what the levels before it left unexplained and shrunk towards them by empirical Bayes:

    global mean  →  task offset  →  cluster offset  →  (task × cluster) offset  →  ridge residual (optional)

A level's offset for a group with ``n`` rows is ``n/(n + τ)`` times the group's mean residual, where
``τ = σ²_within / σ²_between`` is estimated from the data by the one-way random-effects moment estimator, per model
and per target (quality, cost): a level whose groups do not differ more than their noise gets ``τ = ∞`` and no
offset at all. Nothing about the shrinkage is a constant to tune.

- :class:`TaskTableRouter`: the global and task levels only — the best model per task (or per value of any
  categorical feature) for a λ, with the global table for unseen tasks. The floor every learned router must clear.
- :class:`ClusterRouter` (UniRoute / Avengers-Pro style): k-means over the standardised query features (or a given
  clustering), k chosen by grouped cross-validation, then optionally a ridge on the features for the per-query
  residual, kept only where cross-validation says it helps. :meth:`ClusterRouter.add_model` places a new model in
  the same statistics from a few hundred labelled queries without refitting the others.

The task of a query is read from its features: the one-hot columns named ``<column>=<value>`` (what
:class:`~routing_env.data.QueryFeaturizer` appends) or one feature named ``<column>`` whose values are categories.
A query whose task columns are all zero (a bare prompt served online) uses the global level and clusters fitted
without the task level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from agents.routers._common import _finite
from agents.routers._cv import Objective, Tunable, make_folds, outcome_weights, pick, ridge_oof, standardizer
from agents.routers._shrinkage import (
    Chain,
    chain_arrays,
    chain_from,
    correction_helps,
    fit_chain,
    insert_columns,
    insert_model,
    median_tau,
    placement,
)
from agents.routers.predictive import _PredictiveRouter
from routing_env.data.dataset import LoggedDataset
from routing_env.errors import ConfigurationError, ModelMismatchError, ShapeError
from routing_env.policy import register_policy

__all__ = ["ClusterRouter", "TaskTableRouter"]

#: Candidate numbers of clusters (capped so that a cluster averages at least ``_MIN_PER_CLUSTER`` queries).
CLUSTER_GRID = (1, 2, 4, 8, 16, 32, 64, 128)
_MIN_PER_CLUSTER = 30
#: Ridge penalties of the residual, as multiples of the number of training queries (most regularised first).
RESIDUAL_GRID = (10.0, 3.0, 1.0, 0.3, 0.1, 0.03, 0.01)
#: Fewest labelled queries add_model accepts for a new model.
MIN_ONBOARDING_QUERIES = 10


# ---------------------------------------------------------------------------------------------- categories
def category_columns(names: Sequence[str], column: str) -> tuple[np.ndarray, tuple[str, ...], bool]:
    """``(indices, categories, one_hot)`` of the categorical feature ``column`` among feature ``names``:
    the one-hot columns ``<column>=<value>``, else the single feature named ``column`` (its values found on
    fit), else nothing."""
    prefix = f"{column}="
    idx = [i for i, n in enumerate(names) if str(n).startswith(prefix)]
    if idx:
        return np.array(idx, dtype=np.int64), tuple(str(names[i])[len(prefix) :] for i in idx), True
    if column in names:
        return np.array([list(names).index(column)], dtype=np.int64), (), False
    return np.zeros(0, dtype=np.int64), (), False


# ---------------------------------------------------------------------------------------------- the base
@dataclass(eq=False, kw_only=True)
class _TableRouter(_PredictiveRouter, Tunable):
    """Shared plumbing of the table routers: categories from the features, the chain of levels, onboarding."""

    # A shrinkage strength τ is +inf where a level shows no structure (its offsets are shrunk to zero).
    nonfinite_arrays: ClassVar[tuple[str, ...]] = ("chain_tau_*", "notask_tau_*")

    column: str = "task"

    if TYPE_CHECKING:  # fitted state, set by fit or load (not dataclass fields)
        chain_: Chain
        categories_: tuple[str, ...]
        category_index_: np.ndarray
        category_values_: np.ndarray
        other_index_: np.ndarray
        one_hot_: bool
        mean_: np.ndarray
        scale_: np.ndarray
        cv_score_: float | None

    def _validate(self) -> None:
        self._validate_cv()
        if not isinstance(self.column, str) or not self.column:
            raise ConfigurationError(f"column must name a categorical feature, got {self.column!r}")

    def _hyperparameters(self) -> dict[str, Any]:
        return {**super()._hyperparameters(), **self._cv_hyperparameters(), "column": self.column}

    # ------------------------------------------------------------------ features → groups
    def _setup_features(self, dataset: LoggedDataset) -> np.ndarray:
        """Find the category columns and the standardisation of the others; return the raw features."""
        x = self._fit_features(dataset)
        idx, cats, one_hot = category_columns(dataset.feature_names, self.column)
        if not one_hot and idx.size:
            values = np.unique(x[:, idx[0]])
            cats = tuple(f"{v:g}" for v in values)
            self.category_values_ = values
        else:
            self.category_values_ = np.zeros(0)
        self.category_index_ = idx
        self.categories_ = cats
        self.one_hot_ = bool(one_hot)
        rest = np.setdiff1d(np.arange(x.shape[1]), idx)
        self.other_index_ = rest
        self.mean_, self.scale_ = standardizer(x[:, rest])
        return x

    def _category(self, x: np.ndarray) -> np.ndarray:
        """``(n,) int64`` category of each row (``-1`` = unknown)."""
        idx = self.category_index_
        if idx.size == 0:
            return np.full(x.shape[0], -1, dtype=np.int64)
        if self.one_hot_:
            cols = x[:, idx]
            best = cols.argmax(axis=1)
            return np.where(cols[np.arange(len(cols)), best] > 0.5, best, -1).astype(np.int64)
        values = x[:, idx[0]]
        pos = np.searchsorted(self.category_values_, values)
        pos = np.minimum(pos, len(self.category_values_) - 1)
        return np.where(self.category_values_[pos] == values, pos, -1).astype(np.int64)

    def _standardized(self, x: np.ndarray) -> np.ndarray:
        return (x[:, self.other_index_] - self.mean_) / self.scale_

    def _levels(self, x: np.ndarray) -> list[np.ndarray]:
        """Group of each row at each level of the chain (subclasses add theirs)."""
        return [self._category(x)]

    def _level_sizes(self) -> list[int]:
        return [len(self.categories_)]

    # ------------------------------------------------------------------ estimates
    def _quality_cost(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        est = self._estimates(x)
        k = len(self.models)
        return est[:, :k], est[:, k:]

    def _estimates(self, x: np.ndarray) -> np.ndarray:
        return self.chain_.predict(self._levels(x), x.shape[0])

    @staticmethod
    def _targets(dataset: LoggedDataset, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(y (n, 2K), weight (n, 2K))``: quality then cost of every model."""
        y = np.hstack([np.nan_to_num(dataset.quality), np.nan_to_num(dataset.cost)])
        return y, np.hstack([weight, weight])

    def _oof_score(self, objective: Objective, oof: np.ndarray) -> float:
        k = len(self.models)
        return objective.score(oof[:, :k], oof[:, k:])

    def _chain_oof(
        self, levels: list[tuple[np.ndarray, int]], y: np.ndarray, w: np.ndarray, folds: np.ndarray
    ) -> np.ndarray:
        """Out-of-fold chain estimates ``(n, 2K)``."""
        out = np.zeros_like(y)
        for f in np.unique(folds):
            tr, va = folds != f, folds == f
            chain = fit_chain([(g[tr], n) for g, n in levels], y[tr], w[tr])
            out[va] = chain.predict([g[va] for g, _ in levels], int(va.sum()))
        return out

    # ------------------------------------------------------------------ onboarding
    def add_model(self, name: str, dataset: LoggedDataset) -> _TableRouter:
        """Route to a new model ``name`` at once, from a small labelled ``dataset`` holding its outcomes.

        The new model is placed among the others (UniRoute's idea of describing a model by how it does where the
        others do well or badly): on the queries of ``dataset`` where it was observed (100–300 are enough), a ridge
        of its quality on the router's quality estimates of the existing models (its cost on theirs), with the
        penalty chosen by leave-one-out error, gives every table of the router a column for it — the same linear
        combination of the existing columns. What that placement leaves unexplained then enters each level of the
        chain, shrunk with the median strength ``τ`` the existing models showed there (a few hundred queries
        cannot estimate ``τ`` themselves) — for quality and for cost only where 5-fold cross-validation on the
        labelled queries finds that it predicts them better. The other models' columns of ``dataset`` are not
        needed. Returns ``self``.

        Raises:
            ConfigurationError: ``name`` is already routed to, or has fewer than 10 labelled queries.
            ModelMismatchError: ``dataset`` has no column ``name``.
            ShapeError: ``dataset`` has features of another width and no prompts for the router's featurizer.
        """
        self._require_fitted()
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"name must be a model name, got {name!r}")
        if name in self.models:
            raise ConfigurationError(f"model {name!r} is already routed to; remove_model({name!r}) first")
        if not isinstance(dataset, LoggedDataset):
            raise ConfigurationError(f"add_model expects a LoggedDataset, got {type(dataset).__name__}")
        if name not in dataset.models:
            raise ModelMismatchError(
                f"the dataset has no outcomes of {name!r}; its models are {list(dataset.models)}"
            )
        j = dataset.model_index(name)
        x = self._onboarding_features(dataset)
        seen = np.isfinite(dataset.quality[:, j]) & np.isfinite(dataset.cost[:, j])
        if int(seen.sum()) < MIN_ONBOARDING_QUERIES:
            raise ConfigurationError(
                f"add_model({name!r}) needs at least {MIN_ONBOARDING_QUERIES} queries with the model's quality and "
                f"cost, got {int(seen.sum())}"
            )
        x = x[seen]
        y = np.stack([dataset.quality[seen, j], dataset.cost[seen, j]], axis=1)
        k = len(self.models)
        est = self._estimates(x)
        (bq, aq), (bc, ac) = placement(est[:, :k], y[:, 0]), placement(est[:, k:], y[:, 1])

        def column(arr: np.ndarray, intercept: bool) -> np.ndarray:
            """The new model's column of a per-model array ``(..., 2K)``: its placement among the others."""
            q, c = arr[..., :k] @ bq, arr[..., k:] @ bc
            return np.stack([q + aq, c + ac] if intercept else [q, c], axis=-1)

        resid = y - column(est, True)
        levels = self._chain_levels(x)
        borrowed = {
            attr: [np.array([median_tau(t[:k]), median_tau(t[k:])]) for t in chain.taus]
            for attr, chain in self._chains().items()
        }
        keep = correction_helps(est, y, levels["chain_"], borrowed["chain_"], k, self.seed)
        for attr, chain in self._chains().items():
            taus = [np.where(keep, t, math.inf) for t in borrowed[attr]]
            own = fit_chain(levels[attr], resid, np.ones_like(resid), taus)
            new = Chain(
                column(chain.global_, True) + own.global_,
                [column(t, False) + o for t, o in zip(chain.offsets, own.offsets)],
                taus,
            )
            setattr(self, attr, insert_model(chain, new, k))
        for attr, arr in self._linear_state().items():
            setattr(self, attr, insert_columns(arr, column(arr, False), k))
        self.models = (*self.models, name)
        return self

    def _chains(self) -> dict[str, Chain]:
        """The fitted chains by attribute name (each a table over the K models)."""
        return {"chain_": self.chain_}

    def _chain_levels(self, x: np.ndarray) -> dict[str, list[tuple[np.ndarray, int]]]:
        """The groups of rows ``x`` at every level of each chain of :meth:`_chains`."""
        return {"chain_": list(zip(self._levels(x), self._level_sizes()))}

    def _linear_state(self) -> dict[str, np.ndarray]:
        """Per-model arrays (last axis ``2K``) that enter the estimates linearly, by attribute name."""
        return {}

    def remove_model(self, name: str) -> _TableRouter:
        """Stop routing to ``name`` (a model retired or down); the others' estimates are unchanged. Returns
        ``self``.

        Raises:
            ModelMismatchError: ``name`` is not routed to.
            ConfigurationError: it is the last model.
        """
        self._require_fitted()
        if name not in self.models:
            raise ModelMismatchError(f"model {name!r} is not routed to; the models are {list(self.models)}")
        if len(self.models) == 1:
            raise ConfigurationError(f"cannot remove {name!r}: it is the only model left")
        j = self.models.index(name)
        k = len(self.models)
        keep = np.array([i for i in range(2 * k) if i not in (j, k + j)], dtype=np.int64)
        for attr, chain in self._chains().items():
            setattr(
                self,
                attr,
                Chain(
                    chain.global_[keep], [t[:, keep] for t in chain.offsets], [t[keep] for t in chain.taus]
                ),
            )
        for attr, arr in self._linear_state().items():
            setattr(self, attr, arr[..., keep])
        self.models = tuple(m for m in self.models if m != name)
        return self

    def _onboarding_features(self, dataset: LoggedDataset) -> np.ndarray:
        if dataset.n_features == self.n_features and self.n_features:
            return self._features(dataset.features)
        if self.featurizer is not None and dataset.prompts is not None:
            tasks = None if dataset.tasks is None else list(dataset.tasks)
            prompts = ["" if p is None else str(p) for p in dataset.prompts]
            return self._features(self.featurizer.transform(prompts, tasks))
        raise ShapeError(
            f"the onboarding dataset has features of width {dataset.n_features}, but this router was fitted on "
            f"width {self.n_features} (and has no featurizer for its prompts)"
        )

    # ------------------------------------------------------------------ persistence
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        state = {
            "categories": list(self.categories_),
            "one_hot": self.one_hot_,
            "cv_score": self.cv_score_,
        }
        arrays = {
            "category_index": self.category_index_,
            "category_values": self.category_values_,
            "other_index": self.other_index_,
            "mean": self.mean_,
            "scale": self.scale_,
            **chain_arrays("chain_", self.chain_),
        }
        return state, arrays

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.categories_ = tuple(state["categories"])
        self.one_hot_ = bool(state["one_hot"])
        self.cv_score_ = None if state["cv_score"] is None else float(state["cv_score"])
        self.category_index_ = np.asarray(arrays["category_index"], dtype=np.int64)
        self.category_values_ = arrays["category_values"]
        self.other_index_ = np.asarray(arrays["other_index"], dtype=np.int64)
        self.mean_, self.scale_ = arrays["mean"], arrays["scale"]
        self.chain_ = chain_from("chain_", arrays)


def _split_oof(oof: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = oof.shape[1] // 2
    return oof[:, :k], oof[:, k:]


# ---------------------------------------------------------------------------------------------- task table
@register_policy
@dataclass(eq=False, kw_only=True)
class TaskTableRouter(_TableRouter):
    """The best model per task for a λ: each model's mean quality and cost per task, shrunk towards the global
    table by empirical Bayes, and the global table for a query of an unknown task.

    It reads no query text, so it is the floor a learned router has to clear. ``column`` names the categorical
    feature (default ``"task"``: the ``task=<name>`` one-hot columns of :class:`~routing_env.data.QueryFeaturizer`).
    With ``tune`` (default) ``fit`` also records the grouped cross-validation score of the table (``cv_score_``),
    which :func:`~agents.routers.selection.select_router` compares with the learned routers'.

    Example::

        table = TaskTableRouter().fit(train, cost_weight=0.2)
        table.action_probabilities(test.features, cost_weight=0.5)
    """

    cv_score_: float | None = field(default=None, init=False)

    def fit(
        self, dataset: LoggedDataset, cost_weight: float | None = None, *, featurizer: Any = None
    ) -> TaskTableRouter:
        """Estimate the tables on ``dataset`` (full-information or partial logs); returns ``self``.

        Raises:
            ConfigurationError: the features have no categorical column ``column``.
        """
        self._start_fit(dataset, cost_weight, featurizer)
        x = self._setup_features(dataset)
        if self.category_index_.size == 0:
            raise ConfigurationError(
                f"TaskTableRouter needs a categorical feature {self.column!r} (one-hot columns "
                f"'{self.column}=<value>' or one column named {self.column!r}); the features are "
                f"{list(dataset.feature_names)[:8]}{'…' if dataset.n_features > 8 else ''}. Featurize with "
                "routing_env.data.QueryFeaturizer (it appends the task one-hot) or pass column="
            )
        y, w = self._targets(dataset, outcome_weights(dataset))
        levels = [(self._category(x), len(self.categories_))]
        self.chain_ = fit_chain(levels, y, w)
        self.cv_score_ = None
        if self.tune:
            folds = make_folds(dataset, self.cv, self.seed)
            objective = Objective(dataset, self.cv_cost_weights or (self.cost_weight,), self.cost_scale_)
            oof = self._chain_oof(levels, y, w, folds)
            self.cv_score_ = self._oof_score(objective, oof)
            self._cv_oof = _split_oof(oof)
        return self


# ---------------------------------------------------------------------------------------------- clusters
@register_policy
@dataclass(eq=False, kw_only=True)
class ClusterRouter(_TableRouter):
    """Cluster-level estimates shrunk towards the task and global levels (UniRoute, Avengers-Pro), with an
    optional per-query ridge residual; λ settable at decision time.

    ``fit`` standardises the non-task features, clusters them with k-means (``k`` chosen by grouped
    cross-validation over 1, 2, 4, … 128 clusters, capped at one cluster per 30 queries; ``k = 1`` is the task
    table), fits the chain global → task → cluster → task × cluster with empirical-Bayes shrinkage, and then
    decides by cross-validation whether a ridge on the features for what the chain leaves unexplained helps, and
    with which penalty. A query is assigned to its nearest cluster centre.

    Args:
        n_clusters: number of clusters; ``None`` (default) = chosen by cross-validation (8 with ``tune=False``).
        residual: add the ridge residual; ``None`` (default) = where cross-validation says it helps (off with
            ``tune=False``).
        residual_ridge: its penalty; ``None`` = chosen by cross-validation (the number of training queries with
            ``tune=False``).
        column: the categorical feature of the task level (see the module docstring).
        (and ``tune``, ``cv``, ``cv_cost_weights``, ``cost_weight``, ``cost_scale``, ``seed``, ``featurizer``)

    ``fit(dataset, clusters=labels)`` uses a given clustering instead (``labels (n,)`` ints ≥ 0); new queries
    then go to the cluster with the nearest mean. Chosen values: ``n_clusters_``, ``residual_ridge_`` (``None``
    when the residual is off), ``cv_score_``.

    Example::

        router = ClusterRouter(cv_cost_weights=(0.0, 0.1, 0.3, 1.0)).fit(train)
        router.add_model("new-llm", labelled_200_queries)
        router.action_probabilities(x, cost_weight=0.3)
    """

    chosen_names: ClassVar[tuple[str, ...]] = ("n_clusters_", "residual_ridge_")

    n_clusters: int | None = None
    residual: bool | None = None
    residual_ridge: float | None = None

    n_clusters_: int | None = field(default=None, init=False)
    residual_ridge_: float | None = field(default=None, init=False)
    cv_score_: float | None = field(default=None, init=False)

    def _validate(self) -> None:
        super()._validate()
        if self.n_clusters is not None and (
            isinstance(self.n_clusters, bool)
            or not isinstance(self.n_clusters, (int, np.integer))
            or self.n_clusters < 1
        ):
            raise ConfigurationError(
                f"n_clusters must be an int ≥ 1 or None (chosen by CV), got {self.n_clusters!r}"
            )
        if self.residual is not None and not isinstance(self.residual, (bool, np.bool_)):
            raise ConfigurationError(
                f"residual must be True, False or None (chosen by CV), got {self.residual!r}"
            )
        if self.residual_ridge is not None:
            self.residual_ridge = _finite("residual_ridge", self.residual_ridge, 0.0, strict=True)

    def _hyperparameters(self) -> dict[str, Any]:
        return {
            **super()._hyperparameters(),
            "n_clusters": None if self.n_clusters is None else int(self.n_clusters),
            "residual": None if self.residual is None else bool(self.residual),
            "residual_ridge": self.residual_ridge,
        }

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        dataset: LoggedDataset,
        cost_weight: float | None = None,
        *,
        featurizer: Any = None,
        clusters: np.ndarray | None = None,
    ) -> ClusterRouter:
        """Cluster, choose k and the residual by cross-validation, and fit the chain on ``dataset``.

        Args:
            dataset: training logs with features (full-information or partial).
            cost_weight: λ to route with (and to score the CV at, unless ``cv_cost_weights`` is set).
            featurizer: the featurizer that produced the features, saved with the router.
            clusters: a given clustering ``(n,)`` of the training queries (ints ≥ 0) instead of k-means.

        Returns:
            ``self``.
        """
        self._start_fit(dataset, cost_weight, featurizer)
        x = self._setup_features(dataset)
        z = self._standardized(x)
        y, w = self._targets(dataset, outcome_weights(dataset))
        task = self._category(x)
        candidates = self._cluster_candidates(z, clusters, dataset.n_queries)
        best, base_oof, cv = 0, None, None
        self.cv_score_ = None
        if self.tune:
            folds = make_folds(dataset, self.cv, self.seed)
            objective = Objective(dataset, self.cv_cost_weights or (self.cost_weight,), self.cost_scale_)
            oofs = [self._chain_oof(self._fit_levels(task, lab, k), y, w, folds) for k, lab, _ in candidates]
            choice = pick(
                [k for k, _, _ in candidates], [self._oof_score(objective, o) for o in oofs], objective.metric
            )
            best, base_oof, cv = choice.best, oofs[choice.best], (folds, objective)
            self.cv_score_ = choice.score
            self._cv_oof = _split_oof(base_oof)
        k, labels, centres = candidates[best]
        self.n_clusters_ = k
        self.centres_ = centres
        levels = self._fit_levels(task, labels, k)
        self.chain_ = fit_chain(levels, y, w)
        self.notask_ = fit_chain([(labels, k)] if k > 1 else [], y, w)
        self._fit_residual(z, y, w, levels, cv, base_oof)
        return self

    def _cluster_candidates(
        self, z: np.ndarray, given: np.ndarray | None, n: int
    ) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """``(k, labels (n,), centres (k, d))`` for each k to try (one when k is fixed or given)."""
        if given is not None:
            labels = np.asarray(given)
            if labels.shape != (n,) or labels.dtype.kind not in "iu" or (labels < 0).any():
                raise ShapeError(f"clusters must be ({n},) ints ≥ 0, got {labels.dtype} {labels.shape}")
            _, labels = np.unique(labels, return_inverse=True)
            k = int(labels.max()) + 1
            centres = (
                np.stack([z[labels == c].mean(axis=0) for c in range(k)]) if z.shape[1] else np.zeros((k, 0))
            )
            return [(k, labels.astype(np.int64), centres)]
        if z.shape[1] == 0:
            return [(1, np.zeros(n, dtype=np.int64), np.zeros((1, 0)))]
        if self.n_clusters is not None:
            ks = [int(self.n_clusters)]
        elif not self.tune:
            ks = [8]
        else:
            cap = max(1, n // _MIN_PER_CLUSTER)
            ks = [k for k in CLUSTER_GRID if k <= cap]
        return [self._kmeans(z, k) for k in ks]

    def _kmeans(self, z: np.ndarray, k: int) -> tuple[int, np.ndarray, np.ndarray]:
        if k == 1:
            return 1, np.zeros(z.shape[0], dtype=np.int64), z.mean(axis=0, keepdims=True)
        from sklearn.cluster import KMeans

        k = min(k, z.shape[0])
        seed = 0 if self.seed is None else int(self.seed)
        km = KMeans(n_clusters=k, n_init=1, max_iter=100, random_state=seed).fit(z)
        return k, km.labels_.astype(np.int64), np.asarray(km.cluster_centers_, dtype=np.float64)

    def _fit_levels(self, task: np.ndarray, labels: np.ndarray, k: int) -> list[tuple[np.ndarray, int]]:
        t = len(self.categories_)
        levels: list[tuple[np.ndarray, int]] = []
        if t:
            levels.append((task, t))
        if k > 1:
            levels.append((labels, k))
            if t:
                levels.append((np.where(task >= 0, task * k + labels, -1), t * k))
        return levels

    def _fit_residual(
        self,
        z: np.ndarray,
        y: np.ndarray,
        w: np.ndarray,
        levels: list[tuple[np.ndarray, int]],
        cv: tuple[np.ndarray, Objective] | None,
        base_oof: np.ndarray | None,
    ) -> None:
        """Decide on the ridge residual (by CV unless fixed) and fit it on what the chain leaves unexplained."""
        n = z.shape[0]
        self.residual_ridge_ = None
        self.resid_coef_ = np.zeros((z.shape[1], y.shape[1]))
        self.resid_mean_ = np.zeros(y.shape[1])
        if self.residual is False or z.shape[1] == 0 or (self.residual is None and cv is None):
            return
        if self.residual_ridge is not None:
            alphas = [self.residual_ridge]
        else:
            alphas = [n * a for a in RESIDUAL_GRID] if cv is not None else [float(n)]
        alpha: float | None = alphas[0]
        if cv is not None and base_oof is not None and (self.residual is None or len(alphas) > 1):
            folds, objective = cv

            def residuals(train: np.ndarray) -> list[np.ndarray]:
                chain = fit_chain([(g[train], m) for g, m in levels], y[train], w[train])
                out = np.zeros_like(y)
                out[train] = y[train] - chain.predict([g[train] for g, _ in levels], int(train.sum()))
                return [out]

            (pred,), _ = ridge_oof(z, residuals, folds, alphas, w)
            options: list[float | None] = list(alphas)
            scores = [self._oof_score(objective, base_oof + p) for p in pred]
            if self.residual is None:
                options, scores = [None, *options], [self._oof_score(objective, base_oof), *scores]
            choice = pick(options, scores, objective.metric)
            alpha = choice.value
            self.cv_score_ = choice.score
            if alpha is not None:
                self._cv_oof = _split_oof(base_oof + pred[alphas.index(alpha)])
        if alpha is None:
            return
        resid = y - self.chain_.predict([g for g, _ in levels], y.shape[0])
        self.resid_coef_, self.resid_mean_ = _ridge_fit(z, resid, w, alpha)
        self.residual_ridge_ = alpha

    # ------------------------------------------------------------------ routing
    def _assign(self, z: np.ndarray) -> np.ndarray:
        c = self.centres_
        if c.shape[0] == 1:
            return np.zeros(z.shape[0], dtype=np.int64)
        d2 = (z**2).sum(axis=1, keepdims=True) - 2.0 * z @ c.T + (c**2).sum(axis=1)[None, :]
        return np.asarray(d2.argmin(axis=1), dtype=np.int64)

    def _levels(self, x: np.ndarray) -> list[np.ndarray]:
        task = self._category(x)
        labels = self._assign(self._standardized(x))
        return [g for g, _ in self._fit_levels(task, labels, int(self.n_clusters_ or 1))]

    def _level_sizes(self) -> list[int]:
        return [
            n
            for _, n in self._fit_levels(
                np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), int(self.n_clusters_ or 1)
            )
        ]

    def _estimates(self, x: np.ndarray) -> np.ndarray:
        task = self._category(x)
        z = self._standardized(x)
        labels = self._assign(z)
        k = int(self.n_clusters_ or 1)
        est = self.chain_.predict([g for g, _ in self._fit_levels(task, labels, k)], x.shape[0])
        unknown = task < 0
        if unknown.any() and len(self.categories_):
            est[unknown] = self.notask_.predict([labels[unknown]] if k > 1 else [], int(unknown.sum()))
        return est + z @ self.resid_coef_ + self.resid_mean_[None, :]

    # ------------------------------------------------------------------ onboarding
    def _chains(self) -> dict[str, Chain]:
        return {"chain_": self.chain_, "notask_": self.notask_}

    def _chain_levels(self, x: np.ndarray) -> dict[str, list[tuple[np.ndarray, int]]]:
        labels = self._assign(self._standardized(x))
        k = int(self.n_clusters_ or 1)
        return {**super()._chain_levels(x), "notask_": [(labels, k)] if k > 1 else []}

    def _linear_state(self) -> dict[str, np.ndarray]:
        return {"resid_coef_": self.resid_coef_, "resid_mean_": self.resid_mean_}

    # ------------------------------------------------------------------ persistence
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        state, arrays = super()._state()
        state.update(n_clusters=self.n_clusters_, residual_ridge=self.residual_ridge_)
        arrays.update(
            centres=self.centres_,
            resid_coef=self.resid_coef_,
            resid_mean=self.resid_mean_,
            **chain_arrays("notask_", self.notask_),
        )
        return state, arrays

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        super()._restore(state, arrays)
        self.n_clusters_ = int(state["n_clusters"])
        self.residual_ridge_ = None if state["residual_ridge"] is None else float(state["residual_ridge"])
        self.centres_ = arrays["centres"]
        self.resid_coef_, self.resid_mean_ = arrays["resid_coef"], arrays["resid_mean"]
        self.notask_ = chain_from("notask_", arrays)


def _ridge_fit(z: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """``(coef (d, M), mean (M,))`` of a ridge per column of ``y (n, M)`` (rows weighted by ``w (n, M)``) on
    ``z (n, d)``, shrinking towards each column's weighted mean (the full-data fit :func:`ridge_oof` scores)."""
    d, m = z.shape[1], y.shape[1]
    coef = np.zeros((d, m))
    means = np.zeros(m)
    eye = np.eye(d)
    shared = bool(np.all(w == w[:, :1]))
    cols = [np.arange(m)] if shared else [np.array([j]) for j in range(m)]
    for c in cols:
        wc = w[:, c[0]]
        mu = (wc @ y[:, c]) / max(float(wc.sum()), 1e-300)
        gram = z.T @ (z * wc[:, None]) + alpha * eye
        coef[:, c] = np.linalg.solve(gram, z.T @ ((y[:, c] - mu) * wc[:, None]))
        means[c] = mu
    return coef, means
