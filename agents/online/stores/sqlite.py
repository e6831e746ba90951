"""`SQLiteDecisionStore`: the durable log of an online router, on SQLite in WAL mode (standard library only).

Every decision, cascade step and feedback is committed before the router acknowledges it: one short transaction
each, or, in the HTTP service, one transaction shared by the concurrent requests of an event-loop turn (group
commit: :meth:`SQLiteDecisionStore.begin_deferred`). It implements the
:class:`~agents.online.stores.base.DecisionStore` protocol; the tables are described in
:mod:`agents.online.stores.sqlite_schema`. The store is the log: feedback ``seq`` and policy swaps' positions,
assigned by the one writer in commit order (:mod:`agents.online.stores.sqlite_log`:
:meth:`SQLiteDecisionStore.log_entries` reads it, :meth:`~SQLiteDecisionStore.wait_for_log` polls its head).

Guards around the file:

- one writer: ``<database>.lock`` is held (``flock``) while the store is open for writing, so a second process is
  refused with a clear message (:mod:`agents.online.stores.lockfile`); readers open it with ``readonly=True``;
- no silent loss: the lock file records the highest sequence numbers committed, and a database that holds fewer
  on open (its write-ahead log deleted, truncated or zeroed) is refused;
- a writable file: opening for writing writes once, so a read-only file system is refused at start, not at the
  first request;
- a bounded write-ahead log: background PASSIVE checkpoints copy it into the database without blocking anyone,
  and when it still grows past ``wal_max_bytes`` (readers keep a busy server from ever resetting it) the writer
  runs a TRUNCATE checkpoint right after a commit, while no group transaction is open;
- checkpoint directories are recorded relative to the database's directory, so a restart from another working
  directory (or a moved directory) finds them.

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
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from agents.online.errors import DecisionConflictError, DecisionNotFoundError, StoreError
from agents.online.stores.base import Call, Checkpoint, Decision, PolicyVersion, Step
from agents.online.stores.calls import CALL_COLUMNS, call_from_row, call_row
from agents.online.stores.common import (
    SQLStoreBase,
    repeated_call,
    repeated_decision,
    repeated_request,
)
from agents.online.stores.lockfile import WriterLock
from agents.online.stores.rollout import ROLLOUT_SCHEMA, SQLRolloutRecords
from agents.online.stores.sql import (
    DECISION_COLUMNS,
    N_DECISION_COLUMNS,
    REROUTE,
    STEP_COLUMNS,
    decision_from_row,
    decision_values,
    reroute_values,
    step_from_row,
    step_values,
)
from agents.online.stores.sqlite_log import SQLiteLog
from agents.online.stores.sqlite_schema import SCHEMA, migrate, run_atomically
from routing_env.errors import ConfigurationError

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
Statements = Sequence[tuple[str, Sequence[Any]]]
# Uniqueness failures of a write: (text of the constraint in SQLite's message, the error to raise instead).
Conflicts = Sequence[tuple[str, DecisionConflictError]]

#: Default bound of the write-ahead log file (bytes) before the writer truncates it.
DEFAULT_WAL_MAX_BYTES = 16 << 20
# How long a TRUNCATE checkpoint may wait for readers before it gives up until the next commit (ms): it runs on
# the writer, so this is the longest it can delay the next request.
_TRUNCATE_WAIT_MS = 200


# ---------------------------------------------------------------------------------------------------- the store
class SQLiteDecisionStore(SQLiteLog, SQLStoreBase, SQLRolloutRecords):
    """Decisions, cascade steps, feedback and policy checkpoints in one SQLite file (WAL mode).

    Writes go through one connection guarded by a lock and are committed before the method returns; reads use one
    connection per thread, so readers never wait for the writer (WAL).

    Args:
        path: the database file (created with its tables when absent, unless ``readonly``).
        synchronous: SQLite's ``synchronous`` pragma. ``"NORMAL"`` (default) makes every commit durable against a
            crash of the process (kill -9); ``"FULL"`` also against power loss, at the price of an fsync per write.
        checkpoint_dir: where policy checkpoints go; default ``<path>.checkpoints/`` beside the database.
        keep_checkpoints: how many policy checkpoint directories to keep on disk (the newest ones).
        wal_checkpoint_s: copy the write-ahead log into the database from a background thread every this many
            seconds, so that no request pays for it; ``None`` = SQLite's automatic checkpoints on the writer.
        wal_max_bytes: when the write-ahead log file is larger than this after a commit, truncate it (a TRUNCATE
            checkpoint on the writer, waiting at most 0.2 s for readers); also SQLite's ``journal_size_limit``.
        readonly: open for reading only (audits and exports beside a running server): no lock, no writes.

    Raises:
        ConfigurationError: a bad option; another process writes the store; the database lost committed
            transactions (see the module docstring); the file or its directory is not writable.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Synchronous = "NORMAL",
        checkpoint_dir: str | Path | None = None,
        keep_checkpoints: int = 2,
        wal_checkpoint_s: float | None = 1.0,
        wal_max_bytes: int = DEFAULT_WAL_MAX_BYTES,
        readonly: bool = False,
    ) -> None:
        if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ConfigurationError(
                f"synchronous must be 'OFF', 'NORMAL', 'FULL' or 'EXTRA', got {synchronous!r}"
            )
        if int(keep_checkpoints) < 1:
            raise ConfigurationError(f"keep_checkpoints must be ≥ 1, got {keep_checkpoints!r}")
        if wal_checkpoint_s is not None and not (float(wal_checkpoint_s) > 0):
            raise ConfigurationError(
                f"wal_checkpoint_s must be > 0 seconds or None, got {wal_checkpoint_s!r}"
            )
        if isinstance(wal_max_bytes, bool) or int(wal_max_bytes) < 1 << 16:
            raise ConfigurationError(f"wal_max_bytes must be ≥ 65536 bytes, got {wal_max_bytes!r}")
        self.path = Path(path)
        if str(path) == ":memory:" or not str(path):
            raise ConfigurationError(
                f"path must be a database file (the store must survive restarts), got {str(path)!r}"
            )
        if self.path.is_dir():
            raise ConfigurationError(f"path must be a database file, got the directory {self.path}")
        self.synchronous = synchronous
        self.readonly = bool(readonly)
        # Absolute from here on: a later change of working directory must not move the store's files.
        self._file = self.path.resolve()
        self._dir = self._file.parent
        self.checkpoint_dir = (
            Path(checkpoint_dir).resolve()
            if checkpoint_dir is not None
            else Path(str(self._file) + ".checkpoints")
        )
        self.keep_checkpoints = int(keep_checkpoints)
        self.wal_max_bytes = int(wal_max_bytes)
        self._wal_file = Path(str(self._file) + "-wal")
        # Re-entrant: a group-commit transaction (see begin_deferred) holds it from BEGIN to COMMIT, and the
        # owning thread's writes re-enter it meanwhile; other threads wait for the commit.
        self._write_lock = threading.RLock()
        self._group_open = False
        self._init_deferral()
        self._savepoint = False  # the deferral's own savepoint is open in the group transaction
        # Highest (decision seq, feedback seq) written: by the open deferral, by the open group, and committed.
        self._deferral_marks = (0, 0)
        self._group_marks = (0, 0)
        self._marks = (0, 0)
        self._swap_head = 0
        self._local = threading.local()
        self._closed = False
        self._lock: WriterLock | None = None
        self._stop = threading.Event()
        self._wal_thread: threading.Thread | None = None
        if self.readonly:
            if not self.path.is_file():
                raise ConfigurationError(f"cannot open {self.path} read-only: no such database file")
            self._writer: sqlite3.Connection | None = None
            return
        self._open_writer()
        if wal_checkpoint_s is not None:
            self._writer_conn().execute("PRAGMA wal_autocheckpoint=0")
            self._wal_thread = threading.Thread(
                target=self._wal_loop, args=(float(wal_checkpoint_s),), name="routing-env-wal", daemon=True
            )
            self._wal_thread.start()

    # ------------------------------------------------------------------ opening for writing
    def _open_writer(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(f"cannot create the directory of the store {self.path}: {exc}") from None
        self._lock = WriterLock(self.path)
        self._writer = None
        try:
            self._writer = self._connect()
            self._check_marks()
            with self._write_lock:
                self._writer.executescript(SCHEMA + ROLLOUT_SCHEMA)
                migrate(self._writer)
                # A write on open: a read-only file or file system is refused now, not at the first request.
                self._writer.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('writer_opened_at', ?)",
                    (repr(time.time()),),
                )
                self._writer.execute(f"PRAGMA journal_size_limit={self.wal_max_bytes}")
        except sqlite3.Error as exc:
            self._abandon()
            raise ConfigurationError(
                f"cannot open the store {self.path} for writing ({exc}): routing-env needs a writable database "
                "file and directory (is the file system read-only?)"
            ) from None
        except BaseException:
            self._abandon()
            raise
        self._swap_head = self._swap_position()
        self._marks = (self.max_decision_seq(), self.log_position())
        self._lock.record(*self._marks, sync=True)

    def _abandon(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(sqlite3.Error):
                self._writer.close()
        if self._lock is not None:
            self._lock.release()
        self._closed = True

    def _check_marks(self) -> None:
        """Refuse a database holding less than its last writer committed (a lost write-ahead log)."""
        assert self._lock is not None and self._writer is not None
        marks = self._lock.marks()
        if marks is None:
            return
        tables = {r[0] for r in self._writer.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        # Feedback and swaps share the log's positions; a table whose pages were in a lost write-ahead log is
        # unreadable, which says the same as a short one.
        seqs, damaged = [0, 0], False
        sources = (("decisions", "seq"), ("feedback", "seq"), ("swaps", "position"))
        for i, (table, column) in enumerate(sources):
            if table not in tables:
                continue
            try:
                top = self._writer.execute(f"SELECT COALESCE(MAX({column}), 0) FROM {table}").fetchone()[0]
            except sqlite3.DatabaseError:
                damaged = True
                continue
            seqs[min(i, 1)] = max(seqs[min(i, 1)], int(top))
        if not damaged and seqs[0] >= marks.decision_seq and seqs[1] >= marks.feedback_seq:
            return
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(marks.recorded_at))
        raise ConfigurationError(
            f"the store {self.path} holds decisions up to seq {seqs[0]} and its log up to position {seqs[1]}, but "
            f"its last writer had committed decisions up to seq {marks.decision_seq} and the log up to position "
            f"{marks.feedback_seq} (recorded in {self._lock.path} at {when}): its write-ahead log "
            f"{self._wal_file.name} was deleted, truncated or zeroed, and what it held is lost. Put back the "
            f"database together with its -wal file; to serve from what remains anyway, delete {self._lock.path}"
        )

    # ------------------------------------------------------------------ connections
    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            uri = f"file:{urllib.parse.quote(str(self._file))}?mode=ro"
            return sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn = sqlite3.connect(self._file, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _writer_conn(self) -> sqlite3.Connection:
        if self._closed:
            raise ConfigurationError(f"the decision store {self.path} is closed")
        if self._writer is None:
            raise ConfigurationError(
                f"the decision store {self.path} was opened read-only; it takes no writes"
            )
        return self._writer

    def _wal_loop(self, interval: float) -> None:
        """Background PASSIVE checkpoints: never block the writer, keep the WAL file small."""
        conn = self._connect()
        try:
            while not self._stop.wait(interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
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

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """All rows of a read (the cursor exhausted, so no read transaction stays open)."""
        conn = self._reader()
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"the decision store {self.path} could not be read: {exc}") from None

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    _placeholder = "?"

    # ------------------------------------------------------------------ writes
    def _write(
        self,
        statements: Statements,
        *,
        flush: bool = False,
        conflict: str = "the write conflicts with a row already logged",
        conflicts: Conflicts = (),
        marks: tuple[int, int] = (0, 0),
    ) -> None:
        """Run ``statements`` in one transaction and commit before returning.

        Inside :meth:`begin_deferred` … :meth:`end_deferred` the statements join the open group transaction
        instead, committed later by :meth:`commit_group`. A write outside a deferral (or with ``flush``) first
        commits an open group, so it is never acknowledged ahead of earlier writes. A uniqueness violation is a
        :class:`DecisionConflictError` (the error of ``conflicts`` whose constraint the message names, else one
        saying ``conflict``), any other failure a :class:`StoreError`; ``marks`` are the (decision, feedback)
        sequence numbers the statements log.
        """
        writer = self._writer_conn()
        with self._write_lock:
            try:
                if self._deferring == threading.get_ident() and not flush:
                    opened = not self._group_open
                    if opened:
                        self._begin_group()
                    try:
                        if not self._savepoint:
                            writer.execute("SAVEPOINT request")
                            self._savepoint = True
                        self._run_in_group(statements)
                    except BaseException:
                        if opened:  # the group holds nothing else and nobody waits for it: end it now
                            self._end_empty_group()
                        raise
                    self._deferred_group = self._group_id
                    self._deferral_marks = _max_marks(self._deferral_marks, marks)
                    return
                if self._group_open:
                    self.commit_group()
                    error = self._group_errors.get(self._group_id)
                    if error is not None:
                        raise error
                # One statement autocommits: one implicit transaction, one round of file locking.
                run_atomically(writer, statements, "BEGIN IMMEDIATE", ("ROLLBACK",), "COMMIT")
            except sqlite3.IntegrityError as exc:
                for constraint, error in conflicts:
                    if constraint in str(exc):
                        raise error from None
                raise DecisionConflictError(f"{conflict} ({exc})") from None
            except sqlite3.Error as exc:
                raise StoreError(f"the decision store {self.path} could not write: {exc}") from None
            self._committed(marks)

    def _committed(self, marks: tuple[int, int]) -> None:
        """After a commit: advance and record the high-water marks, and keep the write-ahead log bounded."""
        new = _max_marks(self._marks, marks)
        if new != self._marks:
            self._marks = new
            if self._lock is not None:
                with contextlib.suppress(OSError):  # a full disk: the next commit records them
                    self._lock.record(*new)
        self._bound_wal()

    def _bound_wal(self) -> None:
        """Truncate the write-ahead log when it outgrew ``wal_max_bytes`` (on the writer, no transaction open)."""
        try:
            size = self._wal_file.stat().st_size
        except OSError:
            return
        if size <= self.wal_max_bytes or self._writer is None:
            return
        writer = self._writer
        try:
            writer.execute(f"PRAGMA busy_timeout={_TRUNCATE_WAIT_MS}")
            writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error:  # readers outlasted the wait: the next commit tries again
            pass
        finally:
            with contextlib.suppress(sqlite3.Error):
                writer.execute("PRAGMA busy_timeout=30000")

    # ------------------------------------------------------------------ group commit
    def begin_deferred(self) -> None:
        """Start deferring the calling thread's writes into one shared transaction (group commit).

        Until :meth:`end_deferred`, writes join an open group transaction (begun on the first write) and return
        without committing; :meth:`commit_group` commits them all at once. A server calls this around each
        request and acknowledges the requests only after the group committed, so every acknowledged write is
        still committed first, while concurrent requests share one commit. The group holds the write lock from
        its first write to its commit: other threads' writes wait, so deferring suits a single-threaded event
        loop that commits on its next iteration. Each deferral's writes sit in a savepoint of their own, so a
        failed request can be undone alone (:meth:`end_deferred` with ``discard``).
        """
        self._writer_conn()
        self._deferring = threading.get_ident()
        self._deferred_group = None
        self._savepoint = False
        self._deferral_marks = (0, 0)

    def end_deferred(self, discard: bool = False) -> int | None:
        """Stop deferring; the id of the group this deferral wrote into (to pass to :meth:`group_error`), if any.

        With ``discard``, this deferral's writes are rolled back to its savepoint (the group's other writes stay)
        and ``None`` is returned; writes a flush already committed cannot be undone.
        """
        self._deferring = None
        group, self._deferred_group = self._deferred_group, None
        marks, self._deferral_marks = self._deferral_marks, (0, 0)
        if not self._savepoint:
            return group
        self._savepoint = False
        writer = self._writer_conn()
        if discard:
            # If the failure ended the whole transaction, the group's COMMIT fails and its waiters learn it.
            with contextlib.suppress(sqlite3.Error):
                writer.execute("ROLLBACK TO request")
                writer.execute("RELEASE request")
            return None
        try:
            writer.execute("RELEASE request")
        except sqlite3.Error as exc:
            raise StoreError(f"the decision store {self.path} could not write: {exc}") from None
        self._group_marks = _max_marks(self._group_marks, marks)
        return group

    def commit_group(self) -> None:
        """Commit the open group transaction, if any. On failure it is rolled back and the error is kept for
        :meth:`group_error` (it is not raised: the waiters of the group each learn it)."""
        with self._write_lock:
            if not self._group_open:
                return
            group = self._group_id
            # A deferral still open (a flush inside it) is committed with the group.
            marks = _max_marks(self._group_marks, self._deferral_marks if self._savepoint else (0, 0))
            self._group_marks, self._savepoint = (0, 0), False
            self._deferral_marks = (0, 0)
            ok = False
            try:
                self._commit_sql()
                ok = True
            except BaseException as exc:
                # The failed COMMIT may have ended the transaction already.
                with contextlib.suppress(sqlite3.Error):
                    self._writer_conn().execute("ROLLBACK")
                self._keep_group_error(group, exc)
            finally:
                self._group_open = False
                self._write_lock.release()  # taken by _begin_group
            if ok:
                self._committed(marks)

    def _begin_group(self) -> None:
        self._write_lock.acquire()  # held until commit_group, on top of the caller's own hold
        try:
            self._writer_conn().execute("BEGIN IMMEDIATE")
        except BaseException:
            self._write_lock.release()
            raise
        self._group_id += 1
        self._group_open = True

    def _end_empty_group(self) -> None:
        """Roll back a group that only a refused write opened, releasing the write lock at once."""
        with contextlib.suppress(sqlite3.Error):
            self._writer_conn().execute("ROLLBACK")
        self._group_open, self._savepoint = False, False
        self._write_lock.release()  # taken by _begin_group

    def _run_in_group(self, statements: Statements) -> None:
        # A failure undoes only this write's statements, not the group's earlier ones.
        run_atomically(
            self._writer_conn(),
            statements,
            "SAVEPOINT write",
            ("ROLLBACK TO write", "RELEASE write"),
            "RELEASE write",
        )

    def _commit_sql(self) -> None:
        self._writer_conn().execute("COMMIT")

    def close(self) -> None:
        """Commit what is open, record the marks, close the writer and release the lock (reader connections
        close with their threads)."""
        if self._closed:
            return
        self._stop.set()
        if self._wal_thread is not None:
            self._wal_thread.join(timeout=5)
        if self._writer is not None:
            with self._write_lock:
                self.commit_group()
                self._closed = True
                self._writer.close()
        self._closed = True
        if self._lock is not None:
            with contextlib.suppress(OSError):
                self._lock.record(*self._marks, sync=True)
            self._lock.release()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _export_name(self) -> str:
        return self.path.name

    @property
    def location(self) -> str:
        """The database file, for messages."""
        return str(self.path)

    def __enter__(self) -> SQLiteDecisionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = ", readonly=True" if self.readonly else ""
        return f"SQLiteDecisionStore({str(self.path)!r}, synchronous={self.synchronous!r}{mode})"

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
            ],
            conflict=f"policy version {version!r} is already recorded",
        )

    def policy_versions(self) -> dict[str, PolicyVersion]:
        """Every version served, in order of registration."""
        rows = self._rows(
            "SELECT version, created_at, kind, models, n_features FROM policies ORDER BY created_at, rowid"
        )
        return {r[0]: PolicyVersion(r[0], float(r[1]), r[2], tuple(json.loads(r[3])), r[4]) for r in rows}

    def add_checkpoint(self, version: str, path: str | Path, last_feedback_seq: int) -> Checkpoint:
        """Record a saved policy directory and delete checkpoints older than the ``keep_checkpoints`` newest."""
        now = time.time()
        self._write(
            [
                (
                    "INSERT INTO checkpoints (created_at, policy_version, path, last_feedback_seq) VALUES (?, ?, ?, ?)",
                    (now, version, self._stored_path(Path(path)), int(last_feedback_seq)),
                )
            ],
            # Committed at once (with any open group before it): the pruning below reads the committed list.
            flush=True,
        )
        self._prune_checkpoints()
        ckpt = self.latest_checkpoint()
        assert ckpt is not None
        return ckpt

    def _prune_checkpoints(self) -> None:
        """Delete the directories of checkpoints older than the ``keep_checkpoints`` newest, except swaps' (a
        reader of the log behind a swap loads its policy from there)."""
        rows = self._rows(
            "SELECT id, path FROM checkpoints WHERE id NOT IN (SELECT checkpoint_id FROM swaps) ORDER BY id DESC"
        )
        for _, old in rows[self.keep_checkpoints :]:
            _remove_tree(self._resolve(old))

    def latest_checkpoint(self) -> Checkpoint | None:
        """The newest checkpoint recorded (its path resolved for this process, which may not exist), or ``None``."""
        r = self._one(
            "SELECT id, created_at, policy_version, path, last_feedback_seq FROM checkpoints ORDER BY id DESC "
            "LIMIT 1"
        )
        if r is None:
            return None
        return Checkpoint(int(r[0]), float(r[1]), r[2], str(self._resolve(r[3])), int(r[4]))

    def checkpoint_path(self, version: str, last_feedback_seq: int) -> Path:
        """Directory for a new checkpoint of ``version`` holding feedback up to ``last_feedback_seq``."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in version)
        return self.checkpoint_dir / f"{last_feedback_seq:012d}-{safe}-{time.time_ns()}"

    def _stored_path(self, path: Path) -> str:
        """``path`` as recorded: relative to the database's directory when inside it, else absolute."""
        full = path.resolve()
        try:
            return full.relative_to(self._dir).as_posix()
        except ValueError:
            return str(full)

    def _resolve(self, stored: str) -> Path:
        """A recorded checkpoint path as this process reaches it.

        Relative paths are relative to the database's directory; stores written by earlier versions recorded them
        relative to the server's working directory, so those are also looked for in ``checkpoint_dir`` by name.
        """
        p = Path(stored)
        if p.is_absolute():
            return p
        for candidate in (self._dir / p, self.checkpoint_dir / p.name):
            if candidate.is_dir():
                return candidate
        return self._dir / p

    # ------------------------------------------------------------------ decisions
    def insert_decision(self, d: Decision) -> None:
        self._write(
            [
                (
                    f"INSERT INTO decisions ({DECISION_COLUMNS}) VALUES ({', '.join('?' * N_DECISION_COLUMNS)})",
                    decision_values(d),
                )
            ],
            conflicts=[
                ("decisions.request_id", repeated_request(d.request_id)),
                ("failed: decisions.", repeated_decision(d)),
            ],
            marks=(d.seq, 0),
        )

    def _decision_from_row(self, row: Sequence[Any]) -> Decision:
        return decision_from_row(row, self._models_of(row[4]))

    def _models_of(self, version: str) -> tuple[str, ...]:
        cache: dict[str, tuple[str, ...]] | None = getattr(self._local, "models", None)
        if cache is None:
            cache = {}
            self._local.models = cache
        models = cache.get(version)
        if models is None:
            row = self._one("SELECT models FROM policies WHERE version = ?", (version,))
            models = tuple(json.loads(row[0])) if row else ()
            cache[version] = models
        return models

    def get_decision(self, decision_id: str) -> Decision:
        """The decision with that id; :class:`DecisionNotFoundError` when the store never issued it."""
        row = self._one(
            f"SELECT {DECISION_COLUMNS} FROM decisions WHERE decision_id = ?", (str(decision_id),)
        )
        if row is None:
            raise DecisionNotFoundError(f"unknown decision_id {decision_id!r}: this store never issued it")
        return self._decision_from_row(row)

    def find_request(self, request_id: str) -> Decision | None:
        """The decision made for the caller's ``request_id``, if any (retries get the same decision)."""
        row = self._one(f"SELECT {DECISION_COLUMNS} FROM decisions WHERE request_id = ?", (str(request_id),))
        return None if row is None else self._decision_from_row(row)

    def decisions(self, status: str | None = None) -> list[Decision]:
        """Every decision (or those with ``status``), in decision order."""
        sql = f"SELECT {DECISION_COLUMNS} FROM decisions"
        params: tuple[Any, ...] = ()
        if status is not None:
            sql += " WHERE status = ?"
            params = (status,)
        return [self._decision_from_row(r) for r in self._rows(sql + " ORDER BY seq", params)]

    def open_before(self, before: float) -> list[str]:
        """Ids of open decisions created before UNIX time ``before`` (the wait time has expired)."""
        rows = self._rows(
            "SELECT decision_id FROM decisions WHERE status = 'open' AND created_at < ? ORDER BY seq",
            (before,),
        )
        return [r[0] for r in rows]

    def max_decision_seq(self) -> int:
        return int(self._one("SELECT COALESCE(MAX(seq), 0) FROM decisions")[0])

    # ------------------------------------------------------------------ cascade steps
    def insert_step(self, step: Step, n_calls: int, model: str, action: int) -> None:
        """Record a cascade step with the decision's new number of calls and current model, in one transaction."""
        self._write(
            [
                (
                    f"INSERT INTO steps ({STEP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    step_values(step),
                ),
                (
                    "UPDATE decisions SET n_calls = ?, model = ?, action = ? WHERE decision_id = ?",
                    (n_calls, model, action, step.decision_id),
                ),
            ],
            conflict=f"step {step.step} of decision {step.decision_id!r} is already logged",
        )

    def steps(self, decision_id: str) -> list[Step]:
        rows = self._rows(
            f"SELECT {STEP_COLUMNS} FROM steps WHERE decision_id = ? ORDER BY step", (decision_id,)
        )
        return [step_from_row(r) for r in rows]

    def reroute(self, d: Decision) -> None:
        """Record that the open decision ``d.decision_id`` now serves ``d.model`` (a fail-over), with ``d``'s
        action, propensity, probabilities and allowed models."""
        self._write([(REROUTE.replace("%s", "?"), reroute_values(d))])

    # ------------------------------------------------------------------ upstream calls
    def insert_calls(self, calls: Sequence[Call]) -> None:
        """Log a decision's upstream calls in one transaction."""
        if not calls:
            return
        sql = f"INSERT INTO calls ({CALL_COLUMNS}) VALUES ({', '.join('?' * 12)})"
        self._write(
            [(sql, call_row(c)) for c in calls],
            conflicts=[("calls.", repeated_call(calls[0].decision_id))],
        )

    def calls(self, decision_id: str) -> list[Call]:
        rows = self._reader().execute(
            f"SELECT {CALL_COLUMNS} FROM calls WHERE decision_id = ? ORDER BY idx", (decision_id,)
        )
        return [call_from_row(r) for r in rows.fetchall()]

    def _next_feedback_seq(self) -> int:
        """The position after every log entry written so far (committed, in the open group or this deferral)."""
        return max(self._marks[1], self._group_marks[1], self._deferral_marks[1]) + 1

    def mark_expired(self, decision_id: str) -> None:
        """Close a decision whose wait time expired without applying any reward."""
        self._write([("UPDATE decisions SET status = 'expired' WHERE decision_id = ?", (decision_id,))])


def _max_marks(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return (max(a[0], b[0]), max(a[1], b[1]))


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
