"""Predictive routers in the style of RouterBench: :class:`KNNRouter`, :class:`MLPRouter` and
:class:`LogisticRouter` predict each model's quality from the query features and pick
``argmax_k q̂_k − λ·ĉ_k/cost_scale`` (λ settable per call).

Each standardises the features on the training logs and, with ``tune`` (default), chooses its smoothing or
regularisation on ``fit`` by grouped cross-validation on those logs (:mod:`agents.routers._cv`): the number of
neighbours of kNN, the inverse L2 strength of the logistic regressions, the MLP's weight decay and its number of
epochs (early stopping on a held-out fold). A hyperparameter given explicitly is not tuned; ``tune=False`` uses
each one's documented fallback."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from agents.routers._common import _BaseRouter, _finite, greedy_probabilities
from agents.routers._cv import Objective, Tunable, knn_oof, make_folds, pick, standardizer
from routing_env.data.dataset import LoggedDataset
from routing_env.errors import (
    ConfigurationError,
    PartialInformationError,
    ShapeError,
)
from routing_env.policy import (
    register_policy,
)

__all__ = ["KNNRouter", "LogisticRouter", "MLPRouter"]


# ---------------------------------------------------------------------------------------------- predictive routers
@dataclass(eq=False, kw_only=True)
class _PredictiveRouter(_BaseRouter):
    """Routes to ``argmax_k q̂_k(x) − λ·ĉ_k/cost_scale`` (ties share the mass); λ can be overridden per call."""

    def _quality_cost(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise ConfigurationError(f"{type(self).__name__} defines no predictor")  # pragma: no cover

    def predict_outcomes(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted ``quality (n, K)`` and ``cost (n, K)`` USD for ``features (n, d)``."""
        return self._quality_cost(self._features(features))

    def action_probabilities(self, features: np.ndarray, cost_weight: float | None = None) -> np.ndarray:
        """``(n, K)`` one-hot of the best predicted score; ``cost_weight`` overrides λ for this call."""
        x = self._features(features)
        lam = self.cost_weight if cost_weight is None else _finite("cost_weight", cost_weight, 0.0)
        q, c = self._quality_cost(x)
        return greedy_probabilities(q - (lam / self.cost_scale_) * c)


def _standardize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return standardizer(x)


def _objective(router: Any, dataset: LoggedDataset) -> Objective:
    return Objective(dataset, router.cv_cost_weights or (router.cost_weight,), router.cost_scale_)


#: Neighbour counts kNN's cross-validation tries (most smoothing first).
KNN_GRID = (320, 160, 80, 40, 20, 10, 5)
#: Inverse L2 strengths the logistic router's cross-validation tries (most regularised first).
LOGISTIC_GRID = (1e-3, 1e-2, 0.1, 1.0, 10.0)
#: Weight decays the MLP's cross-validation tries (most regularised first).
MLP_L2_GRID = (1.0, 0.1, 1e-2, 1e-3)
#: Epochs without improvement of the held-out score before the MLP's early stopping gives up.
_PATIENCE = 15


