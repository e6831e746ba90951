"""Argument checks and file lookups shared by the loaders."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from routing_env.data.files import reading
from routing_env.errors import ConfigurationError


def check_choice(name: str, value: object, allowed: Sequence[object]) -> None:
    """Refuse ``value`` for argument ``name`` unless it is one of ``allowed``."""
    if value not in allowed:
        raise ConfigurationError(f"{name} must be one of {list(allowed)}, got {value!r}")


def require_dir(path: str | Path, what: str) -> Path:
    """``path`` as a ``Path``, refused with ``FileNotFoundError`` (naming ``what``) unless it is a directory."""
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{what}: no directory at {p}")
    return p


def first_existing(root: Path, candidates: Sequence[str], what: str) -> Path:
    """The first of ``candidates`` (paths relative to ``root``) that exists."""
    for rel in candidates:
        if (root / rel).exists():
            return root / rel
    raise FileNotFoundError(f"{what}: none of {list(candidates)} exists under {root}")


def scalar(value: Any) -> Any:
    """A numpy scalar as the Python value (for error messages)."""
    return value.item() if isinstance(value, np.generic) else value


def read_csv(path: Path, **kwargs: Any) -> pd.DataFrame:
    """``pandas.read_csv(path, **kwargs)``; a corrupt file is a ``FileFormatError`` naming it."""
    with reading(path, "CSV"):
        return pd.read_csv(path, **kwargs)


def read_json(path: Path) -> Any:
    """The JSON document in ``path``; a corrupt file is a ``FileFormatError`` naming it."""
    with reading(path, "JSON"):
        return json.loads(path.read_text(encoding="utf-8"))
