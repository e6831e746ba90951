"""Bandit feedback: what a logging policy chose, with which probability, and what it observed.

:class:`BanditFeedback` is the record every off-policy estimator reads. It keeps ``quality`` and ``cost`` of the
logged action separately, so the cost weight λ of the reward ``quality − λ·cost/cost_scale`` is chosen when the
policy is evaluated, not when the log is written.

Three ways to build one:

- :meth:`BanditFeedback.from_dataset` from a :class:`~routing_env.data.LoggedDataset` that carries
  ``logged_action`` and ``propensity`` (bandit logs, e.g. ``routing_env.data.load_open_bandit``);
- :func:`simulate_bandit_feedback` from a full-information dataset and a stochastic logging policy; the hidden
  outcomes of every model are kept, so :meth:`BanditFeedback.true_value` gives the exact value of any target;
- the constructor, from arrays (e.g. an online router's decision store: one row per decision with the chosen
  model index, the probability it had, and the observed quality and USD cost).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from routing_env.data.dataset import CostScale, LoggedDataset
from routing_env.data.schema import feature_names as schema_feature_names
from routing_env.data.schema import readonly, validate_models
from routing_env.errors import ConfigurationError, PartialInformationError, SchemaError, ShapeError
from routing_env.policy import Policy, check_features, check_models


@dataclass(frozen=True, eq=False)
class BanditFeedback:
    """Logged bandit feedback of n rounds over K models (arms).

    Attributes:
        models: the K model (arm) names; ``action`` indexes them.
        features: ``(n, d) float32`` context the logging policy saw (``d`` may be 0).
        action: ``(n,) int64`` logged action in ``[0, K)``.
        propensity: ``(n,) float64`` probability the logging policy gave the logged action (and position, when
            ``position`` is set), in (0, 1]. A zero propensity is refused: the logged action could not have been
            chosen, so no importance weight exists for it.
        quality: ``(n,) float64`` observed outcome of the logged action (correctness, judge score, click...).
        cost: ``(n,) float64`` USD cost of the logged call, ``None`` when the log has no costs (then only
            ``cost_weight = 0`` is allowed).
        cost_scale: USD that one unit of ``cost_weight`` charges (> 0); see
            :meth:`LoggedDataset.resolve_cost_scale`.
        cost_weight: the default λ of :meth:`rewards` (an evaluation may pass another).
        position: ``(n,) int64`` slot of a slate (e.g. the Open Bandit Dataset's 3 positions) or ``None``.
        n_positions: number of slots ``P`` (``max(position) + 1`` when not given).
        query_ids: ``(n,) object`` identifiers, or ``None``.
        slate_id: ``(n,)`` identifier of the slate (impression, session...) each round belongs to, or ``None``.
            Rounds of one slate share a user and a moment, so their rewards are correlated: with slate ids the
            intervals of :func:`~routing_env.ope.estimate_policy_value` resample and sum variance by slate
            (cluster-robust) instead of by round. Stored as ``int64`` codes in order of first appearance.
        full_quality, full_cost: ``(n, K)`` hidden outcomes of every model (simulated logs only), used by
            :meth:`true_value`; never read by the estimators.
        logging_dist: ``(n, K)`` the logging policy's full distribution when known (simulated logs); used for the
            support diagnostic.
    """

    models: tuple[str, ...]
    features: np.ndarray
    action: np.ndarray
    propensity: np.ndarray
    quality: np.ndarray
    cost: np.ndarray | None = None
    cost_scale: float = 1.0
    cost_weight: float = 0.0
    position: np.ndarray | None = None
    n_positions: int | None = None
    query_ids: np.ndarray | None = None
    slate_id: np.ndarray | None = None
    full_quality: np.ndarray | None = field(default=None, repr=False)
    full_cost: np.ndarray | None = field(default=None, repr=False)
    logging_dist: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        models = validate_models(self.models)
        set_(self, "models", models)
        action = _checked_action(self.action, len(models))
        n = action.shape[0]
        set_(self, "action", readonly(action))
        feats = np.array(np.zeros((n, 0)) if self.features is None else self.features, dtype=np.float32)
        if feats.ndim != 2 or feats.shape[0] != n:
            raise ShapeError(f"features must have shape (n, d) with n = {n}, got {feats.shape}")
        if not np.isfinite(feats).all():
            raise SchemaError("features must be finite, got NaN or inf")
        set_(self, "features", readonly(feats))
        prop = _vector("propensity", self.propensity, n)
        bad = ~((prop > 0) & (prop <= 1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise SchemaError(
                f"propensity must lie in (0, 1]; row {i} has {float(prop[i])!r} ({int(bad.sum())} rows out of range). "
                "A zero propensity means the logged action could not be chosen; floor it explicitly "
                "(and say so) or drop those rows"
            )
        set_(self, "propensity", readonly(prop))
        quality = _vector("quality", self.quality, n)
        if not np.isfinite(quality).all():
            raise SchemaError(f"quality must be finite, got {float(quality[~np.isfinite(quality)][0])!r}")
        set_(self, "quality", readonly(quality))
        if self.cost is not None:
            cost = _vector("cost", self.cost, n)
            if not np.isfinite(cost).all() or (cost < 0).any():
                raise SchemaError("cost must be a finite USD amount ≥ 0 on every row")
            set_(self, "cost", readonly(cost))
        self._check_cost_settings()
        self._check_slots(n)
        self._check_hidden(n, len(models))

    def _check_cost_settings(self) -> None:
        set_ = object.__setattr__
        scale = float(self.cost_scale)
        if not np.isfinite(scale) or scale <= 0:
            raise ConfigurationError(f"cost_scale must be a positive USD amount, got {self.cost_scale!r}")
        set_(self, "cost_scale", scale)
        weight = float(self.cost_weight)
        if not np.isfinite(weight):
            raise ConfigurationError(f"cost_weight must be finite, got {self.cost_weight!r}")
        if weight != 0 and self.cost is None:
            raise ConfigurationError(
                f"cost_weight={weight} needs a cost per round, and this feedback has none"
            )
        set_(self, "cost_weight", weight)

    def _check_slots(self, n: int) -> None:
        """Positions, slate ids and query ids: each ``(n,)`` when given."""
        set_ = object.__setattr__
        if self.position is not None:
            pos = np.array(self.position, copy=True)
            if (
                pos.shape != (n,)
                or not np.issubdtype(pos.dtype, np.number)
                or not np.all(pos == np.round(pos))
            ):
                raise ShapeError(f"position must be an (n,) = ({n},) array of slot indices, got {pos.shape}")
            pos = pos.astype(np.int64)
            if (pos < 0).any():
                raise SchemaError(f"position must be ≥ 0, got {pos.min()}")
            n_pos = int(pos.max()) + 1 if self.n_positions is None else int(self.n_positions)
            if n_pos <= pos.max():
                raise SchemaError(f"n_positions={n_pos} but position holds slot {pos.max()}")
            set_(self, "position", readonly(pos))
            set_(self, "n_positions", n_pos)
        elif self.n_positions is not None:
            raise ConfigurationError("n_positions is given without position")
        if self.slate_id is not None:
            raw = np.asarray(self.slate_id)
            if raw.shape != (n,):
                raise ShapeError(f"slate_id must have shape ({n},), got {raw.shape}")
            _, first, codes = np.unique(raw, return_index=True, return_inverse=True)
            # Renumber by first appearance so the codes do not depend on how the ids sort.
            order = np.empty_like(first)
            order[np.argsort(first, kind="stable")] = np.arange(first.size)
            set_(self, "slate_id", readonly(order[codes.reshape(-1)].astype(np.int64)))
        if self.query_ids is not None:
            qids = np.asarray(self.query_ids, dtype=object)
            if qids.shape != (n,):
                raise ShapeError(f"query_ids must have shape ({n},), got {qids.shape}")
            set_(self, "query_ids", readonly(qids.copy()))

    def _check_hidden(self, n: int, k: int) -> None:
        """The hidden ``(n, K)`` outcomes and logging distribution of simulated logs."""
        for name in ("full_quality", "full_cost", "logging_dist"):
            value = getattr(self, name)
            if value is None:
                continue
            arr = np.array(value, dtype=np.float64, copy=True)
            if arr.shape != (n, k):
                raise ShapeError(f"{name} must have shape (n, K) = ({n}, {k}), got {arr.shape}")
            if not np.isfinite(arr).all():
                raise SchemaError(f"{name} must be finite (hidden outcomes of every model on every round)")
            object.__setattr__(self, name, readonly(arr))
        if (self.full_quality is None) != (self.full_cost is None):
            raise ConfigurationError("full_quality and full_cost go together: give both or neither")
        if self.logging_dist is not None:
            ld = self.logging_dist
            if (ld < 0).any() or not np.allclose(ld.sum(axis=1), 1.0, atol=1e-6):
                raise SchemaError("logging_dist rows must be probabilities summing to 1")

    # ------------------------------------------------------------------ properties
    @property
    def n_rounds(self) -> int:
        return int(self.action.shape[0])

    @property
    def n_actions(self) -> int:
        return len(self.models)

    def __len__(self) -> int:
        return self.n_rounds

    @property
    def has_ground_truth(self) -> bool:
        """The hidden outcome of every model is known (simulated logs): :meth:`true_value` is exact."""
        return self.full_quality is not None

    def __repr__(self) -> str:
        extra = ", simulated (ground truth kept)" if self.has_ground_truth else ""
        pos = f", n_positions={self.n_positions}" if self.position is not None else ""
        return (
            f"BanditFeedback(n_rounds={self.n_rounds}, models={list(self.models)}, "
            f"n_features={self.features.shape[1]}{pos}{extra})"
        )

    # ------------------------------------------------------------------ rewards and truth
    def resolve_cost_weight(self, cost_weight: float | None) -> float:
        weight = self.cost_weight if cost_weight is None else float(cost_weight)
        if not np.isfinite(weight):
            raise ConfigurationError(f"cost_weight must be finite, got {cost_weight!r}")
        if weight != 0 and self.cost is None:
            raise ConfigurationError(
                f"cost_weight={weight} needs a cost per round, and this feedback has none (use 0)"
            )
        return weight

    def rewards(self, cost_weight: float | None = None) -> np.ndarray:
        """``(n,) float64`` reward of the logged action: ``quality − cost_weight·cost/cost_scale``.

        ``cost_weight=None`` uses the feedback's own ``cost_weight``.
        """
        weight = self.resolve_cost_weight(cost_weight)
        if weight == 0 or self.cost is None:
            return self.quality.copy()
        return self.quality - (weight / self.cost_scale) * self.cost

    def full_rewards(self, cost_weight: float | None = None) -> np.ndarray:
        """``(n, K)`` hidden reward of every model (simulated logs only)."""
        if self.full_quality is None or self.full_cost is None:
            raise PartialInformationError(
                "this feedback has no hidden outcomes; only simulate_bandit_feedback keeps them"
            )
        weight = self.resolve_cost_weight(cost_weight)
        return self.full_quality - (weight / self.cost_scale) * self.full_cost

    def action_dist(self, policy: Policy | np.ndarray) -> np.ndarray:
        """``(n, K)`` (or ``(n, K, P)`` when given as such) target distribution on these rounds."""
        if isinstance(policy, np.ndarray):
            return policy
        if not isinstance(policy, Policy):
            raise ConfigurationError(
                f"policy must implement routing_env.policy.Policy or be an (n, K) array, got {type(policy).__name__}"
            )
        check_models(policy.models, self.models, what="feedback")
        dist = np.asarray(policy.action_probabilities(self.features), dtype=np.float64)
        if dist.shape != (self.n_rounds, self.n_actions):
            raise ShapeError(
                f"{type(policy).__name__}.action_probabilities returned shape {dist.shape}, "
                f"expected (n, K) = ({self.n_rounds}, {self.n_actions})"
            )
        return dist

    def true_value(self, policy: Policy | np.ndarray, cost_weight: float | None = None) -> float:
        """Exact mean reward of ``policy`` (or an ``(n, K)`` distribution) on these rounds' hidden outcomes."""
        full = self.full_rewards(cost_weight)
        dist = self.action_dist(policy)
        if dist.shape != full.shape:
            raise ShapeError(f"action_dist must have shape {full.shape} for true_value, got {dist.shape}")
        return float(np.einsum("ij,ij->", dist, full) / self.n_rounds)

    # ------------------------------------------------------------------ builders
    def to_dataset(self, feature_names: Sequence[str] | None = None) -> LoggedDataset:
        """These logs as a partial-information :class:`LoggedDataset` (only the logged cell of each query is
        observed), ready for :meth:`LoggedDataset.save` and :meth:`from_dataset`.

        ``cost_scale``, ``cost_weight`` and the hidden outcomes are not part of the canonical format and are not
        written; neither are ``position`` (keep the slot among the features, as ``load_open_bandit`` does) and
        ``slate_id``.
        Rounds without a cost get cost 0.
        """
        n, k = self.n_rounds, self.n_actions
        rows = np.arange(n)
        observed = np.zeros((n, k), dtype=bool)
        observed[rows, self.action] = True
        quality = np.full((n, k), np.nan)
        cost = np.full((n, k), np.nan)
        quality[rows, self.action] = self.quality
        cost[rows, self.action] = 0.0 if self.cost is None else self.cost
        qids = (
            self.query_ids
            if self.query_ids is not None
            else np.array([str(i) for i in range(n)], dtype=object)
        )
        return LoggedDataset(
            models=self.models,
            query_ids=qids,
            quality=quality,
            cost=cost,
            observed=observed,
            features=self.features,
            feature_names=(
                schema_feature_names(self.features.shape[1])
                if feature_names is None
                else tuple(feature_names)
            ),
            logged_action=self.action,
            propensity=self.propensity,
            meta={"source": "BanditFeedback.to_dataset"},
        )

    @classmethod
    def from_dataset(
        cls,
        dataset: LoggedDataset,
        *,
        cost_weight: float = 0.0,
        cost_scale: CostScale = "max_mean",
        position_feature: str | None = None,
    ) -> BanditFeedback:
        """Bandit feedback from a dataset with ``logged_action`` and ``propensity``.

        Args:
            dataset: bandit logs (``dataset.has_propensities``).
            cost_weight: the default λ of :meth:`rewards`.
            cost_scale: ``"max_mean"`` (mean cost of the most expensive model over its logged rows) or USD.
            position_feature: name of the feature column holding the slot index (``"position"`` for
                ``routing_env.data.load_open_bandit``); it becomes :attr:`position` and stays among the features.

        When the dataset is also full-information, the outcome of every model is kept as hidden ground truth.
        """
        if not isinstance(dataset, LoggedDataset):
            raise ConfigurationError(f"dataset must be a LoggedDataset, got {type(dataset).__name__}")
        if dataset.logged_action is None or dataset.propensity is None:
            raise PartialInformationError(
                "BanditFeedback.from_dataset needs bandit logs (logged_action and propensity); this dataset has "
                "none. For full-information data use simulate_bandit_feedback(dataset, logging_policy, ...)"
            )
        idx = np.arange(dataset.n_queries)
        act = dataset.logged_action
        position = None
        if position_feature is not None:
            names = list(dataset.feature_names)
            if position_feature not in names:
                raise ConfigurationError(
                    f"position_feature={position_feature!r} is not a feature of the dataset (features: {names})"
                )
            position = dataset.features[:, names.index(position_feature)].astype(np.float64)
        full = dataset.is_full_information
        return cls(
            models=dataset.models,
            features=dataset.features,
            action=act,
            propensity=dataset.propensity,
            quality=dataset.quality[idx, act],
            cost=dataset.cost[idx, act],
            cost_scale=dataset.resolve_cost_scale(cost_scale),
            cost_weight=cost_weight,
            position=position,
            query_ids=dataset.query_ids,
            full_quality=dataset.quality if full else None,
            full_cost=dataset.cost if full else None,
        )


def simulate_bandit_feedback(
    dataset: LoggedDataset,
    logging_policy: Policy | np.ndarray,
    cost_weight: float = 0.0,
    seed: int | np.random.Generator = 0,
    *,
    cost_scale: CostScale = "max_mean",
) -> BanditFeedback:
    """Turn full-information logs into bandit logs under a stochastic logging policy.

    For each query the logging policy's distribution (``action_probabilities(features)``, or an ``(n, K)`` array)
    is sampled once with the seeded generator; only the chosen model's quality and cost are exposed, with its
    probability as the propensity. The outcomes of every model and the logging distribution are kept as hidden
    ground truth, so :meth:`BanditFeedback.true_value` is exact for any target policy.

    Args:
        dataset: full-information logs (every model's quality and cost on every query).
        logging_policy: the behaviour policy (must give every action it may choose a positive probability;
            actions it never takes are a support problem the estimators will warn about).
        cost_weight: the feedback's default λ.
        seed: seed or generator of the action draws.
        cost_scale: USD per unit of ``cost_weight`` (``"max_mean"`` resolves on ``dataset``).
    """
    if not isinstance(dataset, LoggedDataset):
        raise ConfigurationError(f"dataset must be a LoggedDataset, got {type(dataset).__name__}")
    dataset.require_full_information("simulate_bandit_feedback")
    n, k = dataset.n_queries, dataset.n_models
    if isinstance(logging_policy, np.ndarray):
        dist = np.asarray(logging_policy, dtype=np.float64)
    else:
        if not isinstance(logging_policy, Policy):
            raise ConfigurationError(
                "logging_policy must implement routing_env.policy.Policy or be an (n, K) array, "
                f"got {type(logging_policy).__name__}"
            )
        check_models(logging_policy.models, dataset.models, what="dataset")
        check_features(dataset.features, None)
        dist = np.asarray(logging_policy.action_probabilities(dataset.features), dtype=np.float64)
    if dist.shape != (n, k):
        raise ShapeError(f"the logging distribution must have shape (n, K) = ({n}, {k}), got {dist.shape}")
    if not np.isfinite(dist).all() or (dist < 0).any() or not np.allclose(dist.sum(axis=1), 1.0, atol=1e-6):
        raise SchemaError("the logging distribution must hold probabilities with rows summing to 1")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    action = sample_actions(dist, rng)
    idx = np.arange(n)
    return BanditFeedback(
        models=dataset.models,
        features=dataset.features,
        action=action,
        propensity=dist[idx, action],
        quality=dataset.quality[idx, action],
        cost=dataset.cost[idx, action],
        cost_scale=dataset.resolve_cost_scale(cost_scale),
        cost_weight=cost_weight,
        query_ids=dataset.query_ids,
        full_quality=dataset.quality,
        full_cost=dataset.cost,
        logging_dist=dist,
    )


def sample_actions(dist: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(n,) int64`` one draw per row of ``dist (n, K)`` by inversion; never an action of probability 0."""
    cdf = np.cumsum(dist, axis=1)
    u = rng.random(dist.shape[0]) * cdf[:, -1]
    action = (cdf <= u[:, None]).sum(axis=1)
    action = np.minimum(action, dist.shape[1] - 1)
    # Rounding can land on a trailing zero-probability column: step back to the last action with mass.
    zero = dist[np.arange(dist.shape[0]), action] <= 0
    if zero.any():
        rows = np.flatnonzero(zero)
        last = dist.shape[1] - 1 - np.argmax(dist[rows, ::-1] > 0, axis=1)
        action[rows] = last
    return action.astype(np.int64)


def uniform_dist(n: int, models: Sequence[str] | int) -> np.ndarray:
    """``(n, K)`` uniform distribution (the logging policy of a randomised experiment)."""
    k = models if isinstance(models, int) else len(models)
    return np.full((n, k), 1.0 / k)


def _checked_action(value: Any, k: int) -> np.ndarray:
    """``(n,) int64`` logged actions in ``[0, K)``, n ≥ 1 (integral floats are accepted)."""
    action = np.array(value, copy=True)
    if action.ndim != 1:
        raise ShapeError(f"action must have shape (n,), got {action.shape}")
    if action.shape[0] == 0:
        raise SchemaError("bandit feedback needs at least one round, got n = 0")
    integral = np.issubdtype(action.dtype, np.integer) or (
        np.issubdtype(action.dtype, np.floating) and bool(np.all(action == np.round(action)))
    )
    if not integral:
        raise SchemaError(f"action must hold integer model indices, got dtype {action.dtype}")
    action = action.astype(np.int64)
    bad = (action < 0) | (action >= k)
    if bad.any():
        raise SchemaError(
            f"action must lie in [0, {k}) (K = {k} models), got {action[bad][0]} at row {np.flatnonzero(bad)[0]}"
        )
    return action


def _vector(name: str, value: Any, n: int) -> np.ndarray:
    """``value`` as a fresh ``(n,) float64`` array."""
    arr = np.array(value, dtype=np.float64, copy=True)
    if arr.shape != (n,):
        raise ShapeError(f"{name} must have shape (n,) = ({n},), got {arr.shape}")
    return arr
