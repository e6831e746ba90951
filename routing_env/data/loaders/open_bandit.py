"""The Open Bandit Dataset (ZOZOTOWN fashion recommendation; ``obp``'s ``obd/`` folder): real bandit feedback
with the logging policy's propensities."""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from routing_env.data.dataset import LoggedDataset
from routing_env.data.loaders._inputs import check_choice, read_csv, require_dir, scalar
from routing_env.data.loaders._warnings import announce
from routing_env.errors import ConfigurationError, SchemaError

__all__ = ["OPEN_BANDIT_PROPENSITY_FLOOR", "load_open_bandit"]

#: The propensity that ``load_open_bandit(zero_propensity="floor")`` gives to logged actions whose recorded
#: propensity is 0.0: the smallest non-zero propensity the Open Bandit logs report (1e-6), i.e. the resolution
#: at which ZOZO's Monte-Carlo estimate of the Thompson-sampling probabilities is published.
OPEN_BANDIT_PROPENSITY_FLOOR = 1e-6
_REQUIRED = ("item_id", "position", "click", "propensity_score")


def load_open_bandit(
    dir: str | Path,
    policy: Literal["random", "bts"] = "random",
    campaign: Literal["all", "men", "women"] = "all",
    *,
    zero_propensity: Literal["floor", "drop", "error"] = "floor",
    user_features: Literal["onehot", "hashed"] = "onehot",
    hash_buckets: int = 16,
) -> LoggedDataset:
    """Load the Open Bandit Dataset (ZOZOTOWN fashion recommendation) as bandit feedback.

    Reads ``dir/<policy>/<campaign>/<campaign>.csv`` (the layout of ``obp``'s ``obd/`` folder). Not LLM routing,
    but real logs with real propensities, for testing off-policy estimators.

    Mapping onto the canonical format:

    - each impression (row) is a query, ``query_id = "<policy>/<campaign>/<row index>"``;
    - the "models" are the items, named ``item_<id>``: one per ``user-item_affinity_<id>`` column (the
      campaign's item list, so the random and bts logs of a campaign share it even when an item is never shown),
      or every id from 0 to the largest in the file when there are no affinity columns;
    - **partial information**: only the logged item's cell is observed, with quality = click (0/1) and cost 0
      (the cost of showing an item is not part of this data);
    - ``logged_action`` = the item shown, ``propensity`` = the file's ``propensity_score`` (the logging
      probability of that item *at that position*; obp treats (item, position) as the action);
    - ``features (n, d) float32``: the user features, then the ``user-item_affinity_<k>`` columns, then one
      column **named** ``position`` holding the slot as 0, 1 or 2 (the file's 1/2/3 minus 1). OPE code that needs
      the slot reads it with ``dataset.features[:, dataset.feature_names.index("position")]``.
      User features are hashed categorical strings; ``user_features="onehot"`` one-hot encodes the categories
      seen in this file (columns ``user_feature_<i>=<value>``, as obp does), ``"hashed"`` maps each into
      ``hash_buckets`` one-hot buckets by a stable CRC-32 of the value (columns ``user_feature_<i>#<b>``), so
      that logs of different policies share a feature layout.

    Propensities: the Thompson-sampling (``bts``) probabilities are Monte-Carlo estimates published with finite
    precision, and can read 0.0 for an item that was nevertheless shown. An importance weight 1/0 is undefined,
    so ``zero_propensity`` decides, never silently:

    - ``"floor"`` (default): set them to :data:`OPEN_BANDIT_PROPENSITY_FLOOR` (1e-6, the smallest non-zero value
      the logs report), with a :class:`~routing_env.errors.DataWarning` naming the count, recorded in ``meta``;
    - ``"drop"``: drop those impressions (warning and ``meta`` as well);
    - ``"error"``: raise :class:`~routing_env.errors.SchemaError`.

    Negative, NaN or > 1 propensities are always an error.
    """
    check_choice("policy", policy, ("random", "bts"))
    check_choice("campaign", campaign, ("all", "men", "women"))
    check_choice("zero_propensity", zero_propensity, ("floor", "drop", "error"))
    check_choice("user_features", user_features, ("onehot", "hashed"))
    if not isinstance(hash_buckets, (int, np.integer)) or hash_buckets < 1:
        raise ConfigurationError(f"hash_buckets must be an int ≥ 1, got {hash_buckets!r}")
    root = require_dir(dir, "load_open_bandit(dir)")
    path = root / policy / campaign / f"{campaign}.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"load_open_bandit: {path} not found (expected <dir>/<policy>/<campaign>/<campaign>.csv)"
        )
    raw = read_csv(path, index_col=0)
    missing = [c for c in _REQUIRED if c not in raw.columns]
    if missing:
        raise SchemaError(f"load_open_bandit: {path} lacks the columns {missing}")
    notes: dict[str, str] = {
        "source": f"Open Bandit Dataset {policy}/{campaign} ({path.name})",
        "quality": "click (0/1) on the logged item only: partial information",
        "cost": "0 (not part of this data)",
        "features": "user features, user-item affinities, then 'position' (0, 1, 2)",
    }
    raw, prop = _propensities(raw, path, zero_propensity, notes, f"load_open_bandit({policy}/{campaign})")
    items = pd.to_numeric(raw["item_id"], errors="raise").to_numpy(dtype=np.int64)
    if (items < 0).any():
        raise SchemaError(f"load_open_bandit: item_id must be ≥ 0, got {int(items.min())}")
    n_items = _item_count(raw, items)
    models = tuple(f"item_{i}" for i in range(n_items))
    position = pd.to_numeric(raw["position"], errors="raise").to_numpy(dtype=np.int64)
    if not np.isin(position, (1, 2, 3)).all():
        raise SchemaError(
            f"load_open_bandit: position must be 1, 2 or 3, got {sorted(set(position.tolist()))}"
        )
    click = pd.to_numeric(raw["click"], errors="raise").to_numpy(dtype=np.float64)
    if len(raw) and (np.isnan(click).any() or not np.isin(click, (0.0, 1.0)).all()):
        raise SchemaError("load_open_bandit: click must be 0 or 1 on every row")
    features, names = _features(raw, position, user_features, hash_buckets)

    n = len(raw)
    quality = np.full((n, n_items), np.nan)
    cost = np.full((n, n_items), np.nan)
    observed = np.zeros((n, n_items), dtype=bool)
    rows = np.arange(n)
    quality[rows, items] = click
    cost[rows, items] = 0.0
    observed[rows, items] = True
    empty = [m for j, m in enumerate(models) if not observed[:, j].any()]
    if empty:
        announce("load_open_bandit", f"items {empty} are never shown in {path.name}")
    return LoggedDataset(
        models=models,
        query_ids=np.array([f"{policy}/{campaign}/{i}" for i in raw.index], dtype=object),
        quality=quality,
        cost=cost,
        observed=observed,
        features=features,
        feature_names=tuple(names),
        logged_action=items,
        propensity=prop,
        meta=notes,
    )


