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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from routing_env.data import schema as S
from routing_env.data.files import StoredExtras, check_suffix, read_canonical, write_canonical
from routing_env.data.schema import ModelCard, as_model_cards, is_missing
from routing_env.errors import (
    ConfigurationError,
    ModelMismatchError,
    PriceError,
    SchemaError,
    ShapeError,
    warn,
)

Normalize = Literal["minmax", "clip"]
CostScale = float | Literal["max_mean"]

_OPTIONAL_MATRICES = ("latency", "signal", "input_tokens", "output_tokens")
_MATRIX_COLUMNS = {
    "latency": S.LATENCY,
    "signal": S.SIGNAL,
    "input_tokens": S.INPUT_TOKENS,
    "output_tokens": S.OUTPUT_TOKENS,
}


def _readonly(a: np.ndarray | None) -> np.ndarray | None:
    if a is not None:
        a.setflags(write=False)
    return a


def _owned(value: Any, dtype: type) -> np.ndarray:
    """``value`` as an array of ``dtype`` that nobody else can modify.

    A read-only array of the right dtype (whose bases are read-only too) is shared as is; this is how datasets
    derived from one another, and callers building large datasets, avoid a second copy. Anything else is copied.
    """
    if isinstance(value, np.ndarray) and value.dtype == dtype:
        base: Any = value
        while isinstance(base, np.ndarray):
            if base.flags.writeable:
                break
            base = base.base
        else:
            return value
    return np.array(value, dtype=dtype, copy=True)


