"""Shadow evaluation: candidate policies scored on every live decision without serving any of it.

A shadow is a saved policy registered on a running router (``POST /v1/shadows``, or ``shadows:`` in the gateway
config). For every decision the router logs, each active shadow's action distribution on the decision's query is
computed and stored with the decision (:class:`~agents.online.stores.rollout.ShadowProbabilities`): the exact
target probabilities of its off-policy value, on exactly the decisions it will be judged on. The distribution is
taken over the decision's models and restricted to its ``allowed_models`` as the live policy's was, so the shadow
is judged as it would have served the same request.

Off the request path: :meth:`Shadows.submit` only appends the decision to a queue (the router calls it from
``route``); a background thread takes the queue in batches (one ``action_probabilities`` call per shadow and batch,
one store transaction per batch). A shadow that raises or returns no distribution is marked ``failed`` with the
error (in the store and in its report) and is no longer scored; the request never sees it.

:func:`shadow_report` is the shadow's off-policy table against the live policy on the decisions since it was
registered that have client feedback, at the router's current λ: IPS, SNIPS and DR with two-sided intervals of
the paired difference ``shadow − live`` (:mod:`routing_env.ope.paired`: the same rows, per-row differences, the
interval on the difference), the effective sample size, the support diagnostics, and the promotion gate's verdict.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.online.errors import DecisionNotFoundError
from agents.online.rollout.gate import (
    Evidence,
    GateConfig,
    GateResult,
    evaluate_gate,
    json_clean,
    result_from,
    verdict,
)
from agents.online.sampling import renormalise
from agents.online.stores.base import Decision, DecisionStore
from agents.online.stores.export import traffic_dataset
from agents.online.stores.rollout import RolloutStore, ShadowProbabilities, ShadowRecord, ShadowRow
from routing_env.errors import ConfigurationError, ModelMismatchError, ShapeError
from routing_env.ope import BanditFeedback, Diagnostics
from routing_env.policy import Policy, load_policy

if TYPE_CHECKING:
    from agents.online.router import OnlineRouter

log = logging.getLogger("routing_env.online")

#: Estimators of a shadow report, in the order of its table.
REPORT_ESTIMATORS = ("IPS", "SNIPS", "DR")
_MAX_NAME = 64


def rollout_store(store: DecisionStore) -> RolloutStore:
    """``store`` as a :class:`RolloutStore` (``ConfigurationError`` when it keeps no rollout tables)."""
    if not isinstance(store, RolloutStore):
        raise ConfigurationError(
            f"the decision store {type(store).__name__} keeps no shadows or gate history; use a SQL store "
            "(a SQLite path or a postgresql:// URL)"
        )
    return store


def check_candidate(router: OnlineRouter, policy: Any, what: str) -> Policy:
    """``policy`` as a candidate for ``router``: a route policy over the live policy's models (any order) taking
    the live policy's features (``ConfigurationError``/``ModelMismatchError``/``ShapeError`` otherwise)."""
    if not isinstance(policy, Policy) or router.kind != "route":
        raise ConfigurationError(
            f"{what} must be a route policy (models, action_probabilities) beside a route policy, got "
            f"{type(policy).__name__} beside a {router.kind} policy"
        )
    if set(policy.models) != set(router.models):
        raise ModelMismatchError(
            f"{what} routes over {list(policy.models)}, but the live policy over {list(router.models)}: a "
            "candidate must choose among the same models"
        )
    width = getattr(policy, "n_features", None)
    if width is not None and router.n_features is not None and width != router.n_features:
        raise ShapeError(
            f"{what} takes {width} features, but the live policy's decisions carry {router.n_features}"
        )
    return policy


@dataclass
class _Active:
    record: ShadowRecord
    policy: Policy


