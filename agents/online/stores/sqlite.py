"""`SQLiteDecisionStore`: the durable log of an online router, on SQLite in WAL mode (standard library only).

Every decision, cascade step and feedback is committed before the router acknowledges it: one short transaction
each, or, in the HTTP service, one transaction shared by the concurrent requests of an event-loop turn (group
commit: :meth:`~agents.online.stores.common.SQLStoreBase.begin_deferred`).
It implements the :class:`~agents.online.stores.base.DecisionStore` protocol.
The tables are the router's source of truth:

- ``policies``: every policy version served (kind, model names, feature width);
- ``decisions``: one row per ``route`` call. ``seq`` is the decision sequence number (it seeds the sampling RNG
  of that decision), ``features`` the float32 vector the policy saw, ``probabilities`` the float64 distribution
  over the version's models *actually sampled from* (after ``allowed_models`` renormalisation) and ``propensity``
  the chosen model's probability under it;
- ``steps``: the signals, per-call costs and stop/continue draws of cascade decisions;
- ``feedback``: one row per closed decision, ``seq`` = the order in which feedback was applied to the policy
  (replayed in that order after a restart), ``source`` = ``client`` or ``default`` (wait time expired);
- ``checkpoints``: saved policy directories with the last feedback ``seq`` they include.

``export()`` turns the logged traffic into the canonical format: a partial-information
:class:`~routing_env.data.LoggedDataset` with ``logged_action`` and ``propensity``, where each decision only has
the chosen model's row.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from agents.online.errors import DecisionConflictError, DecisionNotFoundError
from agents.online.stores.base import Checkpoint, Decision, Feedback, LogEntry, PolicyVersion, Step
from agents.online.stores.common import SQLStoreBase, repeated_decision, repeated_feedback, repeated_request
from agents.online.stores.sql import (
    DECISION_COLUMNS,
    FEEDBACK_COLUMNS,
    decision_from_row,
    decision_values,
    feedback_from_row,
    feedback_values,
    poll_log,
    qualified,
)
from routing_env.errors import ConfigurationError

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS policies (
    version TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    kind TEXT NOT NULL,
    models TEXT NOT NULL,
    n_features INTEGER
);
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY,
    decision_id TEXT NOT NULL UNIQUE,
    request_id TEXT,
    created_at REAL NOT NULL,
    policy_version TEXT NOT NULL,
    kind TEXT NOT NULL,
    features BLOB NOT NULL,
    prompt TEXT,
    model TEXT NOT NULL,
    action INTEGER NOT NULL,
    propensity REAL NOT NULL,
    probabilities BLOB NOT NULL,
    allowed TEXT,
    cost_weight REAL NOT NULL,
    status TEXT NOT NULL,
    n_calls INTEGER NOT NULL,
    max_calls INTEGER NOT NULL
);
-- Partial indexes: most decisions carry no request id, and only open ones are looked up by age.
CREATE UNIQUE INDEX IF NOT EXISTS decisions_request ON decisions (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS decisions_open ON decisions (created_at) WHERE status = 'open';
CREATE TABLE IF NOT EXISTS steps (
    decision_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    created_at REAL NOT NULL,
    signal REAL NOT NULL,
    cost REAL,
    stop INTEGER NOT NULL,
    propensity REAL NOT NULL,
    forced INTEGER NOT NULL,
    PRIMARY KEY (decision_id, step)
);
CREATE TABLE IF NOT EXISTS feedback (
    seq INTEGER PRIMARY KEY,
    decision_id TEXT NOT NULL UNIQUE,
    received_at REAL NOT NULL,
    source TEXT NOT NULL,
    quality REAL NOT NULL,
    cost REAL NOT NULL,
    latency_s REAL,
    reward REAL NOT NULL,
    applied INTEGER NOT NULL,
    policy_version TEXT NOT NULL
);
-- Feedback closes its decision in the same (single-statement) transaction.
CREATE TRIGGER IF NOT EXISTS feedback_closes_decision AFTER INSERT ON feedback BEGIN
    UPDATE decisions SET status = CASE NEW.source WHEN 'client' THEN 'closed' ELSE 'expired' END
    WHERE decision_id = NEW.decision_id;
END;
CREATE TABLE IF NOT EXISTS checkpoints (
    id INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    policy_version TEXT NOT NULL,
    path TEXT NOT NULL,
    last_feedback_seq INTEGER NOT NULL
);
"""

