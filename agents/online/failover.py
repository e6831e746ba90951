"""Fail-over of a route decision: serve another model when the one drawn is down, and log what was served.

When the model a decision drew cannot answer (its upstream timed out or failed after its retries), the gateway
asks the router to draw again among the decision's allowed models minus the failed ones.

**The propensity logged.** The redraw samples from the decision's distribution renormalised over the models not
known to be down, with a fresh uniform number of the decision (:func:`agents.online.sampling.uniform` of
``(seed, seq, number of failed models)``). Drawing without replacement until a model answers is Plackett–Luce
sampling, and under it the first model of a set ``U`` to come up is ``b`` with probability ``p_b / p(U)``
whatever the order the others came in. So when the down models are known at decision time (excluded as
``allowed_models``, the gateway's cool-down) the logged ``propensity`` — the served model's probability under the
renormalised distribution, stored with that distribution and the allowed set — is exactly the probability with
which the logging process served that model given the models that were up: IPS, SNIPS and DR on the store stay
unbiased for the policy restricted to the available models. A decision that discovers an outage (the model it drew
fails) logs the distribution it finally drew from, and puts the model in cool-down, so later decisions exclude it
from the start; only the decisions made while an outage was not yet detected carry the propensity of the
availability believed at the time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from agents.online.errors import DecisionConflictError
from agents.online.sampling import draw, renormalise
from agents.online.stores.base import Decision
from routing_env.errors import ModelMismatchError


def reroute(d: Decision, failed: Sequence[str], u: float) -> Decision:
    """``d`` drawn again with the uniform number ``u`` among its allowed models except ``failed``.

    Args:
        d: an open ``route`` decision.
        failed: names of the models that could not answer (the one ``d`` served among them).
        u: a uniform number in [0, 1) for the redraw.

    Returns:
        ``d`` with the new ``model``, ``action``, ``propensity``, ``probabilities (K,)`` (renormalised; 0 outside
        the models left) and ``allowed_models`` (the models left, in the policy's order).

    Raises:
        DecisionConflictError: ``d`` is a cascade decision, or closed.
        ModelMismatchError: no model is left.
    """
    if d.kind != "route":
        raise DecisionConflictError(
            f"decision {d.decision_id!r} is a cascade; fail-over re-routes single-model decisions"
        )
    if d.status != "open":
        raise DecisionConflictError(
            f"decision {d.decision_id!r} is already {d.status}; it cannot be re-routed"
        )
    gone = {str(m) for m in failed}
    allowed = np.array(
        [(d.allowed_models is None or m in d.allowed_models) and m not in gone for m in d.models]
    )
    if not allowed.any():
        raise ModelMismatchError(
            f"no model is left for decision {d.decision_id!r}: {sorted(gone)} failed and the others of "
            f"{list(d.models)} were not allowed"
        )
    sampled = renormalise(np.asarray(d.probabilities, dtype=np.float64), allowed)
    action = draw(sampled, u)
    return dataclasses.replace(
        d,
        model=d.models[action],
        action=int(action),
        propensity=float(sampled[action]),
        probabilities=sampled,
        allowed_models=tuple(m for m, ok in zip(d.models, allowed) if ok),
    )