def _examples(values: Iterable[Any], limit: int = 5) -> str:
    items = [v.item() if isinstance(v, np.generic) else v for v in values]
    shown = ", ".join(repr(v) for v in items[:limit])
    return shown + (f" … ({len(items)} in all)" if len(items) > limit else "")


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
        models = tuple(str(m) for m in self.models)
        if len(models) == 0:
            raise SchemaError("models must name at least one model, got an empty list")
        if len(set(models)) != len(models):
            dup = sorted({m for m in models if models.count(m) > 1})
            raise SchemaError(f"models must be unique, got duplicates {dup}")
        set_(self, "models", models)
        k = len(models)
        qids = np.asarray(self.query_ids, dtype=object)
        if qids.ndim != 1:
            raise ShapeError(f"query_ids must be 1-D (n,), got shape {qids.shape}")
        n = qids.shape[0]
        set_(self, "query_ids", qids)

        def matrix(name: str, value: Any, dtype: type) -> np.ndarray | None:
            if value is None:
                return None
            arr = _owned(value, dtype)
            if arr.shape != (n, k):
                raise ShapeError(f"{name} must have shape (n, K) = ({n}, {k}), got {arr.shape}")
            return arr

        def blank_unobserved(arr: np.ndarray, seen: np.ndarray) -> np.ndarray:
            # Cells without a logged row carry no outcome: keep them NaN whatever the caller passed.
            stale = ~seen & ~np.isnan(arr)
            if stale.any():
                arr = arr.copy() if not arr.flags.writeable else arr
                arr[stale] = np.nan
            return arr

        quality = matrix("quality", self.quality, np.float64)
        cost = matrix("cost", self.cost, np.float64)
        assert quality is not None and cost is not None
        observed = matrix("observed", self.observed, bool)
        if observed is None:
            observed = ~np.isnan(quality) | ~np.isnan(cost)
        bad_q = observed & ~np.isnan(quality) & ((quality < 0) | (quality > 1))
        if bad_q.any():
            i, j = np.argwhere(bad_q)[0]
            raise SchemaError(
                f"quality must lie in [0, 1]; query {qids[i]!r}, model {models[j]!r} has {float(quality[i, j])!r} "
                f"({int(bad_q.sum())} cells out of range). Use from_frame(normalize='minmax'|'clip') "
                "for judge scores on another scale"
            )
        if np.isinf(quality).any():
            raise SchemaError("quality must be finite or NaN (not observed), got ±inf")
        nan_cost = observed & np.isnan(cost)
        if nan_cost.any():
            i, j = np.argwhere(nan_cost)[0]
            raise SchemaError(
                f"cost is NaN for query {qids[i]!r}, model {models[j]!r} ({int(nan_cost.sum())} observed cells); "
                "every logged call needs a USD cost, or input_tokens/output_tokens and a price card"
            )
        bad_c = observed & ((cost < 0) | np.isinf(cost))
        if bad_c.any():
            i, j = np.argwhere(bad_c)[0]
            raise SchemaError(
                f"cost must be a finite USD amount ≥ 0; query {qids[i]!r}, model {models[j]!r} has {float(cost[i, j])!r}"
            )
        quality = blank_unobserved(quality, observed)
        cost = blank_unobserved(cost, observed)
        set_(self, "quality", _readonly(quality))
        set_(self, "cost", _readonly(cost))
        set_(self, "observed", _readonly(observed))

        for name in _OPTIONAL_MATRICES:
            arr = matrix(name, getattr(self, name), np.float32)
            if arr is not None:
                negative = arr < 0  # NaN compares False
                if name != "signal" and negative.any():
                    raise SchemaError(f"{_MATRIX_COLUMNS[name]} must be ≥ 0, got {float(arr[negative][0])!r}")
                if np.isinf(arr).any():
                    raise SchemaError(f"{_MATRIX_COLUMNS[name]} must be finite or NaN, got ±inf")
                # Like quality and cost: a cell without a logged call has no tokens, latency or signal.
                arr = blank_unobserved(arr, observed)
            set_(self, name, _readonly(arr))

        feats = self.features
        if feats is None:
            feats = np.zeros((n, 0), dtype=np.float32)
        feats = _owned(feats, np.float32)
        if feats.ndim != 2 or feats.shape[0] != n:
            raise ShapeError(f"features must have shape (n, d) with n = {n}, got {feats.shape}")
        if not np.isfinite(feats).all():
            rows = np.unique(np.argwhere(~np.isfinite(feats))[:, 0])
            raise SchemaError(
                f"features must be finite; queries {_examples(qids[rows])} have NaN or inf features"
            )
        names = self.feature_names
        names = S.feature_names(feats.shape[1]) if names is None else tuple(str(x) for x in names)
        if len(names) != feats.shape[1]:
            raise ShapeError(f"feature_names has {len(names)} names for {feats.shape[1]} feature columns")
        set_(self, "features", _readonly(feats))
        set_(self, "feature_names", names)

        for name in ("prompts", "tasks"):
            value = getattr(self, name)
            if value is not None:
                arr = np.asarray(value, dtype=object)
                if arr.shape != (n,):
                    raise ShapeError(f"{name} must have shape (n,) = ({n},), got {arr.shape}")
                set_(self, name, _readonly(arr.copy()))

        if (self.logged_action is None) != (self.propensity is None):
            raise SchemaError("logged_action and propensity go together: give both or neither")
        if self.logged_action is not None and self.propensity is not None:
            act = np.array(self.logged_action, dtype=np.int64, copy=True)
            prop = np.array(self.propensity, dtype=np.float64, copy=True)
            if act.shape != (n,) or prop.shape != (n,):
                raise ShapeError(
                    f"logged_action and propensity must have shape ({n},), got {act.shape} and {prop.shape}"
                )
            if ((act < 0) | (act >= k)).any():
                raise SchemaError(f"logged_action must be in [0, {k}), got {act[(act < 0) | (act >= k)][0]}")
            bad_p = ~((prop > 0) & (prop <= 1))
            if bad_p.any():
                i = int(np.flatnonzero(bad_p)[0])
                raise SchemaError(
                    f"propensity must lie in (0, 1]; query {qids[i]!r} has {float(prop[i])!r} "
                    f"({int(bad_p.sum())} rows). A zero propensity means the logged arm could not be chosen"
                )
            if not observed[np.arange(n), act].all():
                i = int(np.flatnonzero(~observed[np.arange(n), act])[0])
                raise SchemaError(f"query {qids[i]!r}: the logged action has no logged outcome row")
            set_(self, "logged_action", _readonly(act))
            set_(self, "propensity", _readonly(prop))

        cards = as_model_cards(self.model_cards)
        unknown = sorted(set(cards) - set(models))
        if unknown:
            raise PriceError(
                f"the price table names models {unknown} that are not in the data (models: {list(models)})"
            )
        set_(self, "model_cards", dict(cards))
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
        if not isinstance(frame, pd.DataFrame):
            raise SchemaError(f"from_frame expects a pandas DataFrame, got {type(frame).__name__}")
        columns = [str(c) for c in frame.columns]
        missing = [c for c in S.REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise SchemaError(f"missing required columns {missing}; the frame has {columns}")
        cards = as_model_cards(model_cards)
        has_tokens = S.INPUT_TOKENS in columns and S.OUTPUT_TOKENS in columns
        if S.COST not in columns and not (has_tokens and cards):
            raise SchemaError(
                "missing required column 'cost': give a USD cost per row, or input_tokens and output_tokens "
                "plus model_cards with the price per 1M tokens"
            )
        feat_cols = S.feature_columns(columns)
        expected_feats = list(S.feature_names(len(feat_cols)))
        if feat_cols != expected_feats:
            raise SchemaError(f"feature columns must be x_0 … x_{{d-1}} without gaps, got {feat_cols}")
        known = set(S.REQUIRED_COLUMNS) | set(S.PER_ROW_COLUMNS) | set(S.PER_QUERY_COLUMNS) | set(feat_cols)
        extra = [c for c in columns if c not in known]
        if extra:
            warn(
                f"from_frame ignores columns that are not part of the canonical format: {extra}; "
                "rename per-query features to x_0 … x_{d-1} to keep them"
            )
        if len(frame) == 0:
            raise SchemaError("the frame has no rows")

        qid_col = frame[S.QUERY_ID]
        model_col = frame[S.MODEL]
        if qid_col.isna().any() or model_col.isna().any():
            col = S.QUERY_ID if qid_col.isna().any() else S.MODEL
            raise SchemaError(f"column {col!r} has missing values in {int(frame[col].isna().sum())} rows")
        qid_str = qid_col.astype(str).to_numpy(dtype=object)
        model_str = model_col.astype(str).to_numpy(dtype=object)
        q_codes, q_uniques = pd.factorize(qid_str, sort=False)
        if models is None:
            m_codes, m_uniques = pd.factorize(model_str, sort=False)
            model_names = tuple(str(m) for m in m_uniques)
        else:
            model_names = tuple(str(m) for m in models)
            lookup = {m: i for i, m in enumerate(model_names)}
            m_codes = np.fromiter(
                (lookup.get(m, -1) for m in model_str), dtype=np.int64, count=len(model_str)
            )
            if (m_codes < 0).any():
                raise ModelMismatchError(
                    f"the frame has models {_examples(sorted(set(model_str[m_codes < 0])))} that are not in "
                    f"models={list(model_names)}"
                )
        n, k = len(q_uniques), len(model_names)
        flat = q_codes.astype(np.int64) * k + m_codes
        counts = np.bincount(flat, minlength=n * k)
        if (counts > 1).any():
            dup = np.flatnonzero(counts > 1)
            pairs = [(str(q_uniques[c // k]), model_names[c % k]) for c in dup[:5]]
            raise SchemaError(
                f"duplicate (query_id, model) rows: {pairs}{' …' if len(dup) > 5 else ''} ({len(dup)} pairs); "
                "each query × model outcome must appear once"
            )
        unknown_cards = sorted(set(cards) - set(model_names))
        if unknown_cards:
            raise PriceError(
                f"the price table names models {unknown_cards} that are not in the data (models: {list(model_names)})"
            )

        def numeric(col: str) -> np.ndarray:
            series = frame[col]
            # Copies: pandas may hand out read-only views (copy-on-write), and costs are filled in place below.
            if series.dtype == bool or str(series.dtype) == "boolean":
                return np.array(series.astype("float64").to_numpy(), dtype=np.float64, copy=True)
            try:
                return np.array(
                    pd.to_numeric(series, errors="raise").astype("float64").to_numpy(),
                    dtype=np.float64,
                    copy=True,
                )
            except (ValueError, TypeError):
                bad = series[pd.to_numeric(series, errors="coerce").isna() & series.notna()]
                raise SchemaError(
                    f"column {col!r} must be numeric, got values like {_examples(bad.unique())}"
                ) from None

        def scatter(values: np.ndarray, dtype: type = np.float64) -> np.ndarray:
            out: np.ndarray = np.full(n * k, np.nan, dtype=dtype)
            out[flat] = values
            return out.reshape(n, k)

        notes = dict(meta or {})
        q = numeric(S.QUALITY)
        if np.isinf(q).any():
            raise SchemaError(
                "column 'quality' has ±inf values; use NaN for an outcome that was not observed"
            )
        finite_q = q[~np.isnan(q)]
        out_of_range = finite_q.size and (finite_q.min() < 0 or finite_q.max() > 1)
        if normalize == "minmax":
            lo, hi = (
                quality_range if quality_range is not None else (float(finite_q.min()), float(finite_q.max()))
            )
            if not hi > lo:
                raise ConfigurationError(f"quality_range must have high > low, got {(lo, hi)}")
            if finite_q.size and (finite_q.min() < lo or finite_q.max() > hi):
                raise SchemaError(
                    f"quality values [{finite_q.min()}, {finite_q.max()}] fall outside quality_range={(lo, hi)}"
                )
            q = (q - lo) / (hi - lo)
            notes["quality_normalization"] = f"minmax from [{lo}, {hi}] to [0, 1]"
        elif normalize == "clip":
            n_clipped = int(((finite_q < 0) | (finite_q > 1)).sum())
            q = np.clip(q, 0.0, 1.0)
            notes["quality_normalization"] = f"clipped into [0, 1] ({n_clipped} values changed)"
            if n_clipped:
                warn(f"normalize='clip' changed {n_clipped} quality values into [0, 1]")
        elif normalize is not None:
            raise ConfigurationError(f"normalize must be None, 'minmax' or 'clip', got {normalize!r}")
        elif out_of_range:
            raise SchemaError(
                f"column 'quality' must lie in [0, 1], got values in [{finite_q.min()}, {finite_q.max()}]; "
                "pass normalize='minmax' (with quality_range=(low, high) for a judge scale such as (1, 10)) "
                "or normalize='clip' to map it explicitly"
            )

        cost = numeric(S.COST) if S.COST in columns else np.full(len(frame), np.nan)
        tokens: dict[str, np.ndarray] = {}
        for col in (S.INPUT_TOKENS, S.OUTPUT_TOKENS):
            if col in columns:
                tokens[col] = numeric(col)
        need = np.isnan(cost)
        if need.any() and has_tokens and cards:
            for j, name in enumerate(model_names):
                rows = need & (m_codes == j)
                if not rows.any():
                    continue
                if name not in cards:
                    raise PriceError(
                        f"model {name!r} has rows without a cost and no price card to compute it from tokens "
                        f"(cards: {sorted(cards)})"
                    )
                cost[rows] = cards[name].cost(tokens[S.INPUT_TOKENS][rows], tokens[S.OUTPUT_TOKENS][rows])
            notes.setdefault(
                "cost", "computed from input_tokens/output_tokens and the price cards where not logged"
            )
        if np.isnan(cost).any():
            i = int(np.flatnonzero(np.isnan(cost))[0])
            raise SchemaError(
                f"column 'cost' is NaN in {int(np.isnan(cost).sum())} rows (first: query {qid_str[i]!r}, "
                f"model {model_str[i]!r}); give a USD cost, or token counts and a price card for that model"
            )
        if (cost < 0).any():
            i = int(np.flatnonzero(cost < 0)[0])
            raise SchemaError(
                f"column 'cost' must be ≥ 0 USD, got {float(cost[i])!r} for query {qid_str[i]!r}, model {model_str[i]!r}"
            )

        observed_flat = np.zeros(n * k, dtype=bool)
        observed_flat[flat] = True
        observed = observed_flat.reshape(n, k)
        empty = [model_names[j] for j in range(k) if not np.isfinite(scatter(q)[:, j]).any()]
        if empty:
            warn(f"models {empty} have no observed quality in the data")

        kwargs: dict[str, Any] = {}
        for name, col in _MATRIX_COLUMNS.items():
            if col in columns:
                values = tokens[col] if col in tokens else numeric(col)
                kwargs[name] = scatter(values)

        # Per-query columns must agree on every row of a query; keep the first row's value.
        first_row = np.full(n, -1, dtype=np.int64)
        first_row[q_codes[::-1]] = np.arange(len(frame) - 1, -1, -1)

        def per_query(col: str) -> np.ndarray:
            values = frame[col].to_numpy(dtype=object)
            first = values[first_row]
            same = (
                pd.Series(values).fillna("\x00nan").to_numpy()
                == pd.Series(first[q_codes]).fillna("\x00nan").to_numpy()
            )
            if not same.all():
                bad = sorted({str(q_uniques[c]) for c in q_codes[~same]})
                raise SchemaError(f"column {col!r} differs between rows of the same query: {_examples(bad)}")
            return first

        if S.PROMPT in columns:
            prompts = per_query(S.PROMPT)
            kwargs["prompts"] = np.array([None if is_missing(p) else p for p in prompts], dtype=object)
        if S.TASK in columns:
            tasks = per_query(S.TASK)
            kwargs["tasks"] = np.array([None if pd.isna(t) else str(t) for t in tasks], dtype=object)
        if feat_cols:
            x = frame[feat_cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
            if np.isnan(x).any():
                rows = np.unique(np.argwhere(np.isnan(x))[:, 0])
                raise SchemaError(
                    f"feature columns must be numeric with no missing values; queries "
                    f"{_examples(sorted({str(qid_str[r]) for r in rows}))} have NaN or non-numeric features"
                )
            first_x = x[first_row]
            ragged = ~(x == first_x[q_codes]).all(axis=1)
            if ragged.any():
                bad = sorted({str(q_uniques[c]) for c in q_codes[ragged]})
                raise SchemaError(
                    f"ragged features: x_* differ between rows of the same query {_examples(bad)}"
                )
            kwargs["features"] = first_x.astype(np.float32)

        if S.PROPENSITY in columns or S.LOGGED in columns:
            prop = numeric(S.PROPENSITY) if S.PROPENSITY in columns else None
            if S.LOGGED in columns:
                logged_raw = frame[S.LOGGED]
                if logged_raw.isna().any():
                    raise SchemaError("column 'logged' must be true/false on every row, got missing values")
                logged = logged_raw.astype(bool).to_numpy()
            else:
                assert prop is not None
                logged = ~np.isnan(prop)
            if prop is None:
                raise SchemaError(
                    "column 'logged' needs a 'propensity' column with the logging probabilities"
                )
            per_query_logged = np.bincount(q_codes[logged], minlength=n)
            if (per_query_logged != 1).any():
                bad = [str(q_uniques[i]) for i in np.flatnonzero(per_query_logged != 1)]
                raise SchemaError(
                    f"bandit logs need exactly one logged row per query; queries {_examples(bad)} have "
                    f"{sorted(set(per_query_logged[per_query_logged != 1].tolist()))} logged rows"
                )
            p_logged = prop[logged]
            bad_p = ~((p_logged > 0) & (p_logged <= 1))
            if bad_p.any():
                rows = np.flatnonzero(logged)[bad_p]
                raise SchemaError(
                    f"column 'propensity' must lie in (0, 1] on logged rows, got {_examples(prop[rows])} "
                    f"(queries {_examples(qid_str[rows])})"
                )
            action = np.empty(n, dtype=np.int64)
            propensity = np.empty(n, dtype=np.float64)
            action[q_codes[logged]] = m_codes[logged]
            propensity[q_codes[logged]] = p_logged
            kwargs["logged_action"] = action
            kwargs["propensity"] = propensity

        return cls(
            models=model_names,
            query_ids=np.asarray(q_uniques, dtype=object),
            quality=scatter(q),
            cost=scatter(cost),
            observed=observed,
            model_cards=cards,
            meta=notes,
            **kwargs,
        )

    def to_frame(self) -> pd.DataFrame:
        """The canonical long table: one row per observed query × model cell, query-major, model order."""
        qi, mj = np.nonzero(self.observed)
        data: dict[str, Any] = {
            S.QUERY_ID: self.query_ids[qi],
            S.MODEL: np.asarray(self.models, dtype=object)[mj],
            S.QUALITY: self.quality[qi, mj],
            S.COST: self.cost[qi, mj],
        }
        for name, col in _MATRIX_COLUMNS.items():
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
