"""Sharded parquet logs read with Ray Data, batch by batch: the building blocks of
:mod:`routing_env.ope.distributed`.

- :func:`read_logs`: a lazy ``ray.data.Dataset`` over parquet paths, folders, globs or a dataset;
- :class:`LogSpec` / :func:`open_logs`: which canonical columns the logs have (``routing_env.data.schema``), and
  only those read;
- :func:`batch_rows`: one ``map_batches`` batch (a dict of numpy columns) as validated arrays (:class:`Rows`),
  the logged rows only for bandit feedback;
- :func:`query_folds` and the sample keys: seeded 64-bit hashes of the query ids, so a query's cross-fitting
  fold and its place in the sample do not depend on how the files are split or which worker reads them;
- :func:`max_mean_cost` and :func:`draw_sample`: the passes that run before the estimates (the cost scale; a
  uniform sample of at most ``size`` queries, the smallest hashed keys, for fitting a reward model or a
  featurizer).

Ray is imported only when a dataset is built (:func:`ray_data`), with an error that names the ``ray`` extra.
"""

from __future__ import annotations

import glob
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import pandas as pd

from routing_env.data import schema as S
from routing_env.data.featurizers import MissingDependencyError, NotFittedError
from routing_env.errors import (
    ConfigurationError,
    ModelMismatchError,
    RoutingEnvError,
    SchemaError,
    ShapeError,
)

if TYPE_CHECKING:
    import ray.data

#: Parquet files or a Ray dataset: a path (file or folder), a glob, a list of them, or a ``ray.data.Dataset``.
Logs = Union[str, Path, Sequence[str | Path], "ray.data.Dataset"]


def ray_data() -> Any:
    try:
        import ray.data
    except ImportError as exc:
        raise MissingDependencyError(
            "routing_env.ope.distributed needs Ray Data; install the ray extra: pip install 'routing-env[ray]'"
        ) from exc
    return ray.data


# ---------------------------------------------------------------------- hashing: folds and sample keys
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(h: np.ndarray, salt: int) -> np.ndarray:
    """SplitMix64 finaliser of ``h + salt·φ``: independent-looking 64-bit values per salt."""
    with np.errstate(over="ignore"):
        z = h + np.uint64(salt % (1 << 64)) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def hash_ids(query_ids: np.ndarray) -> np.ndarray:
    return np.asarray(pd.util.hash_array(_as_text(query_ids), categorize=False), dtype=np.uint64)


def query_folds(query_ids: np.ndarray | Sequence[str], n_folds: int, seed: int = 0) -> np.ndarray:
    """``(n,) int64`` cross-fitting fold of each query, in ``[0, n_folds)``: a seeded hash of its id (as text), so
    a query lands in the same fold in every block, file split and run."""
    if int(n_folds) != n_folds or n_folds < 2:
        raise ConfigurationError(f"n_folds must be an integer ≥ 2, got {n_folds!r}")
    return folds_of_hashes(hash_ids(np.asarray(query_ids)), int(n_folds), seed)


