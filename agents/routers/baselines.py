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

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from agents.routers._common import _BaseRouter, _mean_rewards, _one_hot
from routing_env.data.dataset import LoggedDataset
from routing_env.errors import (
    ConfigurationError,
    ModelMismatchError,
    PartialInformationError,
)
from routing_env.policy import (
    register_policy,
)

__all__ = ["BestSingleModel", "Cheapest", "FixedModel", "Oracle", "RandomRouter"]


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


@dataclass(eq=False, kw_only=True)
class _SingleChoice(_BaseRouter):
    """Every query to the one model ``fit`` picks (``choice_``, its index into ``models``); ignores the features."""

    uses_features: ClassVar[bool] = False

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
class Cheapest(_SingleChoice):
    """Always the model with the lowest mean cost (USD) on the training data."""

    def fit(
        self, dataset: LoggedDataset, cost_weight: float | None = None, *, featurizer: Any = None
    ) -> Cheapest:
        self._start_fit(dataset, cost_weight, featurizer)
        means = dataset.mean_cost()
        self.choice_ = int(np.nanargmin(np.where(np.isnan(means), np.inf, means)))
        return self


@register_policy
@dataclass(eq=False, kw_only=True)
class BestSingleModel(_SingleChoice):
    """The model with the best mean reward ``quality − λ·cost/cost_scale`` on the training data.

    With ``cost_weight=0`` this is the best model by quality; with λ > 0 the best single model for that budget
    (ties go to the cheaper model). It ignores the features.
    """

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

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        state, arrays = super()._state()
        return {**state, "mean_reward": self.mean_reward_}, arrays

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        super()._restore(state, arrays)
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
