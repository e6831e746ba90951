"""The log of :class:`~agents.online.stores.sqlite.SQLiteDecisionStore`: feedback and policy swaps at gap-free
positions assigned by the one writer, read back in position order.

Feedback rows carry their position as ``feedback.seq``; a policy swap is a row of ``swaps`` (its position and the
checkpoint serving from there on). The log is both tables merged by position: :meth:`SQLiteLog.log_entries`.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.online.errors import LogConflictError
from agents.online.stores.base import Checkpoint, Decision, Feedback, LogEntry
from agents.online.stores.common import repeated_feedback
from agents.online.stores.sql import (
    DECISION_COLUMNS,
    FEEDBACK_COLUMNS,
    feedback_from_row,
    feedback_values,
    poll_log,
    qualified,
)

# Feedback after a log position, in log order, each with its decision.
FEEDBACK_AFTER = (
    f"SELECT f.seq, {qualified(FEEDBACK_COLUMNS, 'f')}, {qualified(DECISION_COLUMNS, 'd')} "
    "FROM feedback f JOIN decisions d ON d.decision_id = f.decision_id WHERE f.seq > ? ORDER BY f.seq"
)
N_FEEDBACK = 1 + len(FEEDBACK_COLUMNS.split(","))
# Swaps after a log position, in log order, each with its checkpoint; ? = the position, then the limit.
_SWAPS_AFTER = (
    "SELECT s.position, c.id, c.created_at, c.policy_version, c.path, c.last_feedback_seq FROM swaps s "
    "JOIN checkpoints c ON c.id = s.checkpoint_id WHERE s.position > ? ORDER BY s.position LIMIT ?"
)


class SQLiteLog:
    """The log methods of the SQLite store (a mixin: the store provides the connections and the marks)."""

    path: Path
    _write_lock: threading.RLock
    _swap_head: int  # the highest position a swap holds (feedback may not take one at or below it)

    if TYPE_CHECKING:

        def _write(
            self,
            statements: Any,
            *,
            flush: bool = ...,
            conflict: str = ...,
            conflicts: Any = ...,
            marks: Any = ...,
        ) -> None: ...
        def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...
        def _one(self, sql: str, params: Sequence[Any] = ()) -> Any: ...
        def _decision_from_row(self, row: Sequence[Any]) -> Decision: ...
        def _next_feedback_seq(self) -> int: ...
        def _stored_path(self, path: Path) -> str: ...
        def _resolve(self, stored: str) -> Path: ...
        def _prune_checkpoints(self) -> None: ...

    # ------------------------------------------------------------------ feedback
    def insert_feedback(self, fb: Feedback) -> int:
        """Record feedback and close its decision (``closed``; ``expired`` for a default), in one transaction;
        return its log position.

        The store has one writer, so ``fb.seq`` (the router's count + 1) is the feedback's log position;
        ``fb.seq = 0`` takes the next one.

        Raises:
            DecisionConflictError: the decision already has feedback (or the ``seq`` is taken).
            LogConflictError: ``seq`` is not after the last policy swap (nothing is written).
        """
        with self._write_lock:
            if int(fb.seq) == 0:
                fb = dataclasses.replace(fb, seq=self._next_feedback_seq())
            elif int(fb.seq) <= self._swap_head:
                raise LogConflictError(
                    f"the writer expected to append at log position {fb.seq}, but the policy swap at position "
                    f"{self._swap_head} comes later; nothing was written"
                )
            self._write(
                [
                    (
                        f"INSERT INTO feedback (seq, {FEEDBACK_COLUMNS}) VALUES ({', '.join('?' * N_FEEDBACK)})",
                        feedback_values(fb),
                    )
                ],
                conflicts=[("feedback.decision_id", repeated_feedback(fb.decision_id))],
                conflict=f"feedback seq {fb.seq} is already logged",
                marks=(0, fb.seq),
            )
        return fb.seq

    def get_feedback(self, decision_id: str) -> Feedback | None:
        row = self._one(f"SELECT seq, {FEEDBACK_COLUMNS} FROM feedback WHERE decision_id = ?", (decision_id,))
        return None if row is None else feedback_from_row(row)

    def feedback(self, after_seq: int = 0) -> Iterator[tuple[Feedback, Decision]]:
        """Feedback with ``seq > after_seq`` in apply order, each with its decision (for replay and audits)."""
        for r in self._rows(FEEDBACK_AFTER, (int(after_seq),)):
            yield feedback_from_row(r[:N_FEEDBACK]), self._decision_from_row(r[N_FEEDBACK:])

    def max_feedback_seq(self) -> int:
        return int(self._one("SELECT COALESCE(MAX(seq), 0) FROM feedback")[0])

    # ------------------------------------------------------------------ swaps
    def append_swap(self, version: str, save: Callable[[int], Path]) -> Checkpoint:
        """Append a swap entry at the next position with the policy ``save(position)`` writes as its checkpoint
        (see :meth:`~agents.online.stores.base.DecisionStore.append_swap`); the writer lock is held throughout."""
        with self._write_lock:
            position = self._next_feedback_seq()
            path = save(position)
            now = time.time()
            self._write(
                [
                    (
                        "INSERT INTO checkpoints (created_at, policy_version, path, last_feedback_seq) "
                        "VALUES (?, ?, ?, ?)",
                        (now, version, self._stored_path(Path(path)), position),
                    ),
                    (
                        "INSERT INTO swaps (position, checkpoint_id, appended_at) VALUES (?, last_insert_rowid(), ?)",
                        (position, now),
                    ),
                ],
                flush=True,
                conflict=f"log position {position} is already taken",
                marks=(0, position),
            )
            self._swap_head = position
            self._prune_checkpoints()
            row = self._one(_SWAPS_AFTER, (position - 1, 1))
        return self._swap_checkpoint(row[1:])

    def _swap_checkpoint(self, r: Sequence[Any]) -> Checkpoint:
        return Checkpoint(int(r[0]), float(r[1]), str(r[2]), str(self._resolve(r[3])), int(r[4]))

    def _swap_position(self) -> int:
        row = self._one("SELECT COALESCE(MAX(position), 0) FROM swaps") if self._has_swaps() else None
        return 0 if row is None else int(row[0])

    def _has_swaps(self) -> bool:
        """Whether the database has the ``swaps`` table (a read-only store of a file no writer of this version
        opened yet has none)."""
        if getattr(self, "_swaps_table", False):
            return True
        found = self._one("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'swaps'") is not None
        self._swaps_table = found
        return found

    # ------------------------------------------------------------------ the log
    def log_position(self) -> int:
        """The last log position committed: a feedback ``seq`` or a swap's position (the store has one writer,
        which numbers them in commit order)."""
        return max(self.max_feedback_seq(), self._swap_position())

    def log_entries(self, after: int = 0, limit: int = 1000) -> list[LogEntry]:
        """At most ``limit`` entries with ``position > after``, in log order: feedback and swaps merged."""
        n = max(int(limit), 0)
        rows = self._rows(FEEDBACK_AFTER + " LIMIT ?", (int(after), n))
        entries = [
            LogEntry(
                int(r[0]),
                "feedback",
                feedback_from_row(r[:N_FEEDBACK]),
                self._decision_from_row(r[N_FEEDBACK:]),
            )
            for r in rows
        ]
        if self._has_swaps():
            swaps = self._rows(_SWAPS_AFTER, (int(after), n))
            entries += [LogEntry(int(r[0]), "swap", checkpoint=self._swap_checkpoint(r[1:])) for r in swaps]
            entries.sort(key=lambda e: e.position)
        return entries[:n]

    def wait_for_log(self, after: int, timeout_s: float) -> int:
        """Poll the log's head until it passes ``after`` or ``timeout_s`` seconds have passed; return the head."""
        return poll_log(self.log_position, after, timeout_s)