class Shadows:
    """The shadows of one router: registration, the background scoring thread and the reports.

    Args:
        router: the :class:`~agents.online.OnlineRouter` whose decisions are scored (its store must be a
            :class:`~agents.online.stores.rollout.RolloutStore`). Shadows registered in its store before are
            loaded again (a shadow whose directory no longer loads is marked failed).
        batch: decisions scored per batch (one policy call per shadow and batch, one store write).
        interval_s: how often the thread looks at the queue (s): the delay before a decision is scored.
        max_pending: decisions kept waiting at most; beyond it the oldest are not scored (counted in
            :attr:`dropped`), so a slow shadow can never grow the server's memory.
    """

    def __init__(
        self, router: OnlineRouter, *, batch: int = 256, interval_s: float = 0.02, max_pending: int = 100_000
    ) -> None:
        if int(batch) < 1 or int(max_pending) < 1 or not (interval_s > 0):
            raise ConfigurationError(
                f"batch and max_pending must be ≥ 1 and interval_s > 0, got {batch!r}, {max_pending!r}, "
                f"{interval_s!r}"
            )
        self.router = router
        self.store = rollout_store(router.store)
        self.batch, self.interval_s, self.max_pending = int(batch), float(interval_s), int(max_pending)
        self._lock = threading.Lock()
        self._active: dict[str, _Active] = {}
        self._queue: deque[Decision] = deque()
        self._ready: deque[ShadowProbabilities] = deque()  # computed on the request path (a canary's)
        self._busy = False
        self._unloadable: set[str] = set()  # registered elsewhere, not loadable here (see sync)
        #: Decisions left unscored because the queue was full.
        self.dropped = 0
        self._stop = threading.Event()
        for record in self.store.shadows():
            if record.status != "active":
                continue
            try:
                policy = check_candidate(router, load_policy(record.path), f"shadow {record.name!r}")
            except Exception as exc:
                self.store.fail_shadow(record.name, f"could not be loaded again: {exc}")
                continue
            self._active[record.name] = _Active(record, policy)
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()
        if self._active:
            self._start()

    def _start(self) -> None:
        """Start the scoring thread (once; a service without shadows or canary never runs one)."""
        if self._thread is not None:
            return
        with self._starting:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="routing-env-shadows", daemon=True)
                self._thread.start()

    # ------------------------------------------------------------------ the request path
    def submit(self, decision: Decision) -> None:
        """Queue ``decision`` to be scored by every active shadow (O(1); the router calls it from ``route``)."""
        if not self._active or decision.kind != "route":
            return
        if len(self._queue) >= self.max_pending:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(decision)

    def submit_rows(self, rows: Sequence[ShadowProbabilities]) -> None:
        """Queue distributions already computed (a canary's, at decision time) for the next store write."""
        self._start()
        if len(self._ready) + len(rows) > self.max_pending:
            self.dropped += len(rows)
            return
        self._ready.extend(rows)

    # ------------------------------------------------------------------ registration
    def register(self, name: str, path: str | Path) -> ShadowRecord:
        """Load the saved policy at ``path`` (never unpickled) and score it on every decision from now on.

        Raises:
            ConfigurationError: a bad name or a policy that cannot be a candidate (see :func:`check_candidate`).
            DecisionConflictError: the name is taken.
        """
        if (
            not isinstance(name, str)
            or not 1 <= len(name) <= _MAX_NAME
            or not name.isprintable()
            or "/" in name
        ):
            raise ConfigurationError(
                f"name must be 1 to {_MAX_NAME} printable characters without '/', got {name!r}"
            )
        policy = check_candidate(self.router, load_policy(path), f"shadow {name!r}")
        record = ShadowRecord(name, str(path), tuple(policy.models), time.time())
        self.store.add_shadow(record)
        with self._lock:
            self._active[name] = _Active(record, policy)
        self._start()
        return record

    def remove(self, name: str) -> None:
        """Unregister a shadow and drop its distributions (``DecisionNotFoundError`` when unknown)."""
        with self._lock:
            self._active.pop(name, None)
            if not self.store.remove_shadow(name):
                raise DecisionNotFoundError(f"no shadow named {name!r} is registered")

    def sync(self) -> None:
        """Follow the registry in the store, which every replica on it shares: score the shadows registered
        elsewhere (a shadow this process cannot load is left to the replicas that can, with a warning once), and
        stop scoring those removed or failed elsewhere."""
        records = {r.name: r for r in self.store.shadows()}
        with self._lock:
            for name, active in list(self._active.items()):
                r = records.get(name)
                if r is None or r.status != "active" or r.registered_at != active.record.registered_at:
                    del self._active[name]  # removed, failed, or replaced under its name
        for name, record in records.items():
            if record.status != "active" or name in self._active or name in self._unloadable:
                continue
            try:
                policy = check_candidate(self.router, load_policy(record.path), f"shadow {name!r}")
            except Exception as exc:
                log.warning("shadow %r registered in the store cannot be loaded here: %s", name, exc)
                self._unloadable.add(name)
                continue
            with self._lock:
                self._active.setdefault(name, _Active(record, policy))
            self._start()

    def records(self) -> list[ShadowRecord]:
        """Every registered shadow with its status."""
        return self.store.shadows()

    def record(self, name: str) -> ShadowRecord:
        for r in self.store.shadows():
            if r.name == name:
                return r
        raise DecisionNotFoundError(f"no shadow named {name!r} is registered")

    # ------------------------------------------------------------------ scoring
    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.drain()
            except Exception:  # the store failed: the decisions stay unscored, serving goes on
                log.exception("scoring shadows failed")

    def drain(self) -> int:
        """Score every queued decision now (the thread calls this; tests and reports may too); how many."""
        done = 0
        with self._lock:
            self._busy = True
            try:
                while self._queue or self._ready:
                    n = min(self.batch, len(self._queue))
                    batch = [self._queue.popleft() for _ in range(n)]
                    rows = self._score(batch) if batch else []
                    rows += [self._ready.popleft() for _ in range(min(self.batch, len(self._ready)))]
                    self.store.insert_shadow_probabilities(rows)
                    done += n
            finally:
                self._busy = False
        return done

    def _score(self, batch: Sequence[Decision]) -> list[ShadowProbabilities]:
        x = np.stack([d.features for d in batch]).astype(np.float32)
        rows: list[ShadowProbabilities] = []
        for name, shadow in list(self._active.items()):
            try:
                dists = _distributions(shadow.policy, x, batch)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.warning("shadow %r failed and is no longer scored: %s", name, error)
                self._active.pop(name, None)
                self.store.fail_shadow(name, error)
                continue
            at = shadow.record.registered_at
            rows.extend(ShadowProbabilities(name, d.decision_id, p, at) for d, p in zip(batch, dists))
        return rows

    @property
    def pending(self) -> int:
        """Decisions and rows queued, not yet written."""
        return len(self._queue) + len(self._ready)

    def flush(self, timeout: float = 10.0) -> None:
        """Return once every decision queued before the call is scored (or ``timeout`` s passed)."""
        deadline = time.monotonic() + timeout
        while (self._queue or self._ready or self._busy) and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self) -> None:
        """Score what is queued and stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        self.drain()


def _distributions(policy: Policy, x: np.ndarray, batch: Sequence[Decision]) -> list[np.ndarray]:
    """``policy``'s distribution on each decision's query, over the decision's models, restricted to its allowed
    models; ``ConfigurationError`` when the policy gives no distribution."""
    raw = np.asarray(policy.action_probabilities(x), dtype=np.float64)
    names = tuple(policy.models)
    if raw.shape != (len(batch), len(names)):
        raise ShapeError(
            f"action_probabilities returned shape {raw.shape}, expected {(len(batch), len(names))}"
        )
    if not (np.isfinite(raw).all() and (raw >= 0).all() and np.allclose(raw.sum(axis=1), 1.0, atol=1e-6)):
        raise ConfigurationError("action_probabilities returned rows that are not probability distributions")
    out = []
    for d, row in zip(batch, raw):
        p = row[[names.index(m) for m in d.models]]
        if d.allowed_models is not None:
            p = renormalise(p, np.array([m in d.allowed_models for m in d.models]))
        out.append(p)
    return out


# ---------------------------------------------------------------------------------------------- the report
@dataclass(frozen=True)
class EstimateRow:
    """One estimator's line of a shadow report: both values and the paired difference ``shadow − live`` with
    its two-sided ``confidence`` interval (reward units; NaN when too few decisions)."""

    estimator: str
    shadow_value: float
    live_value: float
    difference: float
    low: float
    high: float
    std_error: float


@dataclass(frozen=True)
class ShadowReport:
    """A shadow's off-policy evaluation against the live policy (see the module docstring).

    Attributes:
        name, status, error, registered_at: the shadow as registered.
        n_decisions: decisions since registration with client feedback the table is computed on.
        cost_weight: λ of the reward ``quality − λ·cost/cost_scale``; cost_scale: USD per unit of cost weight.
        confidence: level of the two-sided intervals.
        estimates: one :class:`EstimateRow` per estimator of :data:`REPORT_ESTIMATORS`.
        ess: the shadow's effective sample size (decisions).
        unsupported_mass: mean probability the shadow puts on models the live policy could not choose.
        deterministic_share: share of the decisions logged with propensity 1.
        diagnostics: the OPE diagnostics of the shadow on these decisions.
        gate: the promotion gate's verdict on this evidence (DR, one-sided at ``gate_confidence``).
        pending: decisions queued but not yet scored; dropped: decisions left unscored (queue full).
    """

    name: str
    status: str
    error: str | None
    registered_at: float
    n_decisions: int
    cost_weight: float
    cost_scale: float
    confidence: float
    estimates: tuple[EstimateRow, ...]
    ess: float
    unsupported_mass: float
    deterministic_share: float
    diagnostics: Diagnostics | None
    gate: GateResult
    pending: int = 0
    dropped: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view (NaN as ``None``)."""
        out = {
            k: getattr(self, k)
            for k in self.__dataclass_fields__
            if k not in ("estimates", "gate", "diagnostics")
        }
        out["estimates"] = [asdict(e) for e in self.estimates]
        out["diagnostics"] = None if self.diagnostics is None else asdict(self.diagnostics)
        out["gate"] = self.gate.to_dict()
        return json_clean(out)


