"""What the online router learns from a closed decision, in two steps kept apart on purpose.

1. **Validate** (:func:`check_outcome`, :func:`reward_of`, :func:`prepare_update`): the outcome is within the
   router's bounds, the reward is finite, and the update is built for the learner's own mode — everything that
   can be refused is refused here, before anything is written, and depends only on the decision, the outcome and
   the policy version (not on the policy's learned state).
2. **Apply** (:func:`apply_update`): one :class:`Update` is handed to the policy. It reads nothing from the store,
   so the live router, a restore's replay and (with several replicas) a reader of the committed log apply exactly
   the same call.

Bounds (:class:`OutcomeBounds`) keep one feedback from poisoning the policy: a cost of 1e300 USD is refused rather
than learned. The default is :data:`~agents.online.config.COST_BOUND_FACTOR` × the dearest model's mean cost per
call (see :class:`~agents.online.config.RouterConfig`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from agents.online.cascades import stop_returns
from agents.online.config import COST_BOUND_FACTOR, RouterConfig
from agents.online.stores.base import Decision, Step
from routing_env.errors import ConfigurationError
from routing_env.policy import CascadePolicy, CostAwarePolicy

#: How a served policy learns: ``"outcomes"`` (``update_outcomes`` with quality and cost), ``"reward"``
#: (``update`` with the scalar reward), ``"cascade"`` (``update`` per stop draw), or ``"none"``.
LearnerMode = Literal["outcomes", "reward", "cascade", "none"]


@dataclass(frozen=True)
class OutcomeBounds:
    """The largest outcome feedback may report: ``max_cost`` USD per model call, ``max_latency_s`` seconds.

    ``basis`` says where ``max_cost`` came from (for messages).
    """

    max_cost: float
    max_latency_s: float
    basis: str


@dataclass(frozen=True)
class Update:
    """One policy update, complete: what :func:`apply_update` passes to the policy.

    ``features`` is ``(1, d) float32``. Route decisions carry ``action`` (model index), ``quality`` in [0, 1],
    ``cost`` USD and ``reward``; cascade decisions carry ``stops``: per stop draw the policy made,
    ``(signals (1, t+1), stop (1,), return (1,))``.
    """

    mode: LearnerMode
    features: np.ndarray
    action: int = 0
    quality: float = 0.0
    cost: float = 0.0
    reward: float = 0.0
    stops: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...] = ()


def learner_mode(policy: Any) -> LearnerMode:
    """The way ``policy`` learns, asked of the policy itself.

    A cost-aware bandit that already learns scalar rewards (``fit_rewards`` or ``update``) reports
    ``mode == "reward"`` and is updated with ``update``; calling ``update_outcomes`` on it would fail.
    """
    if isinstance(policy, CascadePolicy):
        return "cascade" if callable(getattr(policy, "update", None)) else "none"
    if isinstance(policy, CostAwarePolicy) and getattr(policy, "mode", None) != "reward":
        return "outcomes"
    return "reward" if callable(getattr(policy, "update", None)) else "none"


def outcome_bounds(config: RouterConfig, policy: Any, cost_scale: float) -> OutcomeBounds:
    """The bounds for ``policy`` under ``config`` (see :class:`~agents.online.config.RouterConfig.max_cost`)."""
    if config.max_cost is not None:
        return OutcomeBounds(config.max_cost, config.max_latency_s, "max_cost")
    reference, what = cost_scale, "the cost scale"
    if config.model_costs and max(config.model_costs.values()) > 0:
        reference, what = max(config.model_costs.values()), "the dearest model_costs entry"
    else:
        means = np.asarray(getattr(policy, "mean_cost_", np.zeros(0)), dtype=np.float64).ravel()
        means = means[np.isfinite(means)]
        if means.size and means.max() > 0:
            reference, what = float(means.max()), "the dearest model's mean cost"
    cap = COST_BOUND_FACTOR * reference
    return OutcomeBounds(cap, config.max_latency_s, f"{COST_BOUND_FACTOR:g} × {what} (${reference:.6g})")


def check_outcome(
    quality: Any, cost: Any, latency_s: Any, bounds: OutcomeBounds, calls: int = 1
) -> tuple[float, float | None, float | None]:
    """``(quality, cost, latency_s)`` as floats, refused unless finite and within ``bounds``.

    ``cost`` (USD, of all ``calls`` model calls) may be at most ``calls × bounds.max_cost``.

    Raises:
        ConfigurationError: naming the value, the bound and how to change it.
    """
    q = finite(quality, "quality")
    if not 0.0 <= q <= 1.0:
        raise ConfigurationError(f"quality must lie in [0, 1], got {q!r}")
    c = None if cost is None else finite(cost, "cost")
    if c is not None:
        cap = bounds.max_cost * max(int(calls), 1)
        if not 0.0 <= c <= cap:
            raise ConfigurationError(
                f"cost must be a USD amount in [0, {cap:.6g}] ({bounds.basis} per call × {max(int(calls), 1)} "
                f"call(s); set max_cost to change it), got {c!r}"
            )
    lat = None if latency_s is None else finite(latency_s, "latency_s")
    if lat is not None and not 0.0 <= lat <= bounds.max_latency_s:
        raise ConfigurationError(
            f"latency_s must lie in [0, {bounds.max_latency_s:g}] seconds (max_latency_s), got {lat!r}"
        )
    return q, c, lat


def reward_of(quality: float, cost: float, cost_weight: float, cost_scale: float) -> float:
    """``quality − cost_weight·cost/cost_scale``, refused unless finite (``ConfigurationError``)."""
    reward = quality - cost_weight * cost / cost_scale
    if not math.isfinite(reward):
        raise ConfigurationError(
            f"the reward {quality!r} − {cost_weight!r}·{cost!r}/{cost_scale!r} is not finite; nothing was stored"
        )
    return float(reward)


def prepare_update(
    mode: LearnerMode,
    d: Decision,
    quality: float,
    calls: Sequence[float],
    reward: float,
    steps: Sequence[Step],
    cost_scale: float,
) -> Update:
    """The update a closed decision makes for a learner in ``mode`` (``calls``: USD per model call)."""
    x = np.asarray(d.features, dtype=np.float32)[None, :]
    if mode == "cascade":
        stops = tuple(stop_returns(steps, calls, quality, d.cost_weight, cost_scale))
        for _, _, ret in stops:
            if not np.isfinite(ret).all():
                raise ConfigurationError(f"a cascade return {ret[0]!r} is not finite; nothing was stored")
        return Update(mode, x, quality=quality, cost=float(sum(calls)), reward=reward, stops=stops)
    return Update(mode, x, action=d.action, quality=quality, cost=float(sum(calls)), reward=reward)


def apply_update(policy: Any, u: Update) -> None:
    """Hand ``u`` to ``policy`` (the only place the router calls a policy's learning methods)."""
    if u.mode == "outcomes":
        a = np.array([u.action], dtype=np.int64)
        policy.update_outcomes(u.features, a, np.array([u.quality]), np.array([u.cost]))
    elif u.mode == "reward":
        policy.update(u.features, np.array([u.action], dtype=np.int64), np.array([u.reward]))
    elif u.mode == "cascade":
        for signals, stop, ret in u.stops:
            policy.update(u.features, signals, stop, ret)


def finite(value: Any, name: str) -> float:
    """``value`` as a float, refused unless it is a finite number (``ConfigurationError`` naming ``name``)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise ConfigurationError(f"{name} must be finite, got {value!r}")
    return out


def call_cost_map(steps: Sequence[Step]) -> Mapping[int, float | None]:
    """The USD cost per call index that ``observe`` reported for a cascade decision's ``steps``."""
    return {st.step: st.cost for st in steps}
