"""Column names of the canonical long format and per-model price cards.

The canonical format has one row per query × model outcome (see ``logged_data/README.md``):

=================  ==========  =========================================================================
column             required    meaning
=================  ==========  =========================================================================
``query_id``       yes         groups the rows of one query (str)
``model``          yes         the LLM that answered (str)
``quality``        yes         float in [0, 1]; NaN = not observed
``cost``           yes*        USD ≥ 0 for that call (*or ``input_tokens`` + ``output_tokens`` + price cards)
``input_tokens``   no          int ≥ 0
``output_tokens``  no          int ≥ 0
``latency_s``      no          seconds ≥ 0
``signal``         no          what a router sees after the call and before the quality (confidence...)
``prompt``         no          per query
``task``           no          per query
``x_0 … x_{d-1}``  no          per-query precomputed features
``logged``         no          bool: the arm the logging policy chose (bandit logs)
``propensity``     no          float in (0, 1]: the logging probability of that arm
=================  ==========  =========================================================================
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from routing_env.errors import (
    ConfigurationError,
    ModelMismatchError,
    PriceError,
    SchemaError,
    ShapeError,
    warn,
)

QUERY_ID = "query_id"
MODEL = "model"
QUALITY = "quality"
COST = "cost"
INPUT_TOKENS = "input_tokens"
OUTPUT_TOKENS = "output_tokens"
LATENCY = "latency_s"
SIGNAL = "signal"
PROMPT = "prompt"
TASK = "task"
LOGGED = "logged"
PROPENSITY = "propensity"

REQUIRED_COLUMNS = (QUERY_ID, MODEL, QUALITY)
PER_ROW_COLUMNS = (QUALITY, COST, INPUT_TOKENS, OUTPUT_TOKENS, LATENCY, SIGNAL, LOGGED, PROPENSITY)
PER_QUERY_COLUMNS = (PROMPT, TASK)
FEATURE_PATTERN = re.compile(r"^x_(\d+)$")

TOKENS_PER_MILLION = 1_000_000.0

#: How :meth:`LoggedDataset.from_frame` may map a quality column that is not in [0, 1].
Normalize = Literal["minmax", "clip"]
#: The optional ``(n, K)`` matrices of a dataset, by attribute name, with their canonical column.
OPTIONAL_MATRICES = {
    "latency": LATENCY,
    "signal": SIGNAL,
    "input_tokens": INPUT_TOKENS,
    "output_tokens": OUTPUT_TOKENS,
}


def is_missing(value: object) -> bool:
    """``None``, ``pd.NA`` or a float NaN: a cell with no value."""
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def feature_columns(columns: list[str] | tuple[str, ...]) -> list[str]:
    """The ``x_<i>`` columns of a frame, ordered by ``i``."""
    found = [(int(m.group(1)), c) for c in columns if (m := FEATURE_PATTERN.match(str(c)))]
    return [c for _, c in sorted(found)]


def feature_names(d: int) -> tuple[str, ...]:
    """Canonical feature column names ``x_0 … x_{d-1}``."""
    return tuple(f"x_{i}" for i in range(d))


@dataclass(frozen=True)
class ModelCard:
    """Public list price of one model.

    Args:
        name: model name as it appears in the ``model`` column.
        input_price: USD per 1M input (prompt) tokens, ≥ 0.
        output_price: USD per 1M output (completion) tokens, ≥ 0.
        description: free text (provider, size...), kept for reports.
    """

    name: str
    input_price: float
    output_price: float
    description: str = ""

    def __post_init__(self) -> None:
        for field in ("input_price", "output_price"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise PriceError(
                    f"ModelCard({self.name!r}).{field} must be a finite number of USD per 1M tokens ≥ 0, "
                    f"got {value!r}"
                )

    def cost(self, input_tokens: np.ndarray | float, output_tokens: np.ndarray | float) -> np.ndarray:
        """USD cost of calls with the given token counts (arrays broadcast)."""
        inp = np.asarray(input_tokens, dtype=np.float64)
        out = np.asarray(output_tokens, dtype=np.float64)
        return (inp * self.input_price + out * self.output_price) / TOKENS_PER_MILLION

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "input_price": float(self.input_price),
            "output_price": float(self.output_price),
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ModelCard:
        try:
            return cls(
                name=str(data["name"]),
                input_price=float(data["input_price"]),  # type: ignore[arg-type]
                output_price=float(data["output_price"]),  # type: ignore[arg-type]
                description=str(data.get("description", "")),
            )
        except KeyError as exc:
            raise PriceError(f"price card {dict(data)!r} lacks the key {exc.args[0]!r}") from None


def as_model_cards(
    cards: Mapping[str, ModelCard] | Mapping[str, Mapping[str, float]] | list[ModelCard] | None,
) -> dict[str, ModelCard]:
    """Normalise a price table given as cards, a list of cards, or ``{model: {input_price, output_price}}``."""
    if cards is None:
        return {}
    if isinstance(cards, list):
        return {c.name: c for c in cards}
    out: dict[str, ModelCard] = {}
    for name, card in cards.items():
        if isinstance(card, ModelCard):
            out[str(name)] = card
        else:
            out[str(name)] = ModelCard.from_dict({"name": name, **card})
    return out


# ---------------------------------------------------------------------------------------------------- arrays
# The checks LoggedDataset's constructor runs on arrays given directly, one per kind of array. Each returns the
# array it accepted (in the canonical dtype) or raises an error that names the array, the bad value and what
# was expected.
def readonly(a: np.ndarray) -> np.ndarray:
    """``a``, made read-only in place."""
    a.setflags(write=False)
    return a


def owned(value: Any, dtype: type) -> np.ndarray:
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


def examples(values: Iterable[Any], limit: int = 5) -> str:
    """The first ``limit`` values, for an error message, with the total count when there are more."""
    items = [v.item() if isinstance(v, np.generic) else v for v in values]
    shown = ", ".join(repr(v) for v in items[:limit])
    return shown + (f" … ({len(items)} in all)" if len(items) > limit else "")


def validate_models(models: Sequence[str]) -> tuple[str, ...]:
    """The K model names as strings: at least one, no duplicates."""
    names = tuple(str(m) for m in models)
    if len(names) == 0:
        raise SchemaError("models must name at least one model, got an empty list")
    if len(set(names)) != len(names):
        dup = sorted({m for m in names if names.count(m) > 1})
        raise SchemaError(f"models must be unique, got duplicates {dup}")
    return names


def validate_query_ids(query_ids: Any) -> np.ndarray:
    """``(n,) object`` query ids."""
    qids = np.asarray(query_ids, dtype=object)
    if qids.ndim != 1:
        raise ShapeError(f"query_ids must be 1-D (n,), got shape {qids.shape}")
    return qids


def owned_matrix(name: str, value: Any, shape: tuple[int, int], dtype: type) -> np.ndarray | None:
    """``value`` as an owned ``(n, K)`` array of ``dtype`` (``None`` stays ``None``)."""
    if value is None:
        return None
    arr = owned(value, dtype)
    if arr.shape != shape:
        raise ShapeError(f"{name} must have shape (n, K) = {shape}, got {arr.shape}")
    return arr


def blank_unobserved(arr: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """``arr`` with NaN in every cell that has no logged row, whatever the caller passed there."""
    stale = ~observed & ~np.isnan(arr)
    if stale.any():
        arr = arr.copy() if not arr.flags.writeable else arr
        arr[stale] = np.nan
    return arr


def validate_outcomes(
    quality: np.ndarray,
    cost: np.ndarray,
    observed: np.ndarray,
    query_ids: np.ndarray,
    models: tuple[str, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """``(quality, cost)`` checked on the observed cells (quality in [0, 1] or NaN, cost a finite USD amount ≥ 0)
    and blanked (NaN) on the others."""
    bad_q = observed & ~np.isnan(quality) & ((quality < 0) | (quality > 1))
    if bad_q.any():
        i, j = np.argwhere(bad_q)[0]
        raise SchemaError(
            f"quality must lie in [0, 1]; query {query_ids[i]!r}, model {models[j]!r} has {float(quality[i, j])!r} "
            f"({int(bad_q.sum())} cells out of range). Use from_frame(normalize='minmax'|'clip') "
            "for judge scores on another scale"
        )
    if np.isinf(quality).any():
        raise SchemaError("quality must be finite or NaN (not observed), got ±inf")
    nan_cost = observed & np.isnan(cost)
    if nan_cost.any():
        i, j = np.argwhere(nan_cost)[0]
        raise SchemaError(
            f"cost is NaN for query {query_ids[i]!r}, model {models[j]!r} ({int(nan_cost.sum())} observed cells); "
            "every logged call needs a USD cost, or input_tokens/output_tokens and a price card"
        )
    bad_c = observed & ((cost < 0) | np.isinf(cost))
    if bad_c.any():
        i, j = np.argwhere(bad_c)[0]
        raise SchemaError(
            f"cost must be a finite USD amount ≥ 0; query {query_ids[i]!r}, model {models[j]!r} has {float(cost[i, j])!r}"
        )
    return blank_unobserved(quality, observed), blank_unobserved(cost, observed)


def validate_optional_matrix(
    name: str, value: Any, shape: tuple[int, int], observed: np.ndarray
) -> np.ndarray | None:
    """An optional ``(n, K) float32`` matrix (latency, signal, token counts): finite or NaN, ≥ 0 except the
    signal, blanked where nothing was logged."""
    arr = owned_matrix(name, value, shape, np.float32)
    if arr is None:
        return None
    negative = arr < 0  # NaN compares False
    if name != "signal" and negative.any():
        raise SchemaError(f"{OPTIONAL_MATRICES[name]} must be ≥ 0, got {float(arr[negative][0])!r}")
    if np.isinf(arr).any():
        raise SchemaError(f"{OPTIONAL_MATRICES[name]} must be finite or NaN, got ±inf")
    # Like quality and cost: a cell without a logged call has no tokens, latency or signal.
    return blank_unobserved(arr, observed)


def validate_features(
    features: Any, names: Sequence[str] | None, query_ids: np.ndarray
) -> tuple[np.ndarray, tuple[str, ...]]:
    """``(features (n, d) float32, d names)``; no features is ``(n, 0)``, and the names default to ``x_<i>``."""
    n = query_ids.shape[0]
    feats = owned(np.zeros((n, 0), dtype=np.float32) if features is None else features, np.float32)
    if feats.ndim != 2 or feats.shape[0] != n:
        raise ShapeError(f"features must have shape (n, d) with n = {n}, got {feats.shape}")
    if not np.isfinite(feats).all():
        rows = np.unique(np.argwhere(~np.isfinite(feats))[:, 0])
        raise SchemaError(
            f"features must be finite; queries {examples(query_ids[rows])} have NaN or inf features"
        )
    labels = feature_names(feats.shape[1]) if names is None else tuple(str(x) for x in names)
    if len(labels) != feats.shape[1]:
        raise ShapeError(f"feature_names has {len(labels)} names for {feats.shape[1]} feature columns")
    return feats, labels


def validate_per_query(name: str, value: Any, n: int) -> np.ndarray | None:
    """A copy of an ``(n,) object`` per-query column (prompts, tasks), or ``None``."""
    if value is None:
        return None
    arr = np.asarray(value, dtype=object)
    if arr.shape != (n,):
        raise ShapeError(f"{name} must have shape (n,) = ({n},), got {arr.shape}")
    return arr.copy()


def validate_bandit_log(
    logged_action: Any, propensity: Any, observed: np.ndarray, query_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(logged_action (n,) int64, propensity (n,) float64)`` of bandit logs, or ``None`` when neither is given.

    Every action indexes a model, every propensity lies in (0, 1], and the logged cell has a logged row.
    """
    if (logged_action is None) != (propensity is None):
        raise SchemaError("logged_action and propensity go together: give both or neither")
    if logged_action is None:
        return None
    n, k = observed.shape
    act = np.array(logged_action, dtype=np.int64, copy=True)
    prop = np.array(propensity, dtype=np.float64, copy=True)
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
            f"propensity must lie in (0, 1]; query {query_ids[i]!r} has {float(prop[i])!r} "
            f"({int(bad_p.sum())} rows). A zero propensity means the logged arm could not be chosen"
        )
    seen = observed[np.arange(n), act]
    if not seen.all():
        i = int(np.flatnonzero(~seen)[0])
        raise SchemaError(f"query {query_ids[i]!r}: the logged action has no logged outcome row")
    return act, prop


