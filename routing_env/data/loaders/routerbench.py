"""RouterBench's wide table (``routerbench_0shot.pkl`` / ``routerbench_5shot.pkl`` or a CSV/parquet export)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from routing_env.data import schema as S
from routing_env.data.dataset import LoggedDataset, Normalize
from routing_env.data.files import reading
from routing_env.data.loaders._inputs import check_choice
from routing_env.data.loaders._warnings import announce
from routing_env.errors import SchemaError

__all__ = ["load_routerbench"]

_RB_COST = "|total_cost"


@dataclass(frozen=True)
class _Table:
    """RouterBench's outcomes as arrays: one row per sample, one column per model."""

    sample_id: pd.Series  # (n,) str
    prompt: pd.Series  # (n,) str
    task: pd.Series  # (n,) str or None
    quality: np.ndarray  # (n, K) float64, NaN where the table has none
    cost: np.ndarray  # (n, K) float64 USD

    def rows(self, keep: np.ndarray) -> _Table:
        return _Table(
            self.sample_id[keep], self.prompt[keep], self.task[keep], self.quality[keep], self.cost[keep]
        )


def load_routerbench(
    path: str | Path,
    *,
    missing_quality: Literal["drop_query", "keep"] = "drop_query",
    normalize: Normalize | None = None,
    quality_range: tuple[float, float] | None = None,
) -> LoggedDataset:
    """Load RouterBench's wide table (``routerbench_0shot.pkl``/``routerbench_5shot.pkl`` or a CSV export).

    Columns: ``sample_id``, ``prompt``, ``eval_name`` (the task), one quality column per model,
    ``<model>|model_response``, ``<model>|total_cost`` (USD) and ``oracle_model_to_route_to`` (ignored: the oracle
    is recomputed from the outcomes). The models are the columns that have a ``<model>|total_cost`` partner, in the
    order of those cost columns.

    **Trust:** a ``.pkl``/``.pickle`` file is read with :func:`pandas.read_pickle`, which can run code embedded in
    the file. RouterBench is published as a pickle, so this loader accepts one; only pass files you trust (or
    convert the table to CSV/parquet once).

    The published data has defects this loader handles, each reported with a warning and in ``meta``:

    - NaN quality cells: ``missing_quality="drop_query"`` (default) drops those queries so the data stays
      full-information (exact replay); ``"keep"`` leaves those cells unobserved (partial data).
    - duplicated ``sample_id``: rows identical in prompt, task, quality and cost are kept once; rows that share
      an id but differ get ids made unique with a ``#<k>`` suffix (k = occurrence number, from 1).

    Args:
        path: the ``.pkl``/``.pickle``, ``.csv`` or ``.parquet`` file.
        missing_quality: ``"drop_query"`` or ``"keep"`` (see above).
        normalize, quality_range: passed to :meth:`LoggedDataset.from_frame` for a quality scale other than [0, 1].
    """
    check_choice("missing_quality", missing_quality, ("drop_query", "keep"))
    p = Path(path)
    wide = _read_wide(p)
    columns = [str(c) for c in wide.columns]
    missing = [c for c in ("sample_id", "prompt") if c not in columns]
    if missing:
        raise SchemaError(f"load_routerbench: {p} lacks the columns {missing}; it has {columns[:12]}…")
    models = [c[: -len(_RB_COST)] for c in columns if c.endswith(_RB_COST)]
    if not models:
        raise SchemaError(f"load_routerbench: {p} has no '<model>|total_cost' columns")
    no_quality = [m for m in models if m not in columns]
    if no_quality:
        raise SchemaError(
            f"load_routerbench: models {no_quality} have a total_cost column but no quality column"
        )
    notes: dict[str, str] = {"source": f"RouterBench ({p.name})", "cost": "logged <model>|total_cost (USD)"}
    # Prompts may be stored as lists of messages in the pickle; keep them as text.
    table = _Table(
        sample_id=wide["sample_id"].astype(str),
        prompt=wide["prompt"].map(lambda v: v if isinstance(v, str) else str(v)),
        task=wide["eval_name"].astype(str) if "eval_name" in columns else pd.Series([None] * len(wide)),
        quality=wide[models].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64),
        cost=wide[[m + _RB_COST for m in models]].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64),
    )
    table = _missing_quality(_unique_ids(table, notes), missing_quality, notes)
    n, k = len(table.sample_id), len(models)
    q = table.quality
    frame = pd.DataFrame(
        {
            S.QUERY_ID: np.repeat(table.sample_id.to_numpy(dtype=object), k),
            S.MODEL: np.tile(np.asarray(models, dtype=object), n),
            S.QUALITY: q.ravel(),
            S.COST: table.cost.ravel(),
            S.PROMPT: np.repeat(table.prompt.to_numpy(dtype=object), k),
            S.TASK: np.repeat(table.task.to_numpy(dtype=object), k),
        }
    )
    # An unobserved cell is no row at all (a NaN quality with a cost would read as "called, outcome unknown").
    frame = frame[~np.isnan(q.ravel())]
    return LoggedDataset.from_frame(
        frame, models=models, normalize=normalize, quality_range=quality_range, meta=notes
    )