def traffic_feedback(
    rows: Sequence[ShadowRow],
    router: OnlineRouter,
    cost_weight: float,
    columns: Callable[[ShadowRow], tuple[np.ndarray, np.ndarray]],
) -> tuple[BanditFeedback, np.ndarray, np.ndarray]:
    """Scored decisions as bandit feedback at λ = ``cost_weight`` over the live policy's models, with the two
    ``(n, K)`` distributions ``columns(row)`` gives per row (each over the row's decision's models)."""
    dataset = traffic_dataset(
        [r.decision for r in rows],
        [(r.quality, r.cost, r.latency_s) for r in rows],
        router.store.policy_versions(),
        models=router.models,
        include_default=False,
        source=f"routing_env DecisionStore {router.store.location}",
    )
    col = {m: j for j, m in enumerate(dataset.models)}
    n, k = len(rows), len(dataset.models)
    first, second = np.zeros((n, k)), np.zeros((n, k))
    for i, r in enumerate(rows):
        cols = [col[m] for m in r.decision.models]
        first[i, cols], second[i, cols] = columns(r)
    feedback = BanditFeedback.from_dataset(
        dataset, cost_weight=cost_weight, cost_scale=router.served.cost_scale
    )
    return feedback, first, second


def _shadow_and_logger(r: ShadowRow) -> tuple[np.ndarray, np.ndarray]:
    # While a canary serves, a decision logs its arm's share times the arm's distribution: the arm's own
    # distribution is the logger given the arm (drawn independently of the query), so weights divide by it.
    return r.probabilities, r.decision.probabilities / r.decision.probabilities.sum()