def folds_of_hashes(hashes: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """:func:`query_folds` from the ids' hashes (:func:`hash_ids`), for callers that hash them anyway."""
    return (mix64(hashes, 2 * int(seed)) % np.uint64(n_folds)).astype(np.int64)


def _sample_keys(hashes: np.ndarray, seed: int) -> np.ndarray:
    return mix64(hashes, 2 * int(seed) + 1)


# ---------------------------------------------------------------------- reading the logs
def read_logs(logs: Logs) -> ray.data.Dataset:
    """A lazy ``ray.data.Dataset`` over ``logs``: parquet paths (files, folders, globs, or a list of them), or a
    dataset returned as is. Local paths are checked and globs expanded here; URIs (``s3://…``) go to Ray."""
    rd = ray_data()
    if isinstance(logs, rd.Dataset):
        return logs
    items = [logs] if isinstance(logs, (str, Path)) else list(logs)
    if not items:
        raise ConfigurationError(
            "logs is empty: give a parquet path, a glob, a list of them or a ray Dataset"
        )
    paths: list[str] = []
    for item in items:
        if not isinstance(item, (str, Path)):
            raise ConfigurationError(
                f"logs must be paths, globs or a ray.data.Dataset, got an item of type {type(item).__name__}"
            )
        text = str(item)
        if "://" in text:
            paths.append(text)
        elif glob.has_magic(text):
            found = sorted(glob.glob(text, recursive=True))
            if not found:
                raise FileNotFoundError(f"no parquet files match the glob {text!r}")
            paths.extend(found)
        elif not Path(text).exists():
            raise FileNotFoundError(f"no logged data at {text}")
        else:
            paths.append(text)
    return rd.read_parquet(paths)


@dataclass(frozen=True)
class LogSpec:
    """Which canonical columns the logs have and how a batch becomes arrays."""

    models: tuple[str, ...]
    features: tuple[str, ...]  # the x_* columns read (none when a featurizer makes the features)
    bandit: bool  # quality, cost and propensity are read (and required)
    has_model: bool
    has_logged: bool
    has_propensity: bool
    text: bool  # read prompt (and task) for the featurizer
    has_task: bool

    @property
    def columns(self) -> list[str]:
        cols = [S.QUERY_ID]
        cols += [S.MODEL] if self.has_model else []
        cols += [S.QUALITY, S.COST] if self.bandit else []
        cols += [S.LOGGED] if self.has_logged else []
        cols += [S.PROPENSITY] if self.has_propensity else []
        cols += list(self.features)
        cols += ([S.PROMPT] + ([S.TASK] if self.has_task else [])) if self.text else []
        return cols


def log_spec(names: Sequence[str], models: tuple[str, ...], featurizer: Any, *, bandit: bool) -> LogSpec:
    present = sorted(str(n) for n in names)
    need = [S.QUERY_ID, S.MODEL, S.QUALITY, S.COST] if bandit else [S.QUERY_ID]
    missing = [c for c in need if c not in present]
    if missing:
        raise SchemaError(f"the logs lack the canonical columns {missing}; they have {present}")
    if bandit and S.PROPENSITY not in present:
        raise SchemaError(
            "off-policy evaluation needs bandit logs: a 'propensity' column (and 'logged' marking the chosen "
            f"model's row); the logs have {present}"
        )
    if featurizer is not None and S.PROMPT not in present:
        raise SchemaError(f"featurizer is given but the logs have no 'prompt' column (columns: {present})")
    feats = () if featurizer is not None else tuple(S.feature_columns(present))
    if feats != S.feature_names(len(feats)):
        raise SchemaError(f"feature columns must be x_0 … x_{{d-1}} without gaps, got {list(feats)}")
    return LogSpec(
        models=models,
        features=feats,
        bandit=bandit,
        has_model=S.MODEL in present,
        has_logged=S.LOGGED in present,
        has_propensity=S.PROPENSITY in present,
        text=featurizer is not None,
        has_task=S.TASK in present,
    )


def open_logs(logs: Logs, models: tuple[str, ...], featurizer: Any, *, bandit: bool) -> tuple[Any, LogSpec]:
    ds = read_logs(logs)
    spec = log_spec(ds.schema().names, models, featurizer, bandit=bandit)
    return ds.select_columns(spec.columns), spec


@dataclass(frozen=True)
class Rows:
    """The rows of one batch as arrays (the logged rows only, for estimation)."""

    query_ids: np.ndarray  # (b,) object
    action: np.ndarray  # (b,) int64 (-1 without a model column)
    quality: np.ndarray  # (b,) float64
    cost: np.ndarray  # (b,) float64 USD
    propensity: np.ndarray  # (b,) float64
    features: np.ndarray | None  # (b, d) float32; None until featurized
    prompts: list[str] | None
    tasks: list[str | None] | None


def _examples(values: np.ndarray, limit: int = 3) -> str:
    shown = np.asarray(values)[:limit].tolist()  # Python scalars: 0.0, not np.float64(0.0)
    return ", ".join(repr(v) for v in shown) + (" …" if len(values) > limit else "")


def _actions(models_col: np.ndarray, models: tuple[str, ...], ids: np.ndarray) -> np.ndarray:
    codes = np.asarray(pd.Categorical(_as_text(models_col), categories=list(models)).codes)
    if (codes < 0).any():
        bad = np.flatnonzero(codes < 0)
        raise ModelMismatchError(
            f"the logs name models {_examples(np.unique(np.asarray(models_col)[bad].astype(str)))} that are not "
            f"in models={list(models)} (queries {_examples(ids[bad])})"
        )
    return codes.astype(np.int64)


def _floats(batch: dict[str, np.ndarray], col: str, n: int) -> np.ndarray:
    if col not in batch:
        return np.full(n, np.nan)
    try:
        return np.asarray(batch[col], dtype=np.float64)
    except (TypeError, ValueError):
        raise SchemaError(
            f"column {col!r} must be numeric, got values like {_examples(batch[col])}"
        ) from None


def _as_text(values: np.ndarray) -> np.ndarray:
    """``(n,) object`` of ``str``; arrow string columns arrive that way already and are not copied."""
    arr = np.asarray(values)
    if arr.dtype == object and (arr.shape[0] == 0 or isinstance(arr[0], str)):
        return arr
    return arr.astype(str).astype(object)


def logged_index(batch: dict[str, np.ndarray], spec: LogSpec) -> np.ndarray:
    """Positions of the batch's logged rows (``logged`` true, or a propensity given when there is no ``logged``)."""
    if spec.has_logged:
        raw = batch[S.LOGGED]
        if raw.dtype == object and pd.isna(raw).any():
            raise SchemaError("column 'logged' must be true/false on every row, got missing values")
        return np.flatnonzero(np.asarray(raw, dtype=bool))
    return np.flatnonzero(~np.isnan(_floats(batch, S.PROPENSITY, len(batch[S.QUERY_ID]))))


def batch_rows(batch: dict[str, np.ndarray], spec: LogSpec, index: np.ndarray | None, *, check: bool) -> Rows:
    """The batch's rows at ``index`` (all when ``None``) as :class:`Rows`; with ``check``, validated as the
    logged rows of bandit feedback."""
    sel = slice(None) if index is None else index
    ids = _as_text(batch[S.QUERY_ID])[sel]
    n = ids.shape[0]
    action = (
        _actions(np.asarray(batch[S.MODEL])[sel], spec.models, ids)
        if spec.has_model
        else np.full(n, -1, dtype=np.int64)
    )

    def floats(col: str) -> np.ndarray:
        return _floats(batch, col, len(batch[S.QUERY_ID]))[sel]

    quality, cost, propensity = floats(S.QUALITY), floats(S.COST), floats(S.PROPENSITY)
    if check:
        _check_logged(ids, quality, cost, propensity)
    features = None
    if spec.features:
        features = np.empty((n, len(spec.features)), dtype=np.float32)
        for j, c in enumerate(spec.features):
            features[:, j] = np.asarray(batch[c], dtype=np.float32)[sel]
    elif not spec.text:
        features = np.zeros((n, 0), dtype=np.float32)
    prompts = tasks = None
    if spec.text:
        prompts = ["" if pd.isna(p) else str(p) for p in np.asarray(batch[S.PROMPT], dtype=object)[sel]]
        if spec.has_task:
            tasks = [None if pd.isna(t) else str(t) for t in np.asarray(batch[S.TASK], dtype=object)[sel]]
    return Rows(ids, action, quality, cost, propensity, features, prompts, tasks)


def _check_logged(ids: np.ndarray, quality: np.ndarray, cost: np.ndarray, propensity: np.ndarray) -> None:
    bad = ~((propensity > 0) & (propensity <= 1))
    if bad.any():
        raise SchemaError(
            f"column 'propensity' must lie in (0, 1] on logged rows, got {_examples(propensity[bad])} "
            f"(queries {_examples(ids[bad])})"
        )
    bad = ~((quality >= 0) & (quality <= 1))
    if bad.any():
        raise SchemaError(
            f"column 'quality' must be observed and in [0, 1] on logged rows, got {_examples(quality[bad])} "
            f"(queries {_examples(ids[bad])}); normalise it first (LoggedDataset.from_frame(normalize=...))"
        )
    bad = ~(cost >= 0) | ~np.isfinite(cost)
    if bad.any():
        raise SchemaError(
            f"column 'cost' must be a finite USD amount ≥ 0 on logged rows, got {_examples(cost[bad])} "
            f"(queries {_examples(ids[bad])})"
        )


def features_of(rows: Rows, featurizer: Any) -> np.ndarray:
    if rows.features is not None:
        return rows.features
    assert rows.prompts is not None  # log_spec asks for prompts whenever a featurizer is given
    x = np.asarray(featurizer.transform(rows.prompts, rows.tasks), dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != len(rows.prompts):
        raise ShapeError(f"featurizer.transform returned shape {x.shape} for {len(rows.prompts)} prompts")
    return x


def is_fitted(featurizer: Any) -> bool:
    try:
        featurizer.dimension  # noqa: B018 - the property raises NotFittedError before fit
    except NotFittedError:
        return False
    return True


def fit_featurizer(featurizer: Any, sample: Rows) -> None:
    """Fit ``featurizer`` once, on the sample's prompts (and tasks)."""
    fit = getattr(featurizer, "fit", None)
    if fit is None:
        raise ConfigurationError(
            f"featurizer {type(featurizer).__name__} is not fitted and has no fit method"
        )
    assert sample.prompts is not None  # a featurizer makes LogSpec read the prompts
    fit(sample.prompts, sample.tasks)


def map_batches_iter(
    ds: Any, fn: Any, batch_size: int | None, **kwargs: Any
) -> Iterator[dict[str, np.ndarray]]:
    """``ds.map_batches(fn, fn_kwargs=kwargs)`` executed, its output batches streamed to the driver.

    An error of ours raised on a worker is raised again here as itself: Ray Data wraps a failed UDF in a
    ``UserCodeException`` that keeps only the text of the original (its type and cause are dropped), so callers
    would otherwise never see a :class:`~routing_env.errors.RoutingEnvError`.
    """
    mapped = ds.map_batches(fn, batch_size=batch_size, batch_format="numpy", fn_kwargs=kwargs)
    try:
        yield from mapped.iter_batches(batch_size=None, batch_format="numpy")
    except Exception as exc:
        ours = _our_error(exc)
        if ours is None:
            raise
        raise ours from exc


_OUR_ERROR = re.compile(r"^(routing_env(?:\.\w+)+)\.(\w+): (.+)$", re.MULTILINE)


def _our_error(exc: BaseException) -> RoutingEnvError | None:
    """The last ``routing_env`` error named in a Ray task error's traceback text, rebuilt with its message."""
    found = _OUR_ERROR.findall(str(exc))
    if not found:
        return None
    module, name, message = found[-1]
    cls = getattr(sys.modules.get(module), name, None)
    if not (isinstance(cls, type) and issubclass(cls, RoutingEnvError)):
        return None
    return cls(message)


def rewards_of(quality: np.ndarray, cost: np.ndarray, cost_weight: float, cost_scale: float) -> np.ndarray:
    # The same expression as BanditFeedback.rewards, so both paths round alike.
    if cost_weight == 0:
        return quality.copy()
    return quality - (cost_weight / cost_scale) * cost


# ---------------------------------------------------------------------- pass: the cost scale
def _cost_batch(batch: dict[str, np.ndarray], *, models: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Per model: USD summed over every row and the number of rows (a row is an observed call)."""
    ids = batch[S.QUERY_ID]
    action = _actions(batch[S.MODEL], models, ids)
    cost = _floats(batch, S.COST, len(ids))
    bad = ~(cost >= 0) | ~np.isfinite(cost)
    if bad.any():
        raise SchemaError(
            f"column 'cost' must be a finite USD amount ≥ 0 on every row (the cost scale is the mean cost per "
            f"model), got {_examples(cost[bad])} (queries {_examples(_as_text(ids)[bad])})"
        )
    k = len(models)
    return {
        "cost_sum": np.bincount(action, weights=cost, minlength=k)[None, :],
        "calls": np.bincount(action, minlength=k)[None, :].astype(np.int64),
    }


def max_mean_cost(ds: Any, spec: LogSpec, batch_size: int | None) -> float:
    """``"max_mean"``: the mean cost of the most expensive model over all its rows (as
    :meth:`LoggedDataset.resolve_cost_scale`), 1 when no model costs anything."""
    k = len(spec.models)
    total, calls = np.zeros(k), np.zeros(k, dtype=np.int64)
    columns = ds.select_columns([S.QUERY_ID, S.MODEL, S.COST])
    for out in map_batches_iter(columns, _cost_batch, batch_size, models=spec.models):
        total += out["cost_sum"].sum(axis=0)
        calls += out["calls"].sum(axis=0)
    means = np.where(calls > 0, total / np.maximum(calls, 1), np.nan)
    top = float(np.nanmax(means)) if np.isfinite(means).any() else 0.0
    return top if top > 0 else 1.0


# ---------------------------------------------------------------------- pass: the sample
def _sample_batch(
    batch: dict[str, np.ndarray], *, spec: LogSpec, size: int, seed: int, limit: int
) -> dict[str, np.ndarray]:
    """The batch's rows (logged rows of bandit logs) whose hashed key is below ``limit``, at most ``size`` of the
    smallest."""
    # Keys first, from the ids alone: only the rows that pass are parsed and checked.
    index = logged_index(batch, spec) if spec.bandit else np.arange(len(batch[S.QUERY_ID]))
    key = _sample_keys(hash_ids(_as_text(batch[S.QUERY_ID])[index]), seed)
    idx = np.flatnonzero(key < np.uint64(limit)) if limit < _KEY_RANGE else np.arange(key.shape[0])
    if idx.shape[0] > size:
        idx = idx[np.argpartition(key[idx], size - 1)[:size]]
    part = batch_rows(batch, spec, index[idx], check=spec.bandit)
    out: dict[str, np.ndarray] = {
        "key": key[idx],
        S.QUERY_ID: part.query_ids,
        "action": part.action,
        S.QUALITY: part.quality,
        S.COST: part.cost,
        S.PROPENSITY: part.propensity,
    }
    if part.features is not None:
        for j, name in enumerate(S.feature_names(part.features.shape[1])):
            out[name] = part.features[:, j]
    if part.prompts is not None:
        out[S.PROMPT] = np.asarray(part.prompts, dtype=object)
        if part.tasks is not None:
            out[S.TASK] = np.asarray(part.tasks, dtype=object)
    return out


_KEY_RANGE = 1 << 64


def draw_sample(ds: Any, spec: LogSpec, size: int, seed: int, batch_size: int | None) -> Rows:
    """The ``size`` distinct queries of smallest hashed key over the whole log (its logged rows for bandit logs),
    in key order: a uniform sample that does not depend on how the files are split or in which order batches
    finish.

    Workers send only keys below a threshold set for about ``2·size`` of the log's rows, so the driver never
    receives the log; when fewer than ``size`` queries pass (many rows per query, or few logged rows), the pass
    is repeated with a threshold raised in proportion (each pass's rows include the previous pass's).
    """
    total = int(ds.count())
    fraction = min(1.0, 2.0 * size / max(total, 1))
    while True:
        limit = _KEY_RANGE if fraction >= 1.0 else int(fraction * _KEY_RANGE)
        kept: dict[str, np.ndarray] | None = None
        for out in map_batches_iter(
            ds, _sample_batch, batch_size, spec=spec, size=size, seed=seed, limit=limit
        ):
            kept = out if kept is None else {c: np.concatenate([kept[c], out[c]]) for c in kept}
            if kept["key"].shape[0] > 2 * size:
                kept = _smallest(kept, size)
        found = 0 if kept is None else _smallest(kept, size)["key"].shape[0]
        if found >= size or fraction >= 1.0:
            break
        fraction = min(1.0, 2.0 * fraction * size / max(found, 1))
    if kept is None or found == 0:
        raise SchemaError(
            "the logs have no logged rows to fit on" if spec.bandit else "the logs have no rows"
        )
    kept = _smallest(kept, size)
    n = kept["key"].shape[0]
    feats = S.feature_names(len(spec.features))
    features = (
        np.column_stack([kept[c] for c in feats]).astype(np.float32)
        if feats
        else (None if spec.text else np.zeros((n, 0), dtype=np.float32))
    )
    return Rows(
        kept[S.QUERY_ID],
        kept["action"].astype(np.int64),
        kept[S.QUALITY],
        kept[S.COST],
        kept[S.PROPENSITY],
        features,
        [str(p) for p in kept[S.PROMPT]] if spec.text else None,
        [None if t is None else str(t) for t in kept[S.TASK]] if spec.text and spec.has_task else None,
    )


def _smallest(kept: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    take = _first_by_key(kept["key"], kept[S.QUERY_ID], size)
    return {c: v[take] for c, v in kept.items()}


def _first_by_key(keys: np.ndarray, query_ids: np.ndarray, size: int) -> np.ndarray:
    # One row per key (the rows of one query share it), ordered by key then id: deterministic whatever the order.
    order = np.lexsort((np.asarray(query_ids).astype(str), keys))
    ordered = keys[order]
    first = np.ones(ordered.shape[0], dtype=bool)
    first[1:] = ordered[1:] != ordered[:-1]
    return order[first][:size]


def hashed_sample(query_ids: np.ndarray | Sequence[str], size: int, seed: int = 0) -> np.ndarray:
    """``(s,) int64`` positions of the sample :func:`draw_sample` takes, for rows held in memory: the first row of
    each of the ``size`` distinct queries with the smallest hashed key, in key order."""
    ids = np.asarray(query_ids)
    return _first_by_key(_sample_keys(hash_ids(ids), seed), ids, int(size)).astype(np.int64)
