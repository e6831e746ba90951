"""The tables of :class:`~agents.online.stores.sqlite.SQLiteDecisionStore` (their rows are laid out as
:mod:`agents.online.stores.sql` says, for every SQL store).

- ``meta``: key/value facts about the store file;
- ``policies``: every policy version served (kind, model names, feature width);
- ``decisions``: one row per ``route`` call. ``seq`` is the decision sequence number (it seeds the sampling RNG
  of that decision), ``features`` the float32 vector the policy saw, ``probabilities`` the float64 distribution
  over the version's models *actually sampled from* (after ``allowed_models`` renormalisation) and ``propensity``
  the chosen model's probability under it; ``prompt`` the stored text (at most the router's bound) and
  ``prompt_chars`` the length of the prompt the caller gave;
- ``steps``: the signals, per-call costs and stop/continue draws of cascade decisions;
- ``feedback``: one row per closed decision, ``seq`` = the order in which feedback was applied to the policy
  (replayed in that order after a restart), ``source`` = ``client`` or ``default`` (wait time expired);
- ``checkpoints``: saved policy directories (relative to the database's directory when inside it) with the last
  log position they include;
- ``swaps``: policy swaps, each at a log position of its own (feedback ``seq`` and swap positions together are the
  log's gap-free positions) with the checkpoint that serves from there on.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from agents.online.stores.calls import SQLITE_CALLS_SCHEMA

SCHEMA = """
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
    max_calls INTEGER NOT NULL,
    prompt_chars INTEGER
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
-- A policy swap at a log position (feedback seq and swap positions never coincide): its checkpoint serves from
-- there on.
CREATE TABLE IF NOT EXISTS swaps (
    position INTEGER PRIMARY KEY,
    checkpoint_id INTEGER NOT NULL UNIQUE REFERENCES checkpoints (id),
    appended_at REAL NOT NULL
);
"""
# The upstream calls a gateway logs per decision (the schema every SQL store shares).
SCHEMA += SQLITE_CALLS_SCHEMA


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a store written by an older version up to :data:`SCHEMA` (columns added since, with NULLs)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(decisions)")}
    if "prompt_chars" not in columns:
        conn.execute("ALTER TABLE decisions ADD COLUMN prompt_chars INTEGER")
    columns = {row[1] for row in conn.execute("PRAGMA table_info(serving_events)")}
    if "detail" not in columns:
        conn.execute("ALTER TABLE serving_events ADD COLUMN detail TEXT NOT NULL DEFAULT ''")


def run_atomically(
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
