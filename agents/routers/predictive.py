"""Predictive routers in the style of RouterBench: :class:`KNNRouter`, :class:`MLPRouter` and
:class:`LogisticRouter` predict each model's quality from the query features and pick
``argmax_k q̂_k − λ·ĉ_k/cost_scale`` (λ settable per call)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from agents.routers._common import _BaseRouter, _finite, greedy_probabilities
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
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    return mean, scale


@register_policy
@dataclass(eq=False, kw_only=True)
class KNNRouter(_PredictiveRouter):
    """k-nearest-neighbour router (RouterBench): a model's quality and cost on a query are their means over
    the ``n_neighbors`` closest training queries (Euclidean on standardised features) where it was observed.

    Args:
        n_neighbors: neighbours per query (≥ 1).
        weights: ``"uniform"`` or ``"distance"`` (inverse-distance weighting).
    """

    n_neighbors: int = 10
    weights: Literal["uniform", "distance"] = "uniform"
    # Unobserved training outcomes are stored as NaN (routing_env.policy.read_policy_dir allows them here only).
    nonfinite_arrays: ClassVar[tuple[str, ...]] = ("train_quality", "train_cost")

    def _validate(self) -> None:
        if not isinstance(self.n_neighbors, (int, np.integer)) or self.n_neighbors < 1:
            raise ConfigurationError(f"n_neighbors must be an int ≥ 1, got {self.n_neighbors!r}")
        if self.weights not in ("uniform", "distance"):
            raise ConfigurationError(f"weights must be 'uniform' or 'distance', got {self.weights!r}")

    def _hyperparameters(self) -> dict[str, Any]:
        return {**super()._hyperparameters(), "n_neighbors": int(self.n_neighbors), "weights": self.weights}

    def fit(
        self, dataset: LoggedDataset, cost_weight: float | None = None, *, featurizer: Any = None
    ) -> KNNRouter:
        if dataset.n_features == 0:
            raise ShapeError("KNNRouter needs query features, and the dataset has none (width 0)")
        self._start_fit(dataset, cost_weight, featurizer)
        x = np.asarray(dataset.features, dtype=np.float64)
        self.mean_, self.scale_ = _standardize(x)
        self.train_x_ = x
        self.train_quality_ = np.array(dataset.quality)
        self.train_cost_ = np.array(dataset.cost)
        self._build()
        return self

    def _build(self) -> None:
        from sklearn.neighbors import NearestNeighbors

        k = min(int(self.n_neighbors), self.train_x_.shape[0])
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
        return {}, {
            "train_x": self.train_x_,
            "train_quality": self.train_quality_,
            "train_cost": self.train_cost_,
            "mean": self.mean_,
            "scale": self.scale_,
        }

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.train_x_ = arrays["train_x"]
        self.train_quality_ = arrays["train_quality"]
        self.train_cost_ = arrays["train_cost"]
        self.mean_, self.scale_ = arrays["mean"], arrays["scale"]
        self._build()


@register_policy
@dataclass(eq=False, kw_only=True)
class MLPRouter(_PredictiveRouter):
    """Multi-layer perceptron predicting every model's quality at once (RouterBench's MLP router).

    Trained with scikit-learn's ``MLPRegressor`` on standardised features and full-information logs; cost is each
    model's mean training cost (USD), as in RouterBench. The weights are stored as arrays and the forward pass is
    recomputed on load. Predicted quality is clipped to [0, 1].

    Args:
        hidden_layer_sizes: widths of the hidden ReLU layers.
        l2: L2 penalty (scikit-learn's ``alpha``).
        max_iter: training epochs (Adam).
    """

    hidden_layer_sizes: tuple[int, ...] = (64,)
    l2: float = 1e-3
    max_iter: int = 300

    def _validate(self) -> None:
        sizes = tuple(int(h) for h in self.hidden_layer_sizes)
        if not sizes or min(sizes) < 1:
            raise ConfigurationError(
                f"hidden_layer_sizes must be positive ints, got {self.hidden_layer_sizes!r}"
            )
        self.hidden_layer_sizes = sizes
        self.l2 = _finite("l2", self.l2, 0.0)
        if int(self.max_iter) < 1:
            raise ConfigurationError(f"max_iter must be ≥ 1, got {self.max_iter!r}")

    def _hyperparameters(self) -> dict[str, Any]:
        return {
            **super()._hyperparameters(),
            "hidden_layer_sizes": list(self.hidden_layer_sizes),
            "l2": self.l2,
            "max_iter": int(self.max_iter),
        }

    def fit(
        self, dataset: LoggedDataset, cost_weight: float | None = None, *, featurizer: Any = None
    ) -> MLPRouter:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPRegressor

        if not dataset.is_full_information:
            raise PartialInformationError(
                "MLPRouter predicts every model's quality jointly and needs full-information logs; use "
                "LogisticRouter or KNNRouter for partial logs"
            )
        if dataset.n_features == 0:
            raise ShapeError("MLPRouter needs query features, and the dataset has none (width 0)")
        self._start_fit(dataset, cost_weight, featurizer)
        x = np.asarray(dataset.features, dtype=np.float64)
        self.mean_, self.scale_ = _standardize(x)
        net = MLPRegressor(
            hidden_layer_sizes=self.hidden_layer_sizes,
            alpha=self.l2,
            max_iter=int(self.max_iter),
            random_state=0 if self.seed is None else int(self.seed),
        )
        with warnings.catch_warnings():
            # A capped epoch budget is the documented hyperparameter, not a fault worth a warning per fit.
            warnings.simplefilter("ignore", ConvergenceWarning)
            net.fit((x - self.mean_) / self.scale_, np.asarray(dataset.quality))
        self.coefs_ = [np.asarray(c, dtype=np.float64) for c in net.coefs_]
        self.intercepts_ = [np.asarray(b, dtype=np.float64) for b in net.intercepts_]
        self.mean_cost_ = np.asarray(dataset.mean_cost(), dtype=np.float64)
        return self

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
        return {"n_layers": len(self.coefs_)}, arrays

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        n = int(state["n_layers"])
        self.coefs_ = [arrays[f"coef_{i}"] for i in range(n)]
        self.intercepts_ = [arrays[f"intercept_{i}"] for i in range(n)]
        self.mean_, self.scale_, self.mean_cost_ = arrays["mean"], arrays["scale"], arrays["mean_cost"]


@register_policy
@dataclass(eq=False, kw_only=True)
class LogisticRouter(_PredictiveRouter):
    """One logistic regression per model predicting its quality (RouterBench-style predictive router).

    Quality in [0, 1] is a soft label: each observed row enters as a positive with weight ``q`` and a negative
    with weight ``1 − q``, which is exactly the cross-entropy with soft targets. Works on partial logs (each model
    learns from the rows where it was observed). Cost is each model's mean training cost (USD).

    Args:
        C: inverse L2 strength (> 0), as in scikit-learn.
    """

    C: float = 1.0

    def _validate(self) -> None:
        self.C = _finite("C", self.C, 0.0, strict=True)

    def _hyperparameters(self) -> dict[str, Any]:
        return {**super()._hyperparameters(), "C": self.C}

    def fit(
        self, dataset: LoggedDataset, cost_weight: float | None = None, *, featurizer: Any = None
    ) -> LogisticRouter:
        from sklearn.linear_model import LogisticRegression

        self._start_fit(dataset, cost_weight, featurizer)
        x = np.asarray(dataset.features, dtype=np.float64)
        self.mean_: np.ndarray
        self.scale_: np.ndarray
        self.mean_, self.scale_ = _standardize(x) if x.shape[1] else (np.zeros(0), np.ones(0))
        z = (x - self.mean_) / self.scale_
        k, d = dataset.n_models, x.shape[1]
        self.coef_ = np.zeros((k, d))
        self.intercept_ = np.zeros(k)
        for j in range(k):
            rows = ~np.isnan(dataset.quality[:, j])
            q = dataset.quality[rows, j]
            if q.size == 0:
                continue
            mean_q = float(np.clip(q.mean(), 1e-6, 1 - 1e-6))
            if q.min() == q.max() or d == 0:
                # One label only (or no features): the fitted model is the constant log-odds of the mean.
                self.intercept_[j] = math.log(mean_q / (1 - mean_q))
                continue
            xs = np.concatenate([z[rows], z[rows]])
            ys = np.concatenate([np.ones(q.size), np.zeros(q.size)])
            ws = np.concatenate([q, 1.0 - q])
            keep = ws > 0
            model = LogisticRegression(C=self.C, max_iter=1000)
            model.fit(xs[keep], ys[keep], sample_weight=ws[keep])
            self.coef_[j] = model.coef_[0]
            self.intercept_[j] = model.intercept_[0]
        self.mean_cost_ = np.nan_to_num(dataset.mean_cost())
        return self

    def _quality_cost(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logit = ((x - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_
        q = 1.0 / (1.0 + np.exp(-logit))
        return q, np.broadcast_to(self.mean_cost_, q.shape)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {}, {
            "coef": self.coef_,
            "intercept": self.intercept_,
            "mean": self.mean_,
            "scale": self.scale_,
            "mean_cost": self.mean_cost_,
        }

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.coef_, self.intercept_ = arrays["coef"], arrays["intercept"]
        self.mean_, self.scale_, self.mean_cost_ = arrays["mean"], arrays["scale"], arrays["mean_cost"]