@register_policy
@dataclass(eq=False, kw_only=True)
class KNNRouter(_PredictiveRouter, Tunable):
    """k-nearest-neighbour router (RouterBench): a model's quality and cost on a query are their means over
    the ``n_neighbors`` closest training queries (Euclidean on standardised features) where it was observed.

    Args:
        n_neighbors: neighbours per query (≥ 1); ``None`` (default) = chosen by cross-validation among 5 … 320
            (10 with ``tune=False``). The value in use is ``n_neighbors_``.
        weights: ``"uniform"`` or ``"distance"`` (inverse-distance weighting).
    """

    chosen_names: ClassVar[tuple[str, ...]] = ("n_neighbors_",)

    n_neighbors: int | None = None
    weights: Literal["uniform", "distance"] = "uniform"
    n_neighbors_: int = field(default=10, init=False)
    cv_score_: float | None = field(default=None, init=False)
    # Unobserved training outcomes are stored as NaN (routing_env.policy.read_policy_dir allows them here only).
    nonfinite_arrays: ClassVar[tuple[str, ...]] = ("train_quality", "train_cost")

    def _validate(self) -> None:
        self._validate_cv()
        if self.n_neighbors is not None and (
            not isinstance(self.n_neighbors, (int, np.integer)) or self.n_neighbors < 1
        ):
            raise ConfigurationError(f"n_neighbors must be an int ≥ 1 or None, got {self.n_neighbors!r}")
        self.n_neighbors_ = 10 if self.n_neighbors is None else int(self.n_neighbors)
        if self.weights not in ("uniform", "distance"):
            raise ConfigurationError(f"weights must be 'uniform' or 'distance', got {self.weights!r}")

    def _hyperparameters(self) -> dict[str, Any]:
        return {
            **super()._hyperparameters(),
            **self._cv_hyperparameters(),
            "n_neighbors": None if self.n_neighbors is None else int(self.n_neighbors),
            "weights": self.weights,
        }

    def fit(
        self, dataset: LoggedDataset, cost_weight: float | None = None, *, featurizer: Any = None
    ) -> KNNRouter:
        if dataset.n_features == 0:
            raise ShapeError("KNNRouter needs query features, and the dataset has none (width 0)")
        self._start_fit(dataset, cost_weight, featurizer)
        x = self._fit_features(dataset)
        self.mean_, self.scale_ = _standardize(x)
        self.train_x_ = x
        self.train_quality_ = np.array(dataset.quality)
        self.train_cost_ = np.array(dataset.cost)
        self.cv_score_ = None
        if self.tune:
            z = (x - self.mean_) / self.scale_
            folds = make_folds(dataset, self.cv, self.seed)
            cap = max(1, int(dataset.n_queries * (1 - 1 / max(int(folds.max()) + 1, 2))))
            ks = [k for k in KNN_GRID if k <= cap] if self.n_neighbors is None else [int(self.n_neighbors)]
            q, c = knn_oof(
                z, [self.train_quality_, self.train_cost_], folds, ks or [cap], self.weights == "distance"
            )
            objective = _objective(self, dataset)
            choice = pick(ks or [cap], [objective.score(q[i], c[i]) for i in range(len(q))], objective.metric)
            self.n_neighbors_ = int(choice.value)
            self.cv_score_ = choice.score
            self._cv_oof = (q[choice.best], c[choice.best])
        self._build()
        return self

    def _build(self) -> None:
        from sklearn.neighbors import NearestNeighbors

        k = min(int(self.n_neighbors_), self.train_x_.shape[0])
        self._nn = NearestNeighbors(n_neighbors=k).fit((self.train_x_ - self.mean_) / self.scale_)
        with np.errstate(invalid="ignore"):
            self._fallback_q = np.nan_to_num(np.nanmean(self.train_quality_, axis=0))
            self._fallback_c = np.nan_to_num(np.nanmean(self.train_cost_, axis=0))

    def _quality_cost(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dist, idx = self._nn.kneighbors((x - self.mean_) / self.scale_)
        w = 1.0 / np.maximum(dist, 1e-12) if self.weights == "distance" else np.ones_like(dist)
        out = []
        for target, fallback in (
            (self.train_quality_, self._fallback_q),
            (self.train_cost_, self._fallback_c),
        ):
            vals = target[idx]  # (n, k, K)
            mask = ~np.isnan(vals)
            ww = w[:, :, None] * mask
            total = ww.sum(axis=1)
            est = np.where(mask, vals, 0.0)
            pred = (ww * est).sum(axis=1) / np.maximum(total, 1e-300)
            out.append(np.where(total > 0, pred, fallback[None, :]))
        return out[0], out[1]

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"n_neighbors": self.n_neighbors_, "cv_score": self.cv_score_}, {
            "train_x": self.train_x_,
            "train_quality": self.train_quality_,
            "train_cost": self.train_cost_,
            "mean": self.mean_,
            "scale": self.scale_,
        }

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.n_neighbors_ = int(state.get("n_neighbors", self.n_neighbors_))
        self.cv_score_ = state.get("cv_score")
        self.train_x_ = arrays["train_x"]
        self.train_quality_ = arrays["train_quality"]
        self.train_cost_ = arrays["train_cost"]
        self.mean_, self.scale_ = arrays["mean"], arrays["scale"]
        self._build()


