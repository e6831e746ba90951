"""Baseline routers from the routing literature, behind the same :class:`~routing_env.policy.Policy` protocol.

Fixed rules: :class:`RandomRouter`, :class:`FixedModel`, :class:`Cheapest`, :class:`BestSingleModel` (the best
model on the training split for a given cost weight λ) and :class:`Oracle` (per-query best model; an upper bound
that needs the true outcomes and cannot route new queries).

Predictive routers in the style of RouterBench: :class:`KNNRouter`, :class:`MLPRouter` and :class:`LogisticRouter`
predict each model's quality from the query features and pick ``argmax_k q̂_k − λ·ĉ_k/cost_scale``.

:class:`MatrixFactorizationRouter` is RouteLLM's matrix-factorisation router for a strong/weak pair with a
threshold on the predicted probability that the strong model answers better, and :class:`ThresholdCascade` is a
FrugalGPT-style cascade (escalate while the answer's signal is below a per-stage threshold τ, with τ tuned on the
training data for a given λ).

Every router follows scikit-learn's convention: keyword hyperparameters in the constructor, ``fit(dataset,
cost_weight=…)`` learns, ``action_probabilities(features (n, d)) -> (n, K)``, ``act(features) -> (actions,
propensities)`` sampled with the router's seeded generator (deterministic routers put probability 1 on their
choice; exact ties share it), and ``save(dir)``/``load(dir)`` without pickle (``routing_env.policy.load_policy``
restores any of them). Scikit-learn estimators are stored as their parameter arrays and rebuilt on load.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from agents.bandits import (
    _check_models_arg,
    _finite,
    greedy_probabilities,
    load_featurizer_dir,
    rng_from_state,
    rng_state,
    sample_rows,
    save_featurizer_dir,
)
from routing_env.data.dataset import LoggedDataset
from routing_env.errors import (
    ConfigurationError,
    ModelMismatchError,
    PartialInformationError,
    PolicyFormatError,
    ShapeError,
)
from routing_env.policy import (
    check_features,
    check_models,
    read_policy_dir,
    register_policy,
    write_policy_dir,
)

__all__ = [
    "BestSingleModel",
    "Cheapest",
    "FixedModel",
    "KNNRouter",
    "LogisticRouter",
    "MLPRouter",
    "MatrixFactorizationRouter",
    "Oracle",
    "RandomRouter",
    "ThresholdCascade",
    "cascade_outcomes",
]


# ---------------------------------------------------------------------------------------------- shared base
@dataclass(eq=False, kw_only=True)
class _BaseRouter:
    """Shared plumbing: sizing on ``fit``, input checks, seeded ``act``, and the no-pickle save format.

    Hyperparameters:
        cost_weight: λ (≥ 0) used by routers that trade quality against cost.
        cost_scale: USD per unit of λ; ``None`` = the training dataset's ``resolve_cost_scale("max_mean")``.
        seed: seed of the generator ``act`` samples with.
        featurizer: optional featurizer (``transform``/``save``) saved with the router.
    """

    cost_weight: float = 0.0
    cost_scale: float | None = None
    seed: int | None = 0
    featurizer: Any = field(default=None, repr=False)

    models: tuple[str, ...] = field(default=(), init=False)
    n_features: int | None = field(default=None, init=False)
    cost_scale_: float = field(default=1.0, init=False)

    #: Whether the router reads the features (``False``: any width is accepted, only the row count matters).
    uses_features: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self.cost_weight = _finite("cost_weight", self.cost_weight, 0.0)
        if self.cost_scale is not None:
            self.cost_scale = _finite("cost_scale", self.cost_scale, 0.0, strict=True)
        if self.seed is not None and not isinstance(self.seed, (int, np.integer)):
            raise ConfigurationError(f"seed must be an int or None, got {self.seed!r}")
        self._validate()
        self._rng = np.random.default_rng(self.seed)

    def _validate(self) -> None:
        """Subclasses check their own hyperparameters here."""

    def _hyperparameters(self) -> dict[str, Any]:
        return {"cost_weight": self.cost_weight, "cost_scale": self.cost_scale, "seed": self.seed}

    # ------------------------------------------------------------------ fitting
    def _start_fit(self, dataset: LoggedDataset, cost_weight: float | None, featurizer: Any) -> None:
        if not isinstance(dataset, LoggedDataset):
            raise ConfigurationError(f"fit expects a LoggedDataset, got {type(dataset).__name__}")
        if cost_weight is not None:
            self.cost_weight = _finite("cost_weight", cost_weight, 0.0)
        if featurizer is not None:
            self.featurizer = featurizer
        self.models = dataset.models
        self.n_features = dataset.n_features if self.uses_features else None
        self.cost_scale_ = (
            float(self.cost_scale) if self.cost_scale is not None else dataset.resolve_cost_scale("max_mean")
        )

    def _require_fitted(self) -> None:
        if not self.models:
            raise ConfigurationError(f"{type(self).__name__} is not fitted: call fit(dataset) first")

    def _features(self, features: Any) -> np.ndarray:
        self._require_fitted()
        return check_features(features, self.n_features)

    def check_dataset(self, dataset: LoggedDataset) -> None:
        """Refuse a dataset over other models (order matters) or with features of another width."""
        self._require_fitted()
        check_models(self.models, dataset.models)
        if self.n_features is not None and dataset.n_features != self.n_features:
            raise ShapeError(
                f"the dataset has features of width {dataset.n_features}, but this router was fitted on width "
                f"{self.n_features}"
            )

    # ------------------------------------------------------------------ the policy interface
    def action_probabilities(self, features: np.ndarray) -> np.ndarray:
        """``(n, K) float64`` routing distribution for ``features (n, d)``; rows sum to 1."""
        x = self._features(features)
        return self._probabilities(x)

    def _probabilities(self, x: np.ndarray) -> np.ndarray:
        raise ConfigurationError(f"{type(self).__name__} defines no routing rule")  # pragma: no cover

    def act(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(actions (n,) int64, propensities (n,) float64)`` drawn from :meth:`action_probabilities`."""
        probs = self.action_probabilities(features)
        actions = sample_rows(probs, self._rng)
        return actions, probs[np.arange(len(actions)), actions]

    def featurize(self, prompts: Sequence[str]) -> np.ndarray:
        """``(n, d)`` features of ``prompts`` from the router's featurizer."""
        if self.featurizer is None:
            raise ConfigurationError(f"{type(self).__name__} carries no featurizer; pass features instead")
        return np.asarray(self.featurizer.transform(list(prompts)))

    # ------------------------------------------------------------------ persistence
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-able fitted scalars and the fitted arrays."""
        return {}, {}

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Inverse of :meth:`_state`."""

    def save(self, path: str | Path) -> Path:
        """Write the router to directory ``path`` (``policy.json`` + ``arrays.npz``, no pickle)."""
        root = Path(path)
        state, arrays = self._state()
        config = {
            "hyperparameters": self._hyperparameters(),
            "models": list(self.models),
            "n_features": self.n_features,
            "cost_scale_": self.cost_scale_,
            "rng_state": rng_state(self._rng),
            "has_featurizer": self.featurizer is not None,
            "state": state,
        }
        write_policy_dir(root, type(self), config, arrays)
        save_featurizer_dir(self.featurizer, root)
        return root

    @classmethod
    def load(cls, path: str | Path) -> Any:
        """Restore a router written by :meth:`save`."""
        root = Path(path)
        _, config, arrays = read_policy_dir(root, expect=cls)
        try:
            obj = cls(**config["hyperparameters"])
            obj.models = tuple(config["models"])
            obj.n_features = None if config["n_features"] is None else int(config["n_features"])
            obj.cost_scale_ = float(config["cost_scale_"])
            obj._rng = rng_from_state(config["rng_state"])
            obj.featurizer = load_featurizer_dir(root) if config.get("has_featurizer") else None
            obj._restore(dict(config["state"]), arrays)
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyFormatError(
                f"{root} is not a valid {cls.__name__}: missing or bad entry {exc!r}"
            ) from None
        return obj