_DECISION_COLUMNS = DECISION_COLUMNS
# The same columns of the decisions table aliased ``d`` in joins.
_D_COLUMNS = qualified(DECISION_COLUMNS, "d")
# Feedback after a log position, in log order, each with its decision.
_FEEDBACK_AFTER = (
    f"SELECT f.seq, {qualified(FEEDBACK_COLUMNS, 'f')}, {_D_COLUMNS} "
    "FROM feedback f JOIN decisions d ON d.decision_id = f.decision_id WHERE f.seq > ? ORDER BY f.seq"
)


# ---------------------------------------------------------------------------------------------------- the store
class SQLiteDecisionStore(SQLStoreBase):
    """Decisions, cascade steps, feedback and policy checkpoints in one SQLite file (WAL mode).

    Writes go through one connection guarded by a lock and are committed before the method returns; reads use one
    connection per thread, so readers never wait for the writer (WAL).

    Args:
        path: the database file (created with its tables when absent).
        synchronous: SQLite's ``synchronous`` pragma. ``"NORMAL"`` (default) makes every commit durable against a
            crash of the process (kill -9); ``"FULL"`` also against power loss, at the price of an fsync per write.
        checkpoint_dir: where policy checkpoints go; default ``<path>.checkpoints/`` beside the database.
        keep_checkpoints: how many policy checkpoint directories to keep on disk (the newest ones).
        wal_checkpoint_s: copy the write-ahead log into the database from a background thread every this many
            seconds, so that no request pays for it; ``None`` = SQLite's automatic checkpoints on the writer.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Synchronous = "NORMAL",
        checkpoint_dir: str | Path | None = None,
        keep_checkpoints: int = 2,
        wal_checkpoint_s: float | None = 1.0,
    ) -> None:
        if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ConfigurationError(
                f"synchronous must be 'OFF', 'NORMAL', 'FULL' or 'EXTRA', got {synchronous!r}"
            )
        if int(keep_checkpoints) < 1:
            raise ConfigurationError(f"keep_checkpoints must be ≥ 1, got {keep_checkpoints!r}")
        self.path = Path(path)
        if str(path) == ":memory:" or not str(path):
            raise ConfigurationError(
                f"path must be a database file (the store must survive restarts), got {str(path)!r}"
            )
        if self.path.is_dir():
            raise ConfigurationError(f"path must be a database file, got the directory {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.synchronous = synchronous
        self.checkpoint_dir = (
            Path(checkpoint_dir) if checkpoint_dir is not None else Path(str(self.path) + ".checkpoints")
        )
        self.keep_checkpoints = int(keep_checkpoints)
        # Re-entrant: a group-commit transaction (see begin_deferred) holds it from BEGIN to COMMIT, and the
        # owning thread's writes re-enter it meanwhile; other threads wait for the commit.
        self._write_lock = threading.RLock()
        self._group_open = False
        self._init_deferral()
        self._local = threading.local()
        self._closed = False
        self._writer = self._connect()
        with self._write_lock:
            self._writer.executescript(_SCHEMA)
        self._stop = threading.Event()
        self._wal_thread: threading.Thread | None = None
        if wal_checkpoint_s is not None:
            if not (float(wal_checkpoint_s) > 0):
                raise ConfigurationError(
                    f"wal_checkpoint_s must be > 0 seconds or None, got {wal_checkpoint_s!r}"
                )
            self._writer.execute("PRAGMA wal_autocheckpoint=0")
            self._wal_thread = threading.Thread(
                target=self._wal_loop, args=(float(wal_checkpoint_s),), name="routing-env-wal", daemon=True
            )
            self._wal_thread.start()

    # ------------------------------------------------------------------ connections
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _wal_loop(self, interval: float) -> None:
        """Background PASSIVE checkpoints: never block the writer, keep the WAL file small."""
        conn = self._connect()
        try:
            while not self._stop.wait(interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:  # busy or transient: the next round retries
                    continue
        finally:
            conn.close()

    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise ConfigurationError(f"the decision store {self.path} is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _write(self, statements: Sequence[tuple[str, Sequence[Any]]], *, flush: bool = False) -> None:
        """Run ``statements`` in one transaction and commit before returning.

        Inside :meth:`begin_deferred` … :meth:`end_deferred` the statements join the open group transaction
        instead, committed later by :meth:`commit_group`. A write outside a deferral (or with ``flush``) first
        commits an open group, so it is never acknowledged ahead of earlier writes.
        """
        if self._closed:
            raise ConfigurationError(f"the decision store {self.path} is closed")
        with self._write_lock:
            if self._deferring == threading.get_ident() and not flush:
                opened = not self._group_open
                if opened:
                    self._begin_group()
                try:
                    self._run_in_group(statements)
                except BaseException:
                    if opened:  # the group holds nothing else and nobody waits for it: end it now
                        self._end_empty_group()
                    raise
                self._deferred_group = self._group_id
                return
            if self._group_open:
                self.commit_group()
                error = self._group_errors.get(self._group_id)
                if error is not None:
                    raise error
            # One statement autocommits: one implicit transaction, one round of file locking.
            _run_atomically(self._writer, statements, "BEGIN IMMEDIATE", ("ROLLBACK",), "COMMIT")

    # ------------------------------------------------------------------ group commit
    def commit_group(self) -> None:
        """Commit the open group transaction, if any. On failure it is rolled back and the error is kept for
        :meth:`group_error` (it is not raised: the waiters of the group each learn it)."""
        with self._write_lock:
            if not self._group_open:
                return
            group = self._group_id
            try:
                self._commit_sql()
            except BaseException as exc:
                # The failed COMMIT may have ended the transaction already.
                with contextlib.suppress(sqlite3.Error):
                    self._writer.execute("ROLLBACK")
                self._keep_group_error(group, exc)
            finally:
                self._group_open = False
                self._write_lock.release()  # taken by _begin_group

    def _begin_group(self) -> None:
        self._write_lock.acquire()  # held until commit_group, on top of the caller's own hold
        try:
            self._writer.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._write_lock.release()
            raise
        self._group_id += 1
        self._group_open = True

    def _end_empty_group(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._writer.execute("ROLLBACK")
        self._group_open = False
        self._write_lock.release()  # taken by _begin_group

    def _run_in_group(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        # A failure undoes only this write's statements, not the group's earlier ones.
        _run_atomically(
            self._writer,
            statements,
            "SAVEPOINT write",
            ("ROLLBACK TO write", "RELEASE write"),
            "RELEASE write",
        )

    def _commit_sql(self) -> None:
        self._writer.execute("COMMIT")

    def close(self) -> None:
        """Close the writer connection (reader connections close with their threads)."""
        if not self._closed:
            self._closed = True
            self._stop.set()
            if self._wal_thread is not None:
                self._wal_thread.join(timeout=5)
            with self._write_lock:
                self.commit_group()
                self._writer.close()
            conn = getattr(self._local, "conn", None)
            if conn is not None:
                conn.close()
                self._local.conn = None

    @property
    def location(self) -> str:
        """The database file, for messages."""
        return str(self.path)

    def __enter__(self) -> SQLiteDecisionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    _placeholder = "?"

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._reader().execute(sql, params).fetchall()

    def _export_name(self) -> str:
        return self.path.name

    def __repr__(self) -> str:
        return f"SQLiteDecisionStore({str(self.path)!r}, synchronous={self.synchronous!r})"

    # ------------------------------------------------------------------ policies and checkpoints
    def record_policy(
        self, version: str, kind: str, models: Sequence[str], n_features: int | None, created_at: float
    ) -> None:
        """Register a policy version (a version id names one policy for the life of the store)."""
        if self._recorded(version, kind, models):
            return
        self._write(
            [
                (
                    "INSERT INTO policies (version, created_at, kind, models, n_features) VALUES (?, ?, ?, ?, ?)",
                    (version, created_at, kind, json.dumps(list(models)), n_features),
                )
            ]
        )

    def policy_versions(self) -> dict[str, PolicyVersion]:
        """Every version served, in order of registration."""
        rows = self._reader().execute(
            "SELECT version, created_at, kind, models, n_features FROM policies ORDER BY created_at, rowid"
        )
        return {
            r[0]: PolicyVersion(r[0], float(r[1]), r[2], tuple(json.loads(r[3])), r[4])
            for r in rows.fetchall()
        }

    def add_checkpoint(self, version: str, path: str | Path, last_feedback_seq: int) -> Checkpoint:
        """Record a saved policy directory and delete checkpoints older than the ``keep_checkpoints`` newest."""
        now = time.time()
        self._write(
            [
                (
                    "INSERT INTO checkpoints (created_at, policy_version, path, last_feedback_seq) VALUES (?, ?, ?, ?)",
                    (now, version, str(path), int(last_feedback_seq)),
                )
            ],
            # Committed at once (with any open group before it): the pruning below reads the committed list.
            flush=True,
        )
        rows = self._reader().execute("SELECT id, path FROM checkpoints ORDER BY id DESC").fetchall()
        for _, old in rows[self.keep_checkpoints :]:
            _remove_tree(Path(old))
        ckpt = self.latest_checkpoint()
        assert ckpt is not None
        return ckpt

    def latest_checkpoint(self) -> Checkpoint | None:
        """The newest checkpoint whose directory still exists, or ``None``."""
        rows = self._reader().execute(
            "SELECT id, created_at, policy_version, path, last_feedback_seq FROM checkpoints ORDER BY id DESC"
        )
        for r in rows.fetchall():
            if Path(r[3]).is_dir():
                return Checkpoint(int(r[0]), float(r[1]), r[2], r[3], int(r[4]))
        return None

    def checkpoint_path(self, version: str, last_feedback_seq: int) -> Path:
        """Directory for a new checkpoint of ``version`` holding feedback up to ``last_feedback_seq``."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in version)
        return self.checkpoint_dir / f"{last_feedback_seq:012d}-{safe}-{time.time_ns()}"

    # ------------------------------------------------------------------ decisions
    def insert_decision(self, d: Decision) -> None:
        self._insert(
            f"INSERT INTO decisions ({_DECISION_COLUMNS}) VALUES ({', '.join('?' * 17)})",
            decision_values(d),
            [
                ("decisions.request_id", repeated_request(d.request_id)),
                ("failed: decisions.", repeated_decision(d)),
            ],
        )

    def _insert(
        self, sql: str, params: Sequence[Any], conflicts: Sequence[tuple[str, DecisionConflictError]]
    ) -> None:
        """One insert; a uniqueness failure naming a constraint of ``conflicts`` raises its error instead."""
        try:
            self._write([(sql, params)])
        except sqlite3.IntegrityError as exc:
            for constraint, error in conflicts:
                if constraint in str(exc):
                    raise error from exc
            raise

    def _decision_from_row(self, row: Sequence[Any]) -> Decision:
        return decision_from_row(row, self._models_of(row[4]))

    def _models_of(self, version: str) -> tuple[str, ...]:
        cache: dict[str, tuple[str, ...]] | None = getattr(self._local, "models", None)
        if cache is None:
            cache = {}
            self._local.models = cache
        models = cache.get(version)
        if models is None:
            row = (
                self._reader().execute("SELECT models FROM policies WHERE version = ?", (version,)).fetchone()
            )
            models = tuple(json.loads(row[0])) if row else ()
            cache[version] = models
        return models

    def get_decision(self, decision_id: str) -> Decision:
        """The decision with that id; :class:`DecisionNotFoundError` when the store never issued it."""
        row = (
            self._reader()
            .execute(f"SELECT {_DECISION_COLUMNS} FROM decisions WHERE decision_id = ?", (str(decision_id),))
            .fetchone()
        )
        if row is None:
            raise DecisionNotFoundError(f"unknown decision_id {decision_id!r}: this store never issued it")
        return self._decision_from_row(row)

    def find_request(self, request_id: str) -> Decision | None:
        """The decision made for the caller's ``request_id``, if any (retries get the same decision)."""
        row = (
            self._reader()
            .execute(f"SELECT {_DECISION_COLUMNS} FROM decisions WHERE request_id = ?", (str(request_id),))
            .fetchone()
        )
        return None if row is None else self._decision_from_row(row)

    def decisions(self, status: str | None = None) -> list[Decision]:
        """Every decision (or those with ``status``), in decision order."""
        sql = f"SELECT {_DECISION_COLUMNS} FROM decisions"
        params: tuple[Any, ...] = ()
        if status is not None:
            sql += " WHERE status = ?"
            params = (status,)
        rows = self._reader().execute(sql + " ORDER BY seq", params).fetchall()
        return [self._decision_from_row(r) for r in rows]

    def open_before(self, before: float) -> list[str]:
        """Ids of open decisions created before UNIX time ``before`` (the wait time has expired)."""
        rows = self._reader().execute(
            "SELECT decision_id FROM decisions WHERE status = 'open' AND created_at < ? ORDER BY seq",
            (before,),
        )
        return [r[0] for r in rows.fetchall()]

    def max_decision_seq(self) -> int:
        row = self._reader().execute("SELECT COALESCE(MAX(seq), 0) FROM decisions").fetchone()
        return int(row[0])

    # ------------------------------------------------------------------ cascade steps
    def insert_step(self, step: Step, n_calls: int, model: str, action: int) -> None:
        """Record a cascade step with the decision's new number of calls and current model, in one transaction."""
        self._write(
            [
                (
                    "INSERT INTO steps (decision_id, step, created_at, signal, cost, stop, propensity, forced) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        step.decision_id,
                        step.step,
                        step.created_at,
                        step.signal,
                        step.cost,
                        int(step.stop),
                        step.propensity,
                        int(step.forced),
                    ),
                ),
                (
                    "UPDATE decisions SET n_calls = ?, model = ?, action = ? WHERE decision_id = ?",
                    (n_calls, model, action, step.decision_id),
                ),
            ]
        )

    def steps(self, decision_id: str) -> list[Step]:
        rows = self._reader().execute(
            "SELECT decision_id, step, created_at, signal, cost, stop, propensity, forced FROM steps "
            "WHERE decision_id = ? ORDER BY step",
            (decision_id,),
        )
        return [
            Step(r[0], int(r[1]), float(r[2]), float(r[3]), r[4], bool(r[5]), float(r[6]), bool(r[7]))
            for r in rows.fetchall()
        ]

    # ------------------------------------------------------------------ feedback
    def insert_feedback(self, fb: Feedback) -> int:
        """Record feedback and close its decision (``closed``; ``expired`` for a default), in one transaction.

        The store has one writer, so ``fb.seq`` (the router's count) is the feedback's log position.
        """
        self._insert(
            f"INSERT INTO feedback (seq, {FEEDBACK_COLUMNS}) VALUES ({', '.join('?' * 10)})",
            feedback_values(fb),
            [("feedback.decision_id", repeated_feedback(fb.decision_id))],
        )
        return fb.seq

    def mark_expired(self, decision_id: str) -> None:
        """Close a decision whose wait time expired without applying any reward."""
        self._write([("UPDATE decisions SET status = 'expired' WHERE decision_id = ?", (decision_id,))])

    def get_feedback(self, decision_id: str) -> Feedback | None:
        row = (
            self._reader()
            .execute(
                "SELECT seq, decision_id, received_at, source, quality, cost, latency_s, reward, applied, "
                "policy_version FROM feedback WHERE decision_id = ?",
                (decision_id,),
            )
            .fetchone()
        )
        return None if row is None else feedback_from_row(row)

    def feedback(self, after_seq: int = 0) -> Iterator[tuple[Feedback, Decision]]:
        """Feedback with ``seq > after_seq`` in apply order, each with its decision (for replay and audits)."""
        rows = self._reader().execute(_FEEDBACK_AFTER, (int(after_seq),))
        for r in rows.fetchall():
            yield feedback_from_row(r[:10]), self._decision_from_row(r[10:])

    def max_feedback_seq(self) -> int:
        row = self._reader().execute("SELECT COALESCE(MAX(seq), 0) FROM feedback").fetchone()
        return int(row[0])

    # ------------------------------------------------------------------ the log (feedback in apply order)
    def log_position(self) -> int:
        """The last feedback ``seq`` (the store has one writer, which numbers feedback in commit order)."""
        return self.max_feedback_seq()

    def log_entries(self, after: int = 0, limit: int = 1000) -> list[LogEntry]:
        """At most ``limit`` feedback entries with ``seq > after``, in log order."""
        rows = self._reader().execute(_FEEDBACK_AFTER + " LIMIT ?", (int(after), max(int(limit), 0)))
        return [
            LogEntry(int(r[0]), "feedback", feedback_from_row(r[:10]), self._decision_from_row(r[10:]))
            for r in rows.fetchall()
        ]

    def wait_for_log(self, after: int, timeout_s: float) -> int:
        """Poll the log's head until it passes ``after`` or ``timeout_s`` seconds have passed; return the head."""
        return poll_log(self.log_position, after, timeout_s)


def _run_atomically(
    conn: sqlite3.Connection,
    statements: Sequence[tuple[str, Sequence[Any]]],
    begin: str,
    undo: Sequence[str],
    end: str,
) -> None:
    """Run ``statements`` all or none: one statement on its own (atomic by itself), several between ``begin`` and
    ``end``, with ``undo`` run (and the error re-raised) when one fails."""
    if len(statements) == 1:
        conn.execute(*statements[0])
        return
    cur = conn.cursor()
    cur.execute(begin)
    try:
        for sql, params in statements:
            cur.execute(sql, params)
    except BaseException:
        for statement in undo:
            cur.execute(statement)
        raise
    cur.execute(end)


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
