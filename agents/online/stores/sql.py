"""What the SQL decision stores share: the row layout of the records, and a polling wait on the log's head.

Both stores keep decisions, feedback and cascade steps in the same columns, in the same order, so one pair of
functions turns a record into query parameters and a row back into the record: features as little-endian float32
bytes, probabilities as little-endian float64 bytes, the allowed subset as a JSON list (``NULL`` = every model),
booleans as the driver stores them (SQLite: integers; PostgreSQL: ``BOOLEAN``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from agents.online.stores.base import Decision, Feedback, Step

DECISION_COLUMNS = (
    "seq, decision_id, request_id, created_at, policy_version, kind, features, prompt, model, action, "
    "propensity, probabilities, allowed, cost_weight, status, n_calls, max_calls, prompt_chars"
)
#: Number of columns of a decision row (the prefix of a joined row that :func:`decision_from_row` reads).
N_DECISION_COLUMNS = len(DECISION_COLUMNS.split(","))
#: The feedback columns after its log position; ``seq`` (SQLite) or the log's ``position`` (PostgreSQL) first.
FEEDBACK_COLUMNS = (
    "decision_id, received_at, source, quality, cost, latency_s, reward, applied, policy_version"
)
#: The cascade-step columns: :class:`Step`'s own field names, in its order.
STEP_COLUMNS = "decision_id, step, created_at, signal, cost, stop, propensity, forced"


def qualified(columns: str, alias: str) -> str:
    """``columns`` (comma-separated) prefixed with the table alias ``alias`` for joins."""
    return ", ".join(f"{alias}.{c.strip()}" for c in columns.split(","))


def decision_values(d: Decision) -> tuple[Any, ...]:
    """The query parameters of ``d`` in :data:`DECISION_COLUMNS` order."""
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
    """The :class:`Decision` of a row in :data:`DECISION_COLUMNS` order; ``models`` are its version's models."""
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


def feedback_values(fb: Feedback) -> tuple[Any, ...]:
    """The query parameters of ``fb``: its ``seq``, then :data:`FEEDBACK_COLUMNS` (the record's field order)."""
    return dataclasses.astuple(fb)


def feedback_from_row(r: Sequence[Any]) -> Feedback:
    """The :class:`Feedback` of a row: its log position, then :data:`FEEDBACK_COLUMNS`."""
    return Feedback(
        seq=int(r[0]),
        decision_id=r[1],
        received_at=float(r[2]),
        source=r[3],
        quality=float(r[4]),
        cost=float(r[5]),
        latency_s=None if r[6] is None else float(r[6]),
        reward=float(r[7]),
        applied=bool(r[8]),
        policy_version=r[9],
    )


#: A fail-over: the open decision serves another model (parameters: :func:`reroute_values`; ``%s`` markers).
REROUTE = (
    "UPDATE decisions SET model = %s, action = %s, propensity = %s, probabilities = %s, allowed = %s "
    "WHERE decision_id = %s AND status = 'open'"
)


def reroute_values(d: Decision) -> tuple[Any, ...]:
    """The parameters of :data:`REROUTE` for ``d``: its model, action, propensity, probabilities and allowed
    models (their places in :data:`DECISION_COLUMNS`), then its id."""
    values = decision_values(d)
    return (*values[8:13], d.decision_id)


def step_values(step: Step) -> tuple[Any, ...]:
    """The query parameters of ``step`` in :data:`STEP_COLUMNS` order."""
    return dataclasses.astuple(step)


def step_from_row(r: Sequence[Any]) -> Step:
    """The :class:`Step` of a row in :data:`STEP_COLUMNS` order."""
    return Step(r[0], int(r[1]), float(r[2]), float(r[3]), r[4], bool(r[5]), float(r[6]), bool(r[7]))


def poll_log(head: Callable[[], int], after: int, timeout_s: float, interval_s: float = 0.005) -> int:
    """Read ``head()`` until it passes ``after`` or ``timeout_s`` seconds have passed; return the last value.

    The interval doubles from ``interval_s`` up to 50 ms, so a short wait reacts quickly and a long one costs
    little.
    """
    deadline = time.monotonic() + max(float(timeout_s), 0.0)
    position = head()
    while position <= after:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(interval_s, remaining))
        interval_s = min(interval_s * 2, 0.05)
        position = head()
    return position
