"""The PostgreSQL decision store's schema, as versioned migrations applied at start-up (never by hand).

:func:`migrate` applies the migrations a database lacks, in order, in one transaction under an advisory lock, and
records each in ``schema_migrations`` (version, name, SHA-256 of its SQL, when it was applied). Stores that start
together wait for each other; a store whose code is older than the database's schema, or whose migration text
differs from the one applied, refuses to start rather than guess.

Migration 1 creates the tables of :mod:`agents.online.stores.postgres`:

- ``policies``, ``decisions``, ``steps``: as in the SQLite store (the same columns, in the same order);
- ``feedback``: one row per closed decision; its primary key on ``decision_id`` makes feedback exactly-once;
- ``log_head`` (one row) and ``log``: the store's log. Every entry gets ``position = head + 1`` while the head
  row is locked, and the lock is held until the appending transaction commits, so positions are gap-free and in
  commit order (a rolled-back append gives its position back). Sequences would not do: their values are handed out
  at insert time, and concurrent transactions commit in another order. ``log.kind`` is ``'feedback'`` today; a
  later migration adds other kinds (a policy swap) with their own columns;
- ``checkpoints`` and ``checkpoint_files``: the bytes of each saved policy directory, and the log position whose
  feedback it includes;
- ``routing_env_append_feedback(...)``: appends feedback in one statement (one round trip) and notifies
  :data:`LOG_CHANNEL`.

Migration 2 adds what the SQLite store gained meanwhile: ``decisions.prompt_chars`` (the length of the prompt the
caller gave; the stored prompt may be a prefix) and ``calls``, the upstream calls a gateway made for a decision.
Migration 3 adds ``decision_seq``, the sequence routers on several processes draw decision numbers from.
Migration 4 adds the rollout tables. Migration 5 makes a policy swap an entry of the log: ``log.kind`` may be
``'swap'``, whose ``checkpoint_id`` names the checkpoint (the new policy's bytes) serving from that position on, so
every replica switches at the same position (:meth:`~agents.online.stores.base.DecisionStore.append_swap`).
Migration 6 adds ``serving_events.detail``: what resumes a canary after a restart, or on another replica.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from routing_env.errors import ConfigurationError

#: The ``LISTEN/NOTIFY`` channel of log appends; the payload is the new entry's position (decimal text). Channels
#: are per database: stores in two schemas of one database wake each other's listeners, which then find nothing
#: new to read.
LOG_CHANNEL = "routing_env_log"

#: SQLSTATE raised by ``routing_env_append_feedback`` when the writer's expected position is stale.
STALE_POSITION = "RE001"

# pg_advisory_xact_lock key serialising migrations (the first 8 bytes of SHA-256("routing_env.schema_migrations")).
_LOCK_KEY = int.from_bytes(hashlib.sha256(b"routing_env.schema_migrations").digest()[:8], "big", signed=True)


@dataclass(frozen=True)
class Migration:
    """One schema version: its number (1, 2, …), a short name and the SQL that takes the schema there."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 (hex) of the SQL: an applied migration must never change."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