def validate_model_cards(cards: Mapping[str, ModelCard], models: Sequence[str]) -> dict[str, ModelCard]:
    """The price cards, each naming a model of the data (a card for another model is usually a typo)."""
    unknown = sorted(set(cards) - set(models))
    if unknown:
        raise PriceError(
            f"the price table names models {unknown} that are not in the data (models: {list(models)})"
        )
    return dict(cards)


# ---------------------------------------------------------------------------------------------------- long frames
# The steps of LoggedDataset.from_frame: check the columns, lay the rows out as (query, model) cells, then read
# each column group into dense arrays. Each step raises its own error, naming the column, the bad value and what
# was expected.
@dataclass(frozen=True)
class FrameLayout:
    """Where each row of a long frame goes.

    Attributes:
        columns: the frame's column names (str).
        query_ids: ``(n,) object`` the distinct query ids, in order of first appearance.
        models: the K model names, in column order.
        query_code: ``(rows,) int64`` query index of each row.
        model_code: ``(rows,) int64`` model index of each row.
        first_row: ``(n,) int64`` index of each query's first row.
    """

    columns: tuple[str, ...]
    query_ids: np.ndarray
    models: tuple[str, ...]
    query_code: np.ndarray
    model_code: np.ndarray
    first_row: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return (self.query_ids.shape[0], len(self.models))

    def scatter(self, values: np.ndarray) -> np.ndarray:
        """``(n, K) float64`` with each row's value in its cell, NaN in cells without a row."""
        n, k = self.shape
        out = np.full(n * k, np.nan)
        out[self.query_code * k + self.model_code] = values
        return out.reshape(n, k)

    def observed(self) -> np.ndarray:
        """``(n, K) bool``: the cells that have a row."""
        n, k = self.shape
        flat = np.zeros(n * k, dtype=bool)
        flat[self.query_code * k + self.model_code] = True
        return flat.reshape(n, k)

    def row_query(self, row: int) -> str:
        return str(self.query_ids[self.query_code[row]])


