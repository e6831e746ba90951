"""Decision stores: the durable log of the online router.

- :mod:`agents.online.stores.base`: the records (:class:`Decision`, :class:`Step`, :class:`Call`, :class:`Feedback`,
  :class:`Checkpoint`, :class:`PolicyVersion`, :class:`LogEntry`, :class:`StoreCounts`) and the
  :class:`DecisionStore` protocol;
- :mod:`agents.online.stores.sqlite`: :class:`SQLiteDecisionStore`, one SQLite file in WAL mode (the default);
- :mod:`agents.online.stores.postgres`: :class:`PostgresDecisionStore`, a PostgreSQL database (the ``postgres``
  extra), whose schema :mod:`agents.online.stores.postgres_schema` migrates at start-up (with
  ``postgres_target``: URLs and driver errors; ``postgres_checkpoints``: checkpoints as bytes; ``postgres_listen``:
  the LISTEN connection; ``postgres_sql``: its statements built from the shared columns);
- what the SQL stores share: :mod:`~agents.online.stores.common` (group-commit bookkeeping, totals, export),
  :mod:`~agents.online.stores.sql` (the row layout), :mod:`~agents.online.stores.export` (the canonical dataset),
  :mod:`~agents.online.stores.policy_files` (a policy directory as bytes);
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
    LogEntry,
    PolicyVersion,
    Step,
    StoreCounts,
)
from agents.online.stores.postgres import PostgresDecisionStore
from agents.online.stores.sqlite import SQLiteDecisionStore
from routing_env.errors import ConfigurationError

__all__ = [
    "Call",
    "Checkpoint",
    "Decision",
    "DecisionStore",
    "Feedback",
    "LogEntry",
    "PolicyVersion",
    "PostgresDecisionStore",
    "SQLiteDecisionStore",
    "Step",
    "StoreCounts",
    "is_url",
    "open_store",
]

# ``scheme://…`` (RFC 3986 scheme characters). A Windows drive (``C:\\…``) has no ``//`` after the colon.
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def is_url(path_or_url: str | Path) -> bool:
    """Whether ``path_or_url`` is a URL (``scheme://…``) rather than a file path."""
    return _URL.match(str(path_or_url)) is not None


def open_store(path_or_url: str | Path, **options: Any) -> DecisionStore:
    """The decision store ``path_or_url`` names.

    Args:
        path_or_url: a file path → :class:`SQLiteDecisionStore` (created with its tables when absent); a
            ``postgresql://`` (or ``postgres://``) URL → :class:`PostgresDecisionStore` (its schema migrated on
            opening). Any other ``scheme://`` is refused, rather than read as a relative file path.
        options: keyword arguments of the store (both: ``synchronous``, ``checkpoint_dir``, ``keep_checkpoints``;
            SQLite: ``wal_checkpoint_s``; PostgreSQL: ``pool_size``, ``timeout_s``).

    Raises:
        ConfigurationError: an unsupported URL (nothing is created on disk), an invalid SQLite path or option,
            or the ``postgres`` extra missing for a PostgreSQL URL.
        StoreUnavailableError: the PostgreSQL server cannot be reached.
    """
    text = str(path_or_url)
    match = _URL.match(text)
    if match is not None:
        scheme = match.group(1).lower()
        if scheme in ("postgresql", "postgres"):
            return PostgresDecisionStore(text, **options)
        # Never echo the URL: it may carry a password.
        raise ConfigurationError(
            f"store: {scheme}:// URLs are not supported; give the path of a SQLite file (e.g. --store "
            "runs/router.db) or a postgresql:// URL"
        )
    return SQLiteDecisionStore(path_or_url, **options)