_V1 = f"""
CREATE TABLE policies (
    version TEXT PRIMARY KEY,
    registered BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    created_at DOUBLE PRECISION NOT NULL,
    kind TEXT NOT NULL,
    models TEXT NOT NULL,
    n_features INTEGER
);
CREATE TABLE decisions (
    seq BIGINT PRIMARY KEY,
    decision_id TEXT NOT NULL UNIQUE,
    request_id TEXT UNIQUE,
    created_at DOUBLE PRECISION NOT NULL,
    policy_version TEXT NOT NULL REFERENCES policies (version),
    kind TEXT NOT NULL CHECK (kind IN ('route', 'cascade')),
    features BYTEA NOT NULL,
    prompt TEXT,
    model TEXT NOT NULL,
    action INTEGER NOT NULL,
    propensity DOUBLE PRECISION NOT NULL,
    probabilities BYTEA NOT NULL,
    allowed TEXT,
    cost_weight DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'closed', 'expired')),
    n_calls INTEGER NOT NULL,
    max_calls INTEGER NOT NULL
);
CREATE INDEX decisions_open ON decisions (created_at) WHERE status = 'open';
CREATE TABLE steps (
    decision_id TEXT NOT NULL REFERENCES decisions (decision_id),
    step INTEGER NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    signal DOUBLE PRECISION NOT NULL,
    cost DOUBLE PRECISION,
    stop BOOLEAN NOT NULL,
    propensity DOUBLE PRECISION NOT NULL,
    forced BOOLEAN NOT NULL,
    PRIMARY KEY (decision_id, step)
);
CREATE TABLE feedback (
    decision_id TEXT PRIMARY KEY REFERENCES decisions (decision_id),
    received_at DOUBLE PRECISION NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('client', 'default')),
    quality DOUBLE PRECISION NOT NULL,
    cost DOUBLE PRECISION NOT NULL,
    latency_s DOUBLE PRECISION,
    reward DOUBLE PRECISION NOT NULL,
    applied BOOLEAN NOT NULL,
    policy_version TEXT NOT NULL REFERENCES policies (version)
);
CREATE TABLE log_head (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    position BIGINT NOT NULL CHECK (position >= 0)
);
INSERT INTO log_head (position) VALUES (0);
CREATE TABLE log (
    position BIGINT PRIMARY KEY CHECK (position > 0),
    kind TEXT NOT NULL CHECK (kind IN ('feedback')),
    appended_at DOUBLE PRECISION NOT NULL,
    decision_id TEXT UNIQUE REFERENCES feedback (decision_id),
    CHECK ((kind = 'feedback') = (decision_id IS NOT NULL))
);
CREATE TABLE checkpoints (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at DOUBLE PRECISION NOT NULL,
    policy_version TEXT NOT NULL REFERENCES policies (version),
    last_feedback_seq BIGINT NOT NULL CHECK (last_feedback_seq >= 0),
    digest TEXT NOT NULL
);
CREATE TABLE checkpoint_files (
    checkpoint_id BIGINT NOT NULL REFERENCES checkpoints (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (checkpoint_id, name)
);
CREATE FUNCTION routing_env_append_feedback(
    expected BIGINT, p_decision_id TEXT, p_received_at DOUBLE PRECISION, p_source TEXT,
    p_quality DOUBLE PRECISION, p_cost DOUBLE PRECISION, p_latency_s DOUBLE PRECISION,
    p_reward DOUBLE PRECISION, p_applied BOOLEAN, p_policy_version TEXT
) RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    head BIGINT;
BEGIN
    -- Held until commit: feedback transactions commit one at a time, in position order. Taken before the
    -- feedback row, so two appends never wait for each other's rows (no deadlock between writers).
    SELECT position INTO head FROM log_head FOR UPDATE;
    -- Each statement sees what committed before it, and every feedback writer holds the lock above.
    IF EXISTS (SELECT 1 FROM feedback WHERE decision_id = p_decision_id) THEN
        RETURN NULL;
    END IF;
    IF expected > 0 AND expected <> head + 1 THEN
        RAISE EXCEPTION 'the writer expected to append at log position %, but the log already ends at %',
            expected, head USING ERRCODE = '{STALE_POSITION}';
    END IF;
    INSERT INTO feedback (decision_id, received_at, source, quality, cost, latency_s, reward, applied,
                          policy_version)
    VALUES (p_decision_id, p_received_at, p_source, p_quality, p_cost, p_latency_s, p_reward, p_applied,
            p_policy_version);
    UPDATE log_head SET position = head + 1;
    INSERT INTO log (position, kind, appended_at, decision_id)
    VALUES (head + 1, 'feedback', extract(epoch FROM clock_timestamp()), p_decision_id);
    UPDATE decisions SET status = CASE p_source WHEN 'client' THEN 'closed' ELSE 'expired' END
    WHERE decision_id = p_decision_id;
    PERFORM pg_notify('{LOG_CHANNEL}', (head + 1)::text);
    RETURN head + 1;
END
$$;
"""

_V2 = """
ALTER TABLE decisions ADD COLUMN prompt_chars INTEGER CHECK (prompt_chars >= 0);
CREATE TABLE calls (
    decision_id TEXT NOT NULL REFERENCES decisions (decision_id),
    idx INTEGER NOT NULL CHECK (idx >= 0),
    step INTEGER NOT NULL,
    model TEXT NOT NULL,
    purpose TEXT NOT NULL CHECK (purpose IN ('answer', 'verify')),
    created_at DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'timeout', 'error', 'rejected')),
    http_status INTEGER,
    input_tokens BIGINT,
    output_tokens BIGINT,
    cost DOUBLE PRECISION,
    latency_s DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (decision_id, idx)
);
"""

# Decision sequence numbers for several writers: each router draws the next one (they seed its per-decision draw).
_V3 = """
CREATE SEQUENCE decision_seq OWNED BY decisions.seq;
SELECT setval('decision_seq', COALESCE(MAX(seq), 0) + 1, false) FROM decisions;
"""