def _read_wide(p: Path) -> pd.DataFrame:
    """The wide table in ``p`` (by suffix), with a fresh index."""
    if not p.is_file():
        raise FileNotFoundError(f"load_routerbench: no file at {p}")
    suffix = p.suffix.lower()
    readers = {
        ".pkl": ("pickle", lambda: pd.read_pickle(p)),  # trust decision documented in load_routerbench
        ".pickle": ("pickle", lambda: pd.read_pickle(p)),
        ".csv": ("CSV", lambda: pd.read_csv(p, dtype={"sample_id": str, "prompt": str, "eval_name": str})),
        ".parquet": ("parquet", lambda: pd.read_parquet(p)),
    }
    if suffix not in readers:
        raise SchemaError(f"load_routerbench: expected a .pkl, .csv or .parquet file, got {p.name!r}")
    kind, reader = readers[suffix]
    with reading(p, kind):
        wide = reader()
    if not isinstance(wide, pd.DataFrame):
        raise SchemaError(f"load_routerbench: {p} holds a {type(wide).__name__}, expected a DataFrame")
    return wide.reset_index(drop=True)


def _unique_ids(table: _Table, notes: dict[str, str]) -> _Table:
    """Drop exact repeats of a row; give rows that share a ``sample_id`` but differ a ``#<k>`` suffix."""
    key = pd.concat(
        [
            pd.DataFrame({"sid": table.sample_id, "prompt": table.prompt, "task": table.task}),
            pd.DataFrame(np.nan_to_num(table.quality, nan=-1.0)),
            pd.DataFrame(np.nan_to_num(table.cost, nan=-1.0)).add_prefix("c"),
        ],
        axis=1,
    )
    exact = key.duplicated()
    n_exact = int(exact.sum())
    table = table.rows(~exact.to_numpy())
    sid = table.sample_id
    occurrence = sid.groupby(sid).cumcount()
    clash = sid.duplicated(keep=False)
    n_renamed = int(clash.sum())
    if n_exact or n_renamed:
        msg = (
            f"{n_exact} rows repeating an earlier row exactly were dropped; {n_renamed} rows sharing a sample_id "
            "with different content got a '#<k>' suffix"
        )
        announce("load_routerbench", f"duplicated sample_id: {msg}", notes, "duplicate_sample_ids")
    return replace(table, sample_id=sid.where(~clash, sid + "#" + (occurrence + 1).astype(str)))


def _missing_quality(table: _Table, missing_quality: str, notes: dict[str, str]) -> _Table:
    """Drop the samples with a NaN quality cell (``"drop_query"``) or keep those cells unobserved."""
    nan_rows = np.isnan(table.quality).any(axis=1)
    if not nan_rows.any():
        return table
    if missing_quality == "drop_query":
        msg = f"{int(nan_rows.sum())} queries with a NaN quality cell dropped (missing_quality='drop_query')"
        table = table.rows(~nan_rows)
    else:
        msg = f"{int(np.isnan(table.quality).sum())} NaN quality cells kept as unobserved (missing_quality='keep')"
    announce("load_routerbench", msg, notes, "missing_quality")
    return table