def _one_hot(n: int, k: int, index: int) -> np.ndarray:
    out = np.zeros((n, k))
    out[:, index] = 1.0
    return out


def _mean_rewards(dataset: LoggedDataset, cost_weight: float, scale: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.nanmean(dataset.rewards(cost_weight, cost_scale=scale), axis=0)


# ---------------------------------------------------------------------------------------------- fixed rules
@register_policy
@dataclass(eq=False, kw_only=True)
class RandomRouter(_BaseRouter):
    """Uniformly random model per query (accepts features of any width)."""

    uses_features: ClassVar[bool] = False

    def fit(
        self, dataset: LoggedDataset, cost_weight: float | None = None, *, featurizer: Any = None
    ) -> RandomRouter:
        """Learn the model list of ``dataset``; returns ``self``."""
        self._start_fit(dataset, cost_weight, featurizer)
        return self

    def _probabilities(self, x: np.ndarray) -> np.ndarray:
        k = len(self.models)
        return np.full((x.shape[0], k), 1.0 / k)


@register_policy
@dataclass(eq=False, kw_only=True)
class FixedModel(_BaseRouter):
    """Always the same model.

    Args:
        model: the model's name (must be one of the dataset's models).
    """

    model: str = ""
    uses_features: ClassVar[bool] = False

    def _validate(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ConfigurationError(f"model must name a model, got {self.model!r}")

    def _hyperparameters(self) -> dict[str, Any]:
        return {**super()._hyperparameters(), "model": self.model}

    def fit(
        self, dataset: LoggedDataset, cost_weight: float | None = None, *, featurizer: Any = None
    ) -> FixedModel:
        if self.model not in dataset.models:
            raise ModelMismatchError(
                f"model {self.model!r} is not in the dataset's models {list(dataset.models)}"
            )
        self._start_fit(dataset, cost_weight, featurizer)
        return self

    def _probabilities(self, x: np.ndarray) -> np.ndarray:
        return _one_hot(x.shape[0], len(self.models), self.models.index(self.model))


@register_policy
@dataclass(eq=False, kw_only=True)
class Cheapest(_BaseRouter):
    """Always the model with the lowest mean cost (USD) on the training data."""

    uses_features: ClassVar[bool] = False

    def fit(
        self, dataset: LoggedDataset, cost_weight: float | None = None, *, featurizer: Any = None
    ) -> Cheapest:
        self._start_fit(dataset, cost_weight, featurizer)
        means = dataset.mean_cost()
        self.choice_ = int(np.nanargmin(np.where(np.isnan(means), np.inf, means)))
        return self

    @property
    def model(self) -> str:
        """Name of the chosen model."""
        self._require_fitted()
        return self.models[self.choice_]

    def _probabilities(self, x: np.ndarray) -> np.ndarray:
        return _one_hot(x.shape[0], len(self.models), self.choice_)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"choice": self.choice_}, {}

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.choice_ = int(state["choice"])


@register_policy
@dataclass(eq=False, kw_only=True)
class BestSingleModel(_BaseRouter):
    """The model with the best mean reward ``quality − λ·cost/cost_scale`` on the training data.

    With ``cost_weight=0`` this is the best model by quality; with λ > 0 the best single model for that budget
    (ties go to the cheaper model). It ignores the features.
    """

    uses_features: ClassVar[bool] = False

    def fit(
        self, dataset: LoggedDataset, cost_weight: float | None = None, *, featurizer: Any = None
    ) -> BestSingleModel:
        self._start_fit(dataset, cost_weight, featurizer)
        mean = _mean_rewards(dataset, self.cost_weight, self.cost_scale_)
        mean = np.where(np.isnan(mean), -np.inf, mean)
        cost = np.nan_to_num(dataset.mean_cost(), nan=np.inf)
        best = mean.max()
        candidates = np.flatnonzero(mean >= best - 1e-12)
        self.choice_ = int(candidates[np.argmin(cost[candidates])])
        self.mean_reward_ = float(best)
        return self

    @property
    def model(self) -> str:
        """Name of the chosen model."""
        self._require_fitted()
        return self.models[self.choice_]

    def _probabilities(self, x: np.ndarray) -> np.ndarray:
        return _one_hot(x.shape[0], len(self.models), self.choice_)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"choice": self.choice_, "mean_reward": self.mean_reward_}, {}

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.choice_ = int(state["choice"])
        self.mean_reward_ = float(state["mean_reward"])


