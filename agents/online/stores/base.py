"""The decision store contract: the records of the online router's log and the :class:`DecisionStore` protocol.

:class:`~agents.online.OnlineRouter` and the HTTP service use a store only through this protocol, so every backend
(:class:`~agents.online.stores.sqlite.SQLiteDecisionStore`,
:class:`~agents.online.stores.postgres.PostgresDecisionStore`) serves both unchanged. The store is the router's
source of truth: decisions with their propensities, cascade steps, the upstream calls a gateway made for them
(tokens, cost, latency, status), feedback in the order it was applied, policy versions and checkpoints. A method
returns only after its writes are committed, except inside a group-commit deferral
(:meth:`DecisionStore.begin_deferred`), whose writes are committed together by :meth:`DecisionStore.commit_group`
(or discarded by ``end_deferred(discard=True)``).

Errors every backend raises the same way: a write that violates uniqueness (a second feedback, a reused request
id) raises :class:`~agents.online.errors.DecisionConflictError`; a store that cannot read or write (read-only,
disk full, connection lost, server down) raises :class:`~agents.online.errors.StoreError` (a server that cannot
be reached: its subclass :class:`~agents.online.errors.StoreUnavailableError`); unknown ids raise
:class:`~agents.online.errors.DecisionNotFoundError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from routing_env.data import LoggedDataset


# ---------------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Decision:
    """One routing decision, as returned by :meth:`OnlineRouter.route` and stored by a :class:`DecisionStore`.

    Attributes:
        decision_id: the id to send feedback for.
        seq: decision sequence number in the store (seeds this decision's sampling RNG).
        request_id: the caller's idempotency key, if given.
        created_at: UNIX time (s) of the decision.
        policy_version: version id of the policy that decided.
        kind: ``"route"`` (one model) or ``"cascade"`` (call ``model`` first, then :meth:`OnlineRouter.observe`).
        model: the model to call.
        action: index of ``model`` in ``models``.
        propensity: probability of ``model`` under ``probabilities`` (the distribution actually sampled from).
        models: the K models of the policy version (a cascade's chain, in call order).
        probabilities: ``(K,) float64`` distribution sampled from; 0 for models outside ``allowed_models``.
        features: ``(d,) float32`` features the policy saw.
        prompt: the prompt as stored (the router's ``store_prompts`` setting decides whether, and at most
            ``max_stored_prompt_chars`` characters of it).
        prompt_chars: length in characters of the prompt the caller gave (``None``: none given); larger than
            ``len(prompt)`` when the stored text is a prefix.
        allowed_models: the allowed subset the caller gave, or ``None``.
        cost_weight: λ of this decision's reward ``quality − λ·cost/cost_scale``.
        status: ``"open"`` (waiting for feedback), ``"closed"`` (feedback applied) or ``"expired"``
            (no feedback within the wait time; the default reward, if any, was applied).
        n_calls: models called so far (cascades; 1 for ``route``).
        max_calls: models the cascade may call (its chain, cut at the first model outside ``allowed_models``).
    """

    decision_id: str
    seq: int
    request_id: str | None
    created_at: float
    policy_version: str
    kind: Literal["route", "cascade"]
    model: str
    action: int
    propensity: float
    models: tuple[str, ...]
    probabilities: np.ndarray
    features: np.ndarray
    prompt: str | None = None
    allowed_models: tuple[str, ...] | None = None
    cost_weight: float = 0.0
    status: Literal["open", "closed", "expired"] = "open"
    n_calls: int = 1
    max_calls: int = 1
    prompt_chars: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view (probabilities as ``{model: p}``; features as a list)."""
        return {
            "decision_id": self.decision_id,
            "request_id": self.request_id,
            "created_at": self.created_at,
            "policy_version": self.policy_version,
            "kind": self.kind,
            "model": self.model,
            "action": self.action,
            "propensity": self.propensity,
            "probabilities": {m: float(p) for m, p in zip(self.models, self.probabilities)},
            "features": [float(v) for v in self.features],
            "prompt": self.prompt,
            "prompt_chars": self.prompt_chars,
            "allowed_models": None if self.allowed_models is None else list(self.allowed_models),
            "cost_weight": self.cost_weight,
            "status": self.status,
            "n_calls": self.n_calls,
            "max_calls": self.max_calls,
        }


@dataclass(frozen=True)
class Step:
    """One cascade step: after call ``step`` (0-based) returned ``signal``, the policy drew ``stop``.

    ``forced`` steps (the last model allowed was called) were not the policy's choice and are not learned from.
    ``cost`` is the USD cost of that call when the gateway reported it.
    """

    decision_id: str
    step: int
    created_at: float
    signal: float
    cost: float | None
    stop: bool
    propensity: float
    forced: bool


@dataclass(frozen=True)
class Call:
    """One upstream call made for a decision (by the gateway), logged when it ends, before any quality arrives.

    Attributes:
        decision_id: the decision the call served.
        index: 0-based position of the call among the decision's calls (retries and fail-overs included).
        step: the cascade step the call answered (0 for a ``route`` decision).
        model: the model called (the policy's name, not the upstream's).
        purpose: ``"answer"`` (the model answered the query) or ``"verify"`` (a model graded an answer).
        created_at: UNIX time (s) the call was sent.
        status: ``"ok"``; ``"timeout"``; ``"error"`` (no connection, or a 5xx or 429 answer); ``"rejected"``
            (another 4xx: the upstream refused the request itself).
        http_status: the upstream's status code, ``None`` when it never answered.
        input_tokens, output_tokens: the usage the upstream reported (``None`` when it reported none).
        cost: USD, the usage times the model's prices (``None`` without usage).
        latency_s: seconds from sending the request to the end of the answer.
    """

    decision_id: str
    index: int
    step: int
    model: str
    purpose: Literal["answer", "verify"]
    created_at: float
    status: Literal["ok", "timeout", "error", "rejected"]
    http_status: int | None
    input_tokens: int | None
    output_tokens: int | None
    cost: float | None
    latency_s: float


@dataclass(frozen=True)
class Feedback:
    """The outcome of a decision, in the order it was applied (``seq``).

    ``quality`` in [0, 1], ``cost`` USD (all calls of a cascade), ``reward`` = ``quality − λ·cost/cost_scale``,
    ``source`` = ``"client"`` or ``"default"`` (applied when the wait time expired), ``applied`` = the policy
    learned from it.
    """

    seq: int
    decision_id: str
    received_at: float
    source: Literal["client", "default"]
    quality: float
    cost: float
    latency_s: float | None
    reward: float
    applied: bool
    policy_version: str


@dataclass(frozen=True)
class Checkpoint:
    """A saved policy directory holding every feedback with ``seq ≤ last_feedback_seq``."""

    id: int
    created_at: float
    policy_version: str
    path: str
    last_feedback_seq: int


@dataclass(frozen=True)
class PolicyVersion:
    """A policy version registered in a store: its kind, its models (in the policy's order) and feature width."""

    version: str
    created_at: float
    kind: str
    models: tuple[str, ...]
    n_features: int | None


@dataclass(frozen=True)
class LogEntry:
    """One entry of a store's log at its position (``1, 2, …``: gap-free, in commit order).

    ``kind`` is ``"feedback"``: ``feedback`` (whose ``seq`` is ``position``) closed ``decision``; or ``"swap"``:
    from this position on the policy saved in ``checkpoint`` serves (its ``last_feedback_seq`` is ``position``),
    and the feedback after it updates that policy. Readers must refuse kinds they do not know.
    """

    position: int
    kind: Literal["feedback", "swap"]
    feedback: Feedback | None = None
    decision: Decision | None = None
    checkpoint: Checkpoint | None = None


@dataclass
class StoreCounts:
    """Aggregates for ``/metrics``: totals and per-model reward sums."""

    decisions: int = 0
    pending: int = 0
    feedback: dict[str, int] = field(default_factory=dict)
    decisions_by_model: dict[str, int] = field(default_factory=dict)
    feedback_by_model: dict[str, int] = field(default_factory=dict)
    reward_by_model: dict[str, float] = field(default_factory=dict)

    def count_decision(self, model: str) -> None:
        """One more open decision for ``model``."""
        self.decisions += 1
        self.pending += 1
        self.decisions_by_model[model] = self.decisions_by_model.get(model, 0) + 1

    def count_feedback(self, source: str, model: str, reward: float, closed_open: bool = True) -> None:
        """One more feedback from ``source`` on a decision for ``model``; ``closed_open``: it closed a decision
        counted as pending here."""
        self.pending -= int(closed_open)
        self.feedback[source] = self.feedback.get(source, 0) + 1
        self.feedback_by_model[model] = self.feedback_by_model.get(model, 0) + 1
        self.reward_by_model[model] = self.reward_by_model.get(model, 0.0) + reward

    def stats(self) -> dict[str, Any]:
        """The counters under the names ``/metrics`` exposes (copies of the mappings)."""
        return {
            "decisions": self.decisions,
            "pending": self.pending,
            "feedback": dict(self.feedback),
            "decisions_by_model": dict(self.decisions_by_model),
            "feedback_by_model": dict(self.feedback_by_model),
            "reward_sum_by_model": dict(self.reward_by_model),
        }


# ---------------------------------------------------------------------------------------------------- protocol
class DecisionStore(Protocol):
    """What :class:`~agents.online.OnlineRouter` and the HTTP service need from a decision store.

    Sequence numbers: decisions are numbered ``1, 2, …`` by the router (``Decision.seq``), feedback by its
    position in the store's log (``Feedback.seq``: gap-free, in commit order, the order it was applied); a
    restored router replays feedback in that order after its checkpoint. The store is the log: :meth:`log_entries`
    reads it after a position and :meth:`wait_for_log` waits for it to grow.
    Lookups of ids the store never issued raise :class:`~agents.online.errors.DecisionNotFoundError`.
    """

    @property
    def location(self) -> str:
        """Where the store lives, for messages (a file path, or a URL without its password)."""
        ...

    # ---- policy versions and checkpoints
    def record_policy(
        self, version: str, kind: str, models: Sequence[str], n_features: int | None, created_at: float
    ) -> None:
        """Register a policy version (a version id names one policy for the life of the store)."""
        ...

    def policy_versions(self) -> dict[str, PolicyVersion]:
        """Every version served, in order of registration."""
        ...

    def checkpoint_path(self, version: str, last_feedback_seq: int) -> Path:
        """Directory where a new checkpoint of ``version`` holding feedback up to ``last_feedback_seq`` goes."""
        ...

    def add_checkpoint(self, version: str, path: str | Path, last_feedback_seq: int) -> Checkpoint:
        """Record a saved policy directory (committed at once) and return it."""
        ...

    def append_swap(self, version: str, save: Callable[[int], Path]) -> Checkpoint:
        """Append a policy swap to the log: the policy of ``version`` serves from the new entry's position on.

        The store holds the log's head (no other writer appends meanwhile), calls ``save(position)`` — the caller
        applies the log up to ``position - 1`` and saves the new policy's state into a directory it returns — and
        then records that directory as the checkpoint at ``position`` and the swap entry, in one transaction
        (committed after any open group). A swap's checkpoint is never pruned: a reader behind it needs it.
        """
        ...

    def latest_checkpoint(self) -> Checkpoint | None:
        """The newest checkpoint recorded, its ``path`` as this process reaches it (whatever its working
        directory), or ``None`` when none was ever recorded. Its directory may be missing (deleted or moved):
        the router refuses to restore from it rather than fall back to an older state."""
        ...

    # ---- decisions and cascade steps
    def insert_decision(self, d: Decision) -> None:
        """Log a new decision."""
        ...

    def get_decision(self, decision_id: str) -> Decision:
        """The decision with that id (:class:`~agents.online.errors.DecisionNotFoundError` if never issued)."""
        ...

    def find_request(self, request_id: str) -> Decision | None:
        """The decision made for the caller's idempotency key ``request_id``, if any."""
        ...

    def decisions(self, status: str | None = None) -> list[Decision]:
        """Every decision (or those with ``status``), in decision order."""
        ...

    def open_before(self, before: float) -> list[str]:
        """Ids of open decisions created before UNIX time ``before`` (s), oldest first."""
        ...

    def max_decision_seq(self) -> int:
        """The highest decision ``seq`` logged (0 for an empty store)."""
        ...

    def insert_step(self, step: Step, n_calls: int, model: str, action: int) -> None:
        """Log a cascade step with the decision's new number of calls and current model, atomically."""
        ...

    def steps(self, decision_id: str) -> list[Step]:
        """The cascade steps of a decision, in call order."""
        ...

    def reroute(self, d: Decision) -> None:
        """Replace the model, action, propensity, probabilities and allowed models of the open decision ``d``
        (same id) with those of ``d``: a fail-over served another model than the one first drawn."""
        ...

    # ---- upstream calls
    def insert_calls(self, calls: Sequence[Call]) -> None:
        """Log the upstream calls of a decision (atomically); a call's ``(decision_id, index)`` is unique."""
        ...

    def calls(self, decision_id: str) -> list[Call]:
        """The upstream calls logged for a decision, in call order (empty when none were logged)."""
        ...

    # ---- feedback
    def insert_feedback(self, fb: Feedback) -> int:
        """Append feedback to the log and close its decision (``closed``; ``expired`` for a default), atomically;
        return its log position.

        ``fb.seq`` is the position the writer expects (its own count + 1); a store that takes several writers
        (PostgreSQL) assigns the position at commit and refuses a stale expectation with
        :class:`~agents.online.errors.LogConflictError`, writing nothing (``seq=0`` takes the next position).
        A second feedback for the same decision raises :class:`~agents.online.errors.DecisionConflictError` (a
        uniqueness constraint of the store, so that concurrent duplicates are refused however they interleave)
        and leaves the first one, and an open group, intact.
        """
        ...

    def mark_expired(self, decision_id: str) -> None:
        """Close a decision whose wait time expired, without any feedback."""
        ...

    def get_feedback(self, decision_id: str) -> Feedback | None:
        """The feedback of a decision, if it has any."""
        ...

    def feedback(self, after_seq: int = 0) -> Iterator[tuple[Feedback, Decision]]:
        """Feedback with ``seq > after_seq`` in apply order, each with its decision (replay and audits)."""
        ...

    def max_feedback_seq(self) -> int:
        """The highest feedback ``seq`` logged (0 for an empty store)."""
        ...

    def log_position(self) -> int:
        """The position of the last committed log entry (0 for an empty log): the head of the log (a feedback or
        a swap)."""
        ...

    def log_entries(self, after: int = 0, limit: int = 1000) -> list[LogEntry]:
        """At most ``limit`` committed log entries with ``position > after``, in position order.

        Positions are gap-free and commit-ordered: an entry is never visible before the entries below it, so a
        reader that applies entries in this order never skips one.
        """
        ...

    def wait_for_log(self, after: int, timeout_s: float) -> int:
        """Block until the log's head passes ``after`` or ``timeout_s`` seconds have passed; return the head.

        PostgreSQL is woken by ``LISTEN/NOTIFY``; SQLite polls.
        """
        ...

    def counts(self) -> StoreCounts:
        """Totals for monitoring."""
        ...

    # ---- export
    def export(
        self,
        *,
        versions: Sequence[str] | None = None,
        include_default: bool = False,
        models: Sequence[str] | None = None,
    ) -> LoggedDataset:
        """The logged traffic in the canonical format (partial information, ``logged_action`` + ``propensity``)."""
        ...

    def export_bandit_feedback(
        self, cost_weight: float = 0.0, cost_scale: float | Literal["max_mean"] = "max_mean", **kwargs: Any
    ) -> Any:
        """The exported logs as a :class:`routing_env.ope.BanditFeedback`."""
        ...

    # ---- group commit
    def begin_deferred(self) -> None:
        """Defer the calling thread's writes into one shared transaction until :meth:`end_deferred`."""
        ...

    def end_deferred(self, discard: bool = False) -> int | None:
        """Stop deferring; the id of the group this deferral wrote into, if it wrote.

        With ``discard`` (the request failed), the writes of this deferral are undone (a savepoint) while the
        group's other writes stay, and ``None`` is returned. Writes a flush already committed stay committed.
        """
        ...

    def commit_group(self) -> None:
        """Commit the open group transaction, if any; a failure rolls it back and is kept for
        :meth:`group_error` (not raised)."""
        ...

    def group_error(self, group: int) -> BaseException | None:
        """The error that rolled back group ``group`` (``None``: committed, or still open)."""
        ...

    def close(self) -> None:
        """Commit what is open and release the store's connections."""
        ...
