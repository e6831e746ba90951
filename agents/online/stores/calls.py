"""The upstream-calls table every SQL store keeps: its columns, and a :class:`Call` to and from a row.

A gateway logs each call it makes for a decision (retries, fail-overs, cascade steps and verifier calls included)
with its status, tokens, USD cost and latency, when the call ends and before any quality arrives. The router uses
the logged costs as a route decision's cost when its feedback gives none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agents.online.stores.base import Call

#: Columns of the ``calls`` table, in the order of :func:`call_row`; ``(decision_id, idx)`` is the primary key.
CALL_COLUMNS = (
    "decision_id, idx, step, model, purpose, created_at, status, http_status, input_tokens, output_tokens, cost, "
    "latency_s"
)

SQLITE_CALLS_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    decision_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    step INTEGER NOT NULL,
    model TEXT NOT NULL,
    purpose TEXT NOT NULL,
    created_at REAL NOT NULL,
    status TEXT NOT NULL,
    http_status INTEGER,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cost REAL,
    latency_s REAL NOT NULL,
    PRIMARY KEY (decision_id, idx)
);
"""


def call_row(c: Call) -> tuple[Any, ...]:
    """The values of ``c`` in the order of :data:`CALL_COLUMNS`."""
    return (
        c.decision_id,
        c.index,
        c.step,
        c.model,
        c.purpose,
        c.created_at,
        c.status,
        c.http_status,
        c.input_tokens,
        c.output_tokens,
        c.cost,
        c.latency_s,
    )


def call_from_row(r: Sequence[Any]) -> Call:
    """The :class:`Call` of a row selected with :data:`CALL_COLUMNS`."""
    return Call(
        decision_id=r[0],
        index=int(r[1]),
        step=int(r[2]),
        model=r[3],
        purpose=r[4],
        created_at=float(r[5]),
        status=r[6],
        http_status=None if r[7] is None else int(r[7]),
        input_tokens=None if r[8] is None else int(r[8]),
        output_tokens=None if r[9] is None else int(r[9]),
        cost=None if r[10] is None else float(r[10]),
        latency_s=float(r[11]),
    )
