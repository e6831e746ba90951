"""The writer lock of a file-based decision store, and the high-water marks it keeps beside the database.

A store file has one writer. :class:`WriterLock` holds an exclusive ``flock`` on ``<database>.lock`` for as long as
the store is open for writing, so a second process opening the same file is refused with the first one's pid
instead of answering 500s once their sequence numbers collide. The kernel drops the lock when the process dies
(kill -9 included), so a crashed writer never leaves a stale lock behind.

The same file records how far the log had reached (:class:`Marks`: the highest decision and feedback ``seq``
committed), rewritten as the store runs. On open the database must hold at least that much: a write-ahead log that
was deleted, truncated or zeroed loses the transactions it held without SQLite noticing, and the marks are what
notices. They live outside the database on purpose — a value inside it is lost together with the log it would
vouch for.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from routing_env.errors import ConfigurationError

try:  # POSIX; elsewhere the store runs without a cross-process lock (documented)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

# The record is rewritten in place; padding keeps every version the same length, so a shorter one never leaves
# the tail of a longer one behind.
_RECORD_BYTES = 512


@dataclass(frozen=True)
class Marks:
    """The highest decision and feedback sequence numbers a store had committed when they were recorded."""

    decision_seq: int
    feedback_seq: int
    recorded_at: float


class WriterLock:
    """Exclusive writer lock on ``<database>.lock``, carrying the store's :class:`Marks`.

    Args:
        database: the store's database file (the lock file is ``<database>.lock`` beside it).

    Raises:
        ConfigurationError: another process holds the lock (its pid and host are named), or the lock file cannot
            be created or written (a read-only directory or file system).
    """

    def __init__(self, database: Path) -> None:
        self.path = Path(str(Path(database).resolve()) + ".lock")
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot open the store's lock file {self.path} for writing ({exc.strerror}): the store needs a "
                "writable directory (is the file system read-only?)"
            ) from None
        self.previous = self._read()
        if fcntl is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = self.previous
                os.close(self._fd)
                if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
                    raise ConfigurationError(
                        f"the store {database} is already open for writing in this process: close that store "
                        "first, or open this one with readonly=True"
                    ) from None
                who = f"pid {holder['pid']} on {holder['host']}" if holder else "another process"
                raise ConfigurationError(
                    f"the store {database} is already open for writing by {who} (lock {self.path}); a store has "
                    "one writer: stop the other `routing-env serve` or give this one its own --store"
                ) from None
        self._owner = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": time.time()}
        self._closed = False

    def _read(self) -> dict[str, Any] | None:
        try:
            raw = os.pread(self._fd, _RECORD_BYTES, 0)
            doc = json.loads(raw.decode("utf-8").rstrip(" \n\x00") or "null")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None  # a record cut short by a crash mid-write: no marks to hold the store to
        return doc if isinstance(doc, dict) else None

    def marks(self) -> Marks | None:
        """The marks the previous writer recorded, or ``None`` (a new store, or an unreadable record)."""
        doc = self.previous
        if doc is None:
            return None
        try:
            return Marks(int(doc["decision_seq"]), int(doc["feedback_seq"]), float(doc["recorded_at"]))
        except (KeyError, TypeError, ValueError):
            return None

    def record(self, decision_seq: int, feedback_seq: int, *, sync: bool = False) -> None:
        """Rewrite the record with the store's committed high-water marks (``sync``: fsync it too)."""
        if self._closed:
            return
        doc = {**self._owner, "decision_seq": int(decision_seq), "feedback_seq": int(feedback_seq)}
        doc["recorded_at"] = time.time()
        data = json.dumps(doc).encode()
        os.pwrite(self._fd, data.ljust(_RECORD_BYTES - 1) + b"\n", 0)
        if sync:
            os.fsync(self._fd)

    def release(self) -> None:
        """Drop the lock (the file and its last record stay, for the next writer to check against)."""
        if not self._closed:
            self._closed = True
            os.close(self._fd)  # closing the descriptor releases the flock