@register_policy
@dataclass(eq=False, kw_only=True)
class Oracle(_BaseRouter):
    """Per-query best model ``argmax_k reward`` (ties to the cheaper model): the upper bound of any router.

    It needs the true outcome of every model on every query, so it **cannot route new queries**: ``fit`` is given
    the (full-information) dataset to be evaluated on, and :meth:`action_probabilities` accepts only feature rows
    of that dataset — the whole feature matrix in order (matched by position), or any rows of it (matched by
    value, which needs the rows to be distinct). Anything else raises
    :class:`~routing_env.errors.ConfigurationError`.
    """

    def fit(
        self, dataset: LoggedDataset, cost_weight: float | None = None, *, featurizer: Any = None
    ) -> Oracle:
        if not dataset.is_full_information:
            raise PartialInformationError(
                "the oracle needs the outcome of every model on every query; this dataset is partial"
            )
        self._start_fit(dataset, cost_weight, featurizer)
        self.actions_ = dataset.oracle_actions(self.cost_weight, cost_scale=self.cost_scale_)
        self.features_ = np.asarray(dataset.features, dtype=np.float64)
        self._index: dict[bytes, int] | None = None
        return self

    def _lookup(self, x: np.ndarray) -> np.ndarray:
        if x.shape == self.features_.shape and np.array_equal(x, self.features_):
            return self.actions_
        if self._index is None:
            index: dict[bytes, int] = {}
            dup: set[bytes] = set()
            for i, row in enumerate(self.features_):
                key = row.tobytes()
                if key in index and self.actions_[index[key]] != self.actions_[i]:
                    dup.add(key)
                index.setdefault(key, i)
            for key in dup:
                index[key] = -1
            self._index = index
        rows = np.array([self._index.get(r.tobytes(), -2) for r in x], dtype=np.int64)
        if (rows == -2).any():
            raise ConfigurationError(
                f"the oracle can only route queries of the dataset it was fitted on; {int((rows == -2).sum())} of "
                f"{len(rows)} feature rows are not in it"
            )
        if (rows == -1).any():
            raise ConfigurationError(
                "these feature rows occur several times in the oracle's dataset with different best models; "
                "pass the whole feature matrix in order to match queries by position"
            )
        return self.actions_[rows]

    def _probabilities(self, x: np.ndarray) -> np.ndarray:
        actions = self._lookup(x)
        out = np.zeros((x.shape[0], len(self.models)))
        out[np.arange(x.shape[0]), actions] = 1.0
        return out

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {}, {"actions": self.actions_, "features": self.features_}

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.actions_ = np.asarray(arrays["actions"], dtype=np.int64)
        self.features_ = np.asarray(arrays["features"], dtype=np.float64)
        self._index = None


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


