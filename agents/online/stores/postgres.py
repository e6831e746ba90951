"""`PostgresDecisionStore`: the durable log of online routers on PostgreSQL (``pip install 'routing-env[postgres]'``).

It implements the :class:`~agents.online.stores.base.DecisionStore` protocol with the same tables as the SQLite
store (see :mod:`agents.online.stores.postgres_schema`, applied as versioned migrations when the store opens) and
the same guarantees: a method returns only after its writes are committed, except inside a group-commit deferral,
whose writes one ``COMMIT`` makes durable together.

**The store is the log.** Feedback is appended at a gap-free position assigned while a one-row head table is
locked, and the lock is held until the appending transaction commits: feedback commits are serialised (across
every process writing to the database), so positions follow commit order and a reader never sees position
``n + 1`` before ``n``. The cost: one feedback-writing transaction at a time, so feedback throughput is about one
group per commit latency (group commit puts many feedbacks in one transaction); decisions and steps are not
serialised. Each append notifies :data:`~agents.online.stores.postgres_schema.LOG_CHANNEL` with its position
(delivered at commit); :meth:`PostgresDecisionStore.wait_for_log` listens on it, and
:meth:`PostgresDecisionStore.log_entries` reads the log after a position. A policy swap is an entry too
(:meth:`PostgresDecisionStore.append_swap`, under the same head lock), naming the checkpoint that serves from there.
The log's methods live in :mod:`agents.online.stores.postgres_log`.

Exactly-once feedback is the primary key of ``feedback``; a second feedback (or a repeated request id) is refused
without a database error, so it never spoils an open group. Each deferral (one request) writes inside a savepoint
of its own, so ``end_deferred(discard=True)`` undoes that request's writes alone, and a write that fails with a
database error rolls back to it: the request fails and the group's other requests stay (a broken connection loses
the whole group, whose waiters learn it from ``group_error``). A group holds the
writer from its first write to its commit and, once it holds feedback, the log's head: other processes' feedback
waits for that commit. Checkpoints are stored in the database (the policy directory's files and the
log position they include), so a process on another machine starts from the latest one: it is written to a local
cache directory when read.

Connections: one writer connection (decisions, steps, feedback, checkpoints), a pool of reader connections
(autocommit; they see only committed data, as SQLite's readers do) and, once :meth:`wait_for_log` is called, one
listening connection. The password comes from the URL, ``PGPASSWORD`` or ``~/.pgpass`` (libpq's rules) and never
appears in a message or repr: :attr:`PostgresDecisionStore.location` is the URL without it. When the server is
unreachable, calls raise :class:`~agents.online.errors.StoreUnavailableError`; once it is back, the store
reconnects (reads retry once on a fresh connection; a write is never retried, because its commit may have
happened: the first write after an outage may fail, the next reconnects).
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from agents.online.errors import DecisionConflictError, StoreUnavailableError
from agents.online.stores.base import Call, Checkpoint, Decision, PolicyVersion, Step
from agents.online.stores.calls import CALL_COLUMNS, call_from_row, call_row
from agents.online.stores.common import (
    SQLStoreBase,
    repeated_call,
    repeated_decision,
    repeated_request,
    unknown_decision,
)
from agents.online.stores.postgres_checkpoints import CheckpointArchive
from agents.online.stores.postgres_listen import LogListener
from agents.online.stores.postgres_log import PostgresLog
from agents.online.stores.postgres_schema import LOG_CHANNEL, check_current, migrate
from agents.online.stores.postgres_sql import (
    INSERT_CALL,
    INSERT_DECISION,
    INSERT_STEP,
)
from agents.online.stores.postgres_target import Target, driver, refuse_nul
from agents.online.stores.rollout import SQLRolloutRecords
from agents.online.stores.sql import (
    DECISION_COLUMNS,
    REROUTE,
    STEP_COLUMNS,
    decision_from_row,
    decision_values,
    reroute_values,
    step_from_row,
    step_values,
)
from routing_env.errors import ConfigurationError

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

__all__ = ["LOG_CHANNEL", "PostgresDecisionStore"]

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
#: Decision numbers a store draws from the database at once (see :meth:`PostgresDecisionStore.next_decision_seq`).
DECISION_BLOCK = 32
_T = TypeVar("_T")
_Work = Callable[["psycopg.Connection[Any]"], _T]


# ---------------------------------------------------------------------------------------------------- the store
class PostgresDecisionStore(PostgresLog, SQLStoreBase, SQLRolloutRecords):
    """Decisions, cascade steps, the feedback log and policy checkpoints in a PostgreSQL database.

    Args:
        url: ``postgresql://[user[:password]@][host][:port]/dbname[?param=value…]`` (or a libpq conninfo string).
            Prefer ``PGPASSWORD`` or ``~/.pgpass`` to a password in the URL.
        synchronous: durability of a commit, in the SQLite store's words. ``"NORMAL"``, ``"FULL"`` and
            ``"EXTRA"`` keep the server's ``synchronous_commit`` unless it is ``off``, which is raised to ``on``
            (the commit is in the server's flushed WAL before it is acknowledged: durable against a crash of the
            router, of the server and against power loss); ``"OFF"`` sets ``synchronous_commit = off`` (a server
            crash may lose the last acknowledged commits, never make the database inconsistent).
        checkpoint_dir: local directory where checkpoints are staged before they are stored and written back when
            read; default a private temporary directory, removed by :meth:`close`.
        keep_checkpoints: how many checkpoints to keep in the database (the newest ones).
        pool_size: most reader connections open at once (≥ 1).
        timeout_s: seconds to wait for a connection (connecting, or a free reader) before
            :class:`~agents.online.errors.StoreUnavailableError`.
        readonly: open for reading only (audits, exports and tests beside running routers): no migrations, no
            writer connection; writes are refused.

    Raises:
        ConfigurationError: an invalid URL or option, the ``postgres`` extra missing, or a database schema this
            version cannot serve (see :func:`~agents.online.stores.postgres_schema.migrate`).
        StoreUnavailableError: the server cannot be reached.
    """

    def __init__(
        self,
        url: str,
        *,
        synchronous: Synchronous = "NORMAL",
        checkpoint_dir: str | Path | None = None,
        keep_checkpoints: int = 2,
        pool_size: int = 4,
        timeout_s: float = 5.0,
        readonly: bool = False,
    ) -> None:
        pg = driver()
        if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ConfigurationError(
                f"synchronous must be 'OFF', 'NORMAL', 'FULL' or 'EXTRA', got {synchronous!r}"
            )
        if int(keep_checkpoints) < 1:
            raise ConfigurationError(f"keep_checkpoints must be ≥ 1, got {keep_checkpoints!r}")
        if int(pool_size) < 1:
            raise ConfigurationError(f"pool_size must be ≥ 1, got {pool_size!r}")
        if not (float(timeout_s) > 0):
            raise ConfigurationError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
        self._target = Target.parse(str(url), float(timeout_s))
        self._location = self._target.location
        self.synchronous = synchronous
        self.readonly = bool(readonly)
        self.keep_checkpoints = int(keep_checkpoints)
        self.timeout_s = float(timeout_s)
        self._checkpoints = CheckpointArchive(
            self._location, checkpoint_dir, self.keep_checkpoints, self._read, self._write_checkpoint
        )
        self._closed = False
        self._models: dict[str, tuple[str, ...]] = {}
        # Writes: one connection guarded by a re-entrant lock. A group-commit transaction (begin_deferred) holds
        # it from its first write to its COMMIT, and the owning thread's writes re-enter it meanwhile.
        self._lock = threading.RLock()
        self._writer: psycopg.Connection[Any] | None = None
        self._group_open = False
        self._group_writes = 0
        self._init_deferral()
        # The group in which the deferring thread's savepoint is open (None: none), and the database error that
        # rolled its writes back.
        self._savepoint_group: int | None = None
        self._writes_before = 0  # group writes before the deferral's savepoint
        self._deferral_error: BaseException | None = None
        self._listener = LogListener(self._connect, self._store_error)
        # Decision numbers drawn from the database a block at a time, so a route pays a round trip for them once
        # every DECISION_BLOCK decisions, not every time.
        self._seqs: collections.deque[int] = collections.deque()
        self._seq_lock = threading.Lock()
        self._pool: psycopg_pool.ConnectionPool[Any] | None = None
        try:
            if self.readonly:
                with self._connect() as conn:
                    check_current(conn, self._location)
            else:
                try:
                    migrate(self._writer_conn())
                except pg.Error as exc:
                    raise self._store_error(exc, "could not apply its schema migrations") from exc
            from psycopg_pool import ConnectionPool

            self._pool = ConnectionPool(
                self._target.conninfo,
                min_size=1,
                max_size=int(pool_size),
                kwargs={"autocommit": True},
                timeout=self.timeout_s,
                name="routing-env-readers",
                open=False,
            )
            self._pool.open(wait=False)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ connections and errors
    @property
    def checkpoint_dir(self) -> Path:
        """The local directory of staged and cached checkpoints."""
        return self._checkpoints.dir

    @property
    def location(self) -> str:
        """The database's URL without its password, for messages."""
        return self._location

    def __repr__(self) -> str:
        mode = ", readonly=True" if self.readonly else ""
        return f"PostgresDecisionStore({self._location!r}, synchronous={self.synchronous!r}{mode})"

    def __enter__(self) -> PostgresDecisionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigurationError(f"the decision store {self._location} is closed")

    def _connect(self) -> psycopg.Connection[Any]:
        pg = driver()
        try:
            return pg.connect(self._target.conninfo, autocommit=True)
        except pg.Error as exc:
            raise self._store_error(exc, "cannot be reached") from None

    def _writer_conn(self) -> psycopg.Connection[Any]:
        if self.readonly:
            raise ConfigurationError(
                f"the decision store {self._location} was opened read-only; it takes no writes"
            )
        conn = self._writer
        if conn is None or conn.closed or conn.broken:
            self._drop_writer()
            conn = self._connect()
            try:
                if self.synchronous == "OFF":
                    conn.execute("SET synchronous_commit = off")
                elif conn.execute("SHOW synchronous_commit").fetchone()[0] == "off":  # type: ignore[index]
                    conn.execute("SET synchronous_commit = on")
            except BaseException:
                conn.close()
                raise
            self._writer = conn
        return conn

    def _drop_writer(self) -> None:
        conn, self._writer = self._writer, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _store_error(self, exc: BaseException, doing: str) -> Exception:
        return self._target.error(exc, doing)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read on a pooled connection (committed data), retried once on a fresh connection."""
        self._check_open()
        if any(isinstance(p, str) and "\x00" in p for p in params):
            return []  # PostgreSQL text cannot hold NUL, so no stored value equals this one (writes refuse it)
        import psycopg
        from psycopg_pool import PoolTimeout

        assert self._pool is not None
        for attempt in (0, 1):
            try:
                with self._pool.connection() as conn:
                    return conn.execute(sql, params).fetchall()
            except psycopg.OperationalError as exc:
                if attempt == 1:
                    raise self._store_error(exc, "is unavailable") from None
                # After a server restart every idle connection is broken: replace them before the retry.
                self._pool.check()
            except PoolTimeout as exc:
                raise self._store_error(exc, "is unavailable") from None
            except psycopg.Error as exc:
                raise self._store_error(exc, "could not be read") from None
        raise AssertionError("unreachable")

    _placeholder = "%s"
    #: Other processes append to the same log: routers on this store follow it (:mod:`agents.online.follow`).
    multi_writer = True

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._read(sql, params)

    def _read_one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = self._read(sql, params)
        return rows[0] if rows else None

    # ------------------------------------------------------------------ writes and group commit
    def _write(
        self,
        work: _Work[_T],
        *,
        atomic: bool = False,
        flush: bool = False,
        missing: Callable[[], Exception] | None = None,
        conflict: Callable[[], Exception] | None = None,
    ) -> _T:
        """Run ``work`` on the writer connection and commit before returning.

        ``work`` runs its statements; it may raise a routing-env error to refuse (a conflict found without a
        database error), which leaves an open group intact. ``atomic``: ``work`` runs several statements, all or
        none (a transaction of their own outside a group, a savepoint inside one). ``missing`` builds the error
        for a foreign-key violation (an unknown decision or policy version), ``conflict`` for a uniqueness
        violation. Inside :meth:`begin_deferred` …
        :meth:`end_deferred` the statements join the open group transaction instead, in the deferral's savepoint;
        a write outside a deferral (or with ``flush``) first commits an open group, so it is never acknowledged
        ahead of earlier writes.
        """
        import psycopg
        from psycopg import errors

        self._check_open()
        with self._lock:
            in_group = self._deferring == threading.get_ident() and not flush
            if in_group:
                conn = self._enter_savepoint(atomic)
            else:
                if self._group_open:
                    self.commit_group()
                    error = self._group_errors.get(self._group_id)
                    if error is not None:
                        raise error
                conn = self._begin_transaction() if atomic else self._writer_conn()
            try:
                result = work(conn)
            except psycopg.Error as exc:
                if isinstance(exc, errors.ForeignKeyViolation) and missing is not None:
                    mapped: BaseException = missing()
                elif isinstance(exc, errors.UniqueViolation) and conflict is not None:
                    mapped = conflict()
                else:
                    mapped = self._store_error(exc, "could not commit the write")
                if conn.broken:
                    self._drop_writer()
                if in_group:
                    self._undo_in_group(atomic, mapped)
                elif atomic:
                    self._rollback_quietly(conn)
                raise mapped from exc
            except BaseException:
                if in_group and self._group_writes == 0:
                    self._abort_group(None)  # a refusal that opened the group: release its locks at once
                elif in_group and atomic:
                    self._undo_in_group(atomic, None)
                elif atomic:
                    self._rollback_quietly(conn)
                raise
            if in_group:
                if atomic:
                    self._savepoint_sql("RELEASE SAVEPOINT write")
                self._group_writes += 1
                self._deferred_group = self._group_id
            elif atomic:
                try:
                    self._commit_sql(conn)
                except psycopg.Error as exc:
                    self._rollback_quietly(conn)
                    raise self._store_error(exc, "could not commit the write") from exc
            return result

    # ------------------------------------------------------------------ savepoints: one per deferral
    def begin_deferred(self) -> None:  # documented in SQLStoreBase
        super().begin_deferred()
        self._deferral_error = None

    def end_deferred(self, discard: bool = False) -> int | None:
        """Stop deferring; the id of the group this deferral wrote into, if it wrote.

        With ``discard``, this deferral's writes are rolled back to its savepoint (the group's other writes stay;
        a group holding nothing else ends at once) and ``None`` is returned. Writes a flush already committed stay.

        Raises:
            StoreError: (without ``discard``) a database error rolled this deferral's writes back meanwhile.
        """
        group = super().end_deferred()
        error, self._deferral_error = self._deferral_error, None
        with self._lock:
            if self._group_open and self._savepoint_group == self._group_id:
                self._savepoint_group = None
                if discard or error is not None:
                    self._undo_in_group(False, None)
                else:
                    self._savepoint_sql("RELEASE SAVEPOINT request")
            self._savepoint_group = None
        if discard:
            return None
        if error is not None:
            raise error
        return group

    def _enter_savepoint(self, atomic: bool) -> psycopg.Connection[Any]:
        """The writer, inside the open group (begun if needed) and the deferral's savepoint (made if needed)."""
        if not self._group_open:
            self._begin_group()
        if self._savepoint_group != self._group_id:
            self._savepoint_sql("SAVEPOINT request")
            self._savepoint_group = self._group_id
            self._writes_before = self._group_writes
        if atomic:
            self._savepoint_sql("SAVEPOINT write")
        return self._writer_conn()

    def _savepoint_sql(self, sql: str) -> None:
        """Run a savepoint statement in the open group; a failure (a lost connection) loses the group."""
        import psycopg

        try:
            self._writer_conn().execute(sql)
        except psycopg.Error as exc:
            error = self._store_error(exc, "could not write")
            self._abort_group(error)
            raise error from None

    def _undo_in_group(self, atomic: bool, error: BaseException | None) -> None:
        """Undo a failed write inside the group: an ``atomic`` one alone, else the deferral's writes (``error``,
        the database error, is then raised by :meth:`end_deferred`). A group that held nothing else ends."""
        import psycopg

        if not self._group_open:
            return
        if error is not None and not atomic:
            self._deferral_error = error
        conn = self._writer
        if atomic:
            statements = ["ROLLBACK TO SAVEPOINT write", "RELEASE SAVEPOINT write"]
        elif self._savepoint_group == self._group_id and self._writes_before > 0:
            statements = ["ROLLBACK TO SAVEPOINT request"]
        else:  # nothing but this deferral's writes in the group: end it
            self._savepoint_group = None
            self._abort_group(None)
            return
        try:
            if conn is None or conn.broken:
                raise StoreUnavailableError(f"the decision store {self._location} lost its connection")
            for sql in statements:
                conn.execute(sql)
        except (psycopg.Error, StoreUnavailableError) as exc:
            self._savepoint_group = None
            self._abort_group(error or self._store_error(exc, "could not undo a write"))

    def _begin_transaction(self) -> psycopg.Connection[Any]:
        """``BEGIN`` on the writer. Nothing is written yet, so a connection found broken is replaced and retried."""
        import psycopg

        for attempt in (0, 1):
            conn = self._writer_conn()
            try:
                conn.execute("BEGIN")
                return conn
            except psycopg.OperationalError as exc:
                self._drop_writer()
                if attempt == 1:
                    raise self._store_error(exc, "is unavailable") from None
        raise AssertionError("unreachable")

    def _rollback_quietly(self, conn: psycopg.Connection[Any]) -> None:
        try:
            conn.execute("ROLLBACK")
        except Exception:  # the connection is gone, and its transaction with it
            self._drop_writer()

    def _commit_sql(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute("COMMIT")

    def commit_group(self) -> None:  # documented in SQLStoreBase
        with self._lock:
            if self._group_open:
                self._commit_open_group()

    def _commit_open_group(self) -> None:
        import psycopg

        try:
            if self._writer is None:
                raise StoreUnavailableError(f"the decision store {self._location} lost its connection")
            self._commit_sql(self._writer)
        except BaseException as exc:
            self._abort_group(
                self._store_error(exc, "could not commit") if isinstance(exc, psycopg.Error) else exc
            )
        else:
            self._end_group()

    def _begin_group(self) -> None:
        self._lock.acquire()  # held until the group ends, on top of the caller's own hold
        try:
            self._begin_transaction()
        except BaseException:
            self._lock.release()
            raise
        self._group_id += 1
        self._group_open = True
        self._group_writes = 0

    def _abort_group(self, error: BaseException | None) -> None:
        """Roll the open group back; ``error`` (``None``: it held nothing) is what its waiters learn."""
        if self._writer is not None:
            self._rollback_quietly(self._writer)
        if error is not None:
            self._keep_group_error(self._group_id, error)
        self._end_group()

    def _end_group(self) -> None:
        self._group_open = False
        self._savepoint_group = None
        self._group_writes = 0
        self._lock.release()  # taken by _begin_group

    def close(self) -> None:
        """Commit what is open, close every connection and remove the private checkpoint cache."""
        if self._closed:
            return
        with self._lock:
            self.commit_group()
            self._closed = True
            self._drop_writer()
        self._listener.close()
        if self._pool is not None:
            with contextlib.suppress(Exception):
                self._pool.close(timeout=self.timeout_s)
        self._checkpoints.close()

    # ------------------------------------------------------------------ policies and checkpoints
    def record_policy(
        self, version: str, kind: str, models: Sequence[str], n_features: int | None, created_at: float
    ) -> None:
        """Register a policy version (a version id names one policy for the life of the store)."""
        import json

        refuse_nul(version=version, kind=kind)
        if self._recorded(version, kind, models):
            return
        self._write(
            lambda c: c.execute(
                "INSERT INTO policies (version, created_at, kind, models, n_features) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (version) DO NOTHING",
                (version, created_at, kind, json.dumps(list(models)), n_features),
            )
        )

    def policy_versions(self) -> dict[str, PolicyVersion]:
        """Every version served, in order of registration."""
        import json

        rows = self._read(
            "SELECT version, created_at, kind, models, n_features FROM policies ORDER BY created_at, registered"
        )
        return {r[0]: PolicyVersion(r[0], float(r[1]), r[2], tuple(json.loads(r[3])), r[4]) for r in rows}

    def checkpoint_path(self, version: str, last_feedback_seq: int) -> Path:
        """A local staging directory for a new checkpoint (:meth:`add_checkpoint` moves its files into the
        database)."""
        return self._checkpoints.path(version, last_feedback_seq)

    def add_checkpoint(self, version: str, path: str | Path, last_feedback_seq: int) -> Checkpoint:
        """Store the saved policy directory ``path`` in the database (committed at once, after any open group)
        and keep the ``keep_checkpoints`` newest; see :meth:`CheckpointArchive.add`."""
        return self._checkpoints.add(version, path, last_feedback_seq)

    def latest_checkpoint(self) -> Checkpoint | None:
        """The newest checkpoint, its files written to the local cache directory, or ``None``."""
        return self._checkpoints.latest()

    def _write_checkpoint(self, work: _Work[int], version: str) -> int:
        return self._write(
            work,
            atomic=True,
            flush=True,
            missing=lambda: ConfigurationError(f"policy version {version!r} is not recorded in the store"),
        )

    # ------------------------------------------------------------------ decisions
    def insert_decision(self, d: Decision) -> None:
        """Log a new decision; a repeated ``seq``, ``decision_id`` or ``request_id`` is a
        :class:`DecisionConflictError`; a NUL character in the prompt or request id a ConfigurationError (PostgreSQL
        text cannot hold it)."""
        refuse_nul(prompt=d.prompt, request_id=d.request_id)

        def insert(conn: psycopg.Connection[Any]) -> None:
            if conn.execute(INSERT_DECISION, decision_values(d)).fetchone() is not None:
                return
            if (
                d.request_id is not None
                and conn.execute("SELECT 1 FROM decisions WHERE request_id = %s", (d.request_id,)).fetchone()
            ):
                raise repeated_request(d.request_id)
            raise repeated_decision(d)

        self._write(
            insert,
            missing=lambda: ConfigurationError(
                f"policy version {d.policy_version!r} is not recorded in the store; record_policy() first"
            ),
        )

    def _decision_from_row(self, row: Sequence[Any]) -> Decision:
        return decision_from_row(row, self._models_of(row[4]))

    def _models_of(self, version: str) -> tuple[str, ...]:
        models = self._models.get(version)
        if models is None:
            import json

            row = self._read_one("SELECT models FROM policies WHERE version = %s", (version,))
            models = tuple(json.loads(row[0])) if row else ()
            self._models[version] = models
        return models

    def get_decision(self, decision_id: str) -> Decision:
        """The decision with that id; :class:`DecisionNotFoundError` when the store never issued it."""
        row = self._read_one(
            f"SELECT {DECISION_COLUMNS} FROM decisions WHERE decision_id = %s", (str(decision_id),)
        )
        if row is None:
            raise unknown_decision(decision_id)
        return self._decision_from_row(row)

    def find_request(self, request_id: str) -> Decision | None:
        """The decision made for the caller's ``request_id``, if any (retries get the same decision)."""
        row = self._read_one(
            f"SELECT {DECISION_COLUMNS} FROM decisions WHERE request_id = %s", (str(request_id),)
        )
        return None if row is None else self._decision_from_row(row)

    def decisions(self, status: str | None = None) -> list[Decision]:
        """Every decision (or those with ``status``), in decision order."""
        where, params = ("", ()) if status is None else (" WHERE status = %s", (status,))
        rows = self._read(f"SELECT {DECISION_COLUMNS} FROM decisions{where} ORDER BY seq", params)
        return [self._decision_from_row(r) for r in rows]

    def open_before(self, before: float) -> list[str]:
        """Ids of open decisions created before UNIX time ``before`` (the wait time has expired)."""
        rows = self._read(
            "SELECT decision_id FROM decisions WHERE status = 'open' AND created_at < %s ORDER BY seq",
            (float(before),),
        )
        return [r[0] for r in rows]

    def next_decision_seq(self) -> int:
        """A decision sequence number no other writer of this database gets (drawn from ``decision_seq``,
        :data:`DECISION_BLOCK` at a time: increasing within this store, unique across writers, not dense)."""
        with self._seq_lock:
            if not self._seqs:
                rows = self._read(
                    "SELECT nextval('decision_seq') FROM generate_series(1, %s) ORDER BY 1", (DECISION_BLOCK,)
                )
                self._seqs.extend(int(r[0]) for r in rows)
            return self._seqs.popleft()

    def max_decision_seq(self) -> int:
        row = self._read_one("SELECT COALESCE(MAX(seq), 0) FROM decisions")
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------ cascade steps
    def insert_step(self, step: Step, n_calls: int, model: str, action: int) -> None:
        """Record a cascade step with the decision's new number of calls and current model, in one statement."""
        params = (*step_values(step), n_calls, model, action)

        def insert(conn: psycopg.Connection[Any]) -> None:
            if conn.execute(INSERT_STEP, params).fetchone() is None:
                raise DecisionConflictError(
                    f"decision {step.decision_id!r} already has step {step.step}; each call is observed once"
                )

        self._write(insert, missing=lambda: unknown_decision(step.decision_id))

    def steps(self, decision_id: str) -> list[Step]:
        rows = self._read(
            f"SELECT {STEP_COLUMNS} FROM steps WHERE decision_id = %s ORDER BY step", (decision_id,)
        )
        return [step_from_row(r) for r in rows]

    def reroute(self, d: Decision) -> None:
        """Record that the open decision ``d.decision_id`` now serves ``d.model`` (a fail-over), with ``d``'s
        action, propensity, probabilities and allowed models (a closed decision keeps what it served)."""
        params = reroute_values(d)
        self._write(lambda c: c.execute(REROUTE, params))

    # ------------------------------------------------------------------ upstream calls
    def insert_calls(self, calls: Sequence[Call]) -> None:
        """Log a decision's upstream calls, all or none; a logged ``(decision_id, index)`` is a
        :class:`DecisionConflictError`."""
        if not calls:
            return
        rows = [call_row(c) for c in calls]

        def insert(conn: psycopg.Connection[Any]) -> None:
            with conn.cursor() as cur:
                cur.executemany(INSERT_CALL, rows)

        self._write(
            insert,
            atomic=True,
            missing=lambda: unknown_decision(calls[0].decision_id),
            conflict=lambda: repeated_call(calls[0].decision_id),
        )

    def _rollout_write(self, statements: Sequence[tuple[str, Sequence[Any]]], conflict: str = "") -> None:
        def run(conn: psycopg.Connection[Any]) -> None:
            for sql, params in statements:
                conn.execute(sql, params)

        error = conflict or "the write conflicts with a logged row"
        self._write(run, atomic=len(statements) > 1, conflict=lambda: DecisionConflictError(error))

    def calls(self, decision_id: str) -> list[Call]:
        rows = self._read(
            f"SELECT {CALL_COLUMNS} FROM calls WHERE decision_id = %s ORDER BY idx", (decision_id,)
        )
        return [call_from_row(r) for r in rows]