@register_policy
@dataclass(eq=False, kw_only=True)
class MLPRouter(_PredictiveRouter, Tunable):
    """Multi-layer perceptron predicting every model's quality at once (RouterBench's MLP router).

    Trained with scikit-learn's ``MLPRegressor`` (Adam) on standardised features and full-information logs; cost
    is each model's mean training cost (USD), as in RouterBench. The weights are stored as arrays and the forward
    pass is recomputed on load. Predicted quality is clipped to [0, 1].

    With ``tune`` (default), one grouped fold of the training logs is held out: for each weight decay the network
    is trained epoch by epoch on the rest and scored on it (the CV objective), stopping after 15 epochs without
    improvement; the best (weight decay, epochs) pair is then trained on all the logs.

    Args:
        hidden_layer_sizes: widths of the hidden ReLU layers.
        l2: L2 penalty (scikit-learn's ``alpha``); ``None`` (default) = chosen among 1 … 1e-3 (1e-3 with
            ``tune=False``). In use: ``l2_``.
        n_epochs: training epochs; ``None`` (default) = early stopping on the held-out fold (scikit-learn's own
            stopping rule within ``max_iter`` epochs with ``tune=False``). In use: ``n_epochs_``.
        max_iter: the most epochs training may take.
    """

    chosen_names: ClassVar[tuple[str, ...]] = ("l2_", "n_epochs_")

    hidden_layer_sizes: tuple[int, ...] = (64,)
    l2: float | None = None
    n_epochs: int | None = None
    max_iter: int = 300
    l2_: float = field(default=1e-3, init=False)
    n_epochs_: int | None = field(default=None, init=False)
    cv_score_: float | None = field(default=None, init=False)

    def _validate(self) -> None:
        self._validate_cv()
        sizes = tuple(int(h) for h in self.hidden_layer_sizes)
        if not sizes or min(sizes) < 1:
            raise ConfigurationError(
                f"hidden_layer_sizes must be positive ints, got {self.hidden_layer_sizes!r}"
            )
        self.hidden_layer_sizes = sizes
        if self.l2 is not None:
            self.l2 = _finite("l2", self.l2, 0.0)
        self.l2_ = 1e-3 if self.l2 is None else self.l2
        if int(self.max_iter) < 1:
            raise ConfigurationError(f"max_iter must be ≥ 1, got {self.max_iter!r}")
        if self.n_epochs is not None and not 1 <= int(self.n_epochs) <= int(self.max_iter):
            raise ConfigurationError(
                f"n_epochs must be in [1, max_iter={self.max_iter}], got {self.n_epochs!r}"
            )

    def _hyperparameters(self) -> dict[str, Any]:
        return {
            **super()._hyperparameters(),
            **self._cv_hyperparameters(),
            "hidden_layer_sizes": list(self.hidden_layer_sizes),
            "l2": self.l2,
            "n_epochs": None if self.n_epochs is None else int(self.n_epochs),
            "max_iter": int(self.max_iter),
        }

    def _net(self, l2: float, max_iter: int) -> Any:
        from sklearn.neural_network import MLPRegressor

        seed = 0 if self.seed is None else int(self.seed)
        return MLPRegressor(
            hidden_layer_sizes=self.hidden_layer_sizes, alpha=l2, max_iter=max_iter, random_state=seed
        )

    def fit(
        self, dataset: LoggedDataset, cost_weight: float | None = None, *, featurizer: Any = None
    ) -> MLPRouter:
        from sklearn.exceptions import ConvergenceWarning

        if not dataset.is_full_information:
            raise PartialInformationError(
                "MLPRouter predicts every model's quality jointly and needs full-information logs; use "
                "LogisticRouter or KNNRouter for partial logs"
            )
        if dataset.n_features == 0:
            raise ShapeError("MLPRouter needs query features, and the dataset has none (width 0)")
        self._start_fit(dataset, cost_weight, featurizer)
        x = self._fit_features(dataset)
        self.mean_, self.scale_ = _standardize(x)
        z = (x - self.mean_) / self.scale_
        quality = np.asarray(dataset.quality)
        self.l2_ = 1e-3 if self.l2 is None else self.l2
        self.n_epochs_ = None if self.n_epochs is None else int(self.n_epochs)
        self.cv_score_ = None
        if self.tune:
            self._early_stopping(dataset, z, quality)
        with warnings.catch_warnings():
            # A capped epoch budget is the documented hyperparameter, not a fault worth a warning per fit.
            warnings.simplefilter("ignore", ConvergenceWarning)
            if self.n_epochs_ is None:
                net = self._net(self.l2_, int(self.max_iter)).fit(z, quality)
            else:
                net = self._net(self.l2_, 1)
                for _ in range(self.n_epochs_):
                    net.partial_fit(z, quality)
        self.coefs_ = [np.asarray(c, dtype=np.float64) for c in net.coefs_]
        self.intercepts_ = [np.asarray(b, dtype=np.float64) for b in net.intercepts_]
        self.mean_cost_ = np.asarray(dataset.mean_cost(), dtype=np.float64)
        return self

    def _early_stopping(self, dataset: LoggedDataset, z: np.ndarray, quality: np.ndarray) -> None:
        """Choose ``l2_`` and ``n_epochs_`` on one held-out grouped fold."""
        held = make_folds(dataset, self.cv, self.seed) == 0
        objective = _objective(self, dataset.filter(held))
        cost = np.broadcast_to(
            np.asarray(dataset.cost)[~held].mean(axis=0), (int(held.sum()), dataset.n_models)
        )
        options, scores = [], []
        for l2 in MLP_L2_GRID if self.l2 is None else (self.l2,):
            net = self._net(l2, 1)
            best, best_epoch, stale = -math.inf, 1, 0
            for epoch in range(1, (self.n_epochs or int(self.max_iter)) + 1):
                net.partial_fit(z[~held], quality[~held])
                score = objective.score(np.clip(net.predict(z[held]), 0.0, 1.0), cost)
                if score > best + 1e-9:
                    best, best_epoch, stale = score, epoch, 0
                else:
                    stale += 1
                    if self.n_epochs is None and stale >= _PATIENCE:
                        break
            # Given epochs are kept as given, and scored where training stops.
            options.append((l2, self.n_epochs or best_epoch))
            scores.append(score if self.n_epochs else best)
        choice = pick(options, scores, objective.metric)
        self.l2_, self.n_epochs_ = float(choice.value[0]), int(choice.value[1])
        self.cv_score_ = choice.score

    def _quality_cost(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = (x - self.mean_) / self.scale_
        for i, (w, b) in enumerate(zip(self.coefs_, self.intercepts_)):
            h = h @ w + b
            if i < len(self.coefs_) - 1:
                np.maximum(h, 0.0, out=h)
        q = np.clip(h, 0.0, 1.0)
        return q, np.broadcast_to(self.mean_cost_, q.shape)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {"mean": self.mean_, "scale": self.scale_, "mean_cost": self.mean_cost_}
        for i, (w, b) in enumerate(zip(self.coefs_, self.intercepts_)):
            arrays[f"coef_{i}"] = w
            arrays[f"intercept_{i}"] = b
        chosen = {"l2": self.l2_, "n_epochs": self.n_epochs_, "cv_score": self.cv_score_}
        return {"n_layers": len(self.coefs_), **chosen}, arrays

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        n = int(state["n_layers"])
        self.l2_ = float(state.get("l2", self.l2_))
        self.n_epochs_ = None if state.get("n_epochs") is None else int(state["n_epochs"])
        self.cv_score_ = state.get("cv_score")
        self.coefs_ = [arrays[f"coef_{i}"] for i in range(n)]
        self.intercepts_ = [arrays[f"intercept_{i}"] for i in range(n)]
        self.mean_, self.scale_, self.mean_cost_ = arrays["mean"], arrays["scale"], arrays["mean_cost"]


def _logistic_path(
    z: np.ndarray, quality: np.ndarray, cs: Sequence[float]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(coef (K, d), intercept (K,))`` of one soft-label logistic regression per model of ``quality (n, K)`` on
    ``z (n, d)`` for each inverse strength of ``cs`` (warm-started along the path)."""
    from sklearn.linear_model import LogisticRegression

    k, d = quality.shape[1], z.shape[1]
    out = [(np.zeros((k, d)), np.zeros(k)) for _ in cs]
    for j in range(k):
        rows = ~np.isnan(quality[:, j])
        q = quality[rows, j]
        if q.size == 0:
            continue
        mean_q = float(np.clip(q.mean(), 1e-6, 1 - 1e-6))
        if q.min() == q.max() or d == 0:
            # One label only (or no features): the fitted model is the constant log-odds of the mean.
            for _, intercept in out:
                intercept[j] = math.log(mean_q / (1 - mean_q))
            continue
        # Quality in [0, 1] is a soft label: a positive with weight q and a negative with weight 1 − q.
        xs = np.concatenate([z[rows], z[rows]])
        ys = np.concatenate([np.ones(q.size), np.zeros(q.size)])
        ws = np.concatenate([q, 1.0 - q])
        keep = ws > 0
        model = LogisticRegression(C=1.0, max_iter=1000, warm_start=True)
        for (coef, intercept), c in zip(out, cs):
            model.set_params(C=float(c))
            model.fit(xs[keep], ys[keep], sample_weight=ws[keep])
            coef[j] = model.coef_[0]
            intercept[j] = model.intercept_[0]
    return out


@register_policy
@dataclass(eq=False, kw_only=True)
class LogisticRouter(_PredictiveRouter, Tunable):
    """One logistic regression per model predicting its quality (RouterBench-style predictive router).

    Quality in [0, 1] is a soft label: each observed row enters as a positive with weight ``q`` and a negative
    with weight ``1 − q``, which is exactly the cross-entropy with soft targets. Works on partial logs (each model
    learns from the rows where it was observed). Cost is each model's mean training cost (USD).

    Args:
        C: inverse L2 strength (> 0), as in scikit-learn; ``None`` (default) = chosen by cross-validation among
            1e-3 … 10 (1.0 with ``tune=False``). The value in use is ``C_``.
    """

    chosen_names: ClassVar[tuple[str, ...]] = ("C_",)

    C: float | None = None
    C_: float = field(default=1.0, init=False)
    cv_score_: float | None = field(default=None, init=False)

    def _validate(self) -> None:
        self._validate_cv()
        if self.C is not None:
            self.C = _finite("C", self.C, 0.0, strict=True)
        self.C_ = 1.0 if self.C is None else self.C

    def _hyperparameters(self) -> dict[str, Any]:
        return {**super()._hyperparameters(), **self._cv_hyperparameters(), "C": self.C}

    def fit(
        self, dataset: LoggedDataset, cost_weight: float | None = None, *, featurizer: Any = None
    ) -> LogisticRouter:
        self._start_fit(dataset, cost_weight, featurizer)
        x = self._fit_features(dataset)
        self.mean_: np.ndarray
        self.scale_: np.ndarray
        self.mean_, self.scale_ = _standardize(x) if x.shape[1] else (np.zeros(0), np.ones(0))
        z = (x - self.mean_) / self.scale_
        quality = np.asarray(dataset.quality, dtype=np.float64)
        self.cv_score_ = None
        self.C_ = 1.0 if self.C is None else self.C
        if self.tune and x.shape[1]:
            cs = LOGISTIC_GRID if self.C is None else (self.C,)
            folds = make_folds(dataset, self.cv, self.seed)
            oof = np.zeros((len(cs), *quality.shape))
            cost = np.zeros(quality.shape)
            for f in np.unique(folds):
                tr, va = folds != f, folds == f
                for i, (coef, intercept) in enumerate(_logistic_path(z[tr], quality[tr], cs)):
                    oof[i, va] = 1.0 / (1.0 + np.exp(-(z[va] @ coef.T + intercept)))
                with np.errstate(invalid="ignore"):
                    cost[va] = np.nan_to_num(np.nanmean(dataset.cost[tr], axis=0))
            objective = _objective(self, dataset)
            choice = pick(cs, [objective.score(o, cost) for o in oof], objective.metric)
            self.C_, self.cv_score_ = float(choice.value), choice.score
            self._cv_oof = (oof[choice.best], cost)
        ((self.coef_, self.intercept_),) = _logistic_path(z, quality, (self.C_,))
        self.mean_cost_ = np.nan_to_num(dataset.mean_cost())
        return self

    def _quality_cost(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logit = ((x - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_
        q = 1.0 / (1.0 + np.exp(-logit))
        return q, np.broadcast_to(self.mean_cost_, q.shape)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"C": self.C_, "cv_score": self.cv_score_}, {
            "coef": self.coef_,
            "intercept": self.intercept_,
            "mean": self.mean_,
            "scale": self.scale_,
            "mean_cost": self.mean_cost_,
        }

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.C_ = float(state.get("C", self.C_))
        self.cv_score_ = state.get("cv_score")
        self.coef_, self.intercept_ = arrays["coef"], arrays["intercept"]
        self.mean_, self.scale_, self.mean_cost_ = arrays["mean"], arrays["scale"], arrays["mean_cost"]
