"""A canary in the live router: the candidate serves a share of the traffic, the paired sequential test of
:mod:`agents.online.rollout.canary` runs on it continuously, and the canary is promoted or rolled back by itself.

**Serving.** :meth:`LiveCanary.choose` is called by :meth:`OnlineRouter.route` for every route decision while the
canary runs: a keyed uniform of ``(seed, seq)`` (a step of its own, so it is independent of the model draw) picks
the arm — the candidate with probability ``split`` — and the decision is logged under the serving arm's version
(the candidate's is registered in the store as ``canary-<n>``) with ``probabilities`` = the arm's share times its
distribution, so the logged propensity is the product ``split·π_c(a|x)`` or ``(1 − split)·π_l(a|x)``. Both
policies' distributions on the query are computed at decision time (one more policy call per decision) and stored
with the decision (the ``shadow_probabilities`` row of ``canary:<version>``: ``[π_c | π_l]`` over the decision's
models), so off-policy evaluation of either policy on all traffic stays exact
(:func:`~agents.online.rollout.canary.mixture_feedback`).

**Deciding.** :meth:`LiveCanary.evaluate` (the service calls it every ``interval_s``, off the event loop) feeds the
decisions that received client feedback since the last call to the pure :class:`~agents.online.rollout.Canary`
rule; it promotes when the gate passes, rolls back as soon as the upper bound of ``candidate − live`` is below −δ,
and expires after ``max_decisions``. The service then swaps (promote) or returns serving to the live policy, and
every change of the serving mix is a :class:`~agents.online.stores.rollout.ServingEvent` in the store, numbered.

The candidate does not learn while it is a canary (it is the fixed policy under test); the live policy keeps
learning from every decision's feedback, as before.

**Resuming.** The ``canary_start`` event keeps what rebuilds the canary (:meth:`LiveCanary.detail`), so a restart
resumes a canary that no event ended (:func:`active_canary`, :func:`resumed_canary`), under the same version and
split; its sequential test starts over from the canary's logged traffic, which the first evaluation reads back.
Replicas on one store share the mix the same way: each one polls the serving events and joins a canary another
replica started, or leaves one another replica ended.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.online.rollout.canary import Canary, CanaryConfig, CanaryDecision, CanaryState, mixture_feedback
from agents.online.rollout.gate import GateConfig, GateResult
from agents.online.rollout.shadows import Shadows, check_candidate, traffic_feedback
from agents.online.sampling import renormalise, uniform
from agents.online.served import Served, inspect_policy, probabilities
from agents.online.stores.base import Decision
from agents.online.stores.rollout import ServingEvent, ShadowProbabilities, ShadowRow
from routing_env.data import LoggedDataset
from routing_env.errors import ConfigurationError
from routing_env.policy import Policy, load_policy

if TYPE_CHECKING:
    from agents.online.router import OnlineRouter

# The step of the arm draw in the keyed uniform of (seed, seq, step): far from the model draw's 0, the cascade
# steps and the fail-over redraws.
_ARM_STEP = 1 << 62


@dataclass(frozen=True)
class CanaryStatus:
    """What ``GET /v1/canary`` shows: the arm, its share, the decision so far and the gate's evidence."""

    version: str
    live_version: str
    candidate: str
    split: float
    decision: CanaryDecision
    n_decisions: int
    result: GateResult | None


