"""The tables of :class:`~agents.online.stores.sqlite.SQLiteDecisionStore` and the conversion of their rows.

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
  feedback ``seq`` they include.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

import numpy as np

from agents.online.stores.base import Decision, Feedback, Step
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
"""
# The upstream calls a gateway logs per decision (the schema every SQL store shares).
SCHEMA += SQLITE_CALLS_SCHEMA

DECISION_COLUMNS = (
    "seq, decision_id, request_id, created_at, policy_version, kind, features, prompt, model, action, "
    "propensity, probabilities, allowed, cost_weight, status, n_calls, max_calls, prompt_chars"
)
N_DECISION_COLUMNS = len(DECISION_COLUMNS.split(","))
# The same columns of the decisions table aliased ``d`` in joins.
D_COLUMNS = ", ".join("d." + c.strip() for c in DECISION_COLUMNS.split(","))
FEEDBACK_COLUMNS = (
    "seq, decision_id, received_at, source, quality, cost, latency_s, reward, applied, policy_version"
)
F_COLUMNS = ", ".join("f." + c.strip() for c in FEEDBACK_COLUMNS.split(","))
N_FEEDBACK_COLUMNS = len(FEEDBACK_COLUMNS.split(","))
STEP_COLUMNS = "decision_id, step, created_at, signal, cost, stop, propensity, forced"


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a store written by an older version up to :data:`SCHEMA` (columns added since, with NULLs)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(decisions)")}
    if "prompt_chars" not in columns:
        conn.execute("ALTER TABLE decisions ADD COLUMN prompt_chars INTEGER")


def decision_params(d: Decision) -> tuple[Any, ...]:
    """The values of :data:`DECISION_COLUMNS` for ``d``."""
    return (
        d.seq,
        d.decision_id,
        d.request_id,
        d.created_at,
        d.policy_version,
        d.kind,
        np.asarray(d.features, dtype="<f4").tobytes(),
        d.prompt,
        d.model,
        d.action,
        d.propensity,
        np.asarray(d.probabilities, dtype="<f8").tobytes(),
        None if d.allowed_models is None else json.dumps(list(d.allowed_models)),
        d.cost_weight,
        d.status,
        d.n_calls,
        d.max_calls,
        d.prompt_chars,
    )


def decision_from_row(row: Sequence[Any], models: tuple[str, ...]) -> Decision:
    """The :class:`Decision` of a row of :data:`DECISION_COLUMNS`, its version having ``models``."""
    return Decision(
        decision_id=row[1],
        seq=int(row[0]),
        request_id=row[2],
        created_at=float(row[3]),
        policy_version=row[4],
        kind=row[5],
        model=row[8],
        action=int(row[9]),
        propensity=float(row[10]),
        models=models,
        probabilities=np.frombuffer(row[11], dtype="<f8").copy(),
        features=np.frombuffer(row[6], dtype="<f4").copy(),
        prompt=row[7],
        allowed_models=None if row[12] is None else tuple(json.loads(row[12])),
        cost_weight=float(row[13]),
        status=row[14],
        n_calls=int(row[15]),
        max_calls=int(row[16]),
        prompt_chars=None if row[17] is None else int(row[17]),
    )


def record_params(record: Feedback | Step, columns: str) -> tuple[Any, ...]:
    """The values of ``columns`` (:data:`FEEDBACK_COLUMNS` or :data:`STEP_COLUMNS`: the record's own field names)
    for ``record`` (booleans are stored as SQLite integers)."""
    return tuple(getattr(record, c.strip()) for c in columns.split(","))


def feedback_from_row(r: Sequence[Any]) -> Feedback:
    """The :class:`Feedback` of a row of :data:`FEEDBACK_COLUMNS`."""
    values = list(r)
    values[8] = bool(values[8])  # applied: stored as an integer
    return Feedback(*values)


def step_from_row(r: Sequence[Any]) -> Step:
    """The :class:`Step` of a row of :data:`STEP_COLUMNS`."""
    values = list(r)
    values[5], values[7] = bool(values[5]), bool(values[7])  # stop, forced: stored as integers
    return Step(*values)


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