def shadow_report(
    shadows: Shadows,
    name: str,
    *,
    confidence: float = 0.95,
    min_decisions: int = 1000,
    margin: float = 0.0,
    cost_weight: float | None = None,
) -> ShadowReport:
    """The off-policy table of shadow ``name`` against the live policy (see :class:`ShadowReport`).

    Args:
        shadows: the router's shadows (queued decisions are scored first).
        name: the shadow.
        confidence: level of the two-sided intervals, in [0.5, 1).
        min_decisions, margin: the promotion gate's settings for the verdict.
        cost_weight: λ; default the router's current one.
    """
    if not 0.5 <= confidence < 1.0:
        raise ConfigurationError(f"confidence must be in [0.5, 1) (e.g. 0.95), got {confidence!r}")
    record = shadows.record(name)
    shadows.drain()
    router = shadows.router
    lam = router.cost_weight if cost_weight is None else float(cost_weight)
    gate_cfg = GateConfig(min_decisions=min_decisions, margin=margin, cost_weight=lam)
    rows = shadows.store.shadow_traffic(name)
    nan = math.nan
    common = dict(
        name=record.name, status=record.status, error=record.error, registered_at=record.registered_at,
        cost_weight=lam, cost_scale=float(router.served.cost_scale), confidence=confidence,
        pending=shadows.pending, dropped=shadows.dropped,
    )  # fmt: skip
    if not rows:
        evidence = Evidence(None, 0, nan, 0.0, 0.0)
        reason, message = verdict(evidence, gate_cfg)
        empty = tuple(EstimateRow(e, nan, nan, nan, nan, nan, nan) for e in REPORT_ESTIMATORS)
        gate = result_from(evidence, reason, message, gate_cfg)
        return ShadowReport(
            n_decisions=0, estimates=empty, ess=nan, unsupported_mass=0.0, deterministic_share=0.0,
            diagnostics=None, gate=gate, **common,  # type: ignore[arg-type]
        )  # fmt: skip
    feedback, shadow, live = traffic_feedback(rows, router, lam, _shadow_and_logger)
    feedback = replace(feedback, propensity=live[np.arange(len(rows)), feedback.action], logging_dist=live)
    two_sided = (
        1.0 + confidence
    ) / 2.0  # one-sided bounds at this level make a two-sided `confidence` interval
    estimates = []
    for estimator in REPORT_ESTIMATORS:
        cfg = GateConfig(
            min_decisions=2, confidence=two_sided, estimator=estimator, cost_weight=lam, min_ess=0.0,
            min_ess_ratio=0.0,
        )  # fmt: skip
        res = evaluate_gate(feedback, shadow, live=live, config=cfg)
        estimates.append(
            EstimateRow(
                estimator, res.candidate_value, res.live_value, res.estimate, res.low, res.high, res.std_error
            )
        )
    gate = evaluate_gate(feedback, shadow, live=live, config=gate_cfg)
    return ShadowReport(
        n_decisions=len(rows), estimates=tuple(estimates), ess=gate.ess, unsupported_mass=gate.unsupported_mass,
        deterministic_share=gate.deterministic_share, diagnostics=gate.diagnostics, gate=gate,
        **common,  # type: ignore[arg-type]
    )  # fmt: skip
