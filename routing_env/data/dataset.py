"""`LoggedDataset`: logged query × model outcomes as dense arrays.

The environments, learners, metrics and off-policy estimators all read the same arrays:

- ``quality (n, K) float64`` in [0, 1], NaN where the outcome was not observed;
- ``cost (n, K) float64`` USD per call, NaN where not observed;
- ``observed (n, K) bool``: a logged row exists for that query and model;
- ``features (n, d) float32`` per-query features (``d`` may be 0);
- optional ``latency``, ``signal``, ``input_tokens``, ``output_tokens`` ``(n, K) float32`` (NaN = missing);
- optional ``prompts``, ``tasks`` ``(n,) object``;
- for bandit logs ``logged_action (n,) int64`` and ``propensity (n,) float64``.

Arrays are made read-only so that environments and policies can share them without copies. The constructor
copies the arrays it is given, except read-only arrays of the canonical dtype (whose bases are read-only too),
which it shares: derived datasets (``select``, ``split``…) and large builds avoid a second copy that way.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from routing_env.data import schema as S
from routing_env.data.files import StoredExtras, check_suffix, read_canonical, write_canonical
from routing_env.data.schema import ModelCard, as_model_cards
from routing_env.errors import (
    ConfigurationError,
    ModelMismatchError,
    PartialInformationError,
    SchemaError,
    ShapeError,
    warn,
)

Normalize = S.Normalize
CostScale = float | Literal["max_mean"]


@dataclass(frozen=True)
class MissingOutcomes:
    """What a dataset lacks for full information (see :meth:`LoggedDataset.missing_outcomes`).

    Attributes:
        n_queries: n.
        n_incomplete: queries where at least one model has no known outcome.
        unlogged: per model, the number of queries without a logged row (models with none left out).
        nan_quality: per model, the number of logged rows whose quality is NaN (models with none left out).
        bandit_logs: the dataset holds bandit logs (one logged model per query, with propensities).
    """

    n_queries: int
    n_incomplete: int
    unlogged: Mapping[str, int]
    nan_quality: Mapping[str, int]
    bandit_logs: bool

    @property
    def complete(self) -> bool:
        """Every model's outcome is known on every query."""
        return self.n_incomplete == 0

    def describe(self) -> str:
        """One sentence with the counts, e.g. ``"3 of 40 queries lack an outcome: model 'c' has no row on 2
        queries; model 'b' has a NaN quality on 1 logged row"``."""
        if self.complete:
            return f"every model has an outcome on each of the {_plural(self.n_queries, 'query', 'queries')}"
        if self.bandit_logs:
            return (
                "these are bandit logs: only the logged model's outcome is known on each of the "
                f"{_plural(self.n_queries, 'query', 'queries')}"
            )
        parts = [
            f"model {m!r} has no row on {_plural(c, 'query', 'queries')}" for m, c in _largest(self.unlogged)
        ]
        parts += [
            f"model {m!r} has a NaN quality on {_plural(c, 'logged row', 'logged rows')}"
            for m, c in _largest(self.nan_quality)
        ]
        hidden = len(self.unlogged) + len(self.nan_quality) - len(parts)
        more = f"; … ({hidden} more models)" if hidden > 0 else ""
        return (
            f"{self.n_incomplete} of {_plural(self.n_queries, 'query', 'queries')} lack an outcome: "
            + "; ".join(parts)
            + more
        )

    def remedy(self, alternative: str | None = None) -> str:
        """What to do about it, as a sentence; ``alternative`` (another remedy of the caller) is appended."""
        if self.bandit_logs:
            text = (
                "Evaluate policies on bandit logs off-policy with routing_env.ope "
                "(BanditFeedback.from_dataset, estimate_policy_value)"
            )
        elif self.n_incomplete < self.n_queries:
            text = (
                f"Keep the {self.n_queries - self.n_incomplete} complete queries with dataset.complete_only()"
            )
        else:
            text = "No query is complete: collect the missing outcomes"
        return f"{text}{', ' + alternative if alternative else ''}."


def _plural(count: int, singular: str, plural: str) -> str:
    return f"{count} {singular if count == 1 else plural}"


def _largest(counts: Mapping[str, int], limit: int = 5) -> list[tuple[str, int]]:
    """The ``limit`` largest counts, largest first (ties in the given order)."""
    return sorted(counts.items(), key=lambda kv: -kv[1])[:limit]


