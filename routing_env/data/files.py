"""Canonical files on disk: the long table as parquet, CSV or JSON lines, and what :meth:`LoggedDataset.save`
stores beside it.

The table is the canonical long format of :mod:`routing_env.data.schema`. What the table cannot hold (model
order, price cards, feature names, provenance notes) is a :class:`StoredExtras` record, kept in the parquet
schema metadata or in a ``<file>.meta.json`` sidecar for CSV and JSON lines.
"""

from __future__ import annotations

import csv
import json
import pickle
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from routing_env.data import schema as S
from routing_env.data.schema import ModelCard, is_missing
from routing_env.errors import FileFormatError, RoutingEnvError, SchemaError

#: File suffixes of the canonical format, by the reader that handles them.
SUFFIXES = (".parquet", ".csv", ".jsonl", ".ndjson")
_META_KEY = b"routing_env"
_TEXT_COLUMNS = (S.QUERY_ID, S.MODEL, S.PROMPT, S.TASK)


@dataclass(frozen=True)
class StoredExtras:
    """What a canonical file carries beside the table.

    Attributes:
        models: the model (column) order, or empty when the file does not say.
        model_cards: the price cards.
        meta: provenance notes.
        feature_names: names of the ``x_<i>`` feature columns, or empty.
    """

    models: tuple[str, ...] = ()
    model_cards: tuple[ModelCard, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)
    feature_names: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "models": list(self.models),
            "model_cards": [c.to_dict() for c in self.model_cards],
            "meta": dict(self.meta),
            "feature_names": list(self.feature_names),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> StoredExtras:
        return cls(
            models=tuple(str(m) for m in doc.get("models") or ()),
            model_cards=tuple(ModelCard.from_dict(c) for c in doc.get("model_cards") or ()),
            meta={str(k): str(v) for k, v in (doc.get("meta") or {}).items()},
            feature_names=tuple(str(n) for n in doc.get("feature_names") or ()),
        )


@contextmanager
def reading(path: Path, kind: str) -> Iterator[None]:
    """Report a reader's failure on a corrupt, truncated, empty or mistyped file as one
    :class:`~routing_env.errors.FileFormatError` naming the file, ``kind`` (``"parquet"``, ``"CSV"``…) and the
    reader's reason, instead of the reader's own traceback. Wrap only the reading, not the validation."""
    try:
        yield
    except RoutingEnvError:
        raise
    except (ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise _unreadable(path, kind, exc) from None
    except OSError as exc:
        # pyarrow reports some corrupt files as OSError; a missing or unreadable path is not a format problem.
        if not type(exc).__module__.startswith("pyarrow"):
            raise
        raise _unreadable(path, kind, exc) from None


def _unreadable(path: Path, kind: str, exc: BaseException) -> FileFormatError:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if len(reason) > 200:
        reason = reason[:200] + "…"
    return FileFormatError(f"{path} is not a readable {kind} file: {reason}")


def check_suffix(path: Path, action: str) -> str:
    """The lower-case suffix of ``path`` for ``action`` (``"read"`` or ``"save"``), one of :data:`SUFFIXES`."""
    suffix = path.suffix.lower()
    if suffix in SUFFIXES:
        return suffix
    if action == "save":
        raise SchemaError(
            f"cannot save to {path}: expected a .parquet, .csv or .jsonl suffix, got {suffix!r}"
        )
    raise SchemaError(f"cannot read {path}: expected a .parquet, .csv or .jsonl file, got {suffix!r}")


def read_canonical(path: Path) -> tuple[pd.DataFrame, StoredExtras | None]:
    """``(table, extras)`` of a canonical file; ``extras`` is ``None`` when the file stores none."""
    suffix = check_suffix(path, "read")
    stored: dict[str, Any] = {}
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        with reading(path, "parquet"):
            table = pq.read_table(path)
            raw = (table.schema.metadata or {}).get(_META_KEY)
            if raw:
                stored = json.loads(raw)
            frame = table.to_pandas()
    elif suffix == ".csv":
        with reading(path, "CSV"):
            frame = _read_csv(path)
    else:
        frame = _read_jsonl_frame(path)
    sidecar = _sidecar(path)
    if suffix != ".parquet" and sidecar.exists():
        with reading(sidecar, "JSON"):
            stored = json.loads(sidecar.read_text(encoding="utf-8"))
    return frame, (StoredExtras.from_json(stored) if stored else None)


def write_canonical(frame: pd.DataFrame, path: Path, extras: StoredExtras) -> Path:
    """Write ``frame`` to ``path`` (format by suffix) with ``extras`` in the metadata or the sidecar."""
    suffix = check_suffix(path, "save")
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = extras.to_json()
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        metadata = dict(table.schema.metadata or {})
        metadata[_META_KEY] = json.dumps(stored).encode()
        pq.write_table(table.replace_schema_metadata(metadata), path)
    else:
        if suffix == ".csv":
            # Quote every text field: pandas leaves a lone carriage return unquoted otherwise, which
            # splits the row when read back.
            frame.to_csv(path, index=False, quoting=csv.QUOTE_NONNUMERIC)
        else:
            _write_jsonl(frame, path)
        _sidecar(path).write_text(json.dumps(stored, indent=1))
    return path


def read_jsonl_records(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, one a line (blank lines skipped).

    Raises:
        SchemaError: a line is not valid JSON or not an object; the message names the file and the line.
    """
    records = []
    with reading(path, "JSON-lines"), path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SchemaError(f"{path}:{lineno} is not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise SchemaError(f"{path}:{lineno} must hold a JSON object, got {type(record).__name__}")
            records.append(record)
    return records


def _write_jsonl(frame: pd.DataFrame, path: Path) -> None:
    # json.dumps writes floats with repr (shortest round-trip form), which pandas' to_json does not guarantee.
    columns = list(frame.columns)
    with path.open("w", encoding="utf-8") as fh:
        for row in frame.itertuples(index=False, name=None):
            record = {
                c: (None if is_missing(v) else v.item() if isinstance(v, np.generic) else v)
                for c, v in zip(columns, row)
            }
            fh.write(json.dumps(record, ensure_ascii=False))
            fh.write("\n")


def _read_csv(path: Path) -> pd.DataFrame:
    # Text columns keep strings such as "NA" or "None" as text: only an empty field is missing (so an empty
    # prompt reads back as missing). Numeric columns use pandas' usual missing markers.
    header = pd.read_csv(path, nrows=0).columns
    text = [c for c in header if c in _TEXT_COLUMNS]
    na_values: dict[str, list[str]] = {c: [""] for c in text}
    for c in header:
        if c not in text:
            na_values[c] = ["", "nan", "NaN", "NA", "<NA>", "null", "NULL", "None", "N/A", "n/a"]
    return pd.read_csv(path, dtype={c: str for c in text}, keep_default_na=False, na_values=na_values)


def _read_jsonl_frame(path: Path) -> pd.DataFrame:
    # json.loads keeps strings as strings and floats exact; pandas.read_json would coerce "123" prompts to numbers.
    frame = pd.DataFrame.from_records(read_jsonl_records(path))
    for col in frame.columns:
        if col not in _TEXT_COLUMNS and frame[col].dtype == object:
            # A numeric column with missing values (None) comes back as object; make it numeric again.
            values = frame[col]
            if values.map(
                lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
            ).all():
                frame[col] = pd.to_numeric(values)
    return frame


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")
