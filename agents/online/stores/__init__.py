"""Decision stores: the durable log of the online router.

- :mod:`agents.online.stores.base`: the records (:class:`Decision`, :class:`Step`, :class:`Call`, :class:`Feedback`,
  :class:`Checkpoint`, :class:`PolicyVersion`, :class:`StoreCounts`) and the :class:`DecisionStore` protocol;
- :mod:`agents.online.stores.sqlite`: :class:`SQLiteDecisionStore`, one SQLite file in WAL mode (the default);
- :func:`open_store`: the store a path or URL names (what ``routing-env serve --store`` takes).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from agents.online.stores.base import (
    Call,
    Checkpoint,
    Decision,
    DecisionStore,
    Feedback,
    PolicyVersion,
    Step,
    StoreCounts,
)
from agents.online.stores.sqlite import SQLiteDecisionStore
from routing_env.errors import ConfigurationError

__all__ = [
    "Call",
    "Checkpoint",
    "Decision",
    "DecisionStore",
    "Feedback",
    "PolicyVersion",
    "SQLiteDecisionStore",
    "Step",
    "StoreCounts",
    "open_store",
]

# ``scheme://…`` (RFC 3986 scheme characters). A Windows drive (``C:\\…``) has no ``//`` after the colon.
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def open_store(path_or_url: str | Path, **options: Any) -> DecisionStore:
    """The decision store ``path_or_url`` names.

    Args:
        path_or_url: a file path → :class:`SQLiteDecisionStore` (created with its tables when absent).
            ``postgresql://`` URLs are reserved for the PostgreSQL store, which is not available yet; any other
            ``scheme://`` is refused too, rather than read as a relative file path.
        options: keyword arguments of the store (for SQLite: ``synchronous``, ``checkpoint_dir``,
            ``keep_checkpoints``, ``wal_checkpoint_s``).

    Raises:
        ConfigurationError: a URL (nothing is created on disk), or an invalid SQLite path or option.
    """
    text = str(path_or_url)
    match = _URL.match(text)
    if match is not None:
        scheme = match.group(1).lower()
        # Never echo the URL: it may carry a password.
        if scheme in ("postgresql", "postgres"):
            raise ConfigurationError(
                f"store: a {scheme}:// URL names a PostgreSQL store, which is not available in this version; "
                "give the path of a SQLite file instead (e.g. --store runs/router.db)"
            )
        raise ConfigurationError(
            f"store: {scheme}:// URLs are not supported; give the path of a SQLite file (e.g. --store "
            "runs/router.db)"
        )
    return SQLiteDecisionStore(path_or_url, **options)