class LiveCanary:
    """A candidate serving ``config.split`` of ``router``'s traffic (see the module docstring).

    Args:
        router: the live :class:`~agents.online.OnlineRouter` (a route policy).
        candidate: the candidate's saved policy directory (never unpickled).
        config: the split and the sequential gate (:class:`~agents.online.rollout.CanaryConfig`).
        shadows: the service's shadows, whose background thread writes the canary's per-decision distributions.
        interval_s: how often the service runs :meth:`evaluate` (s).
        version: the canary's version, when it resumes one started before (a restart, another replica); ``None``:
            the next ``canary-<n>``.

    Raises:
        ConfigurationError: the candidate cannot be a canary of this router (other models, another feature
            width, not a route policy), or a canary already runs.
    """

    def __init__(
        self,
        router: OnlineRouter,
        candidate: str | Path,
        config: CanaryConfig,
        shadows: Shadows,
        *,
        interval_s: float = 1.0,
        version: str | None = None,
    ) -> None:
        if router.canary is not None:
            raise ConfigurationError(
                f"a canary ({router.canary.version}) already serves; stop it first (DELETE /v1/canary)"
            )
        if not interval_s > 0:
            raise ConfigurationError(f"interval_s must be > 0 seconds, got {interval_s!r}")
        self.router, self.shadows, self.config = router, shadows, config
        self.candidate = str(candidate)
        self.policy: Policy = check_candidate(router, load_policy(candidate), "the canary candidate")
        self.interval_s = float(interval_s)
        if version is None:  # a new canary; a resumed one keeps its version
            n = 1 + sum(v.startswith("canary-") for v in router.store.policy_versions())
            version = f"canary-{n}"
        self.version = str(version)
        self.served: Served = inspect_policy(self.policy, self.version, router.config, None, strict=False)
        self.live_version = router.version
        self.name = f"canary:{self.version}"
        self.split = float(config.split)
        self._rule = Canary(config)
        self.state: CanaryState = self._rule.start()
        self._seen: set[str] = set()
        self._pending: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        live = router.models
        self._to_candidate = [live.index(m) for m in self.served.models]  # live-order → candidate-order
        self._to_live = [self.served.models.index(m) for m in live]
        router.store.record_policy(
            self.version,
            f"{type(self.policy).__module__}.{type(self.policy).__qualname__}",
            self.served.models,
            self.served.n_features,
            time.time(),
        )

    # ------------------------------------------------------------------ the request path
    def choose(
        self, live: Served, x: np.ndarray, sampled: np.ndarray, seq: int, allowed: np.ndarray | None
    ) -> tuple[Served, np.ndarray]:
        """The serving arm for decision ``seq`` and the distribution to draw from: its share times its
        distribution (restricted to ``allowed``, a mask over the live models, as the live one already is)."""
        if (
            live.version != self.live_version
        ):  # the live policy was swapped meanwhile: the canary no longer applies
            return live, sampled
        pc = probabilities(self.served, x)
        if allowed is not None:
            pc = renormalise(pc, allowed[self._to_candidate])
        by_candidate = uniform(self.router.config.seed, seq, _ARM_STEP) < self.split
        if by_candidate:
            pair = np.concatenate([pc, sampled[self._to_candidate]])
            arm, dist = self.served, self.split * pc
        else:
            pair = np.concatenate([pc[self._to_live], sampled])
            arm, dist = live, (1.0 - self.split) * sampled
        if len(self._pending) > 4096:  # decisions whose insert failed never reach on_decision
            self._pending.clear()
        self._pending[seq] = pair
        return arm, dist

    def on_decision(self, d: Decision) -> None:
        """Queue the logged decision's ``[π_c | π_l]`` for the store (a router decision hook)."""
        pair = self._pending.pop(d.seq, None)
        if pair is not None:
            self.shadows.submit_rows([ShadowProbabilities(self.name, d.decision_id, pair)])

    # ------------------------------------------------------------------ deciding
    def evaluate(self) -> CanaryDecision:
        """Feed the decisions with client feedback not seen yet to the sequential rule; its decision."""
        with self._lock:
            if self.state.decision is not CanaryDecision.CONTINUE:
                return self.state.decision
            self.shadows.drain()
            rows = [
                r
                for r in self.shadows.store.shadow_traffic(self.name)
                if r.decision.decision_id not in self._seen
            ]
            if not rows:
                return self.state.decision
            decisions = [r.decision for r in rows]
            router = self.router
            logged, cand, live = traffic_feedback(rows, router, router.cost_weight, _split_pair)
            served = np.array([d.policy_version == self.version for d in decisions], dtype=bool)
            mixed = mixture_feedback(logged, served, self.split, cand, live)
            self.state = self._rule.step(self.state, mixed, cand, live)
            self._seen.update(d.decision_id for d in decisions)
            return self.state.decision

    def status(self) -> CanaryStatus:
        return CanaryStatus(
            version=self.version,
            live_version=self.live_version,
            candidate=self.candidate,
            split=self.split,
            decision=self.state.decision,
            n_decisions=self.state.n_decisions,
            result=self.state.result,
        )

    def event(
        self, kind: str, message: str, live_version: str, split: float, detail: str = ""
    ) -> ServingEvent:
        """Record a change of the serving mix in the store."""
        return self.shadows.store.record_serving_event(
            ServingEvent(0, time.time(), kind, live_version, self.version, split, message, detail)
        )

    def detail(self) -> str:
        """What resumes this canary (its ``canary_start`` event's ``detail``): the candidate, settings, interval."""
        return json.dumps(
            {"candidate": self.candidate, "config": asdict(self.config), "interval_s": self.interval_s},
            allow_nan=False,
        )


