"""Safe rollout of a new routing policy: the off-policy promotion gate, the canary's sequential rule and the
exploration the live policy needs for either to work.

- :func:`evaluate_gate` / :func:`gate_from_store`: promote a candidate only if the lower confidence bound of
  ``candidate − live`` (a paired off-policy estimate on the logged traffic) exceeds a margin, refusing with a named
  :class:`GateReason` when the diagnostics fail (:mod:`agents.online.rollout.gate`);
- :class:`Canary`: a candidate serving a share of the traffic, promoted or rolled back batch by batch with an
  anytime-valid confidence sequence (:mod:`agents.online.rollout.canary`);
- :func:`smallest_epsilon`, :func:`required_ess`: the least exploration that makes a candidate evaluable
  (:mod:`agents.online.rollout.exploration`).
"""

from agents.online.rollout.canary import (
    Canary,
    CanaryConfig,
    CanaryDecision,
    CanaryState,
    canary_draw,
    canary_propensity,
    mixture_feedback,
)
from agents.online.rollout.exploration import ExplorationPlan, expected_ess, required_ess, smallest_epsilon
from agents.online.rollout.gate import GateConfig, GateReason, GateResult, evaluate_gate, gate_from_store

__all__ = [
    "Canary",
    "CanaryConfig",
    "CanaryDecision",
    "CanaryState",
    "ExplorationPlan",
    "GateConfig",
    "GateReason",
    "GateResult",
    "canary_draw",
    "canary_propensity",
    "evaluate_gate",
    "expected_ess",
    "gate_from_store",
    "mixture_feedback",
    "required_ess",
    "smallest_epsilon",
]