def _propensities(
    raw: pd.DataFrame, path: Path, zero_propensity: str, notes: dict[str, str], where: str
) -> tuple[pd.DataFrame, np.ndarray]:
    """``(rows, propensities (n,))``: out-of-range values refused, zeros floored, dropped or refused."""
    prop = pd.to_numeric(raw["propensity_score"], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(prop) | (prop < 0) | (prop > 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SchemaError(
            f"load_open_bandit: propensity_score must lie in [0, 1], got {scalar(raw['propensity_score'].iloc[i])!r} "
            f"at row {raw.index[i]!r} of {path} ({int(bad.sum())} rows)"
        )
    zero = prop == 0.0
    if not zero.any():
        return raw, prop
    count = int(zero.sum())
    if zero_propensity == "error":
        raise SchemaError(
            f"load_open_bandit: {count} impressions of {path} have propensity_score 0.0 although their item "
            "was shown; pass zero_propensity='floor' or 'drop' to load them"
        )
    if zero_propensity == "floor":
        prop = np.where(zero, OPEN_BANDIT_PROPENSITY_FLOOR, prop)
        msg = (
            f"{count} zero propensities floored to {OPEN_BANDIT_PROPENSITY_FLOOR:g} (zero_propensity='floor')"
        )
    else:
        msg = f"{count} impressions with zero propensity dropped (zero_propensity='drop')"
        raw, prop = raw[~zero], prop[~zero]
    announce(where, msg, notes, "zero_propensity")
    return raw, prop


def _item_count(raw: pd.DataFrame, items: np.ndarray) -> int:
    """K: the campaign's items (one affinity column each), or ``max(item_id) + 1`` without affinity columns."""
    aff_cols = _numbered_columns(raw, "user-item_affinity_")
    if not aff_cols:
        return int(items.max()) + 1
    k = int(str(aff_cols[-1])[len("user-item_affinity_") :]) + 1
    if int(items.max()) >= k:
        raise SchemaError(
            f"load_open_bandit: item_id {int(items.max())} has no user-item_affinity_{int(items.max())} column; "
            f"the affinity columns describe {k} items"
        )
    return k


def _numbered_columns(raw: pd.DataFrame, stem: str) -> list[str]:
    """The ``<stem><k>`` columns of ``raw``, ordered by ``k``."""
    pattern = re.compile(re.escape(stem) + r"\d+")
    found = [c for c in raw.columns if pattern.fullmatch(str(c))]
    return sorted(found, key=lambda c: int(str(c)[len(stem) :]))


def _features(
    raw: pd.DataFrame, position: np.ndarray, user_features: str, hash_buckets: int
) -> tuple[np.ndarray, list[str]]:
    """``(features (n, d) float32, names)``: one-hot (or hashed) user features, affinities, then the slot."""
    blocks: list[np.ndarray] = []
    names: list[str] = []
    for col in _numbered_columns(raw, "user_feature_"):
        values = raw[col].astype(str).to_numpy()
        if user_features == "onehot":
            cats = sorted(set(values.tolist()))
            codes = np.searchsorted(np.asarray(cats), values)
            width, labels = len(cats), [f"{col}={v}" for v in cats]
        else:
            codes = np.array([zlib.crc32(v.encode()) % hash_buckets for v in values], dtype=np.int64)
            width, labels = hash_buckets, [f"{col}#{b}" for b in range(hash_buckets)]
        block = np.zeros((len(values), width), dtype=np.float32)
        block[np.arange(len(values)), codes] = 1.0
        blocks.append(block)
        names += labels
    aff_cols = _numbered_columns(raw, "user-item_affinity_")
    if aff_cols:
        blocks.append(raw[aff_cols].to_numpy(dtype=np.float32))
        names += aff_cols
    blocks.append((position - 1).astype(np.float32)[:, None])
    names.append("position")
    return np.hstack(blocks), names
