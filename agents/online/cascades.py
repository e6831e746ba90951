"""What feedback on a cascade decision means: the USD cost of each call, and the return of each stop draw.

A cascade decision calls its chain's models in order until the policy accepts an answer. The gateway may report
each call's cost with ``observe`` and the total with the feedback; the policy learns, for every stop/continue draw
it made, the quality finally obtained minus the weighted cost of the calls that came after the draw.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from agents.online.stores.base import Decision, Step
from routing_env.errors import ConfigurationError


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


def call_costs(
    d: Decision, reported: Mapping[int, float | None], total: float | None, model_costs: Mapping[str, float]
) -> list[float]:
    """USD cost of each call of ``d``: reported per call (``observe``), the rest from ``total``.

    Args:
        d: the decision (``route``: one call; ``cascade``: ``d.n_calls`` calls of ``d.models`` in order).
        reported: cost per call index as reported by ``observe`` (``None`` or absent: not reported).
        total: USD cost of all the calls from the feedback, or ``None``.
        model_costs: USD per call of each model, used where nothing was reported.

    Returns:
        ``d.n_calls`` costs (1 for a route). A reported ``total`` wins over the per-call reports: when every call
        was reported they are scaled to it, else the calls not reported share what the reported ones leave.
    """
    if d.kind == "route":
        if total is None:
            total = model_costs.get(d.model, 0.0)
        return [float(total)]
    known = [reported.get(i) for i in range(d.n_calls)]
    if total is None:
        return [float(c) if c is not None else model_costs.get(d.models[i], 0.0) for i, c in enumerate(known)]
    unknown = [i for i, c in enumerate(known) if c is None]
    rest = max(float(total) - sum(c for c in known if c is not None), 0.0)
    if not unknown:
        per_call = [float(c) for c in known if c is not None]
        reported_sum = sum(per_call)
        if reported_sum > 0:
            return [c * (float(total) / reported_sum) for c in per_call]
        return [float(total) / len(per_call)] * len(per_call)
    share = rest / len(unknown)
    return [float(c) if c is not None else share for c in known]


def stop_returns(
    steps: Sequence[Step], costs: Sequence[float], quality: float, cost_weight: float, cost_scale: float
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The updates a cascade policy learns from one closed decision, one per stop draw it made.

    Yields ``(signals (1, t+1) float64, stop (1,) bool, return (1,) float64)`` for each step ``t`` that was the
    policy's choice (forced steps are skipped): the return is ``quality − λ·(cost of the later calls)/cost_scale``.
    """
    signals = np.array([st.signal for st in steps], dtype=np.float64)
    for st in steps:
        if st.forced:
            continue
        later = float(sum(costs[st.step + 1 :]))
        ret = quality - cost_weight * later / cost_scale
        yield signals[None, : st.step + 1], np.array([st.stop]), np.array([ret], dtype=np.float64)


def stop_draw(policy: Any, features: np.ndarray, signals: np.ndarray, u: float) -> tuple[float, bool, float]:
    """The policy's stop/continue draw after the calls that returned ``signals``.

    Args:
        policy: a :class:`~routing_env.policy.CascadePolicy`.
        features: ``(d,) float32`` features of the query.
        signals: ``(t+1,) float64`` signals of the calls so far.
        u: the decision step's uniform number in [0, 1).

    Returns:
        ``(p_stop, stop, propensity)``: the policy's probability of accepting now, the draw, and its probability.

    Raises:
        ConfigurationError: the policy's stop probability lies outside [0, 1].
    """
    p_stop = float(np.asarray(policy.stop_probabilities(features[None, :], signals[None, :])).reshape(-1)[0])
    if not (0.0 <= p_stop <= 1.0):
        raise ConfigurationError(
            f"{type(policy).__name__}.stop_probabilities returned {p_stop!r}, expected [0, 1]"
        )
    stop = bool(u < p_stop)
    return p_stop, stop, p_stop if stop else 1.0 - p_stop