# The rollout tables (:mod:`agents.online.stores.rollout`): shadows, their distributions per decision, the gate's
# history and the serving mix's changes.
_V4 = """
CREATE TABLE shadows (
    name TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    models TEXT NOT NULL,
    registered_at DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'failed')),
    error TEXT
);
CREATE TABLE shadow_probabilities (
    name TEXT NOT NULL,
    decision_id TEXT NOT NULL REFERENCES decisions (decision_id),
    probabilities BYTEA NOT NULL,
    PRIMARY KEY (name, decision_id)
);
CREATE TABLE gate_decisions (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at DOUBLE PRECISION NOT NULL,
    candidate TEXT NOT NULL,
    command TEXT NOT NULL,
    promote INTEGER NOT NULL CHECK (promote IN (0, 1)),
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    evidence TEXT NOT NULL,
    version TEXT
);
CREATE TABLE serving_events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at DOUBLE PRECISION NOT NULL,
    event TEXT NOT NULL,
    live_version TEXT NOT NULL,
    candidate_version TEXT,
    split DOUBLE PRECISION NOT NULL,
    message TEXT NOT NULL
);
"""

# A policy swap is a log entry: the checkpoint it names serves from its position on.
_V5 = """
ALTER TABLE log DROP CONSTRAINT log_kind_check;
ALTER TABLE log ADD CONSTRAINT log_kind_check CHECK (kind IN ('feedback', 'swap'));
ALTER TABLE log ADD COLUMN checkpoint_id BIGINT UNIQUE REFERENCES checkpoints (id);
ALTER TABLE log ADD CONSTRAINT log_swap_check CHECK ((kind = 'swap') = (checkpoint_id IS NOT NULL));
"""

# What a restart needs to resume a serving mix (a canary's candidate and settings).
_V6 = """
ALTER TABLE serving_events ADD COLUMN detail TEXT NOT NULL DEFAULT '';
"""

#: Every schema version, in order. Append new ones; never edit one that has shipped.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "decision log", _V1),
    Migration(2, "prompt lengths and upstream calls", _V2),
    Migration(3, "decision sequence numbers", _V3),
    Migration(4, "shadows, gate history and serving events", _V4),
    Migration(5, "policy swaps in the log", _V5),
    Migration(6, "serving events keep what resumes them", _V6),
)


def migrate(conn: Any, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Bring the database of ``conn`` (an autocommit psycopg connection) to the newest schema; return the
    versions this call applied (``[]`` when it was up to date).

    Raises:
        ConfigurationError: the database has a migration this code does not know (it was created by a newer
            routing-env), or an applied migration whose SQL differs from this code's.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "checksum TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        applied = _applied(conn, migrations)
        done = []
        for m in migrations:
            if m.version in applied:
                continue
            conn.execute(m.sql)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (m.version, m.name, m.checksum),
            )
            done.append(m.version)
        return done


def check_current(conn: Any, location: str, migrations: tuple[Migration, ...] = MIGRATIONS) -> None:
    """Refuse (``ConfigurationError``) a database that a reader cannot serve from: one without the store's schema,
    with migrations still to apply (a writer applies them on opening), or from a newer or edited schema."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]
    missing = [
        m.version for m in migrations if m.version not in (_applied(conn, migrations) if exists else {})
    ]
    if missing:
        raise ConfigurationError(
            f"cannot open {location} read-only: its schema lacks migrations {missing} (open it for writing once, "
            "which applies them)"
        )


def _applied(conn: Any, migrations: tuple[Migration, ...]) -> dict[int, tuple[str, str]]:
    """The migrations applied to the database, checked against ``migrations`` (``ConfigurationError``)."""
    applied = {
        int(v): (name, checksum)
        for v, name, checksum in conn.execute(
            "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
        ).fetchall()
    }
    known = {m.version: m for m in migrations}
    newer = sorted(set(applied) - set(known))
    if newer:
        raise ConfigurationError(
            f"the store's schema has migrations {newer} that this routing-env does not know (it knows "
            f"1..{max(known)}): the database was created by a newer routing-env; upgrade this one"
        )
    for version, (name, checksum) in applied.items():
        if checksum != known[version].checksum:
            raise ConfigurationError(
                f"schema migration {version} ({name!r}) was applied with checksum {checksum[:12]}…, but this "
                f"routing-env's migration {version} has {known[version].checksum[:12]}…: migrations must "
                "never change once applied"
            )
    return applied
