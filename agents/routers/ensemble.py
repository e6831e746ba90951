"""Averaging routers: :class:`EnsembleRouter` routes on a weighted mean of several fitted routers' estimates.

Every member predicts each model's quality and cost (USD) for a query (``predict_outcomes``); the ensemble routes
to ``argmax_k q̄_k − λ·c̄_k/cost_scale`` with ``q̄ = Σ_m w_m q̂_m`` and ``c̄ = Σ_m w_m ĉ_m`` (λ settable at decision
time). When cross-validation cannot tell the members apart, their average is a hedge: each member's errors on logs
unlike the training logs (another mix of tasks, other phrasings) are partly its own, and averaging cancels that
part, so the mean of near-equal routers is usually more robust to a shift between training and deployment than
any one of them. :func:`agents.routers.selection.select_router` builds one from its candidates.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.routers._common import (
    _finite,
    draw,
    featurize_prompts,
    greedy_probabilities,
    load_featurizer_dir,
    reading_saved,
    rng_from_state,
    rng_state,
    save_featurizer_dir,
)
from agents.routers.cost import CostModel
from routing_env.data.dataset import LoggedDataset
from routing_env.errors import ConfigurationError, ModelMismatchError
from routing_env.policy import check_features, load_policy, register_policy, write_policy_dir

__all__ = ["EnsembleRouter", "outcome_estimates"]

#: Subdirectory of a saved ensemble holding its members (``members/0``, ``members/1``, …).
MEMBERS_DIR = "members"
#: Subdirectory of a saved ensemble holding its cost model, when it has one.
COST_MODEL_DIR = "cost_model"


def outcome_estimates(router: Any, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(quality (n, K), cost (n, K) USD)`` that the fitted ``router`` predicts for ``features (n, d)``.

    Raises:
        ConfigurationError: the router predicts no per-model outcomes (a fixed rule, a reward-only bandit).
    """
    predict = getattr(router, "predict_outcomes", None)
    if predict is None:
        raise ConfigurationError(
            f"{type(router).__name__} predicts no per-model quality and cost (it has no predict_outcomes), so it "
            "cannot join an ensemble"
        )
    quality, cost = predict(features)
    return np.asarray(quality, dtype=np.float64), np.asarray(cost, dtype=np.float64)