def active_canary(events: list[ServingEvent]) -> ServingEvent | None:
    """The ``canary_start`` event of the canary serving now according to ``events`` (oldest first), if any: the
    newest start that no later event ended."""
    active = None
    for e in events:
        if e.event == "canary_start":
            active = e
        elif active is not None and e.candidate_version == active.candidate_version:
            active = None
    return active


def resumed_canary(router: OnlineRouter, shadows: Shadows, start: ServingEvent) -> LiveCanary:
    """The canary that ``start`` (a ``canary_start`` event) began, rebuilt from its ``detail``.

    Raises:
        ConfigurationError: the live policy is no longer the one it was compared with, the event has no detail
            (written by an older version) or the candidate cannot be loaded.
    """
    if start.live_version != router.version:
        raise ConfigurationError(
            f"the live policy is {router.version!r}, not {start.live_version!r}, the one the canary was compared with"
        )
    try:
        detail = json.loads(start.detail)
        raw = dict(detail["config"])
        config = CanaryConfig(**{**raw, "gate": GateConfig(**raw["gate"])})
        candidate, interval_s = str(detail["candidate"]), float(detail["interval_s"])
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigurationError(
            f"the canary's start event holds no settings to resume it from ({exc})"
        ) from None
    return LiveCanary(
        router, candidate, config, shadows, interval_s=interval_s, version=str(start.candidate_version)
    )


def _split_pair(r: ShadowRow) -> tuple[np.ndarray, np.ndarray]:
    """``(π_c, π_l)`` of a canary row (stored as ``[π_c | π_l]`` over the decision's models)."""
    half = len(r.decision.models)
    return r.probabilities[:half], r.probabilities[half:]


def status_view(status: CanaryStatus) -> dict[str, Any]:
    """JSON-able view of a :class:`CanaryStatus`."""
    return {
        "version": status.version,
        "live_version": status.live_version,
        "candidate": status.candidate,
        "split": status.split,
        "decision": status.decision.value,
        "n_decisions": status.n_decisions,
        "result": None if status.result is None else status.result.to_dict(),
    }


def mixture_propensities(store: Any, dataset: LoggedDataset) -> LoggedDataset:
    """``dataset`` with the propensity of every decision made while a canary served replaced by the mixture
    ``μ(a|x) = s·π_c(a|x) + (1 − s)·π_l(a|x)`` of the two distributions stored with it
    (:meth:`~agents.online.stores.rollout.SQLRolloutRecords.canary_propensities`); the other decisions keep theirs.
    A store's own :meth:`export` already does this, so applying it to an export changes nothing; it is for
    datasets built from the decisions by other means. ``store`` is a
    :class:`~agents.online.stores.rollout.RolloutStore`.
    """
    mixture = store.canary_propensities()
    if not mixture:
        return dataset
    propensity = np.array(dataset.propensity, dtype=np.float64, copy=True)
    for i, q in enumerate(dataset.query_ids):
        if str(q) in mixture:
            propensity[i] = mixture[str(q)]
    return replace(dataset, propensity=propensity)