# ---------------------------------------------------------------------------------------------- RouteLLM MF
@register_policy
@dataclass(eq=False, kw_only=True)
class MatrixFactorizationRouter(_BaseRouter):
    """RouteLLM's matrix-factorisation router for a strong and a weak model.

    A bilinear score ``s(m, x) = cᵀ(v_m ⊙ (W·x̃ + b))`` (``x̃`` the standardised features, ``v_m`` a learned model
    embedding) gives ``P(strong beats weak | x) = σ(s(strong, x) − s(weak, x))``, trained by logistic loss on the
    training queries where the strong model's quality is strictly higher (label 1) or not (label 0), with
    full-batch Adam. A query goes to the strong model when that probability is ≥ ``threshold``; use
    :meth:`calibrate_threshold` to pick the threshold that sends a target share of queries to the strong model.

    Args:
        strong, weak: model names; default (two-model datasets only) the more and the less expensive one.
        threshold: in [0, 1].
        dim: embedding width.
        l2: L2 penalty on all parameters.
        learning_rate, epochs: Adam step size and full-batch steps.
    """

    strong: str | None = None
    weak: str | None = None
    threshold: float = 0.5
    dim: int = 16
    l2: float = 1e-4
    learning_rate: float = 0.02
    epochs: int = 300

    def _validate(self) -> None:
        self.threshold = _finite("threshold", self.threshold, 0.0, 1.0)
        if int(self.dim) < 1:
            raise ConfigurationError(f"dim must be ≥ 1, got {self.dim!r}")
        if int(self.epochs) < 1:
            raise ConfigurationError(f"epochs must be ≥ 1, got {self.epochs!r}")
        self.l2 = _finite("l2", self.l2, 0.0)
        self.learning_rate = _finite("learning_rate", self.learning_rate, 0.0, strict=True)

    def _hyperparameters(self) -> dict[str, Any]:
        return {
            **super()._hyperparameters(),
            "strong": self.strong,
            "weak": self.weak,
            "threshold": self.threshold,
            "dim": int(self.dim),
            "l2": self.l2,
            "learning_rate": self.learning_rate,
            "epochs": int(self.epochs),
        }

    def fit(
        self, dataset: LoggedDataset, cost_weight: float | None = None, *, featurizer: Any = None
    ) -> MatrixFactorizationRouter:
        if dataset.n_features == 0:
            raise ShapeError(
                "MatrixFactorizationRouter needs query features, and the dataset has none (width 0)"
            )
        strong, weak = self.strong, self.weak
        if strong is None or weak is None:
            if dataset.n_models != 2:
                raise ConfigurationError(
                    f"name strong= and weak= for a dataset with {dataset.n_models} models {list(dataset.models)}"
                )
            order = np.argsort(np.nan_to_num(dataset.mean_cost()))
            weak, strong = dataset.models[int(order[0])], dataset.models[int(order[1])]
        for name, value in (("strong", strong), ("weak", weak)):
            if value not in dataset.models:
                raise ModelMismatchError(
                    f"{name}={value!r} is not in the dataset's models {list(dataset.models)}"
                )
        if strong == weak:
            raise ConfigurationError(f"strong and weak must differ, both are {strong!r}")
        self._start_fit(dataset, cost_weight, featurizer)
        self.strong_, self.weak_ = dataset.models.index(strong), dataset.models.index(weak)
        qs, qw = dataset.quality[:, self.strong_], dataset.quality[:, self.weak_]
        rows = ~(np.isnan(qs) | np.isnan(qw))
        if rows.sum() < 2:
            raise PartialInformationError(
                "need queries where both the strong and the weak model were observed"
            )
        x = np.asarray(dataset.features, dtype=np.float64)[rows]
        self.mean_, self.scale_ = _standardize(x)
        y = (qs[rows] > qw[rows]).astype(np.float64)
        self._train((x - self.mean_) / self.scale_, y)
        return self

    def _train(self, x: np.ndarray, y: np.ndarray) -> None:
        rng = np.random.default_rng(self.seed)
        n, d = x.shape
        m = int(self.dim)
        params = {
            "W": rng.normal(0.0, 1.0 / math.sqrt(d), size=(m, d)),
            "b": np.zeros(m),
            "v": rng.normal(0.0, 1.0, size=(2, m)),  # rows: weak, strong
            "c": rng.normal(0.0, 1.0 / math.sqrt(m), size=m),
        }
        first = {k: np.zeros_like(v) for k, v in params.items()}
        second = {k: np.zeros_like(v) for k, v in params.items()}
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        for t in range(1, int(self.epochs) + 1):
            u = x @ params["W"].T + params["b"]
            diff = params["v"][1] - params["v"][0]
            e = params["c"] * diff
            logit = u @ e
            g = (_sigmoid(logit) - y) / n
            du = g[:, None] * e[None, :]
            s = g @ u
            grads = {
                "W": du.T @ x + self.l2 * params["W"],
                "b": du.sum(axis=0) + self.l2 * params["b"],
                "v": np.stack([-s * params["c"], s * params["c"]]) + self.l2 * params["v"],
                "c": s * diff + self.l2 * params["c"],
            }
            for key, grad in grads.items():
                first[key] = beta1 * first[key] + (1 - beta1) * grad
                second[key] = beta2 * second[key] + (1 - beta2) * grad**2
                mhat = first[key] / (1 - beta1**t)
                vhat = second[key] / (1 - beta2**t)
                params[key] = params[key] - self.learning_rate * mhat / (np.sqrt(vhat) + eps)
        self.W_, self.b_, self.v_, self.c_ = params["W"], params["b"], params["v"], params["c"]

    def strong_win_probability(self, features: np.ndarray) -> np.ndarray:
        """``(n,)`` predicted probability that the strong model answers ``features (n, d)`` better."""
        x = self._features(features)
        return self._win(x)

    def _win(self, x: np.ndarray) -> np.ndarray:
        u = ((x - self.mean_) / self.scale_) @ self.W_.T + self.b_
        return _sigmoid(u @ (self.c_ * (self.v_[1] - self.v_[0])))

    def calibrate_threshold(self, features: np.ndarray, strong_share: float) -> float:
        """Set (and return) the threshold that sends ``strong_share`` ∈ [0, 1] of ``features (n, d)`` to the
        strong model (RouteLLM's calibration on a sample of expected traffic)."""
        share = _finite("strong_share", strong_share, 0.0, 1.0)
        p = np.sort(self.strong_win_probability(features))
        n = p.size
        n_strong = round(share * n)
        if n_strong <= 0:
            threshold = float(np.nextafter(p[-1], np.inf)) if p[-1] < 1.0 else 1.0
        elif n_strong >= n:
            threshold = float(p[0])
        else:
            threshold = float(p[n - n_strong])
        self.threshold = min(max(threshold, 0.0), 1.0)
        return self.threshold

    def _probabilities(self, x: np.ndarray) -> np.ndarray:
        strong = self._win(x) >= self.threshold
        out = np.zeros((x.shape[0], len(self.models)))
        out[strong, self.strong_] = 1.0
        out[~strong, self.weak_] = 1.0
        return out

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"strong": self.strong_, "weak": self.weak_}, {
            "W": self.W_,
            "b": self.b_,
            "v": self.v_,
            "c": self.c_,
            "mean": self.mean_,
            "scale": self.scale_,
        }

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.strong_, self.weak_ = int(state["strong"]), int(state["weak"])
        self.W_, self.b_, self.v_, self.c_ = arrays["W"], arrays["b"], arrays["v"], arrays["c"]
        self.mean_, self.scale_ = arrays["mean"], arrays["scale"]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


