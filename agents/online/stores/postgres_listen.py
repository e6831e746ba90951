"""Waiting on a PostgreSQL store's log: one connection that ``LISTEN``\\s on the channel every append notifies."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agents.online.stores.postgres_schema import LOG_CHANNEL

if TYPE_CHECKING:
    import psycopg

_HEAD = "SELECT position FROM log_head"


class LogListener:
    """Blocks until the log's head passes a position, woken by ``NOTIFY`` on :data:`LOG_CHANNEL`.

    Args:
        connect: opens a new autocommit connection to the store's database.
        store_error: maps a driver error (and what was being done) to the store's error.
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        store_error: Callable[[BaseException, str], Exception],
    ) -> None:
        self._connect = connect
        self._store_error = store_error
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None

    def wait(self, after: int, timeout_s: float) -> int:
        """The log's head once it passes ``after``, or after ``timeout_s`` seconds (then possibly ``≤ after``).

        The head is read after listening starts, so an append that commits meanwhile is never missed; a broken
        connection is dropped (the next wait opens another) and raised as the store's error.
        """
        import psycopg

        deadline = time.monotonic() + max(float(timeout_s), 0.0)
        with self._lock:
            try:
                conn = self._conn
                if conn is None or conn.closed or conn.broken:
                    conn = self._connect()
                    conn.execute(f"LISTEN {LOG_CHANNEL}")
                    self._conn = conn
                head = _head(conn)
                while head <= after:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    for _ in conn.notifies(timeout=remaining, stop_after=1):
                        pass
                    head = _head(conn)
                return head
            except psycopg.Error as exc:
                self._drop()
                raise self._store_error(exc, "is unavailable") from None

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


def _head(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(_HEAD).fetchone()
    return int(row[0]) if row else 0