def optional_columns(frame: pd.DataFrame, layout: FrameLayout) -> dict[str, np.ndarray]:
    """``{column: (rows,) float64}`` of the optional per-row columns the frame has (latency, signal, tokens)."""
    return {c: numeric_column(frame, c) for c in OPTIONAL_MATRICES.values() if c in layout.columns}


def warn_unobserved_models(models: tuple[str, ...], quality: np.ndarray) -> None:
    """Warn about the models without any observed quality in ``quality (n, K)``."""
    empty = [models[j] for j in range(quality.shape[1]) if not np.isfinite(quality[:, j]).any()]
    if empty:
        warn(f"models {empty} have no observed quality in the data", stacklevel=None)


def check_frame_columns(frame: pd.DataFrame, cards: Mapping[str, ModelCard]) -> list[str]:
    """The ``x_<i>`` feature columns, once the frame is known to have the required columns and rows.

    A frame without ``cost`` needs ``input_tokens``, ``output_tokens`` and price cards; columns outside the
    canonical format are ignored with a warning.
    """
    if not isinstance(frame, pd.DataFrame):
        raise SchemaError(f"from_frame expects a pandas DataFrame, got {type(frame).__name__}")
    columns = [str(c) for c in frame.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise SchemaError(f"missing required columns {missing}; the frame has {columns}")
    has_tokens = INPUT_TOKENS in columns and OUTPUT_TOKENS in columns
    if COST not in columns and not (has_tokens and cards):
        raise SchemaError(
            "missing required column 'cost': give a USD cost per row, or input_tokens and output_tokens "
            "plus model_cards with the price per 1M tokens"
        )
    feat_cols = feature_columns(columns)
    if feat_cols != list(feature_names(len(feat_cols))):
        raise SchemaError(f"feature columns must be x_0 … x_{{d-1}} without gaps, got {feat_cols}")
    known = set(REQUIRED_COLUMNS) | set(PER_ROW_COLUMNS) | set(PER_QUERY_COLUMNS) | set(feat_cols)
    extra = [c for c in columns if c not in known]
    if extra:
        warn(
            f"from_frame ignores columns that are not part of the canonical format: {extra}; "
            "rename per-query features to x_0 … x_{d-1} to keep them",
            stacklevel=None,
        )
    if len(frame) == 0:
        raise SchemaError("the frame has no rows")
    return feat_cols


def frame_layout(frame: pd.DataFrame, models: Sequence[str] | None) -> FrameLayout:
    """The ``(query, model)`` cell of every row; ``models`` fixes the column order (default: first appearance).

    Raises:
        SchemaError: a missing query id or model name, or two rows for one cell.
        ModelMismatchError: a row names a model outside ``models``.
    """
    for col in (QUERY_ID, MODEL):
        if frame[col].isna().any():
            raise SchemaError(f"column {col!r} has missing values in {int(frame[col].isna().sum())} rows")
    model_str = frame[MODEL].astype(str).to_numpy(dtype=object)
    q_codes, q_uniques = pd.factorize(frame[QUERY_ID].astype(str).to_numpy(dtype=object), sort=False)
    if models is None:
        m_codes, m_uniques = pd.factorize(model_str, sort=False)
        names = tuple(str(m) for m in m_uniques)
    else:
        names = tuple(str(m) for m in models)
        lookup = {m: i for i, m in enumerate(names)}
        m_codes = np.fromiter((lookup.get(m, -1) for m in model_str), dtype=np.int64, count=len(model_str))
        if (m_codes < 0).any():
            raise ModelMismatchError(
                f"the frame has models {examples(sorted(set(model_str[m_codes < 0])))} that are not in "
                f"models={list(names)}"
            )
    n, k = len(q_uniques), len(names)
    counts = np.bincount(q_codes.astype(np.int64) * k + m_codes, minlength=n * k)
    if (counts > 1).any():
        dup = np.flatnonzero(counts > 1)
        pairs = [(str(q_uniques[c // k]), names[c % k]) for c in dup[:5]]
        raise SchemaError(
            f"duplicate (query_id, model) rows: {pairs}{' …' if len(dup) > 5 else ''} ({len(dup)} pairs); "
            "each query × model outcome must appear once"
        )
    first_row = np.full(n, -1, dtype=np.int64)
    first_row[q_codes[::-1]] = np.arange(len(frame) - 1, -1, -1)
    return FrameLayout(
        columns=tuple(str(c) for c in frame.columns),
        query_ids=np.asarray(q_uniques, dtype=object),
        models=names,
        query_code=q_codes.astype(np.int64),
        model_code=np.asarray(m_codes, dtype=np.int64),
        first_row=first_row,
    )


def numeric_column(frame: pd.DataFrame, col: str) -> np.ndarray:
    """``(rows,) float64`` copy of a numeric (or boolean) column; NaN for missing values."""
    series = frame[col]
    # Copies: pandas may hand out read-only views (copy-on-write), and costs are filled in place later.
    if series.dtype == bool or str(series.dtype) == "boolean":
        return np.array(series.astype("float64").to_numpy(), dtype=np.float64, copy=True)
    try:
        return np.array(pd.to_numeric(series, errors="raise").astype("float64").to_numpy(), dtype=np.float64)
    except (ValueError, TypeError):
        bad = series[pd.to_numeric(series, errors="coerce").isna() & series.notna()]
        raise SchemaError(
            f"column {col!r} must be numeric, got values like {examples(bad.unique())}"
        ) from None


def normalized_quality(
    q: np.ndarray,
    normalize: Normalize | None,
    quality_range: tuple[float, float] | None,
    notes: dict[str, str],
) -> np.ndarray:
    """``quality (rows,)`` in [0, 1]: as given, or mapped by ``normalize`` (the transform goes to ``notes``)."""
    if np.isinf(q).any():
        raise SchemaError("column 'quality' has ±inf values; use NaN for an outcome that was not observed")
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
        notes["quality_normalization"] = f"minmax from [{lo}, {hi}] to [0, 1]"
        return (q - lo) / (hi - lo)
    if normalize == "clip":
        n_clipped = int(((finite_q < 0) | (finite_q > 1)).sum())
        notes["quality_normalization"] = f"clipped into [0, 1] ({n_clipped} values changed)"
        if n_clipped:
            warn(f"normalize='clip' changed {n_clipped} quality values into [0, 1]", stacklevel=None)
        return np.clip(q, 0.0, 1.0)
    if normalize is not None:
        raise ConfigurationError(f"normalize must be None, 'minmax' or 'clip', got {normalize!r}")
    if out_of_range:
        raise SchemaError(
            f"column 'quality' must lie in [0, 1], got values in [{finite_q.min()}, {finite_q.max()}]; "
            "pass normalize='minmax' (with quality_range=(low, high) for a judge scale such as (1, 10)) "
            "or normalize='clip' to map it explicitly"
        )
    return q


def row_costs(
    frame: pd.DataFrame,
    layout: FrameLayout,
    cards: Mapping[str, ModelCard],
    values: Mapping[str, np.ndarray],
    notes: dict[str, str],
) -> np.ndarray:
    """``(rows,) float64`` USD cost per row: the ``cost`` column, filled from token counts and the price cards
    where it is absent or NaN. Every row ends with a finite cost ≥ 0."""
    cost = numeric_column(frame, COST) if COST in layout.columns else np.full(len(frame), np.nan)
    need = np.isnan(cost)
    if need.any() and INPUT_TOKENS in values and OUTPUT_TOKENS in values and cards:
        for j, name in enumerate(layout.models):
            rows = need & (layout.model_code == j)
            if not rows.any():
                continue
            if name not in cards:
                raise PriceError(
                    f"model {name!r} has rows without a cost and no price card to compute it from tokens "
                    f"(cards: {sorted(cards)})"
                )
            cost[rows] = cards[name].cost(values[INPUT_TOKENS][rows], values[OUTPUT_TOKENS][rows])
        notes.setdefault(
            "cost", "computed from input_tokens/output_tokens and the price cards where not logged"
        )
    if np.isnan(cost).any():
        i = int(np.flatnonzero(np.isnan(cost))[0])
        raise SchemaError(
            f"column 'cost' is NaN in {int(np.isnan(cost).sum())} rows (first: query {layout.row_query(i)!r}, "
            f"model {layout.models[layout.model_code[i]]!r}); give a USD cost, or token counts and a price card "
            "for that model"
        )
    if (cost < 0).any():
        i = int(np.flatnonzero(cost < 0)[0])
        raise SchemaError(
            f"column 'cost' must be ≥ 0 USD, got {float(cost[i])!r} for query {layout.row_query(i)!r}, "
            f"model {layout.models[layout.model_code[i]]!r}"
        )
    return cost


def per_query_text(frame: pd.DataFrame, col: str, layout: FrameLayout, keep_type: bool) -> np.ndarray:
    """``(n,) object`` value of a per-query column (the same on every row of a query), ``None`` where missing.

    ``keep_type`` keeps the values as they are (prompts); otherwise they become ``str`` (tasks).
    """
    raw = frame[col].to_numpy(dtype=object)
    first = raw[layout.first_row]
    same = (
        pd.Series(raw).fillna("\x00nan").to_numpy()
        == pd.Series(first[layout.query_code]).fillna("\x00nan").to_numpy()
    )
    if not same.all():
        bad = sorted({str(layout.query_ids[c]) for c in layout.query_code[~same]})
        raise SchemaError(f"column {col!r} differs between rows of the same query: {examples(bad)}")
    if keep_type:
        return np.array([None if is_missing(v) else v for v in first], dtype=object)
    return np.array([None if pd.isna(v) else str(v) for v in first], dtype=object)


def per_query_features(frame: pd.DataFrame, feat_cols: list[str], layout: FrameLayout) -> np.ndarray:
    """``(n, d) float32`` features from the ``x_<i>`` columns: numeric, present, the same on every row of a query."""
    x = frame[feat_cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(x).any():
        rows = np.unique(np.argwhere(np.isnan(x))[:, 0])
        raise SchemaError(
            "feature columns must be numeric with no missing values; queries "
            f"{examples(sorted({layout.row_query(r) for r in rows}))} have NaN or non-numeric features"
        )
    first_x = x[layout.first_row]
    ragged = ~(x == first_x[layout.query_code]).all(axis=1)
    if ragged.any():
        bad = sorted({str(layout.query_ids[c]) for c in layout.query_code[ragged]})
        raise SchemaError(f"ragged features: x_* differ between rows of the same query {examples(bad)}")
    return first_x.astype(np.float32)


def bandit_columns(frame: pd.DataFrame, layout: FrameLayout) -> tuple[np.ndarray, np.ndarray] | None:
    """``(logged_action (n,), propensity (n,))`` from the ``logged`` and ``propensity`` columns, or ``None``.

    Without ``logged``, the rows with a propensity are the logged ones; each query needs exactly one.
    """
    columns = layout.columns
    if PROPENSITY not in columns and LOGGED not in columns:
        return None
    if PROPENSITY not in columns:
        raise SchemaError("column 'logged' needs a 'propensity' column with the logging probabilities")
    prop = numeric_column(frame, PROPENSITY)
    if LOGGED in columns:
        logged_raw = frame[LOGGED]
        if logged_raw.isna().any():
            raise SchemaError("column 'logged' must be true/false on every row, got missing values")
        logged = logged_raw.astype(bool).to_numpy()
    else:
        logged = ~np.isnan(prop)
    n = layout.shape[0]
    per_query_logged = np.bincount(layout.query_code[logged], minlength=n)
    if (per_query_logged != 1).any():
        bad = [str(layout.query_ids[i]) for i in np.flatnonzero(per_query_logged != 1)]
        raise SchemaError(
            f"bandit logs need exactly one logged row per query; queries {examples(bad)} have "
            f"{sorted(set(per_query_logged[per_query_logged != 1].tolist()))} logged rows"
        )
    p_logged = prop[logged]
    bad_p = ~((p_logged > 0) & (p_logged <= 1))
    if bad_p.any():
        rows = np.flatnonzero(logged)[bad_p]
        raise SchemaError(
            f"column 'propensity' must lie in (0, 1] on logged rows, got {examples(prop[rows])} "
            f"(queries {examples(layout.row_query(r) for r in rows)})"
        )
    action = np.empty(n, dtype=np.int64)
    propensity = np.empty(n, dtype=np.float64)
    action[layout.query_code[logged]] = layout.model_code[logged]
    propensity[layout.query_code[logged]] = p_logged
    return action, propensity
