"""The rollout tables every SQL store keeps: shadow policies, their action distributions on live decisions, and
the history of promotion-gate decisions.

- ``shadows``: candidate policies registered to be scored on live traffic without serving it (name, saved
  directory, models, registration time, status ``active``/``failed`` with the error that failed it);
- ``shadow_probabilities``: per ``(shadow, decision)`` the ``(K,) float64`` distribution the shadow gave the
  decision's query, over the decision's models in their order (0 outside its ``allowed_models``) — the exact
  target probabilities its off-policy value is computed with, on exactly the decisions it is judged on;
- ``gate_decisions``: every run of the promotion gate (``routing-env promote`` or ``POST /v1/promote``): the
  candidate, the command, the decision, its reason and message, the evidence as JSON and the version promoted to;
- ``serving_events``: every change of the serving mix (a canary started, promoted, rolled back, expired or
  stopped), numbered: the event's ``id`` is the version of the mix it starts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np

from agents.online.stores.base import Decision, DecisionStore
from agents.online.stores.sql import DECISION_COLUMNS, N_DECISION_COLUMNS, qualified

_D_COLUMNS = qualified(DECISION_COLUMNS, "d")

#: The rollout tables in SQLite (PostgreSQL: migration 4 of :mod:`agents.online.stores.postgres_schema`).
ROLLOUT_SCHEMA = """
CREATE TABLE IF NOT EXISTS shadows (
    name TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    models TEXT NOT NULL,
    registered_at REAL NOT NULL,
    status TEXT NOT NULL,
    error TEXT
);
CREATE TABLE IF NOT EXISTS shadow_probabilities (
    name TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    probabilities BLOB NOT NULL,
    PRIMARY KEY (name, decision_id)
);
CREATE TABLE IF NOT EXISTS gate_decisions (
    id INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    candidate TEXT NOT NULL,
    command TEXT NOT NULL,
    promote INTEGER NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    evidence TEXT NOT NULL,
    version TEXT
);
CREATE TABLE IF NOT EXISTS serving_events (
    id INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    event TEXT NOT NULL,
    live_version TEXT NOT NULL,
    candidate_version TEXT,
    split REAL NOT NULL,
    message TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
"""


@dataclass(frozen=True)
class ShadowRecord:
    """A shadow policy as registered in a store.

    Attributes:
        name: its id (1 to 64 characters).
        path: the saved policy directory it was loaded from.
        models: its models, in its own order.
        registered_at: UNIX time (s) of the registration; it is judged on decisions made after it.
        status: ``"active"`` (scored on every decision) or ``"failed"`` (it raised; no longer scored).
        error: why it failed (``None`` while active).
    """

    name: str
    path: str
    models: tuple[str, ...]
    registered_at: float
    status: Literal["active", "failed"] = "active"
    error: str | None = None


@dataclass(frozen=True)
class ShadowProbabilities:
    """A shadow's ``(K,) float64`` distribution on one decision's query, over the decision's models.

    ``registered_at``: the registration of the shadow it was computed for; the row is stored only while that
    registration stands (a replica that has not yet seen the shadow removed, or replaced under the same name,
    writes nothing). ``None`` (a canary's rows): stored unconditionally.
    """

    name: str
    decision_id: str
    probabilities: np.ndarray
    registered_at: float | None = None


@dataclass(frozen=True)
class ShadowRow:
    """A decision a shadow was scored on, with its client feedback: ``quality`` in [0, 1], ``cost`` USD,
    ``latency_s`` (or ``None``) and the shadow's ``(K,)`` distribution over ``decision.models``."""

    decision: Decision
    quality: float
    cost: float
    latency_s: float | None
    probabilities: np.ndarray


@dataclass(frozen=True)
class GateRecord:
    """One run of the promotion gate, as the store keeps it.

    Attributes:
        id: its position in the history (1, 2, …; 0 before it is stored).
        created_at: UNIX time (s).
        candidate: the candidate's saved directory.
        command: the command line (or ``POST /v1/promote``) that ran it.
        promote: whether the gate promoted.
        reason: the :class:`~agents.online.rollout.GateReason` value.
        message: the one-line estimate, interval and reason.
        evidence: the gate result as JSON (:meth:`~agents.online.rollout.GateResult.to_dict`).
        version: the policy version the candidate was promoted to (``None`` when refused).
    """

    id: int
    created_at: float
    candidate: str
    command: str
    promote: bool
    reason: str
    message: str
    evidence: str
    version: str | None = None


@dataclass(frozen=True)
class ServingEvent:
    """A change of the serving mix.

    Attributes:
        id: the mix version this event starts (1, 2, …; 0 before it is stored).
        created_at: UNIX time (s).
        event: ``"canary_start"``, ``"canary_promote"``, ``"canary_rollback"``, ``"canary_expire"`` or
            ``"canary_stop"``.
        live_version: the live policy's version after the event.
        candidate_version: the canary's version (for the events that end a canary: the one that served).
        split: the candidate's share of traffic after the event (0 when none serves).
        message: why (the gate's message for promote, rollback and expire).
        detail: what a restart needs to resume the mix, as JSON (for ``canary_start``: the candidate's directory,
            the canary's settings and its evaluation interval); ``""`` for the other events.
    """

    id: int
    created_at: float
    event: str
    live_version: str
    candidate_version: str | None
    split: float
    message: str
    detail: str = ""


@runtime_checkable
class RolloutStore(DecisionStore, Protocol):
    """A :class:`~agents.online.stores.base.DecisionStore` that also keeps shadows and the gate's history (every
    SQL store: :class:`SQLRolloutRecords`)."""

    def add_shadow(self, shadow: ShadowRecord) -> None:
        """Register a shadow; a taken name raises :class:`~agents.online.errors.DecisionConflictError`."""
        ...

    def shadows(self) -> list[ShadowRecord]:
        """Every registered shadow, in order of registration."""
        ...

    def fail_shadow(self, name: str, error: str) -> None:
        """Mark a shadow failed with ``error``."""
        ...

    def remove_shadow(self, name: str) -> bool:
        """Unregister a shadow and drop its distributions; whether it was registered."""
        ...

    def insert_shadow_probabilities(self, rows: Sequence[ShadowProbabilities]) -> None:
        """Log shadows' distributions on decisions (atomically; a ``(name, decision)`` is logged once)."""
        ...

    def shadow_traffic(self, name: str) -> list[ShadowRow]:
        """The routed decisions with client feedback the shadow was scored on, in decision order."""
        ...

    def record_gate(self, record: GateRecord) -> GateRecord:
        """Append a gate decision to the history; the record with its ``id``."""
        ...

    def gate_history(self) -> list[GateRecord]:
        """Every gate decision, oldest first."""
        ...

    def record_serving_event(self, event: ServingEvent) -> ServingEvent:
        """Append a change of the serving mix; the event with its ``id`` (the mix version)."""
        ...

    def serving_events(self) -> list[ServingEvent]:
        """Every change of the serving mix, oldest first."""
        ...

    def canary_propensities(self) -> dict[str, float]:
        """Decision id → its logged model's probability under the serving mix, for decisions made while a canary
        served."""
        ...


_GATE_COLUMNS = "id, created_at, candidate, command, promote, reason, message, evidence, version"


class SQLRolloutRecords:
    """The rollout reads and writes of a SQL decision store (see the module docstring), written once for every
    SQL backend. The store provides ``_rows`` and ``_decision_from_row``; ``_placeholder`` is its driver's
    parameter marker, and :meth:`_rollout_write` runs statements atomically (the default suits a store whose
    ``_write`` takes the statements, as SQLite's does; PostgreSQL's overrides it)."""

    _placeholder = "?"

    if TYPE_CHECKING:

        def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...
        def _write(self, statements: Any, *, conflict: Any = ...) -> Any: ...
        def _decision_from_row(self, row: Sequence[Any]) -> Decision: ...

    def _sql(self, text: str) -> str:
        return text.replace("?", self._placeholder)

    def _rollout_write(
        self,
        statements: Sequence[tuple[str, Sequence[Any]]],
        conflict: str = "the write conflicts with a logged row",
    ) -> None:
        """Run ``statements`` in one transaction, committed before returning; a uniqueness violation raises
        :class:`~agents.online.errors.DecisionConflictError` with ``conflict``."""
        self._write(statements, conflict=conflict)

    # ------------------------------------------------------------------ shadows
    def add_shadow(self, shadow: ShadowRecord) -> None:
        """Register a shadow (``DecisionConflictError`` when its name is taken)."""
        sql = self._sql(
            "INSERT INTO shadows (name, path, models, registered_at, status, error) VALUES (?, ?, ?, ?, ?, ?)"
        )
        params = (
            shadow.name,
            shadow.path,
            json.dumps(list(shadow.models)),
            shadow.registered_at,
            shadow.status,
            shadow.error,
        )
        self._rollout_write([(sql, params)], f"a shadow named {shadow.name!r} is already registered")

    def shadows(self) -> list[ShadowRecord]:
        """Every registered shadow, in order of registration."""
        rows = self._rows(
            "SELECT name, path, models, registered_at, status, error FROM shadows ORDER BY registered_at, name"
        )
        return [ShadowRecord(r[0], r[1], tuple(json.loads(r[2])), float(r[3]), r[4], r[5]) for r in rows]

    def fail_shadow(self, name: str, error: str) -> None:
        """Mark a shadow failed with ``error`` (it is no longer scored; its report says why)."""
        sql = self._sql("UPDATE shadows SET status = 'failed', error = ? WHERE name = ?")
        self._rollout_write([(sql, (error, name))])

    def remove_shadow(self, name: str) -> bool:
        """Unregister a shadow and drop its distributions; whether it was registered."""
        if not self._rows(self._sql("SELECT 1 FROM shadows WHERE name = ?"), (name,)):
            return False
        self._rollout_write(
            [
                (self._sql("DELETE FROM shadow_probabilities WHERE name = ?"), (name,)),
                (self._sql("DELETE FROM shadows WHERE name = ?"), (name,)),
            ]
        )
        return True

    def insert_shadow_probabilities(self, rows: Sequence[ShadowProbabilities]) -> None:
        """Log shadows' distributions on decisions, in one transaction (a ``(name, decision)`` is logged once)."""
        if not rows:
            return
        plain = self._sql(
            "INSERT INTO shadow_probabilities (name, decision_id, probabilities) VALUES (?, ?, ?)"
        )
        registered = self._sql(
            "INSERT INTO shadow_probabilities (name, decision_id, probabilities) SELECT ?, ?, ? WHERE EXISTS "
            "(SELECT 1 FROM shadows WHERE name = ? AND registered_at = ? AND status = 'active')"
        )
        statements: list[tuple[str, tuple[Any, ...]]] = []
        for r in rows:
            blob = np.asarray(r.probabilities, dtype="<f8").tobytes()
            if r.registered_at is None:
                statements.append((plain, (r.name, r.decision_id, blob)))
            else:
                statements.append((registered, (r.name, r.decision_id, blob, r.name, r.registered_at)))
        self._rollout_write(statements, "a shadow distribution was already logged for that decision")

    def shadow_traffic(self, name: str) -> list[ShadowRow]:
        """The routed decisions the shadow ``name`` was scored on that have client feedback, in decision order."""
        rows = self._rows(
            self._sql(
                f"SELECT {_D_COLUMNS}, f.quality, f.cost, f.latency_s, s.probabilities "
                "FROM shadow_probabilities s JOIN decisions d ON d.decision_id = s.decision_id "
                "JOIN feedback f ON f.decision_id = d.decision_id "
                "WHERE s.name = ? AND d.kind = 'route' AND f.source = 'client' ORDER BY d.seq"
            ),
            (name,),
        )
        n = N_DECISION_COLUMNS
        return [
            ShadowRow(
                decision=self._decision_from_row(r[:n]),
                quality=float(r[n]),
                cost=float(r[n + 1]),
                latency_s=None if r[n + 2] is None else float(r[n + 2]),
                probabilities=np.frombuffer(bytes(r[n + 3]), dtype="<f8").copy(),
            )
            for r in rows
        ]

    def canary_propensities(self) -> dict[str, float]:
        """Decision id → the probability of its logged model under the serving mix, for every decision made while
        a canary served: ``split·π_c(a|x) + (1 − split)·π_l(a|x)`` from the two distributions stored with it.

        The logged propensity of such a decision is the product ``split·π_c(a|x)`` (or ``(1 − split)·π_l(a|x)``):
        the probability of the arm *and* the model. Off-policy evaluation of a policy over models must divide by the
        probability of the model alone, which is this mixture; :meth:`export` uses it.
        """
        splits = {e.candidate_version: e.split for e in self.serving_events() if e.event == "canary_start"}
        if not splits:
            return {}
        rows = self._rows(
            self._sql(
                "SELECT s.name, s.decision_id, d.action, s.probabilities FROM shadow_probabilities s "
                "JOIN decisions d ON d.decision_id = s.decision_id WHERE s.name LIKE ?"
            ),
            ("canary:%",),
        )
        mixture = {}
        for name, decision_id, action, blob in rows:
            split = splits.get(str(name).removeprefix("canary:"))
            if split is None:
                continue
            pair = np.frombuffer(bytes(blob), dtype="<f8")  # [π_c | π_l] over the decision's models
            half = len(pair) // 2
            mixture[str(decision_id)] = float(
                split * pair[int(action)] + (1.0 - split) * pair[half + int(action)]
            )
        return mixture

    # ------------------------------------------------------------------ gate history
    def record_gate(self, record: GateRecord) -> GateRecord:
        """Append a gate decision to the history; the record with its ``id``."""
        sql = self._sql(
            "INSERT INTO gate_decisions (created_at, candidate, command, promote, reason, message, evidence, "
            "version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        params = (
            record.created_at,
            record.candidate,
            record.command,
            int(record.promote),
            record.reason,
            record.message,
            record.evidence,
            record.version,
        )
        self._rollout_write([(sql, params)])
        last = self._rows(
            self._sql("SELECT MAX(id) FROM gate_decisions WHERE created_at = ? AND candidate = ?"),
            (record.created_at, record.candidate),
        )
        return GateRecord(int(last[0][0]), *[getattr(record, f) for f in _GATE_COLUMNS.split(", ")[1:]])

    def gate_history(self) -> list[GateRecord]:
        """Every gate decision, oldest first."""
        rows = self._rows(f"SELECT {_GATE_COLUMNS} FROM gate_decisions ORDER BY id")
        return [
            GateRecord(int(r[0]), float(r[1]), r[2], r[3], bool(r[4]), r[5], r[6], r[7], r[8]) for r in rows
        ]

    # ------------------------------------------------------------------ serving mix
    def record_serving_event(self, event: ServingEvent) -> ServingEvent:
        """Append a change of the serving mix; the event with its ``id`` (the mix version it starts)."""
        sql = self._sql(
            "INSERT INTO serving_events (created_at, event, live_version, candidate_version, split, message, "
            "detail) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        e = event
        values = (e.created_at, e.event, e.live_version, e.candidate_version, e.split, e.message, e.detail)
        self._rollout_write([(sql, values)], "")
        last = self._rows(
            self._sql("SELECT MAX(id) FROM serving_events WHERE created_at = ? AND event = ?"),
            (e.created_at, e.event),
        )
        return replace(e, id=int(last[0][0]))

    def serving_events(self) -> list[ServingEvent]:
        """Every change of the serving mix, oldest first."""
        rows = self._rows(
            "SELECT id, created_at, event, live_version, candidate_version, split, message, detail "
            "FROM serving_events ORDER BY id"
        )
        return [ServingEvent(int(r[0]), float(r[1]), r[2], r[3], r[4], float(r[5]), r[6], r[7]) for r in rows]
