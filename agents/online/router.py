"""`OnlineRouter`: route → decision id → (delayed) feedback → online update, durable in a decision store.

The loop follows the rank/reward API of Azure Personalizer and Microsoft's Decision Service:

1. ``route(features | prompt)`` samples a model from the policy's action distribution (renormalised over
   ``allowed_models``), logs the decision with its propensity, and returns a :class:`Decision` with its id.
2. The gateway calls that model. For a cascade policy it reports the model's ``signal`` with ``observe(id, s)``
   and gets back ``"accept"`` or the next model to call.
3. ``feedback(id, quality, cost)`` closes the decision: the reward ``quality − λ·cost/cost_scale`` (or quality and
   cost separately for a :class:`~routing_env.policy.CostAwarePolicy`) updates the policy online. Feedback may come
   late, out of order, or never: after ``feedback_timeout_s`` a default quality is applied (or none).

Determinism and crash safety: routing never touches the policy's own RNG. Decision ``seq`` draws its model with
one uniform number that is a keyed hash of ``(seed, seq)`` (cascade step ``t``: of ``(seed, seq, t)``), so the
policy's state changes only in ``update`` calls. Feedback is validated (bounds, a finite reward, the learner's own
mode: :mod:`agents.online.learning`), applied, checked (the policy must still give a distribution) and only then
written; an update that fails is undone before anything is stored, so the store never holds a row that cannot be
applied. The policy is checkpointed every ``checkpoint_every`` updates, and :meth:`OnlineRouter.restore` loads the
last checkpoint and replays the feedback logged after it in apply order — the restored policy is bit-identical to
one that never crashed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from agents.online.cache import DecisionCache
from agents.online.cascades import Observation, call_costs, stop_draw
from agents.online.config import RouterConfig
from agents.online.errors import ContractChangeError, DecisionConflictError, LogConflictError, already_closed
from agents.online.failover import reroute
from agents.online.follow import apply_log, catch_up, multi_writer, next_decision_seq, replay
from agents.online.learning import (
    Update,
    apply_update,
    call_cost_map,
    check_outcome,
    finite,
    prepare_update,
    reward_of,
)
from agents.online.monitoring import prometheus_text
from agents.online.pacing import BudgetPacer
from agents.online.restore import RestoreReport, restore_router
from agents.online.sampling import draw, renormalise, uniform
from agents.online.served import (
    Kind,
    Served,
    allowed_mask,
    check_routes,
    exploration_warning,
    health_problem,
    inspect_policy,
    probabilities,
    query_features,
)
from agents.online.stores import open_store
from agents.online.stores.base import Checkpoint, Decision, DecisionStore, Feedback, Step, StoreCounts
from agents.online.swap import save_state, swap_in
from routing_env.errors import ConfigurationError, ModelMismatchError
from routing_env.policy import load_policy

log = logging.getLogger("routing_env.online")

# Closed decision ids remembered to refuse a duplicate feedback before its twin's commit is visible.
_RECENTLY_CLOSED = 65_536
# Appends tried when other replicas keep taking the log position first.
_LOG_ATTEMPTS = 8


class OnlineRouter:
    """Serve a policy online, log every decision and feedback, and learn from the feedback.

    Args:
        policy: a :class:`~routing_env.policy.Policy` (``models``, ``action_probabilities``; learners add
            ``update`` or ``update_outcomes``) or a :class:`~routing_env.policy.CascadePolicy`. It must have
            ``save(dir)`` (checkpoints) and be loadable with :func:`routing_env.policy.load_policy`.
        store: the :class:`~agents.online.stores.base.DecisionStore`, or a path or URL for
            :func:`~agents.online.stores.open_store` (a path: a SQLite file, created when absent).
        options: the fields of :class:`RouterConfig` (``cost_weight``, ``cost_scale``, ``checkpoint_every``,
            ``feedback_timeout_s``, ``default_quality``, ``model_costs``, ``seed``, ``max_cost``, ``max_latency_s``,
            ``max_cost_weight``, ``store_prompts``, ``max_stored_prompt_chars``, ``open_cache_bytes``).
        featurizer: ``transform(prompts) -> (n, d)`` turning prompts into features (its output width must be the
            policy's); default the policy's own ``featurizer`` attribute. Checkpoints keep it, so a restore finds it.
        version: the policy's version id (default ``v<n>``, n = versions served by the store so far + 1).

    Constructing a router registers ``policy`` as a new version of the store and checkpoints it; use
    :meth:`restore` to resume from the store after a restart.
    """

    def __init__(
        self,
        policy: Any,
        store: DecisionStore | str | Path,
        *,
        featurizer: Any = None,
        version: str | None = None,
        pacer: BudgetPacer | None = None,
        _restoring: bool = False,
        **options: Any,
    ) -> None:
        self.config = RouterConfig(**options)
        if pacer is not None and not isinstance(pacer, BudgetPacer):
            raise ConfigurationError(f"pacer must be a BudgetPacer, got {type(pacer).__name__}")
        #: Sets λ of the decisions that give none from the spend so far (:mod:`agents.online.pacing`).
        self.pacer = pacer
        opened = isinstance(store, (str, os.PathLike))
        self.store: DecisionStore = open_store(store) if isinstance(store, (str, os.PathLike)) else store
        try:
            self._setup(policy, featurizer, version, _restoring)
        except BaseException:
            if opened:  # the caller never saw the store: release it (its writer lock) here
                self.store.close()
            raise

    def _setup(self, policy: Any, featurizer: Any, version: str | None, restoring: bool) -> None:
        self._lock = threading.RLock()
        self._featurizer_override = featurizer
        self._decision_seq = self.store.max_decision_seq()
        self._feedback_seq = self.store.log_position()
        #: Feedback applied live by this process (restore and resync replays are counted in ``n_replayed``).
        self.n_applied = 0
        self.n_replayed = 0
        #: Called with each new decision once logged; ``canary``: a rollout.live.LiveCanary serving a share, or None.
        self.decision_hooks: list[Callable[[Decision], None]] = []
        self.canary: Any = None
        self._counts: StoreCounts = self.store.counts()
        # Open route decisions by id, newest last, so feedback need not read them back from the store; bounded in
        # bytes (the oldest fall back to the store), and entries leave when their decision closes.
        self._open = DecisionCache(self.config.open_cache_bytes)
        # Decisions by request id, for idempotent retries that arrive before the first one's commit is visible.
        self._by_request = DecisionCache(self.config.open_cache_bytes // 4)
        self._closed_recently: dict[str, None] = {}
        # The checkpoint the policy was last loaded from or saved to, and the updates applied since: what an
        # update that has to be undone is rebuilt from.
        self._base: Checkpoint | None = None
        self._since: list[Update] = []
        self._checkpoint_due = self.config.checkpoint_every
        self._problem: str | None = None  # why the router cannot serve (a failed undo)
        self._checkpoint_error: str | None = None
        #: What :meth:`restore` resumed from (``None`` for a router built from a policy).
        self.restored: RestoreReport | None = None
        self._served = self._inspect(policy, version)
        self._prime(self._served)
        if not restoring:
            self._register_and_checkpoint()

    # ------------------------------------------------------------------ construction helpers
    def _inspect(self, policy: Any, version: str | None, strict: bool = True) -> Served:
        if version is None:
            version = f"v{len(self.store.policy_versions()) + 1}"
        version = str(version)
        if not version or len(version) > 128:
            raise ConfigurationError(
                f"version must be a non-empty id of at most 128 characters, got {version!r}"
            )
        served = inspect_policy(policy, version, self.config, self._featurizer_override, strict=strict)
        if self.pacer is not None and not (served.kind == "route" and served.cost_aware):
            raise ConfigurationError(
                f"budget pacing sets λ per decision, which needs a cost-aware route policy (update_outcomes and a "
                f"settable cost_weight); {type(policy).__name__} is not one"
            )
        if self.config.cost_weight is not None and served.cost_aware:
            policy.cost_weight = self.config.cost_weight
        return served

    def _prime(self, s: Served) -> None:
        """Call the policy once so that caches it builds lazily on its first call exist before any checkpoint,
        and refuse a policy that cannot route (NaN weights) before it serves.

        A live router's policy has always been called (routing precedes feedback); priming gives a checkpointed
        or restored policy the same warm caches, so saved states compare bit for bit.
        """
        if s.n_features is None:
            return
        x = np.zeros((1, s.n_features), dtype=np.float32)
        try:
            check_routes(s, x)
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"policy version {s.version!r} cannot route a query of zeros: {exc}"
            ) from None

    def _register_and_checkpoint(self) -> None:
        """Make the new router's policy the store's: its first checkpoint, or, on a store that served another policy
        before, a swap at a log position of its own (so routers following the store switch there too)."""
        if self.store.latest_checkpoint() is not None:
            swap_in(self, self._served)
            return
        s = self._served
        self.store.record_policy(
            s.version,
            f"{type(s.policy).__module__}.{type(s.policy).__qualname__}",
            s.models,
            s.n_features,
            time.time(),
        )
        self.checkpoint()

    def _load(self, ckpt: Checkpoint) -> Served:
        """The policy saved in ``ckpt``, inspected and primed as this router serves it."""
        served = self._inspect(load_policy(ckpt.path), ckpt.policy_version, strict=False)
        self._prime(served)
        return served

    @classmethod
    def restore(cls, store: DecisionStore | str | Path, **kwargs: Any) -> OnlineRouter:
        """Resume serving from ``store``: the last checkpoint plus the feedback applied after it, replayed in the
        order it was first applied. Keyword arguments are those of the constructor (except ``version``); without
        ``featurizer``, the one the checkpoint keeps (if any) is used. :attr:`restored` says what was loaded.

        Stored feedback that the router's bounds refuse is skipped (and named in :attr:`restored`): a restart
        never applies what live serving would refuse.

        Raises:
            ConfigurationError: the store has no checkpoint (start with ``OnlineRouter(policy, store)``), its
                newest checkpoint is missing, or it claims feedback the store lost.
        """
        return restore_router(cls, store, kwargs)

    def _replay(self, ckpt: Checkpoint) -> list[int]:
        """Apply the log after ``ckpt`` to the (freshly loaded) policy, in log order, up to the log's end as read
        (its swaps included); the ``seq`` of the rows skipped because live serving would refuse them now."""
        self._base, self._since, self._feedback_seq = ckpt, [], ckpt.last_feedback_seq
        if self.pacer is not None:
            self.pacer.load(ckpt.path)
        skipped = replay(self)
        self._checkpoint_due = max(len(self._since), self.config.checkpoint_every)
        self._prime(self._served)  # as warm as a live router's policy, which has routed since its last update
        return skipped

    def _stored_update(self, fb: Feedback, d: Decision) -> Update:
        """The update a stored feedback row makes, validated as live feedback is (``ConfigurationError``)."""
        s = self._served
        q, c, _ = check_outcome(fb.quality, fb.cost, fb.latency_s, s.bounds, d.n_calls)
        steps, calls = self._costs(d, c)
        reward = reward_of(q, float(sum(calls)), d.cost_weight, s.cost_scale)
        return prepare_update(s.mode, d, q, calls, reward, steps, s.cost_scale)

    def _costs(self, d: Decision, total: float | None) -> tuple[list[Step], list[float]]:
        """``d``'s cascade steps and the USD cost of each of its calls: reported per call (``observe``), the rest
        from ``total``; without a total, a route decision costs what its logged upstream calls cost (the gateway
        logs them), else ``model_costs``."""
        if d.kind == "route":
            if total is None:
                logged = [c.cost for c in self.store.calls(d.decision_id) if c.cost is not None]
                total = float(sum(logged)) if logged else None
            return [], call_costs(d, {}, total, self.config.model_costs)
        steps = self.store.steps(d.decision_id)
        return steps, call_costs(d, call_cost_map(steps), total, self.config.model_costs)

    def resync(self) -> None:
        """Reset the in-memory state to what the store holds: the policy from the last checkpoint plus the
        feedback committed after it, the sequence numbers and the counters.

        A server that commits in groups calls this when a group commit failed: the decisions and feedback of
        that group were rolled back, so the updates they made in memory must be undone too.
        """
        with self._lock:
            ckpt = self.store.latest_checkpoint()
            if ckpt is None:
                raise ConfigurationError(
                    f"the store {self.store.location} has no policy checkpoint to resync from"
                )
            self._served = self._load(ckpt)
            self._decision_seq = self.store.max_decision_seq()
            self._feedback_seq = self.store.log_position()
            self._counts = self.store.counts()
            self._open.clear()
            self._by_request.clear()
            self._closed_recently.clear()
            self._replay(ckpt)
            self._problem = None

    # ------------------------------------------------------------------ properties
    @property
    def policy(self) -> Any:
        return self._served.policy

    @property
    def version(self) -> str:
        return self._served.version

    @property
    def kind(self) -> Kind:
        return self._served.kind

    @property
    def models(self) -> tuple[str, ...]:
        return self._served.models

    @property
    def cost_weight(self) -> float:
        if self.config.cost_weight is not None:
            return self.config.cost_weight
        own = getattr(self._served.policy, "cost_weight", None)  # the λ the policy was trained for
        if isinstance(own, (int, float)) and np.isfinite(own) and own >= 0:
            return float(own)
        return 0.0

    @property
    def n_features(self) -> int | None:
        return self._served.n_features

    @property
    def featurizer(self) -> Any:
        """What ``route(prompt=…)`` featurizes with (``None``: the router needs features)."""
        return self._served.featurizer

    @property
    def served(self) -> Served:
        """The policy being served with what the router derived from it (learner mode, bounds, contract)."""
        return self._served

    # ------------------------------------------------------------------ route
    def route(
        self,
        features: np.ndarray | Sequence[float] | None = None,
        *,
        prompt: str | None = None,
        request_id: str | None = None,
        allowed_models: Sequence[str] | None = None,
        cost_weight: float | None = None,
    ) -> Decision:
        """Choose a model for one query and log the decision (committed before returning).

        Args:
            features: ``(d,)`` features of the query; or give ``prompt`` and let the featurizer compute them.
            prompt: the query text (featurized when ``features`` is ``None``; stored as ``store_prompts`` says).
            request_id: the caller's idempotency key: routing the same id again returns the logged decision.
            allowed_models: route only among these models; the policy's distribution is renormalised over them
                (uniform over them if the policy gives them no mass), and the propensity is the chosen model's
                probability under that renormalised distribution.
            cost_weight: λ for this decision (cost-aware policies only, at most ``max_cost_weight``; default the
                router's).

        Returns:
            the :class:`Decision` (``decision_id``, ``model``, ``propensity``, ``probabilities``, ``policy_version``,
            ``created_at``). For a cascade, ``model`` is the first model of the chain; call :meth:`observe` next.
        """
        if request_id is not None:
            request_id = str(request_id)
            if not request_id or len(request_id) > 256:
                raise ConfigurationError(f"request_id must have 1 to 256 characters, got {request_id!r}")
            previous = self.store.find_request(request_id)
            if previous is not None:
                return previous
        if prompt is not None and not isinstance(prompt, str):
            raise ConfigurationError(f"prompt must be a string, got {type(prompt).__name__}")
        if cost_weight is not None:
            cost_weight = finite(cost_weight, "cost_weight")
            if not 0 <= cost_weight <= self.config.max_cost_weight:
                raise ConfigurationError(
                    f"cost_weight must lie in [0, {self.config.max_cost_weight:g}] (max_cost_weight), got "
                    f"{cost_weight!r}"
                )
        with self._lock:
            # A concurrent retry may have logged it meanwhile (maybe not yet committed).
            if request_id is not None:
                previous = self._by_request.get(request_id) or self.store.find_request(request_id)
                if previous is not None:
                    return previous
            s = self._served
            x = query_features(s, features, prompt)
            if cost_weight is None and self.pacer is not None:
                cost_weight = self.pacer.cost_weight
            lam = self.cost_weight if cost_weight is None else cost_weight
            if cost_weight is not None and not s.cost_aware and cost_weight != self.cost_weight:
                raise ConfigurationError(
                    f"cost_weight={cost_weight!r} per request needs a cost-aware policy (update_outcomes and a "
                    f"settable cost_weight); {type(s.policy).__name__} was trained for λ={self.cost_weight}"
                )
            allowed = allowed_mask(s, allowed_models)
            seq = next_decision_seq(self)
            if s.kind == "route":
                probs = probabilities(s, x, lam if cost_weight is not None and s.cost_aware else None)
                sampled = probs if allowed is None else renormalise(probs, allowed)
                if self.canary is not None:  # the serving arm, and its share times its distribution
                    s, sampled = self.canary.choose(s, x, sampled, seq, allowed)
                action = draw(sampled, uniform(self.config.seed, seq))
                max_calls = 1
            else:
                if allowed is not None and not allowed[0]:
                    raise ModelMismatchError(
                        f"allowed_models {list(allowed_models or [])} excludes {s.models[0]!r}, the first model of "
                        f"the cascade chain {list(s.models)}"
                    )
                sampled = np.zeros(len(s.models))
                sampled[0] = 1.0
                action = 0
                max_calls = len(s.models) if allowed is None else int(np.argmin(np.append(allowed, False)))
            decision = Decision(
                # Sequence-prefixed (index inserts stay at the end of the B-tree), 80 random bits after it.
                decision_id=f"{seq:012x}{os.urandom(10).hex()}",
                seq=seq,
                request_id=request_id,
                created_at=time.time(),
                policy_version=s.version,
                kind=s.kind,
                model=s.models[action],
                action=int(action),
                propensity=float(sampled[action]),
                models=s.models,
                probabilities=sampled,
                features=x[0],
                prompt=self.config.stored_prompt(prompt, featurized=features is None),
                allowed_models=None if allowed_models is None else tuple(str(m) for m in allowed_models),
                cost_weight=lam,
                status="open",
                n_calls=1,
                max_calls=max_calls,
                prompt_chars=None if prompt is None else len(prompt),
            )
            try:
                self.store.insert_decision(decision)
            except DecisionConflictError:
                # Another replica logged this request id at the same instant: its decision is the answer.
                previous = None if request_id is None else self.store.find_request(request_id)
                if previous is None:
                    raise
                return previous
            self._decision_seq = max(self._decision_seq, seq)
            for hook in self.decision_hooks:
                hook(decision)
            if decision.kind == "route":
                self._open.put(decision.decision_id, decision)
            if request_id is not None:
                self._by_request.put(request_id, decision)
            self._counts.count_decision(decision.model)
            return decision

    def fail_over(self, decision_id: str, failed: Sequence[str]) -> Decision:
        """Draw the open route decision again among its allowed models except ``failed`` (they could not answer),
        and log the model now served with its propensity (the logging semantics: :mod:`agents.online.failover`)."""
        with self._lock:
            d = self._open.get(decision_id) or self.store.get_decision(decision_id)
            new = reroute(d, failed, uniform(self.config.seed, d.seq, len(set(failed))))
            self.store.reroute(new)
            if decision_id in self._open:
                self._open.put(decision_id, new)
            by_model = self._counts.decisions_by_model
            by_model[d.model] -= 1
            by_model[new.model] = by_model.get(new.model, 0) + 1
            return new

    # ------------------------------------------------------------------ cascades
    def observe(self, decision_id: str, signal: float, cost: float | None = None) -> Observation:
        """Report the ``signal`` of the model just called for a cascade decision; get ``accept`` or the next model.

        Args:
            decision_id: a cascade decision from :meth:`route`.
            signal: what the gateway saw from the model's answer (confidence, self-verification, log-prob).
            cost: USD cost of that call (optional, at most ``max_cost``; used to split the final feedback's cost).

        Raises:
            DecisionNotFoundError: unknown id.
            DecisionConflictError: not a cascade decision, already accepted, or already closed.
        """
        signal = finite(signal, "signal")
        if cost is not None:
            _, cost, _ = check_outcome(0.0, cost, None, self._served.bounds)
        with self._lock:
            d = self.store.get_decision(decision_id)
            if d.kind != "cascade":
                raise DecisionConflictError(
                    f"decision {decision_id!r} routed to a single model; observe applies to cascade decisions"
                )
            if d.status != "open" or decision_id in self._closed_recently:
                raise DecisionConflictError(
                    f"decision {decision_id!r} is already closed; it takes no observe"
                )
            steps = self.store.steps(decision_id)
            if steps and steps[-1].stop:
                raise DecisionConflictError(
                    f"decision {decision_id!r} already accepted {d.models[steps[-1].step]!r}; send its feedback"
                )
            t = d.n_calls - 1  # index of the call whose signal this is
            signals = np.array([st.signal for st in steps] + [signal], dtype=np.float64)
            s = self._served
            forced = d.n_calls >= d.max_calls or s.kind != "cascade" or s.models != d.models
            if forced:
                p_stop, stop, propensity = 1.0, True, 1.0
            else:
                u = uniform(self.config.seed, d.seq, t + 1)
                p_stop, stop, propensity = stop_draw(s.policy, d.features, signals, u)
            n_calls = d.n_calls if stop else d.n_calls + 1
            step = Step(decision_id, t, time.time(), signal, cost, stop, float(propensity), forced)
            current = t if stop else t + 1
            self.store.insert_step(step, n_calls, d.models[current], current)
            return Observation(
                decision_id=decision_id,
                step=t,
                action="accept" if stop else "call",
                model=d.models[current],
                propensity=float(propensity),
                stop_probability=p_stop,
                n_calls=n_calls,
            )

    # ------------------------------------------------------------------ feedback
    def feedback(
        self,
        decision_id: str,
        quality: float,
        cost: float | None = None,
        latency_s: float | None = None,
    ) -> Feedback:
        """Close a decision with its outcome and update the policy; the update and the stored feedback succeed or
        fail together.

        Args:
            decision_id: the id :meth:`route` returned.
            quality: in [0, 1] (correctness or a normalised judge score).
            cost: USD cost of the call (all calls of a cascade), at most ``max_cost`` per call; default
                ``model_costs`` per call, else 0.
            latency_s: seconds, in [0, ``max_latency_s``] (stored and exported; not part of the reward).

        Returns:
            the stored :class:`~agents.online.stores.base.Feedback` (reward, apply ``seq``, whether the policy learned).

        Raises:
            DecisionNotFoundError: unknown id.
            DecisionConflictError: the decision already has feedback, or expired (default applied).
            ConfigurationError: quality outside [0, 1]; cost or latency negative, non-finite or above the bounds;
                a non-finite reward; an update that would leave the policy unable to route. Nothing is stored.
        """
        with self._lock:
            d = self._take_open(decision_id)
            try:
                q, c, lat = check_outcome(quality, cost, latency_s, self._served.bounds, d.n_calls)
                return self._close(d, q, c, lat, "client")
            except DecisionConflictError:
                raise
            except BaseException:
                if d.kind == "route":
                    self._open.put(d.decision_id, d)  # still open: its feedback may be sent again
                raise

    def _take_open(self, decision_id: str) -> Decision:
        d = self._open.pop(decision_id)
        if d is not None:
            return d
        d = self.store.get_decision(decision_id)
        if d.status != "open" or decision_id in self._closed_recently:
            self._conflict(d)
        return d

    def _conflict(self, d: Decision) -> None:
        fb = self.store.get_feedback(d.decision_id)
        # Closed by a request whose commit is not visible yet, when the store has no feedback row for it.
        pending = fb is None and d.decision_id in self._closed_recently
        raise already_closed(d.decision_id, fb, pending, self.config.feedback_timeout_s)

    def _close(
        self,
        d: Decision,
        quality: float,
        cost: float | None,
        latency_s: float | None,
        source: Literal["client", "default"],
    ) -> Feedback:
        """Validate, apply, then store the feedback of ``d``; an update that fails or a write that fails leaves
        neither the policy nor the store changed."""
        if multi_writer(self):
            catch_up(self)  # the feedback goes after everything already committed: apply that first
        s = self._served
        steps, calls = self._costs(d, cost)
        total = float(sum(calls))
        reward = reward_of(quality, total, d.cost_weight, s.cost_scale)
        applied = bool(s.learns) and (
            (d.kind == "route" and s.kind == "route" and d.model in s.models)
            or (d.kind == "cascade" and s.kind == "cascade" and s.models == d.models)
        )
        update = prepare_update(s.mode, d, quality, calls, reward, steps, s.cost_scale) if applied else None
        # Fields in Feedback's order: seq, decision, time, source, quality, cost (USD), latency, reward, applied, version.
        fb = Feedback(
            self._feedback_seq + 1,
            d.decision_id,
            time.time(),
            source,
            quality,
            total,
            latency_s,
            reward,
            applied,
            s.version,
        )
        for attempt in range(_LOG_ATTEMPTS):
            if update is not None:
                self._learn(update, d)
            try:
                self.store.insert_feedback(fb)
                break
            except LogConflictError:
                # Another replica appended first: undo, apply its entries, and take the next position.
                if update is not None:
                    self._revert()
                if attempt == _LOG_ATTEMPTS - 1:
                    raise
                apply_log(self)
                fb = dataclasses.replace(fb, seq=self._feedback_seq + 1)
            except BaseException:
                if update is not None:
                    self._revert()
                raise
        self._feedback_seq = fb.seq
        if self.pacer is not None:
            self.pacer.observe(fb.cost, d.created_at)
        self._closed_recently[d.decision_id] = None
        if len(self._closed_recently) > _RECENTLY_CLOSED:
            del self._closed_recently[next(iter(self._closed_recently))]
        self._counts.count_feedback(source, d.model, fb.reward)
        if update is not None:
            self._since.append(update)
            self.n_applied += 1
            if len(self._since) >= self._checkpoint_due:
                self._periodic_checkpoint()
        return fb

    def _learn(self, u: Update, d: Decision) -> None:
        """Apply ``u``; if that fails or leaves the policy unable to route ``d``'s query, undo it and refuse."""
        s = self._served
        try:
            apply_update(s.policy, u)
            check_routes(s, u.features, steps=max(len(u.stops), 1))
        except Exception as exc:
            self._revert()
            raise ConfigurationError(
                f"feedback for decision {d.decision_id!r} refused: learning it would leave "
                f"{type(s.policy).__name__} unable to route ({exc}); nothing was stored"
            ) from None

    def _revert(self) -> None:
        """Rebuild the policy as it was before the last, failed update: its base checkpoint plus the updates
        applied since (deterministic, so the result is the state before that update)."""
        try:
            if self._base is None:
                raise ConfigurationError("the router has no checkpoint to rebuild its policy from")
            served = self._load(self._base)
            for u in self._since:
                apply_update(served.policy, u)
            self._prime(served)
        except Exception as exc:
            self._problem = f"undoing a refused update failed, the policy's state is unknown: {exc}"
            log.exception("undoing a refused update failed")
            raise
        self._served = served

    def _periodic_checkpoint(self) -> None:
        """Checkpoint after ``checkpoint_every`` updates; a failure is logged and retried later (the feedback
        stays committed and applied, a restore just replays more)."""
        try:
            self.checkpoint()
        except Exception as exc:
            self._checkpoint_error = f"saving a policy checkpoint failed: {exc}"
            self._checkpoint_due = len(self._since) + self.config.checkpoint_every
            log.exception(
                "saving a policy checkpoint failed; retrying after %d more updates",
                self.config.checkpoint_every,
            )

    # ------------------------------------------------------------------ missing feedback
    def expire(self, now: float | None = None, limit: int | None = None) -> list[str]:
        """Close the decisions open for longer than ``feedback_timeout_s`` (no-op without a timeout).

        Each gets ``default_quality`` as feedback (source ``"default"``; cost from ``model_costs`` and the costs
        reported by ``observe``), or, when ``default_quality`` is ``None`` (or the policy refuses that update),
        is closed without any update. Returns the expired ids. The HTTP service calls this periodically,
        ``limit`` decisions at a time (the oldest first; ``None`` = all).
        """
        timeout = self.config.feedback_timeout_s
        if timeout is None:
            return []
        now = time.time() if now is None else float(now)
        expired = []
        due = self.store.open_before(now - timeout)
        if limit is not None:
            due = due[: max(int(limit), 0)]
        for decision_id in due:
            with self._lock:
                d = self.store.get_decision(decision_id)
                if d.status != "open" or decision_id in self._closed_recently:
                    continue
                self._open.pop(decision_id)
                default = self.config.default_quality
                try:
                    if default is not None:
                        self._close(d, default, None, None, "default")
                except ConfigurationError as exc:
                    log.warning("expiring %s without an update: %s", decision_id, exc)
                    default = None
                if default is None:
                    self.store.mark_expired(decision_id)
                    self._counts.pending -= 1
                expired.append(decision_id)
        return expired

    # ------------------------------------------------------------------ checkpoints and hot swap
    def checkpoint(self) -> Checkpoint:
        """Save the policy now, with the apply ``seq`` of the last feedback it includes (and the router's
        featurizer, when it was given one)."""
        with self._lock:
            path = self.store.checkpoint_path(self.version, self._feedback_seq)
            save_state(self, self._served, path)
            ckpt = self.store.add_checkpoint(self.version, path, self._feedback_seq)
            self._base, self._since = ckpt, []
            self._checkpoint_due = self.config.checkpoint_every
            self._checkpoint_error = None
            return ckpt

    def swap_policy(self, policy: Any, version: str | None = None, *, force: bool = False) -> str:
        """Serve ``policy`` from now on (hot swap) under a new version id, recorded on every later decision.

        The swap is an entry of the store's log (:mod:`agents.online.swap`): routers following the store (other
        replicas) switch at the same log position, and a restart replays it.

        Open decisions of the old version keep their logged propensities; their feedback updates the new policy
        when it routes over the decision's model (route) or the same chain (cascade). Returns the version id.

        Raises:
            ContractChangeError: the new policy changes what requests must carry (features ↔ prompt, the feature
                width, the models, route ↔ cascade) and ``force`` is not set.
            ConfigurationError: the version id was served before, or the policy cannot route.
        """
        with self._lock:
            served = self._inspect(policy, version, strict=False)
            if served.version in self.store.policy_versions():
                raise ConfigurationError(
                    f"policy version {served.version!r} was already served; pick a new id"
                )
            changes = self._served.contract.changes(served.contract)
            if changes and not force:
                raise ContractChangeError(
                    f"the new policy changes the request contract ({'; '.join(changes)}), so requests that work "
                    "today would fail after the swap; send force: true to swap anyway"
                )
            self._prime(served)
            swap_in(self, served)  # a log entry: every router on the store switches at its position
            warning = self.exploration_warning()
            if warning:
                log.warning(warning)
            return served.version

    def swap_policy_dir(self, path: str | Path, version: str | None = None, *, force: bool = False) -> str:
        """Load a saved policy directory (never unpickled) and :meth:`swap_policy` to it."""
        return self.swap_policy(load_policy(path), version, force=force)

    # ------------------------------------------------------------------ monitoring
    def health(self) -> str | None:
        """Why the router cannot serve (``None``: healthy): a policy that gives no distribution for a query of
        zeros or for recent queries, a failed undo, or failing checkpoints."""
        with self._lock:
            if self._problem is not None:
                return self._problem
            if self._checkpoint_error is not None:
                return self._checkpoint_error
            return health_problem(self._served, [d.features for d in self._open.values(4)])

    def exploration_warning(self) -> str | None:
        """A warning when the served policy is deterministic (its logs cannot evaluate other policies)."""
        with self._lock:
            return exploration_warning(self._served, [d.features for d in self._open.values(32)])

    def stats(self) -> dict[str, Any]:
        """Counters for monitoring: decisions, feedback by source, pending, per-model decisions and mean reward."""
        with self._lock:
            return {
                "policy_version": self.version,
                "policy_kind": self.kind,
                **self._counts.stats(),
                "applied_updates": self.n_applied,
                "replayed_updates": self.n_replayed,
                "last_feedback_seq": self._feedback_seq,
                **({} if self.pacer is None else {"budget": self.pacer.stats()}),
                "open_cache_bytes": self._open.nbytes + self._by_request.nbytes,
            }

    def prometheus(self) -> str:
        """The :meth:`stats` in Prometheus' text exposition format (version 0.0.4)."""
        return prometheus_text(self.stats())

    def __repr__(self) -> str:
        return (
            f"OnlineRouter(policy={type(self.policy).__name__}, version={self.version!r}, "
            f"store={self.store.location!r})"
        )