# ---------------------------------------------------------------------------------------------- cascades
def cascade_outcomes(
    dataset: LoggedDataset,
    chain: Sequence[int],
    accept_stage: np.ndarray,
    cost_weight: float,
    cost_scale: float,
) -> dict[str, np.ndarray]:
    """Outcome of stopping query ``i`` after ``accept_stage[i] + 1`` calls of ``chain`` (model indices).

    Returns ``quality (n,)`` of the accepted answer, ``cost (n,)`` USD of all calls made, ``reward (n,)`` =
    ``quality − cost_weight·cost/cost_scale`` and ``final (n,)`` the accepted model index.
    """
    idx = np.asarray(chain, dtype=np.int64)
    n = dataset.n_queries
    stage = np.asarray(accept_stage, dtype=np.int64)
    cum_cost = np.cumsum(dataset.cost[:, idx], axis=1)
    rows = np.arange(n)
    quality = dataset.quality[rows, idx[stage]]
    cost = cum_cost[rows, stage]
    return {
        "quality": quality,
        "cost": cost,
        "reward": quality - (cost_weight / cost_scale) * cost,
        "final": idx[stage],
    }


def _check_chain_inputs(
    features: Any, signals: Any, n_stages: int, n_features: int | None
) -> tuple[np.ndarray, np.ndarray]:
    x = check_features(features, n_features)
    s = np.asarray(signals, dtype=np.float64)
    if s.ndim == 1:
        s = s[:, None] if x.shape[0] == s.shape[0] and x.shape[0] != 1 else s[None, :]
    if s.ndim != 2 or s.shape[0] != x.shape[0]:
        raise ShapeError(f"signals must have shape (n, s) with n = {x.shape[0]}, got {s.shape}")
    if not 1 <= s.shape[1] <= n_stages:
        raise ShapeError(
            f"signals must hold 1 … {n_stages} columns (the models called so far, the last one of the chain "
            f"excluded), got {s.shape[1]}"
        )
    if not np.isfinite(s).all():
        raise ShapeError("signals must be finite, got NaN or inf")
    return x, s