@dataclass(frozen=True, eq=False)
class LoggedDataset:
    """Logged outcomes of K models on n queries (see the module docstring for shapes).

    Build one with :meth:`from_frame` or :meth:`read`, or with a loader from :mod:`routing_env.data`.
    The constructor validates arrays given directly.

    Attributes:
        models: the K model names, in column order of every ``(n, K)`` array.
        query_ids: ``(n,) object`` query identifiers (str).
        quality: ``(n, K) float64`` in [0, 1], NaN = not observed.
        cost: ``(n, K) float64`` USD per call, NaN = not observed.
        observed: ``(n, K) bool``, a logged row exists for that cell.
        features: ``(n, d) float32``.
        feature_names: ``d`` names.
        model_cards: price card per model (may be empty when costs were logged directly).
        meta: provenance notes (how quality was normalised, how cost was estimated...).
    """

    models: tuple[str, ...]
    query_ids: np.ndarray
    quality: np.ndarray
    cost: np.ndarray
    # Always set by __post_init__ (derived when None is given), hence typed without Optional.
    observed: np.ndarray = None  # type: ignore[assignment]
    features: np.ndarray = None  # type: ignore[assignment]
    feature_names: tuple[str, ...] = None  # type: ignore[assignment]
    latency: np.ndarray | None = None
    signal: np.ndarray | None = None
    input_tokens: np.ndarray | None = None
    output_tokens: np.ndarray | None = None
    prompts: np.ndarray | None = None
    tasks: np.ndarray | None = None
    logged_action: np.ndarray | None = None
    propensity: np.ndarray | None = None
    model_cards: Mapping[str, ModelCard] = field(default_factory=dict)
    meta: Mapping[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        set_ = object.__setattr__
        models = S.validate_models(self.models)
        qids = S.validate_query_ids(self.query_ids)
        shape = (qids.shape[0], len(models))
        quality = S.owned_matrix("quality", self.quality, shape, np.float64)
        cost = S.owned_matrix("cost", self.cost, shape, np.float64)
        if quality is None or cost is None:
            raise SchemaError("quality and cost are required (n, K) arrays, got None")
        observed = S.owned_matrix("observed", self.observed, shape, bool)
        if observed is None:
            observed = ~np.isnan(quality) | ~np.isnan(cost)
        quality, cost = S.validate_outcomes(quality, cost, observed, qids, models)
        feats, names = S.validate_features(self.features, self.feature_names, qids)
        bandit = S.validate_bandit_log(self.logged_action, self.propensity, observed, qids)
        set_(self, "models", models)
        set_(self, "query_ids", qids)
        set_(self, "quality", S.readonly(quality))
        set_(self, "cost", S.readonly(cost))
        set_(self, "observed", S.readonly(observed))
        for name in S.OPTIONAL_MATRICES:
            arr = S.validate_optional_matrix(name, getattr(self, name), shape, observed)
            set_(self, name, None if arr is None else S.readonly(arr))
        set_(self, "features", S.readonly(feats))
        set_(self, "feature_names", names)
        for name in ("prompts", "tasks"):
            text = S.validate_per_query(name, getattr(self, name), shape[0])
            set_(self, name, None if text is None else S.readonly(text))
        if bandit is not None:
            set_(self, "logged_action", S.readonly(bandit[0]))
            set_(self, "propensity", S.readonly(bandit[1]))
        set_(self, "model_cards", S.validate_model_cards(as_model_cards(self.model_cards), models))
        set_(self, "meta", dict(self.meta))

    # ------------------------------------------------------------------ basic properties
    @property
    def n_queries(self) -> int:
        return int(self.query_ids.shape[0])

    @property
    def n_models(self) -> int:
        return len(self.models)

    @property
    def n_features(self) -> int:
        assert self.features is not None
        return int(self.features.shape[1])

    def __len__(self) -> int:
        return self.n_queries

    @property
    def is_full_information(self) -> bool:
        """Every model's quality and cost is known on every query (exact replay possible)."""
        return bool(np.isfinite(self.quality).all() and np.isfinite(self.cost).all())

    @property
    def has_propensities(self) -> bool:
        """The data are bandit logs with the logging policy's action and propensity per query."""
        return self.propensity is not None

    def missing_outcomes(self) -> MissingOutcomes:
        """Which outcomes the dataset lacks for full information, counted per model."""
        known = np.isfinite(self.quality) & np.isfinite(self.cost)
        unlogged = (~self.observed).sum(axis=0)
        nan_quality = (self.observed & np.isnan(self.quality)).sum(axis=0)
        return MissingOutcomes(
            n_queries=self.n_queries,
            n_incomplete=int((~known.all(axis=1)).sum()),
            unlogged={m: int(c) for m, c in zip(self.models, unlogged) if c},
            nan_quality={m: int(c) for m, c in zip(self.models, nan_quality) if c},
            bandit_logs=self.has_propensities,
        )

    def require_full_information(self, what: str, alternative: str | None = None) -> None:
        """Refuse partial data for ``what`` (an operation that needs every model's outcome on every query).

        Raises:
            PartialInformationError: naming the counts of missing outcomes and the remedy
                (:meth:`complete_only`, or off-policy evaluation for bandit logs), then ``alternative``.
        """
        gaps = self.missing_outcomes()
        if gaps.complete:
            return
        raise PartialInformationError(
            f"{what} needs every model's outcome on every query, but {gaps.describe()}. {gaps.remedy(alternative)}"
        )

    def model_index(self, model: str) -> int:
        try:
            return self.models.index(model)
        except ValueError:
            raise ModelMismatchError(
                f"unknown model {model!r}; the dataset has {list(self.models)}"
            ) from None

    def __repr__(self) -> str:
        kind = "full-information" if self.is_full_information else "partial"
        if self.has_propensities:
            kind += ", bandit logs"
        return (
            f"LoggedDataset(n_queries={self.n_queries}, models={list(self.models)}, "
            f"n_features={self.n_features}, {kind})"
        )

    # ------------------------------------------------------------------ rewards and oracle
    def mean_cost(self) -> np.ndarray:
        """``(K,)`` mean USD cost per call of each model over its observed rows (NaN if none)."""
        with np.errstate(invalid="ignore"):
            counts = self.observed.sum(axis=0)
            total = np.where(self.observed, self.cost, 0.0).sum(axis=0)
            return np.where(counts > 0, total / np.maximum(counts, 1), np.nan)

    def resolve_cost_scale(self, cost_scale: CostScale = "max_mean") -> float:
        """USD amount that one unit of ``cost_weight`` charges.

        ``"max_mean"`` is the mean cost of the most expensive model, so ``cost_weight = 1`` means that model must be
        worth a full quality point. A float is used as given (must be > 0).
        """
        if isinstance(cost_scale, str):
            if cost_scale != "max_mean":
                raise ConfigurationError(
                    f"cost_scale must be 'max_mean' or a positive float, got {cost_scale!r}"
                )
            means = self.mean_cost()
            top = float(np.nanmax(means)) if np.isfinite(means).any() else 0.0
            return top if top > 0 else 1.0
        scale = float(cost_scale)
        if not np.isfinite(scale) or scale <= 0:
            raise ConfigurationError(f"cost_scale must be a positive float, got {cost_scale!r}")
        return scale

    def rewards(
        self,
        cost_weight: float,
        latency_weight: float = 0.0,
        cost_scale: CostScale = "max_mean",
    ) -> np.ndarray:
        """``(n, K) float64`` reward ``quality − cost_weight·cost/cost_scale − latency_weight·latency_s``.

        NaN where the outcome was not observed. Missing latency counts as 0 only when ``latency_weight`` is 0.
        """
        scale = self.resolve_cost_scale(cost_scale)
        r = self.quality - (float(cost_weight) / scale) * self.cost
        if latency_weight:
            if self.latency is None:
                raise ConfigurationError(
                    f"latency_weight={latency_weight!r} needs latency_s in the data, and this dataset has none"
                )
            r = r - float(latency_weight) * self.latency.astype(np.float64)
        return r

    def oracle_actions(
        self,
        cost_weight: float = 0.0,
        latency_weight: float = 0.0,
        cost_scale: CostScale = "max_mean",
        rewards: np.ndarray | None = None,
    ) -> np.ndarray:
        """``(n,) int64`` per-query best model: ``argmax(reward)``, ties to the cheaper model.

        Among equal rewards the call with the lower logged cost wins, then the model with the lower mean cost.
        Unobserved cells never win unless no model of that query is observed (then action 0).
        """
        r = self.rewards(cost_weight, latency_weight, cost_scale) if rewards is None else rewards
        return oracle_from_arrays(r, self.cost, self.mean_cost())

    # ------------------------------------------------------------------ building
    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        model_cards: Mapping[str, ModelCard]
        | Mapping[str, Mapping[str, float]]
        | list[ModelCard]
        | None = None,
        models: Sequence[str] | None = None,
        normalize: Normalize | None = None,
        quality_range: tuple[float, float] | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> LoggedDataset:
        """Build a dataset from the canonical long format (one row per query × model).

        Args:
            frame: the long table (see :mod:`routing_env.data.schema`).
            model_cards: price per model, used to compute ``cost`` from token counts where ``cost`` is absent or
                NaN. A card for a model not in the data is an error (usually a typo).
            models: column order of the models; default the order of first appearance. Naming a model that has
                no rows gives a warning and an all-NaN column.
            normalize: how to map a quality column that is not in [0, 1]: ``"minmax"`` maps ``quality_range``
                (default: the observed min and max) linearly onto [0, 1]; ``"clip"`` clips into [0, 1].
                Without it, quality outside [0, 1] is an error. The transform is recorded in ``meta``.
            quality_range: ``(low, high)`` of the judge scale for ``normalize="minmax"`` (e.g. ``(1, 10)``).
            meta: provenance notes to carry along.
        """
        cards = as_model_cards(model_cards)
        feat_cols = S.check_frame_columns(frame, cards)
        layout = S.frame_layout(frame, models)
        S.validate_model_cards(cards, layout.models)
        notes = dict(meta or {})
        quality = S.normalized_quality(S.numeric_column(frame, S.QUALITY), normalize, quality_range, notes)
        values = S.optional_columns(frame, layout)
        cost = S.row_costs(frame, layout, cards, values, notes)
        S.warn_unobserved_models(layout.models, layout.scatter(quality))
        bandit = S.bandit_columns(frame, layout)
        columns = layout.columns

        def matrix(name: str) -> np.ndarray | None:
            col = S.OPTIONAL_MATRICES[name]
            return layout.scatter(values[col]) if col in values else None

        dataset = cls(
            models=layout.models,
            query_ids=layout.query_ids,
            quality=layout.scatter(quality),
            cost=layout.scatter(cost),
            observed=layout.observed(),
            features=(
                S.per_query_features(frame, feat_cols, layout)
                if feat_cols
                else np.zeros((layout.shape[0], 0), dtype=np.float32)
            ),
            latency=matrix("latency"),
            signal=matrix("signal"),
            input_tokens=matrix("input_tokens"),
            output_tokens=matrix("output_tokens"),
            prompts=S.per_query_text(frame, S.PROMPT, layout, keep_type=True)
            if S.PROMPT in columns
            else None,
            tasks=S.per_query_text(frame, S.TASK, layout, keep_type=False) if S.TASK in columns else None,
            logged_action=None if bandit is None else bandit[0],
            propensity=None if bandit is None else bandit[1],
            model_cards=cards,
            meta=notes,
        )
        gaps = dataset.missing_outcomes()
        if not gaps.complete and not gaps.bandit_logs:
            warn(
                f"{gaps.describe()}. Exact replay (evaluate_policy, gym.make, train_ppo) needs every outcome. "
                f"{gaps.remedy('or impute the missing ones (routing_env.envs.OutcomeModel)')}",
                stacklevel=None,
            )
        return dataset

    def to_frame(self) -> pd.DataFrame:
        """The canonical long table: one row per observed query × model cell, query-major, model order."""
        qi, mj = np.nonzero(self.observed)
        data: dict[str, Any] = {
            S.QUERY_ID: self.query_ids[qi],
            S.MODEL: np.asarray(self.models, dtype=object)[mj],
            S.QUALITY: self.quality[qi, mj],
            S.COST: self.cost[qi, mj],
        }
        for name, col in S.OPTIONAL_MATRICES.items():
            arr = getattr(self, name)
            if arr is None:
                continue
            values = arr[qi, mj]
            if col in (S.INPUT_TOKENS, S.OUTPUT_TOKENS):
                data[col] = pd.array(np.where(np.isnan(values), np.nan, values), dtype="Float64").astype(
                    "Int64"
                )
            else:
                data[col] = values.astype(np.float64)
        if self.prompts is not None:
            data[S.PROMPT] = self.prompts[qi]
        if self.tasks is not None:
            data[S.TASK] = self.tasks[qi]
        assert self.features is not None and self.feature_names is not None
        for c in range(self.n_features):
            data[f"x_{c}"] = self.features[qi, c]
        if self.logged_action is not None and self.propensity is not None:
            logged = self.logged_action[qi] == mj
            data[S.LOGGED] = logged
            data[S.PROPENSITY] = np.where(logged, self.propensity[qi], np.nan)
        return pd.DataFrame(data)

    # ------------------------------------------------------------------ files
    @classmethod
    def read(cls, path: str | Path, **kwargs: Any) -> LoggedDataset:
        """Read a canonical file: ``.parquet``, ``.csv`` or ``.jsonl`` (by suffix); keyword args go to from_frame.

        Price cards and provenance notes written by :meth:`save` are restored (parquet metadata, or the
        ``<file>.meta.json`` sidecar for csv/jsonl).
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no logged data at {path}")
        frame, stored = read_canonical(path)
        if stored is not None:
            if "model_cards" not in kwargs and stored.model_cards:
                kwargs["model_cards"] = {c.name: c for c in stored.model_cards}
            if "models" not in kwargs and stored.models:
                kwargs["models"] = list(stored.models)
            kwargs["meta"] = {**stored.meta, **kwargs.get("meta", {})}
            if stored.feature_names and not kwargs.get("feature_names"):
                kwargs["feature_names"] = stored.feature_names
        names = kwargs.pop("feature_names", None)
        ds = cls.from_frame(frame, **kwargs)
        if names and len(names) == ds.n_features:
            ds = replace(ds, feature_names=tuple(names))
        return ds

    def save(self, path: str | Path) -> Path:
        """Write the canonical long table to ``.parquet``, ``.csv`` or ``.jsonl`` (by suffix).

        Model order, price cards, feature names and provenance notes go to the parquet metadata, or to a
        ``<file>.meta.json`` sidecar for csv/jsonl, so :meth:`read` restores the same dataset.
        """
        path = Path(path)
        check_suffix(path, "save")
        extras = StoredExtras(
            models=self.models,
            model_cards=tuple(self.model_cards.values()),
            meta=dict(self.meta),
            feature_names=tuple(self.feature_names or ()),
        )
        return write_canonical(self.to_frame(), path, extras)

    # ------------------------------------------------------------------ selection
    def select(self, indices: np.ndarray | Sequence[int]) -> LoggedDataset:
        """A dataset with the queries at ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1:
            raise ShapeError(f"indices must be 1-D, got shape {idx.shape}")
        if idx.size and (idx.min() < -self.n_queries or idx.max() >= self.n_queries):
            raise ConfigurationError(
                f"indices must lie in [0, {self.n_queries}), got {idx.min()}..{idx.max()}"
            )

        # The gathered arrays are fresh; handing them over read-only lets the constructor keep them uncopied.
        def rows(a: np.ndarray) -> np.ndarray:
            out = a[idx]
            out.setflags(write=False)
            return out

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else rows(a)

        assert self.features is not None
        return replace(
            self,
            query_ids=self.query_ids[idx],
            quality=rows(self.quality),
            cost=rows(self.cost),
            observed=rows(self.observed),
            features=rows(self.features),
            latency=take(self.latency),
            signal=take(self.signal),
            input_tokens=take(self.input_tokens),
            output_tokens=take(self.output_tokens),
            prompts=take(self.prompts),
            tasks=take(self.tasks),
            logged_action=take(self.logged_action),
            propensity=take(self.propensity),
        )

    def filter(self, mask: np.ndarray | Sequence[bool]) -> LoggedDataset:
        """A dataset with the queries where ``mask (n,) bool`` is true."""
        m = np.asarray(mask)
        if m.dtype != bool or m.shape != (self.n_queries,):
            raise ShapeError(
                f"mask must be a boolean array of shape ({self.n_queries},), got {m.dtype} {m.shape}"
            )
        return self.select(np.flatnonzero(m))

    def complete_only(self) -> LoggedDataset:
        """A dataset with only the queries on which every model's quality and cost is known (full information).

        The dropped count goes to ``meta["complete_only"]``; a dataset that is already complete is returned as is.
        Use it before :func:`~routing_env.metrics.evaluate_policy`, ``gym.make`` or training on logs where a model
        is missing for some queries or a quality is NaN (:meth:`missing_outcomes` counts them).

        Raises:
            PartialInformationError: no query is complete (e.g. bandit logs, which call for off-policy evaluation).
        """
        keep = np.isfinite(self.quality).all(axis=1) & np.isfinite(self.cost).all(axis=1)
        if keep.all():
            return self
        gaps = self.missing_outcomes()
        if not keep.any():
            raise PartialInformationError(
                f"complete_only: no query has an outcome for every model; {gaps.describe()}. {gaps.remedy()}"
            )
        kept = self.filter(keep)
        note = f"kept {int(keep.sum())} of {self.n_queries} queries, dropping those that lack an outcome ({gaps.describe()})"
        return replace(kept, meta={**self.meta, "complete_only": note})

    def subset_models(self, models: Sequence[str]) -> LoggedDataset:
        """A dataset restricted to ``models`` (in that order).

        Bandit logs keep only the queries whose logged action is among the kept models, with propensities as
        logged (they still describe the original logging policy).
        """
        names = [str(m) for m in models]
        if not names:
            raise ConfigurationError("subset_models needs at least one model")
        cols = np.array([self.model_index(m) for m in names], dtype=np.int64)
        if len(set(names)) != len(names):
            raise ConfigurationError(f"subset_models got duplicate model names {names}")
        ds = self
        if self.logged_action is not None:
            keep = np.isin(self.logged_action, cols)
            if not keep.all():
                warn(
                    f"subset_models drops {int((~keep).sum())} bandit-log queries whose logged model was removed"
                )
            ds = self.filter(keep)
        remap = np.full(self.n_models, -1, dtype=np.int64)
        remap[cols] = np.arange(len(cols))

        def columns(a: np.ndarray) -> np.ndarray:
            out = a[:, cols]
            out.setflags(write=False)
            return out

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else columns(a)

        return replace(
            ds,
            models=tuple(names),
            quality=columns(ds.quality),
            cost=columns(ds.cost),
            observed=columns(ds.observed),
            latency=take(ds.latency),
            signal=take(ds.signal),
            input_tokens=take(ds.input_tokens),
            output_tokens=take(ds.output_tokens),
            logged_action=None if ds.logged_action is None else remap[ds.logged_action],
            model_cards={m: c for m, c in self.model_cards.items() if m in names},
        )

    def with_features(self, features: np.ndarray, names: Sequence[str] | None = None) -> LoggedDataset:
        """A copy carrying ``features (n, d)`` (converted to float32) instead of the current ones."""
        arr = np.asarray(features)
        if arr.ndim != 2 or arr.shape[0] != self.n_queries:
            raise ShapeError(f"features must have shape (n, d) with n = {self.n_queries}, got {arr.shape}")
        return replace(self, features=arr, feature_names=None if names is None else tuple(names))  # type: ignore[arg-type]

    def split(
        self,
        test_size: float = 0.2,
        seed: int = 0,
        by: Literal["auto", "prompt", "query_id"] = "auto",
        stratify: bool = True,
    ) -> tuple[LoggedDataset, LoggedDataset]:
        """Split queries into (train, test).

        Args:
            test_size: share of groups in the test split, in (0, 1).
            seed: the shuffle's seed.
            by: the grouping that never straddles the split. ``"prompt"`` keeps every query with the same prompt
                text on one side (duplicated prompts would otherwise leak the answer); ``"query_id"`` groups by id;
                ``"auto"`` uses the prompt when the data has prompts.
            stratify: keep each task's share in both splits when the data has tasks.
        """
        if not 0.0 < float(test_size) < 1.0:
            raise ConfigurationError(f"test_size must be in (0, 1), got {test_size!r}")
        if by not in ("auto", "prompt", "query_id"):
            raise ConfigurationError(f"by must be 'auto', 'prompt' or 'query_id', got {by!r}")
        if by == "prompt" and self.prompts is None:
            raise ConfigurationError("split(by='prompt') needs prompts, and this dataset has none")
        use_prompt = self.prompts is not None and by in ("auto", "prompt")
        if use_prompt:
            assert self.prompts is not None
            # A query without a prompt is its own group (its id stands in), never lumped with the others.
            keys = np.array(
                [
                    "p:" + str(p) if p is not None else "q:" + str(q)
                    for p, q in zip(self.prompts, self.query_ids)
                ],
                dtype=object,
            )
        else:
            keys = np.array(["q:" + str(q) for q in self.query_ids], dtype=object)
        group, _ = pd.factorize(keys, sort=False)
        n_groups = int(group.max()) + 1
        first = np.full(n_groups, -1, dtype=np.int64)
        first[group[::-1]] = np.arange(self.n_queries - 1, -1, -1)
        if stratify and self.tasks is not None:
            stratum, _ = pd.factorize(pd.Series(self.tasks[first]).fillna("\x00none"), sort=True)
        else:
            stratum = np.zeros(n_groups, dtype=np.int64)
        rng = np.random.default_rng(seed)
        order = rng.permutation(n_groups)
        # Test groups per stratum by largest remainder: each stratum gets floor(test_size · size) or one more,
        # and the total is round(test_size · n_groups), so small tasks (even single queries) can reach the test
        # side without skewing the share. Ties between remainders are broken by the seeded shuffle.
        strata, sizes = np.unique(stratum, return_counts=True)
        ideal = float(test_size) * sizes
        n_test = np.floor(ideal).astype(np.int64)
        extra = round(float(test_size) * n_groups) - int(n_test.sum())
        if extra > 0:
            tie_break = rng.permutation(len(strata))
            ranked = np.lexsort((tie_break, -(ideal - n_test)))
            n_test[ranked[:extra]] += 1
        is_test = np.zeros(n_groups, dtype=bool)
        for s, count in zip(strata, n_test):
            members = order[stratum[order] == s]
            is_test[members[:count]] = True
        if is_test.all() or not is_test.any():
            raise ConfigurationError(
                f"split(test_size={test_size}) leaves one side empty with {n_groups} groups; use more data"
            )
        test_rows = is_test[group]
        return self.filter(~test_rows), self.filter(test_rows)

    # ------------------------------------------------------------------ reporting
    def summary(self, cost_weight: float = 0.0) -> pd.DataFrame:
        """Per-model table: observed rows, mean quality, mean cost (USD), mean reward at ``cost_weight``,
        share of queries where the model is the oracle's pick; then an ``oracle`` row. The best single model
        by mean reward is flagged in ``best_single``.
        """
        r = self.rewards(cost_weight)
        with warnings.catch_warnings():
            # A model without observed outcomes has a NaN mean; that is the answer, not a problem.
            warnings.simplefilter("ignore", RuntimeWarning)
            mean_q = np.nanmean(self.quality, axis=0)
            mean_r = np.nanmean(r, axis=0)
        oracle = self.oracle_actions(cost_weight, rewards=r)
        share = np.bincount(oracle, minlength=self.n_models) / max(self.n_queries, 1)
        best = int(np.nanargmax(np.where(np.isnan(mean_r), -np.inf, mean_r)))
        rows = []
        for j, m in enumerate(self.models):
            rows.append(
                {
                    "model": m,
                    "n_observed": int(self.observed[:, j].sum()),
                    "mean_quality": float(mean_q[j]),
                    "mean_cost_usd": float(self.mean_cost()[j]),
                    "mean_reward": float(mean_r[j]),
                    "oracle_share": float(share[j]),
                    "best_single": j == best,
                }
            )
        idx = np.arange(self.n_queries)
        if self.is_full_information:
            rows.append(
                {
                    "model": "oracle",
                    "n_observed": self.n_queries,
                    "mean_quality": float(self.quality[idx, oracle].mean()),
                    "mean_cost_usd": float(self.cost[idx, oracle].mean()),
                    "mean_reward": float(r[idx, oracle].mean()),
                    "oracle_share": 1.0,
                    "best_single": False,
                }
            )
        return pd.DataFrame(rows)


def oracle_from_arrays(
    rewards: np.ndarray, cost: np.ndarray, mean_cost: np.ndarray | None = None
) -> np.ndarray:
    """``(n,) int64`` argmax of ``rewards (n, K)``, ties to the lower ``cost (n, K)``, then to the lower mean cost.

    NaN rewards never win unless a whole row is NaN (then 0).
    """
    r = np.where(np.isnan(rewards), -np.inf, rewards)
    best = r.max(axis=1, keepdims=True)
    # Rewards that differ only by float rounding are ties.
    cand = r >= best - 1e-12 * np.maximum(1.0, np.abs(best))
    c = np.where(cand, np.nan_to_num(cost, nan=np.inf), np.inf)
    cheapest = c.min(axis=1, keepdims=True)
    cand &= c <= cheapest
    if mean_cost is None:
        rank = np.arange(rewards.shape[1])
    else:
        rank = np.argsort(np.argsort(np.nan_to_num(mean_cost, nan=np.inf), kind="stable"), kind="stable")
    return np.where(cand, rank[None, :], rewards.shape[1] + 1).argmin(axis=1).astype(np.int64)
