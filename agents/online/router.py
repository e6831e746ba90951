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
one uniform number that is a keyed hash of ``(seed, seq)`` (cascade step ``t``: of ``(seed, seq, t)``), so the policy's state changes
only in ``update`` calls. Every feedback is committed with an apply sequence number before it is applied; the
policy is checkpointed every ``checkpoint_every`` updates, and :meth:`OnlineRouter.restore` loads the last
checkpoint and replays the feedback logged after it in apply order — the restored policy is bit-identical to one
that never crashed.
"""

from __future__ import annotations

import inspect
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from agents.online.cascades import call_costs, stop_draw, stop_returns
from agents.online.config import RouterConfig
from agents.online.errors import DecisionConflictError
from agents.online.monitoring import prometheus_text
from agents.online.pacing import BudgetPacer
from agents.online.sampling import draw, renormalise, uniform
from agents.online.stores import open_store
from agents.online.stores.base import Checkpoint, Decision, DecisionStore, Feedback, Step, StoreCounts
from routing_env.errors import ConfigurationError, ModelMismatchError, ShapeError
from routing_env.policy import CascadePolicy, CostAwarePolicy, check_features, load_policy

Kind = Literal["route", "cascade"]
# Open decisions a router keeps in memory for their feedback (about 1 KB each at d = 64).
_OPEN_CACHE = 100_000


@dataclass(frozen=True)
class Observation:
    """The answer to :meth:`OnlineRouter.observe`: accept the last answer, or call ``model`` next.

    ``propensity`` is the probability of this choice (1 when it was forced: no further model allowed);
    ``stop_probability`` the policy's probability of accepting at this step.
    """

    decision_id: str
    step: int
    action: Literal["accept", "call"]
    model: str
    propensity: float
    stop_probability: float
    n_calls: int


@dataclass
class _Served:
    """The policy being served and what the router derived from it once, at load time."""

    policy: Any
    version: str
    kind: Kind
    models: tuple[str, ...]
    n_features: int | None
    featurizer: Any
    cost_aware: bool
    learns: bool
    cost_weight_kwarg: bool
    cost_scale: float


class OnlineRouter:
    """Serve a policy online, log every decision and feedback, and learn from the feedback.

    Args:
        policy: a :class:`~routing_env.policy.Policy` (``models``, ``action_probabilities``; learners add
            ``update`` or ``update_outcomes``) or a :class:`~routing_env.policy.CascadePolicy`. It must have
            ``save(dir)`` (checkpoints) and be loadable with :func:`routing_env.policy.load_policy`.
        store: the :class:`~agents.online.stores.base.DecisionStore`, or a path or URL for
            :func:`~agents.online.stores.open_store` (a path: a SQLite file, created when absent).
        cost_weight, featurizer, …: see :class:`RouterConfig`. ``featurizer`` (``transform(prompts) -> (n, d)``)
            turns prompts into features; default the policy's own ``featurizer`` attribute.
        version: the policy's version id (default ``v<n>``, n = versions served by the store so far + 1).
        pacer: a :class:`~agents.online.pacing.BudgetPacer` (cost-aware policies): decisions without their own
            ``cost_weight`` route with its λ, feedback costs move it; checkpointed with the policy.

    Constructing a router registers ``policy`` as a new version of the store and checkpoints it; use
    :meth:`restore` to resume from the store after a restart.
    """

    def __init__(
        self,
        policy: Any,
        store: DecisionStore | str | Path,
        *,
        cost_weight: float | None = None,
        featurizer: Any = None,
        cost_scale: float | None = None,
        checkpoint_every: int = 100,
        feedback_timeout_s: float | None = None,
        default_quality: float | None = None,
        model_costs: Mapping[str, float] | None = None,
        seed: int = 0,
        version: str | None = None,
        pacer: BudgetPacer | None = None,
        _restoring: bool = False,
    ) -> None:
        self.config = RouterConfig(
            cost_weight=None if cost_weight is None else float(cost_weight),
            cost_scale=None if cost_scale is None else float(cost_scale),
            checkpoint_every=int(checkpoint_every),
            feedback_timeout_s=None if feedback_timeout_s is None else float(feedback_timeout_s),
            default_quality=None if default_quality is None else float(default_quality),
            model_costs={str(k): float(v) for k, v in (model_costs or {}).items()},
            seed=int(seed),
        )
        self.store: DecisionStore = open_store(store) if isinstance(store, (str, os.PathLike)) else store
        self._lock = threading.RLock()
        self._featurizer_override = featurizer
        if pacer is not None and not isinstance(pacer, BudgetPacer):
            raise ConfigurationError(f"pacer must be a BudgetPacer, got {type(pacer).__name__}")
        self.pacer = pacer
        self._decision_seq = self.store.max_decision_seq()
        self._feedback_seq = self.store.max_feedback_seq()
        self._since_checkpoint = 0
        self.n_applied = 0
        self._counts: StoreCounts = self.store.counts()
        # Open route decisions by id, newest last, so feedback need not read them back from the store; bounded
        # (the oldest fall back to the store), and entries leave when their decision closes.
        self._open: dict[str, Decision] = {}
        # Decisions by request id, for idempotent retries that arrive before the first one's commit is visible.
        self._by_request: dict[str, Decision] = {}
        self._served = self._inspect(policy, version)
        if self.config.cost_weight is not None and self._served.cost_aware:
            policy.cost_weight = self.config.cost_weight
        self._prime()
        if not _restoring:
            self._register_and_checkpoint()

    # ------------------------------------------------------------------ construction helpers
    def _inspect(self, policy: Any, version: str | None) -> _Served:
        if not callable(getattr(policy, "save", None)):
            raise ConfigurationError(
                f"policy must have save(dir) so the router can checkpoint it, got {type(policy).__name__}"
            )
        kind: Kind
        if isinstance(policy, CascadePolicy):
            kind = "cascade"
            models = tuple(str(m) for m in policy.chain)
            learns = True
            cost_aware = False
        elif callable(getattr(policy, "action_probabilities", None)) and hasattr(policy, "models"):
            kind = "route"
            models = tuple(str(m) for m in policy.models)
            cost_aware = isinstance(policy, CostAwarePolicy)
            learns = cost_aware or callable(getattr(policy, "update", None))
        else:
            raise ConfigurationError(
                f"policy must implement routing_env.policy.Policy or CascadePolicy, got {type(policy).__name__}"
            )
        if not models or len(set(models)) != len(models):
            raise ConfigurationError(f"policy models must be unique and non-empty, got {list(models)}")
        unknown = sorted(set(self.config.model_costs) - set(models))
        if unknown:
            raise ModelMismatchError(f"model_costs names models {unknown} that the policy does not route to")
        n_features = getattr(policy, "n_features", None)
        featurizer = self._featurizer_override
        if featurizer is None:
            featurizer = getattr(policy, "featurizer", None)
        if version is None:
            version = f"v{len(self.store.policy_versions()) + 1}"
        version = str(version)
        if not version or len(version) > 128:
            raise ConfigurationError(
                f"version must be a non-empty id of at most 128 characters, got {version!r}"
            )
        try:
            params = inspect.signature(policy.action_probabilities).parameters if kind == "route" else {}
        except (TypeError, ValueError):
            params = {}
        scale = self.config.cost_scale
        if scale is None:
            fitted = getattr(policy, "cost_scale_", None)
            scale = (
                float(fitted)
                if isinstance(fitted, (int, float)) and math.isfinite(fitted) and fitted > 0
                else 1.0
            )
        if self.pacer is not None and not cost_aware:
            raise ConfigurationError(
                f"budget pacing sets λ per decision, which needs a cost-aware route policy (update_outcomes and a "
                f"settable cost_weight); {type(policy).__name__} is not one"
            )
        return _Served(
            policy=policy,
            version=version,
            kind=kind,
            models=models,
            n_features=None if n_features is None else int(n_features),
            featurizer=featurizer,
            cost_aware=cost_aware,
            learns=learns,
            cost_weight_kwarg="cost_weight" in params,
            cost_scale=scale,
        )

    def _prime(self) -> None:
        """Call the policy once so that caches it builds lazily on its first call exist before any checkpoint.

        A live router's policy has always been called (routing precedes feedback); priming gives a checkpointed
        or restored policy the same warm caches, so saved states compare bit for bit.
        """
        s = self._served
        if s.n_features is None:
            return
        x = np.zeros((1, s.n_features), dtype=np.float32)
        if s.kind == "route":
            s.policy.action_probabilities(x)
        else:
            s.policy.stop_probabilities(x, np.zeros((1, 1)))

    def _register_and_checkpoint(self) -> None:
        s = self._served
        self.store.record_policy(
            s.version,
            f"{type(s.policy).__module__}.{type(s.policy).__qualname__}",
            s.models,
            s.n_features,
            time.time(),
        )
        self.checkpoint()

    @classmethod
    def restore(cls, store: DecisionStore | str | Path, **kwargs: Any) -> OnlineRouter:
        """Resume serving from ``store``: the last checkpoint plus the feedback applied after it, replayed in the
        order it was first applied. Keyword arguments are those of the constructor (except ``version``).

        Raises:
            ConfigurationError: the store has no checkpoint (start with ``OnlineRouter(policy, store)``).
        """
        if "version" in kwargs:
            raise ConfigurationError("restore() takes the version from the checkpoint; do not pass version=")
        db = open_store(store) if isinstance(store, (str, os.PathLike)) else store
        ckpt = db.latest_checkpoint()
        if ckpt is None:
            raise ConfigurationError(
                f"the store {db.location} has no policy checkpoint to restore; start it with OnlineRouter(policy, store)"
            )
        policy = load_policy(ckpt.path)
        router = cls(policy, db, version=ckpt.policy_version, _restoring=True, **kwargs)
        with router._lock:
            router._replay(ckpt)
        return router

    def _replay(self, ckpt: Checkpoint) -> None:
        """Apply the feedback logged after ``ckpt`` to the freshly loaded policy and pacer, in apply order."""
        if self.pacer is not None:
            self.pacer.load(ckpt.path)
        for fb, decision in self.store.feedback(after_seq=ckpt.last_feedback_seq):
            if self.pacer is not None:
                self.pacer.observe(fb.cost, decision.created_at)
            if fb.applied:
                self._apply(fb, decision)
                self._since_checkpoint += 1
        self._prime()  # as warm as a live router's policy, which has routed since its last update

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
            served = self._inspect(load_policy(ckpt.path), ckpt.policy_version)
            if self.config.cost_weight is not None and served.cost_aware:
                served.policy.cost_weight = self.config.cost_weight
            self._served = served
            self._decision_seq = self.store.max_decision_seq()
            self._feedback_seq = self.store.max_feedback_seq()
            self._counts = self.store.counts()
            self._open.clear()
            self._by_request.clear()
            self._since_checkpoint = 0
            self._replay(ckpt)

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
        if isinstance(own, (int, float)) and math.isfinite(own) and own >= 0:
            return float(own)
        return 0.0

    @property
    def n_features(self) -> int | None:
        return self._served.n_features

    @property
    def featurizer(self) -> Any:
        """What ``route(prompt=…)`` featurizes with (``None``: the router needs features)."""
        return self._served.featurizer

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
            prompt: the query text (stored with the decision; featurized when ``features`` is ``None``).
            request_id: the caller's idempotency key: routing the same id again returns the logged decision.
            allowed_models: route only among these models; the policy's distribution is renormalised over them
                (uniform over them if the policy gives them no mass), and the propensity is the chosen model's
                probability under that renormalised distribution.
            cost_weight: λ for this decision (cost-aware policies only; default the router's).

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
            cost_weight = float(cost_weight)
            if not (math.isfinite(cost_weight) and cost_weight >= 0):
                raise ConfigurationError(f"cost_weight must be a finite number ≥ 0, got {cost_weight!r}")
        with self._lock:
            # A concurrent retry may have logged it meanwhile (maybe not yet committed).
            if request_id is not None:
                previous = self._by_request.get(request_id) or self.store.find_request(request_id)
                if previous is not None:
                    return previous
            s = self._served
            x = self._features(features, prompt)
            if cost_weight is None and self.pacer is not None:
                cost_weight = self.pacer.cost_weight
            lam = self.cost_weight if cost_weight is None else cost_weight
            if cost_weight is not None and not s.cost_aware and cost_weight != self.cost_weight:
                raise ConfigurationError(
                    f"cost_weight={cost_weight!r} per request needs a cost-aware policy (update_outcomes and a "
                    f"settable cost_weight); {type(s.policy).__name__} was trained for λ={self.cost_weight}"
                )
            allowed = self._allowed_mask(allowed_models)
            seq = self._decision_seq + 1
            if s.kind == "route":
                probs = self._probabilities(x, lam if cost_weight is not None and s.cost_aware else None)
                sampled = probs if allowed is None else renormalise(probs, allowed)
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
                prompt=prompt,
                allowed_models=None if allowed_models is None else tuple(str(m) for m in allowed_models),
                cost_weight=lam,
                status="open",
                n_calls=1,
                max_calls=max_calls,
            )
            self.store.insert_decision(decision)
            self._decision_seq = seq
            if decision.kind == "route":
                self._open[decision.decision_id] = decision
                if len(self._open) > _OPEN_CACHE:
                    del self._open[next(iter(self._open))]
            if request_id is not None:
                self._by_request[request_id] = decision
                if len(self._by_request) > _OPEN_CACHE:
                    del self._by_request[next(iter(self._by_request))]
            c = self._counts
            c.decisions += 1
            c.pending += 1
            c.decisions_by_model[decision.model] = c.decisions_by_model.get(decision.model, 0) + 1
            return decision

    def _features(self, features: Any, prompt: str | None) -> np.ndarray:
        s = self._served
        if features is None:
            if prompt is None:
                raise ConfigurationError("route needs features=... or prompt=..., got neither")
            if s.featurizer is None:
                raise ConfigurationError(
                    "route(prompt=...) needs a featurizer: the policy carries none and the router was given none"
                )
            raw = s.featurizer.transform([prompt])
        else:
            raw = features
            if type(raw) is list and len(raw) == s.n_features:
                # A plain list of numbers (what the HTTP service passes): one conversion, one check.
                try:
                    x32 = np.array(raw, dtype=np.float64).astype(np.float32)[None]
                except (TypeError, ValueError):
                    pass  # the general path below names the problem
                else:
                    if x32.ndim == 2 and np.isfinite(x32).all():
                        return x32
        x = check_features(raw, s.n_features)
        if x.shape[0] != 1:
            raise ShapeError(f"features must be one query's vector (d,), got shape {np.shape(raw)}")
        x32 = x.astype(np.float32)
        if not np.isfinite(x32).all():
            raise ShapeError("features overflow float32 (|x| > 3.4e38)")
        return x32

    def _allowed_mask(self, allowed_models: Sequence[str] | None) -> np.ndarray | None:
        if allowed_models is None:
            return None
        if isinstance(allowed_models, str):
            raise ConfigurationError(
                f"allowed_models must be a list of model names, got the string {allowed_models!r}"
            )
        names = [str(m) for m in allowed_models]
        models = self._served.models
        unknown = [m for m in names if m not in models]
        if unknown or not names:
            raise ModelMismatchError(
                f"allowed_models must name at least one of the policy's models {list(models)}, got {names}"
            )
        return np.array([m in names for m in models])

    def _probabilities(self, x: np.ndarray, cost_weight: float | None) -> np.ndarray:
        policy = self._served.policy
        if cost_weight is None:
            p = policy.action_probabilities(x)
        elif self._served.cost_weight_kwarg:
            p = policy.action_probabilities(x, cost_weight=cost_weight)
        else:
            saved = policy.cost_weight
            policy.cost_weight = cost_weight
            try:
                p = policy.action_probabilities(x)
            finally:
                policy.cost_weight = saved
        p = np.asarray(p, dtype=np.float64)
        k = len(self._served.models)
        # Checked on a Python list: K is small, and numpy's per-call overhead would dominate a request.
        values = p.ravel().tolist() if p.shape == (1, k) else []
        total = sum(values)  # NaN or ±inf make it non-finite (math.fsum would raise on inf − inf)
        if not values or not math.isfinite(total) or min(values) < 0 or abs(total - 1.0) > 1e-6:
            raise ConfigurationError(
                f"{type(policy).__name__}.action_probabilities returned {p!r}; expected (1, {k}) non-negative "
                "rows summing to 1"
            )
        return p[0] / total

    # ------------------------------------------------------------------ cascades
    def observe(self, decision_id: str, signal: float, cost: float | None = None) -> Observation:
        """Report the ``signal`` of the model just called for a cascade decision; get ``accept`` or the next model.

        Args:
            decision_id: a cascade decision from :meth:`route`.
            signal: what the gateway saw from the model's answer (confidence, self-verification, log-prob).
            cost: USD cost of that call (optional; used to split the final feedback's cost over the calls).

        Raises:
            DecisionNotFoundError: unknown id.
            DecisionConflictError: not a cascade decision, already accepted, or already closed.
        """
        signal = _finite(signal, "signal")
        if cost is not None:
            cost = _finite(cost, "cost")
            if cost < 0:
                raise ConfigurationError(f"cost must be a USD amount ≥ 0, got {cost!r}")
        with self._lock:
            d = self.store.get_decision(decision_id)
            if d.kind != "cascade":
                raise DecisionConflictError(
                    f"decision {decision_id!r} routed to a single model; observe applies to cascade decisions"
                )
            if d.status != "open":
                raise DecisionConflictError(
                    f"decision {decision_id!r} is already {d.status}; it takes no observe"
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
        """Close a decision with its outcome and update the policy (committed before it is applied).

        Args:
            decision_id: the id :meth:`route` returned.
            quality: in [0, 1] (correctness or a normalised judge score).
            cost: USD cost of the call (all calls of a cascade); default ``model_costs`` per call, else 0.
            latency_s: seconds, ≥ 0 (stored and exported; not part of the reward).

        Returns:
            the stored :class:`~agents.online.stores.base.Feedback` (reward, apply ``seq``, whether the policy learned).

        Raises:
            DecisionNotFoundError: unknown id.
            DecisionConflictError: the decision already has feedback, or expired (default applied).
            ConfigurationError: quality outside [0, 1], negative or non-finite cost or latency.
        """
        quality = _finite(quality, "quality")
        if not 0.0 <= quality <= 1.0:
            raise ConfigurationError(f"quality must lie in [0, 1], got {quality!r}")
        if cost is not None:
            cost = _finite(cost, "cost")
            if cost < 0:
                raise ConfigurationError(f"cost must be a USD amount ≥ 0, got {cost!r}")
        if latency_s is not None:
            latency_s = _finite(latency_s, "latency_s")
            if latency_s < 0:
                raise ConfigurationError(f"latency_s must be ≥ 0 seconds, got {latency_s!r}")
        with self._lock:
            d = self._open.pop(decision_id, None)
            if d is None:
                d = self.store.get_decision(decision_id)
                if d.status != "open":
                    self._conflict(d)
            return self._close(d, quality, cost, latency_s, "client")

    def _conflict(self, d: Decision) -> None:
        fb = self.store.get_feedback(d.decision_id)
        if fb is None:
            raise DecisionConflictError(
                f"decision {d.decision_id!r} expired after {self.config.feedback_timeout_s} s without feedback"
            )
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(fb.received_at))
        what = "the default reward was applied" if fb.source == "default" else "feedback was received"
        raise DecisionConflictError(
            f"decision {d.decision_id!r} is already closed: {what} at {when} (quality={fb.quality}); "
            "feedback is accepted once per decision"
        )

    def _close(
        self,
        d: Decision,
        quality: float,
        cost: float | None,
        latency_s: float | None,
        source: Literal["client", "default"],
    ) -> Feedback:
        calls = self._call_costs(d, cost)
        total = float(sum(calls))
        reward = quality - d.cost_weight * total / self._served.cost_scale
        s = self._served
        applied = s.learns and (
            (d.kind == "route" and s.kind == "route" and d.model in s.models)
            or (d.kind == "cascade" and s.kind == "cascade" and s.models == d.models)
        )
        fb = Feedback(
            seq=self._feedback_seq + 1,
            decision_id=d.decision_id,
            received_at=time.time(),
            source=source,
            quality=quality,
            cost=total,
            latency_s=latency_s,
            reward=float(reward),
            applied=bool(applied),
            policy_version=s.version,
        )
        self.store.insert_feedback(fb)
        self._feedback_seq = fb.seq
        if self.pacer is not None:
            self.pacer.observe(fb.cost, d.created_at)
        c = self._counts
        c.pending -= 1
        c.feedback[source] = c.feedback.get(source, 0) + 1
        c.feedback_by_model[d.model] = c.feedback_by_model.get(d.model, 0) + 1
        c.reward_by_model[d.model] = c.reward_by_model.get(d.model, 0.0) + fb.reward
        if applied:
            self._apply(fb, d)
            self._since_checkpoint += 1
            if self._since_checkpoint >= self.config.checkpoint_every:
                self.checkpoint()
        return fb

    def _call_costs(self, d: Decision, total: float | None) -> list[float]:
        """USD cost of each call of the decision: reported per call (observe), the rest from ``total``."""
        reported = {} if d.kind == "route" else {st.step: st.cost for st in self.store.steps(d.decision_id)}
        return call_costs(d, reported, total, self.config.model_costs)

    def _apply(self, fb: Feedback, d: Decision) -> None:
        """Update the policy with one stored feedback (used live and when replaying after a restart)."""
        s = self._served
        x = d.features[None, :].astype(np.float32)
        if d.kind == "route":
            a = np.array([s.models.index(d.model)], dtype=np.int64)
            if s.cost_aware:
                s.policy.update_outcomes(x, a, np.array([fb.quality]), np.array([fb.cost]))
            else:
                s.policy.update(x, a, np.array([fb.reward]))
        else:
            steps = self.store.steps(d.decision_id)
            costs = self._call_costs(d, fb.cost)
            for signals, stop, ret in stop_returns(steps, costs, fb.quality, d.cost_weight, s.cost_scale):
                s.policy.update(x, signals, stop, ret)
        self.n_applied += 1

    # ------------------------------------------------------------------ missing feedback
    def expire(self, now: float | None = None, limit: int | None = None) -> list[str]:
        """Close the decisions open for longer than ``feedback_timeout_s`` (no-op without a timeout).

        Each gets ``default_quality`` as feedback (source ``"default"``; cost from ``model_costs`` and the costs
        reported by ``observe``), or, when ``default_quality`` is ``None``, is closed without any update.
        Returns the expired ids. The HTTP service calls this periodically, ``limit`` decisions at a time (the
        oldest first; ``None`` = all).
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
                if d.status != "open":
                    continue
                self._open.pop(decision_id, None)
                if self.config.default_quality is None:
                    self.store.mark_expired(decision_id)
                    self._counts.pending -= 1
                else:
                    self._close(d, self.config.default_quality, None, None, "default")
                expired.append(decision_id)
        return expired

    # ------------------------------------------------------------------ checkpoints and hot swap
    def checkpoint(self) -> Checkpoint:
        """Save the policy now, with the apply ``seq`` of the last feedback it includes."""
        with self._lock:
            path = self.store.checkpoint_path(self.version, self._feedback_seq)
            self._served.policy.save(path)
            if self.pacer is not None:
                self.pacer.save(path)
            ckpt = self.store.add_checkpoint(self.version, path, self._feedback_seq)
            self._since_checkpoint = 0
            return ckpt

    def swap_policy(self, policy: Any, version: str | None = None) -> str:
        """Serve ``policy`` from now on (hot swap) under a new version id, recorded on every later decision.

        Open decisions of the old version keep their logged propensities; their feedback updates the new policy
        when it routes over the decision's model (route) or the same chain (cascade). Returns the version id.
        """
        with self._lock:
            served = self._inspect(policy, version)
            if served.version in self.store.policy_versions():
                raise ConfigurationError(
                    f"policy version {served.version!r} was already served; pick a new id"
                )
            if self.config.cost_weight is not None and served.cost_aware:
                policy.cost_weight = self.config.cost_weight
            self._served = served
            self._prime()
            self._register_and_checkpoint()
            return served.version

    def swap_policy_dir(self, path: str | Path, version: str | None = None) -> str:
        """Load a saved policy directory (never unpickled) and :meth:`swap_policy` to it."""
        return self.swap_policy(load_policy(path), version)

    # ------------------------------------------------------------------ monitoring
    def stats(self) -> dict[str, Any]:
        """Counters for monitoring: decisions, feedback by source, pending, per-model decisions and mean reward."""
        with self._lock:
            c = self._counts
            return {
                "policy_version": self.version,
                "policy_kind": self.kind,
                "decisions": c.decisions,
                "pending": c.pending,
                "feedback": dict(c.feedback),
                "applied_updates": self.n_applied,
                "decisions_by_model": dict(c.decisions_by_model),
                "feedback_by_model": dict(c.feedback_by_model),
                "reward_sum_by_model": dict(c.reward_by_model),
                "last_feedback_seq": self._feedback_seq,
                **({} if self.pacer is None else {"budget": self.pacer.stats()}),
            }

    def prometheus(self) -> str:
        """The :meth:`stats` in Prometheus' text exposition format (version 0.0.4)."""
        return prometheus_text(self.stats())

    def __repr__(self) -> str:
        return (
            f"OnlineRouter(policy={type(self.policy).__name__}, version={self.version!r}, "
            f"store={self.store.location!r})"
        )


# ---------------------------------------------------------------------------------------------------- helpers
def _finite(value: Any, name: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise ConfigurationError(f"{name} must be finite, got {value!r}")
    return out