def _resolve_chain(dataset: LoggedDataset, chain: Sequence[str]) -> tuple[str, ...]:
    if chain:
        names = _check_models_arg(chain)
        missing = [m for m in names if m not in dataset.models]
        if missing:
            raise ModelMismatchError(f"chain names models {missing} that are not in {list(dataset.models)}")
    else:
        order = np.argsort(np.nan_to_num(dataset.mean_cost(), nan=np.inf), kind="stable")
        names = tuple(dataset.models[int(j)] for j in order)
    if len(names) < 2:
        raise ConfigurationError(f"a cascade needs at least two models, got chain {list(names)}")
    return names


@register_policy
@dataclass(eq=False, kw_only=True)
class ThresholdCascade:
    """FrugalGPT-style cascade: call the chain's models in order and accept the first answer whose signal is at
    least that stage's threshold τ_s (the last model's answer is always accepted).

    :meth:`fit` tunes the thresholds on full-information training logs with signals, for a given λ: coordinate
    ascent, last stage first, over candidate thresholds (quantiles of each stage's signal, plus "always accept" and "always
    escalate") maximising the mean reward ``quality of the accepted answer − λ·(USD of all calls)/cost_scale``.
    It does not learn online (``learns_online`` is ``False``; :meth:`update` raises).

    Implements :class:`routing_env.policy.CascadePolicy`.

    Args:
        chain: model names in call order; default: the dataset's models from cheapest to most expensive.
        thresholds: τ per stage (``len(chain) − 1`` values) to use without tuning; ``fit`` replaces them.
        cost_weight: λ (≥ 0).
        cost_scale: USD per unit of λ; ``None`` = the dataset's ``resolve_cost_scale("max_mean")``.
        n_candidates: quantiles of each stage's signal tried as thresholds.
        n_sweeps: coordinate-ascent passes over the stages.
    """

    chain: tuple[str, ...] = ()
    thresholds: tuple[float, ...] | None = None
    cost_weight: float = 0.0
    cost_scale: float | None = None
    n_candidates: int = 41
    n_sweeps: int = 3
    seed: int | None = 0
    featurizer: Any = field(default=None, repr=False)

    n_features: int | None = field(default=None, init=False)
    cost_scale_: float = field(default=1.0, init=False)
    learns_online: ClassVar[bool] = False

    def __post_init__(self) -> None:
        self.chain = _check_models_arg(self.chain)
        self.cost_weight = _finite("cost_weight", self.cost_weight, 0.0)
        if self.cost_scale is not None:
            self.cost_scale = _finite("cost_scale", self.cost_scale, 0.0, strict=True)
            self.cost_scale_ = self.cost_scale
        if int(self.n_candidates) < 1 or int(self.n_sweeps) < 1:
            raise ConfigurationError(
                f"n_candidates and n_sweeps must be ≥ 1, got {self.n_candidates!r} and {self.n_sweeps!r}"
            )
        if self.thresholds is not None:
            taus = tuple(float(t) for t in self.thresholds)
            if any(math.isnan(t) for t in taus):
                raise ConfigurationError(f"thresholds must not be NaN, got {list(taus)}")
            if self.chain and len(taus) != len(self.chain) - 1:
                raise ConfigurationError(
                    f"thresholds needs len(chain) − 1 = {len(self.chain) - 1} values, got {len(taus)}"
                )
            self.thresholds = taus
        self._rng = np.random.default_rng(self.seed)

    @property
    def models(self) -> tuple[str, ...]:
        """Same as :attr:`chain` (the models this policy calls)."""
        return self.chain

    def fit(
        self, dataset: LoggedDataset, cost_weight: float | None = None, *, featurizer: Any = None
    ) -> ThresholdCascade:
        """Tune the thresholds on ``dataset`` (full information, with ``signal``) for λ = ``cost_weight``."""
        if not dataset.is_full_information:
            raise PartialInformationError("tuning a cascade needs every model's outcome on every query")
        if dataset.signal is None:
            raise ConfigurationError(
                "a threshold cascade needs per-call signals, and the dataset has no signal"
            )
        if cost_weight is not None:
            self.cost_weight = _finite("cost_weight", cost_weight, 0.0)
        if featurizer is not None:
            self.featurizer = featurizer
        self.chain = _resolve_chain(dataset, self.chain)
        self.cost_scale_ = (
            float(self.cost_scale) if self.cost_scale is not None else dataset.resolve_cost_scale("max_mean")
        )
        idx = [dataset.models.index(m) for m in self.chain]
        signals = np.asarray(dataset.signal, dtype=np.float64)[:, idx]
        n_stages = len(idx) - 1
        candidates = []
        for s in range(n_stages):
            qs = np.quantile(signals[:, s], np.linspace(0.0, 1.0, int(self.n_candidates)))
            candidates.append(np.unique(np.concatenate([[-np.inf, np.inf], qs])))
        taus = np.full(n_stages, np.inf)  # start from "always escalate" (the last model)

        def value(t: np.ndarray) -> float:
            stage = _accept_stage(signals, t)
            return float(
                cascade_outcomes(dataset, idx, stage, self.cost_weight, self.cost_scale_)["reward"].mean()
            )

        best = value(taus)
        for _ in range(int(self.n_sweeps)):
            improved = False
            # Last stage first, like backward induction: earlier thresholds are tuned knowing what follows.
            for s in reversed(range(n_stages)):
                for cand in candidates[s]:
                    trial = taus.copy()
                    trial[s] = cand
                    v = value(trial)
                    if v > best + 1e-12:
                        best, taus, improved = v, trial, True
            if not improved:
                break
        self.thresholds = tuple(float(t) for t in taus)
        self.train_reward_ = best
        return self

    def _taus(self) -> np.ndarray:
        if self.thresholds is None or not self.chain:
            raise ConfigurationError(
                "ThresholdCascade has no thresholds: call fit(dataset) or pass chain= and thresholds="
            )
        return np.asarray(self.thresholds, dtype=np.float64)

    def stop_probabilities(self, features: np.ndarray, signals: np.ndarray) -> np.ndarray:
        """``(n,)`` 1.0 where the last signal ``signals[:, s−1]`` reaches τ_{s−1}, else 0.0."""
        taus = self._taus()
        _, s = _check_chain_inputs(features, signals, len(taus), self.n_features)
        return (s[:, -1] >= taus[s.shape[1] - 1]).astype(np.float64)

    def decide(self, features: np.ndarray, signals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(stop (n,) bool, propensity (n,) float64)``; the rule is deterministic, so propensities are 1."""
        p = self.stop_probabilities(features, signals)
        return p > 0.5, np.ones_like(p)

    def update(
        self, features: np.ndarray, signals: np.ndarray, stop: np.ndarray, returns: np.ndarray
    ) -> None:
        """Refused: the thresholds are tuned offline with :meth:`fit`."""
        raise ConfigurationError("ThresholdCascade does not learn online; re-tune it with fit(dataset)")

    def accept_stages(self, signals: np.ndarray) -> np.ndarray:
        """``(n,)`` index into ``chain`` of the accepted answer for full ``signals (n, len(chain))``."""
        s = np.asarray(signals, dtype=np.float64)
        if s.ndim != 2 or s.shape[1] != len(self.chain):
            raise ShapeError(f"signals must have shape (n, {len(self.chain)}), got {s.shape}")
        return _accept_stage(s, self._taus())

    def save(self, path: str | Path) -> Path:
        root = Path(path)
        # ±inf thresholds ("always accept"/"always escalate") are not JSON: they are saved in the npz.
        config: dict[str, Any] = {
            "hyperparameters": {
                "chain": list(self.chain),
                "thresholds": None,
                "cost_weight": self.cost_weight,
                "cost_scale": self.cost_scale,
                "n_candidates": int(self.n_candidates),
                "n_sweeps": int(self.n_sweeps),
                "seed": self.seed,
            },
            "cost_scale_": self.cost_scale_,
            "rng_state": rng_state(self._rng),
            "has_featurizer": self.featurizer is not None,
        }
        arrays = (
            {} if self.thresholds is None else {"thresholds": np.asarray(self.thresholds, dtype=np.float64)}
        )
        write_policy_dir(root, type(self), config, arrays)
        save_featurizer_dir(self.featurizer, root)
        return root

    @classmethod
    def load(cls, path: str | Path) -> ThresholdCascade:
        root = Path(path)
        _, config, arrays = read_policy_dir(root, expect=cls)
        try:
            hyper = dict(config["hyperparameters"])
            if "thresholds" in arrays:
                hyper["thresholds"] = tuple(float(t) for t in arrays["thresholds"])
            obj = cls(**hyper)
            obj.cost_scale_ = float(config["cost_scale_"])
            obj._rng = rng_from_state(config["rng_state"])
            obj.featurizer = load_featurizer_dir(root) if config.get("has_featurizer") else None
        except (KeyError, TypeError) as exc:
            raise PolicyFormatError(f"{root} is not a valid ThresholdCascade: {exc!r}") from None
        return obj


def _accept_stage(signals: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """First stage whose signal reaches its threshold (the last stage when none does)."""
    n_stages = taus.shape[0]
    ok = signals[:, :n_stages] >= taus[None, :]
    return np.where(ok.any(axis=1), ok.argmax(axis=1), n_stages).astype(np.int64)
