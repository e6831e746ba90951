"""The log of :class:`~agents.online.stores.postgres.PostgresDecisionStore`: appending feedback and policy swaps at
gap-free positions, reading the log after a position, and waiting for it to grow (see that module's docstring)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.online.errors import StoreError
from agents.online.stores.base import Checkpoint, Decision, Feedback, LogEntry
from agents.online.stores.common import repeated_feedback, unknown_decision
from agents.online.stores.postgres_sql import APPEND_FEEDBACK, FEEDBACK_OF, LOG_AFTER
from agents.online.stores.sql import feedback_from_row, feedback_values
from routing_env.errors import ConfigurationError

if TYPE_CHECKING:
    import psycopg

    from agents.online.stores.postgres_checkpoints import CheckpointArchive
    from agents.online.stores.postgres_listen import LogListener


class PostgresLog:
    """The log methods of the PostgreSQL store (a mixin: the store provides the connections and checkpoints)."""

    _deferring: int | None
    _checkpoints: CheckpointArchive
    _listener: LogListener

    if TYPE_CHECKING:

        @property
        def location(self) -> str: ...
        def _write(self, work: Any, *, atomic: bool = ..., flush: bool = ..., missing: Any = ...) -> Any: ...
        def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...
        def _read_one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...
        def _decision_from_row(self, row: Sequence[Any]) -> Decision: ...
        def _check_open(self) -> None: ...

    def insert_feedback(self, fb: Feedback) -> int:
        """Append feedback to the log and close its decision, in one statement; return its log position.

        ``fb.seq > 0`` is the position the writer expects (its own count + 1): when another writer appended
        first, nothing is written and :class:`LogConflictError` is raised. ``fb.seq = 0`` takes the next position.

        Raises:
            DecisionConflictError: the decision already has feedback (the first one stays).
            DecisionNotFoundError: the store never issued the decision.
            LogConflictError: the expected position was taken.
        """
        if int(fb.seq) < 0:
            raise ConfigurationError(f"feedback seq must be ≥ 0 (0 = the next log position), got {fb.seq!r}")
        params = feedback_values(fb)

        def append(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(APPEND_FEEDBACK, params).fetchone()
            if row is None or row[0] is None:
                raise repeated_feedback(fb.decision_id)
            return int(row[0])

        # In a group, a stale position undoes this append alone (its savepoint), so the writer can catch up
        # and append again within the same request.
        in_group = self._deferring == threading.get_ident()
        return self._write(append, atomic=in_group, missing=lambda: unknown_decision(fb.decision_id))

    def hold_log_head(self) -> int:
        """Inside a deferral, lock the log's head in the open group until it commits and return it (no other writer
        appends meanwhile, so the caller's next append is not stale); outside one, the committed head."""
        if self._deferring != threading.get_ident():
            return self.log_position()

        def lock(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute("SELECT position FROM log_head FOR UPDATE").fetchone()
            return int(row[0]) if row else 0

        return self._write(lock)

    def mark_expired(self, decision_id: str) -> None:
        """Close a decision whose wait time expired without applying any reward."""
        self._write(
            lambda c: c.execute(
                "UPDATE decisions SET status = 'expired' WHERE decision_id = %s", (decision_id,)
            )
        )

    def get_feedback(self, decision_id: str) -> Feedback | None:
        row = self._read_one(FEEDBACK_OF, (decision_id,))
        return None if row is None else feedback_from_row(row)

    def feedback(self, after_seq: int = 0) -> Iterator[tuple[Feedback, Decision]]:
        """Feedback with log position ``> after_seq`` in log order, each with its decision, read page by page."""
        position = int(after_seq)
        while True:
            rows = self._read(LOG_AFTER, (position, 1000))
            for r in rows:
                if r[1] == "feedback":  # swaps are skipped unread (their checkpoints stay in the database)
                    entry = self._entry(r)
                    assert entry.feedback is not None and entry.decision is not None
                    yield entry.feedback, entry.decision
            if len(rows) < 1000:
                return
            position = int(rows[-1][0])

    def max_feedback_seq(self) -> int:
        """The log position of the last feedback (0 for none)."""
        row = self._read_one("SELECT COALESCE(MAX(position), 0) FROM log WHERE kind = 'feedback'")
        return int(row[0]) if row else 0

    def log_position(self) -> int:
        """The position of the last committed log entry (0 for an empty log)."""
        row = self._read_one("SELECT position FROM log_head")
        return int(row[0]) if row else 0

    def log_entries(self, after: int = 0, limit: int = 1000) -> list[LogEntry]:
        """At most ``limit`` committed log entries with ``position > after``, in position order (no gaps)."""
        rows = self._read(LOG_AFTER, (int(after), max(int(limit), 0)))
        return [self._entry(r) for r in rows]

    def _entry(self, r: Sequence[Any]) -> LogEntry:
        position, kind = int(r[0]), str(r[1])
        if kind == "feedback":
            row = (position, *r[3:12])
            return LogEntry(position, "feedback", feedback_from_row(row), self._decision_from_row(r[12:]))
        if kind == "swap":
            ckpt = self._checkpoints.get(int(r[2]))
            if ckpt is None:  # the migration's constraints keep a swap's checkpoint; say so if one is gone
                raise StoreError(
                    f"log position {position} of {self.location} swaps to a checkpoint that is gone"
                )
            return LogEntry(position, "swap", checkpoint=ckpt)
        raise ConfigurationError(f"log position {position} of {self.location} holds an unknown kind {kind!r}")

    def append_swap(self, version: str, save: Callable[[int], Path]) -> Checkpoint:
        """Append a swap entry whose checkpoint is what ``save(position)`` writes, holding the log's head until it
        commits (see :meth:`~agents.online.stores.base.DecisionStore.append_swap`)."""
        return self._checkpoints.swap(version, save)

    def wait_for_log(self, after: int, timeout_s: float) -> int:
        """Block until the log's head passes ``after`` or ``timeout_s`` seconds have passed; return the head
        (woken by ``NOTIFY`` on :data:`LOG_CHANNEL`: :class:`~agents.online.stores.postgres_listen.LogListener`)."""
        self._check_open()
        return self._listener.wait(after, timeout_s)