@register_policy
@dataclass(eq=False)
class EnsembleRouter:
    """Routes on the weighted mean of its members' quality and cost estimates; λ settable at decision time.

    Args:
        members: fitted routers over the same models (same order) and the same features, each with
            ``predict_outcomes(features) -> (quality (n, K), cost (n, K))`` and the same ``cost_scale_``.
        weights: one weight ≥ 0 per member (normalised to sum 1); ``None`` = equal weights.
        cost_weight: λ of ``quality − λ·cost/cost_scale`` when none is passed per call.
        seed: seed of the generator ``act`` breaks ties with.
        featurizer: the featurizer of the members' features (default: the first member's), saved once with the
            ensemble.
        cost_model: a fitted :class:`~agents.routers.CostModel` over the same models and features whose per-query
            cost estimates replace the members' (which are means over a group of queries); ``None`` = the
            members' weighted mean cost.

    ``add_model``/``remove_model`` onboard or retire a model in every member (each must support it).

    Example::

        ensemble = EnsembleRouter((TaskTableRouter().fit(train), LinUCB().fit(train)))
        ensemble.action_probabilities(x, cost_weight=0.3)
    """

    members: tuple[Any, ...]
    weights: tuple[float, ...] | None = None
    cost_weight: float = 0.0
    seed: int | None = 0
    featurizer: Any = field(default=None, repr=False)
    cost_model: CostModel | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.members = tuple(self.members)
        if not self.members:
            raise ConfigurationError("EnsembleRouter needs at least one fitted member, got none")
        for m in self.members:
            if not callable(getattr(m, "predict_outcomes", None)):
                raise ConfigurationError(
                    f"every member must predict outcomes (predict_outcomes); {type(m).__name__} does not"
                )
        first = self.members[0]
        for m in self.members[1:]:
            if tuple(m.models) != tuple(first.models):
                raise ModelMismatchError(
                    f"members must route over the same models in the same order, got {list(first.models)} and "
                    f"{list(m.models)}"
                )
            if getattr(m, "n_features", None) != getattr(first, "n_features", None):
                raise ConfigurationError(
                    f"members must read features of the same width, got {first.n_features} and {m.n_features}"
                )
            if not math.isclose(float(m.cost_scale_), float(first.cost_scale_), rel_tol=1e-9):
                raise ConfigurationError(
                    f"members must share one cost scale (USD per unit of λ), got {first.cost_scale_!r} and "
                    f"{m.cost_scale_!r}"
                )
        if self.cost_model is not None:
            self._check_cost_model(self.cost_model)
        self.weights = _normalised(self.weights, len(self.members))
        self._w = np.asarray(self.weights, dtype=np.float64)
        self.cost_weight = _finite("cost_weight", self.cost_weight, 0.0)
        if self.seed is not None and not isinstance(self.seed, (int, np.integer)):
            raise ConfigurationError(f"seed must be an int or None, got {self.seed!r}")
        if self.featurizer is None:
            self.featurizer = getattr(first, "featurizer", None)
        self._rng = np.random.default_rng(self.seed)

    def _check_cost_model(self, cost_model: Any) -> None:
        if not isinstance(cost_model, CostModel):
            raise ConfigurationError(
                f"cost_model must be a fitted CostModel, got {type(cost_model).__name__}"
            )
        if tuple(cost_model.models) != self.models:
            raise ModelMismatchError(
                f"the cost model estimates {list(cost_model.models)}, the members route over {list(self.models)}"
            )
        if self.n_features is not None and cost_model.n_features != self.n_features:
            raise ConfigurationError(
                f"the cost model reads {cost_model.n_features} features, the members {self.n_features}"
            )

    # ------------------------------------------------------------------ what the members share
    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self.members[0].models)

    @property
    def n_features(self) -> int | None:
        return getattr(self.members[0], "n_features", None)

    @property
    def cost_scale_(self) -> float:
        return float(self.members[0].cost_scale_)

    def chosen(self) -> dict[str, Any]:
        """The members (by class) and their weights; a single member's own choices; the cost model's."""
        if len(self.members) == 1 and callable(getattr(self.members[0], "chosen", None)):
            out = dict(self.members[0].chosen())
        else:
            out = {
                "members": "+".join(type(m).__name__ for m in self.members),
                "weights": "equal"
                if np.allclose(self._w, self._w[0])
                else ", ".join(f"{w:.3g}" for w in self._w),
            }
        if self.cost_model is not None:
            out.update(self.cost_model.chosen())
        return out

    # ------------------------------------------------------------------ routing
    def predict_outcomes(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weighted mean ``quality (n, K)`` and ``cost (n, K)`` USD of the members for ``features (n, d)`` (the
        cost model's estimates for the cost, when the ensemble has one)."""
        x = check_features(features, self.n_features)
        estimates = [outcome_estimates(m, x) for m in self.members]
        quality = np.tensordot(self._w, np.stack([q for q, _ in estimates]), axes=1)
        if self.cost_model is not None:
            return quality, self.cost_model.predict(x)
        cost = np.tensordot(self._w, np.stack([c for _, c in estimates]), axes=1)
        return quality, cost

    def action_probabilities(self, features: np.ndarray, cost_weight: float | None = None) -> np.ndarray:
        """``(n, K)`` one-hot of the best mean score (ties share the mass); ``cost_weight`` overrides λ."""
        lam = self.cost_weight if cost_weight is None else _finite("cost_weight", cost_weight, 0.0)
        quality, cost = self.predict_outcomes(features)
        return greedy_probabilities(quality - (lam / self.cost_scale_) * cost)

    def act(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(actions (n,) int64, propensities (n,) float64)`` drawn from :meth:`action_probabilities`."""
        return draw(self.action_probabilities(features), self._rng)

    def featurize(self, prompts: Sequence[str]) -> np.ndarray:
        """``(n, d)`` features of ``prompts`` from the ensemble's featurizer."""
        return featurize_prompts(self, prompts)

    # ------------------------------------------------------------------ models come and go
    def _each(self, method: str) -> list[Any]:
        """Copies of the members, after checking that every one can ``method``."""
        unable = [type(m).__name__ for m in self.members if not callable(getattr(m, method, None))]
        if unable:
            raise ConfigurationError(
                f"{method} needs every member to support it, and {', '.join(unable)} does not; select among "
                "routers that onboard models (select_router(candidates=('task-table', 'cluster')))"
            )
        copies = []
        for m in self.members:
            # The featurizer (possibly a sentence-embedding model) is shared, not copied.
            with _without_featurizer(m):
                twin = copy.deepcopy(m)
            if hasattr(m, "featurizer"):
                twin.featurizer = m.featurizer
            copies.append(twin)
        return copies

    def add_model(self, name: str, dataset: LoggedDataset) -> EnsembleRouter:
        """Onboard ``name`` in every member from the labelled ``dataset`` (see
        :meth:`agents.routers.ClusterRouter.add_model`); nothing changes if one of them refuses. Returns ``self``."""
        updated = self._each("add_model")
        for m in updated:
            m.add_model(name, dataset)
        costs = copy.deepcopy(self.cost_model)
        if costs is not None:
            costs.add_model(name, self._with_own_features(dataset))
        self.members, self.cost_model = tuple(updated), costs
        return self

    def _with_own_features(self, dataset: LoggedDataset) -> LoggedDataset:
        """``dataset`` with the ensemble's features: its own when they have the width, else the featurizer's
        features of its prompts (as the members onboard from prompts)."""
        if dataset.n_features == self.n_features or self.featurizer is None or dataset.prompts is None:
            return dataset
        tasks = None if dataset.tasks is None else list(dataset.tasks)
        prompts = ["" if p is None else str(p) for p in dataset.prompts]
        return dataset.with_features(
            self.featurizer.transform(prompts, tasks), names=getattr(self.featurizer, "feature_names", None)
        )

    def remove_model(self, name: str) -> EnsembleRouter:
        """Stop routing to ``name`` in every member. Returns ``self``."""
        updated = self._each("remove_model")
        for m in updated:
            m.remove_model(name)
        costs = copy.deepcopy(self.cost_model)
        if costs is not None:
            costs.remove_model(name)
        self.members, self.cost_model = tuple(updated), costs
        return self

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write ``policy.json`` + ``arrays.npz`` into ``path``, each member into ``path/members/<i>`` and the
        featurizer once into ``path/featurizer``."""
        root = Path(path)
        config = {
            "n_members": len(self.members),
            "cost_weight": self.cost_weight,
            "seed": self.seed,
            "rng_state": rng_state(self._rng),
            "has_featurizer": self.featurizer is not None,
            "has_cost_model": self.cost_model is not None,
        }
        write_policy_dir(root, type(self), config, {"weights": self._w})
        for i, m in enumerate(self.members):
            with _without_featurizer(m):
                m.save(root / MEMBERS_DIR / str(i))
        if self.cost_model is not None:
            self.cost_model.save(root / COST_MODEL_DIR)
        save_featurizer_dir(self.featurizer, root)
        return root

    @classmethod
    def load(cls, path: str | Path) -> EnsembleRouter:
        """Restore an ensemble written by :meth:`save`."""
        with reading_saved(path, cls, (KeyError, TypeError, ValueError)) as (root, config, arrays):
            featurizer = load_featurizer_dir(root) if config["has_featurizer"] else None
            members = tuple(load_policy(root / MEMBERS_DIR / str(i)) for i in range(int(config["n_members"])))
            for m in members:
                if hasattr(m, "featurizer"):
                    m.featurizer = featurizer
            # Ensembles saved before cost models existed have no "has_cost_model".
            costs = CostModel.load(root / COST_MODEL_DIR) if config.get("has_cost_model", False) else None
            obj = cls(
                members,
                tuple(float(w) for w in arrays["weights"]),
                cost_weight=float(config["cost_weight"]),
                seed=config["seed"],
                featurizer=featurizer,
                cost_model=costs,
            )
            obj._rng = rng_from_state(config["rng_state"])
        return obj


def _normalised(weights: Sequence[float] | None, n: int) -> tuple[float, ...]:
    if weights is None:
        return tuple([1.0 / n] * n)
    try:
        w = np.asarray([float(v) for v in weights], dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigurationError(f"weights must be numbers ≥ 0, one per member, got {weights!r}") from None
    if w.shape != (n,) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ConfigurationError(
            f"weights must be {n} finite numbers ≥ 0 (one per member) with a positive sum, got {list(weights)}"
        )
    return tuple(float(v) for v in w / w.sum())


@contextmanager
def _without_featurizer(member: Any) -> Iterator[None]:
    """``member`` with its featurizer detached while it is saved (the ensemble saves it once for all)."""
    saved = getattr(member, "featurizer", None)
    if saved is None:
        yield
        return
    member.featurizer = None
    try:
        yield
    finally:
        member.featurizer = saved
