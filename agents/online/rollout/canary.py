"""The canary's sequential rule: a candidate serves a share of the traffic and is promoted or rolled back as the
evidence arrives.

**Serving split and propensities.** For each decision the candidate serves with probability ``s`` (the split),
the live policy otherwise, and the serving policy draws model ``a`` from its own distribution. What is logged as
the decision's propensity is the probability of what happened, the product of the split and the serving policy's
probability (:func:`canary_draw`):

    p_logged = s·π_c(a|x)        when the candidate served,
               (1 − s)·π_l(a|x)  when the live policy served.

Both policies' distributions are computed at decision time (the candidate's as a shadow when the live policy
serves, and vice versa), so the probability of logging model ``a`` whichever policy serves is known exactly:

    μ(a|x) = s·π_c(a|x) + (1 − s)·π_l(a|x),

and the off-policy weights of *both* policies divide by it: ``w_c = π_c(a|x)/μ(a|x) ≤ 1/s`` and
``w_l = π_l(a|x)/μ(a|x) ≤ 1/(1 − s)``. Every row, whichever policy served it, is evidence about both; the weights
are bounded; and the candidate can never leave the logger's support (``μ ≥ s·π_c``). This is the balance
heuristic of multiple importance sampling (Veach & Guibas 1995). :func:`mixture_feedback` turns a logged batch
into feedback with these propensities, after checking that the logged products are what the split and the two
distributions imply. (Dividing by the logged product instead — ``w_c = 1[candidate served]/s`` — is unbiased too,
but lets only the candidate's own share of the traffic speak for it.)

**The sequential rule** (:class:`Canary`). After every batch the paired difference ``candidate − live`` of all
canary traffic so far is tested with an anytime-valid confidence sequence (:mod:`routing_env.ope.paired`), so
testing after every batch does not inflate the error rates:

- **promote** when the gate passes: every diagnostic of :func:`~agents.online.rollout.gate.verdict` holds and
  the lower bound exceeds the margin δ (a candidate no better than live + δ is promoted with probability at most
  ``1 − confidence``, over the whole canary);
- **roll back** as soon as the upper bound falls below ``−δ`` (after ``min_rollback_decisions``);
- **expire** when ``max_decisions`` pass without either (serving returns to the live policy);
- otherwise continue.

The rule is pure: :meth:`Canary.step` maps a :class:`CanaryState` and a batch to the next state, with no clock,
I/O or serving, so a server can persist the state, and a replay reproduces every decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np

from agents.online.rollout.gate import (
    DETERMINISTIC_PROPENSITY,
    Evidence,
    GateConfig,
    GateReason,
    GateResult,
    result_from,
    summarize,
    unsupported_mass,
    verdict,
)
from routing_env.errors import ConfigurationError, SchemaError, ShapeError
from routing_env.ope import BanditFeedback
from routing_env.ope.feedback import sample_actions
from routing_env.ope.paired import (
    PairedDifference,
    PairedEstimate,
    RunningSequence,
    SequenceConfig,
    is_linear,
    round_values,
)


class CanaryDecision(str, Enum):
    """What the serving mix should do next."""

    CONTINUE = "continue"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    EXPIRE = "expire"


def _sequence_gate() -> GateConfig:
    return GateConfig(method="sequence", estimator="IPS", plan_decisions=10_000)


@dataclass(frozen=True)
class CanaryConfig:
    """Settings of a canary (validated on construction).

    Args:
        split: share of decisions the candidate serves, in (0, 1).
        gate: the promotion gate applied after every batch. It must use ``method="sequence"`` and a linear
            estimator (``"IPS"`` by default; ``"DR"``, ``"SwitchDR"`` or ``"DRos"`` when every batch comes with
            reward-model predictions from a model fitted before the canary). Its ``plan_decisions`` is the
            traffic at which the sequence is tightest; its ``margin``, ``confidence``, ``min_decisions`` and
            diagnostics thresholds apply to promotion, and its margin to rollback.
        min_rollback_decisions: decisions before a rollback may fire (the sequence's plug-in variance needs a few).
        max_decisions: end the canary (``expire``) after this many decisions without a decision; ``None`` = never.
    """

    split: float = 0.1
    gate: GateConfig = field(default_factory=_sequence_gate)
    min_rollback_decisions: int = 100
    max_decisions: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.split < 1.0:
            raise ConfigurationError(f"split must be a share of traffic in (0, 1), got {self.split!r}")
        if not isinstance(self.gate, GateConfig):
            raise ConfigurationError(f"gate must be a GateConfig, got {type(self.gate).__name__}")
        if self.gate.method != "sequence":
            raise ConfigurationError(
                f"the canary re-tests after every batch, so its gate must use method='sequence' (anytime-valid), "
                f"got method={self.gate.method!r}"
            )
        if self.gate.estimator.upper() in ("SNIPS", "SNDR"):
            raise ConfigurationError(
                f"the canary needs a linear estimator (IPS, DR, SwitchDR, DRos), got {self.gate.estimator!r}"
            )
        if int(self.min_rollback_decisions) != self.min_rollback_decisions or self.min_rollback_decisions < 2:
            raise ConfigurationError(
                f"min_rollback_decisions must be an integer ≥ 2, got {self.min_rollback_decisions!r}"
            )
        if self.max_decisions is not None and (
            int(self.max_decisions) != self.max_decisions or self.max_decisions < self.gate.min_decisions
        ):
            raise ConfigurationError(
                f"max_decisions must be an integer ≥ gate.min_decisions={self.gate.min_decisions} or None, "
                f"got {self.max_decisions!r}"
            )


@dataclass(frozen=True)
class CanaryState:
    """Everything the rule remembers between batches (running sums only; the log itself stays in the store).

    Attributes:
        sequence: running moments of the per-decision differences and the confidence sequence built on them.
        n_decisions: decisions seen.
        sum_candidate, sum_live: sums of each policy's per-decision terms (their means are the two values).
        sum_w, sum_w2: sums of the candidate's importance weights and of their squares (its ESS).
        sum_unsupported: summed probability the policies put on models the logger could not choose.
        n_deterministic: decisions logged with propensity 1.
        batches: batches seen.
        decision: the rule's last decision (``continue`` until it promotes, rolls back or expires).
        result: the gate's evidence after the last batch.
    """

    sequence: RunningSequence
    n_decisions: int = 0
    sum_candidate: float = 0.0
    sum_live: float = 0.0
    sum_w: float = 0.0
    sum_w2: float = 0.0
    sum_unsupported: float = 0.0
    n_deterministic: int = 0
    batches: int = 0
    decision: CanaryDecision = CanaryDecision.CONTINUE
    result: GateResult | None = None


class Canary:
    """The sequential promote/rollback rule over incoming logged batches (see the module docstring)."""

    def __init__(self, config: CanaryConfig | None = None) -> None:
        self.config = config or CanaryConfig()
        self._paired = PairedDifference(self.config.gate.estimator)

    def start(self) -> CanaryState:
        """The state before any canary traffic."""
        gate = self.config.gate
        seq = SequenceConfig(
            alpha=gate.alpha, sides="one-sided", n_opt=int(gate.plan_decisions or gate.min_decisions)
        )
        return CanaryState(sequence=RunningSequence(seq))

    def step(
        self,
        state: CanaryState,
        feedback: BanditFeedback,
        candidate_dist: np.ndarray,
        live_dist: np.ndarray,
        estimated_rewards: np.ndarray | None = None,
    ) -> CanaryState:
        """The state after one more batch of canary traffic.

        Args:
            state: the state after the previous batches (:meth:`start` for the first).
            feedback: the batch, with the mixture propensities ``μ(a|x)`` (:func:`mixture_feedback`).
            candidate_dist, live_dist: ``(n, K)`` both policies' distributions on the batch's decisions.
            estimated_rewards: ``(n, K)`` predictions of a reward model fitted *before* the canary (DR family).

        Raises:
            ConfigurationError: the canary already promoted, rolled back or expired.
        """
        if state.decision is not CanaryDecision.CONTINUE:
            raise ConfigurationError(
                f"the canary has already decided ({state.decision.value}); start a new one with Canary.start()"
            )
        gate = self.config.gate
        reward = feedback.rewards(gate.cost_weight)
        terms = self._paired.terms(
            reward, feedback.action, feedback.propensity, candidate_dist, live_dist, estimated_rewards
        )
        assert is_linear(terms.difference)
        diff = round_values(terms.difference)
        w = terms.candidate.weights
        assert w is not None
        n_batch = feedback.n_rounds
        lost = max(
            unsupported_mass(np.asarray(d), feedback.action, feedback.propensity, feedback.logging_dist)
            for d in (candidate_dist, live_dist)
        )
        seq = state.sequence.extend(diff)
        s = replace(
            state,
            sequence=seq,
            n_decisions=state.n_decisions + n_batch,
            sum_candidate=state.sum_candidate + float(sum(u.sum() for u, _ in terms.candidate.parts)),
            sum_live=state.sum_live + float(sum(u.sum() for u, _ in terms.live.parts)),
            sum_w=state.sum_w + float(w.sum()),
            sum_w2=state.sum_w2 + float(np.dot(w, w)),
            sum_unsupported=state.sum_unsupported + lost * n_batch,
            n_deterministic=state.n_deterministic
            + int(np.count_nonzero(feedback.propensity >= DETERMINISTIC_PROPENSITY)),
            batches=state.batches + 1,
        )
        return self._decide(s)

    def _decide(self, s: CanaryState) -> CanaryState:
        cfg, gate = self.config, self.config.gate
        n = s.n_decisions
        low, high = s.sequence.bounds()
        estimate = PairedEstimate(
            estimator=self._paired.label,
            estimate=s.sequence.mean,
            std_error=s.sequence.std_error,
            low=low,
            high=high,
            alpha=gate.alpha,
            sides="one-sided",
            method="sequence",
            candidate_value=s.sum_candidate / n,
            live_value=s.sum_live / n,
            n_rounds=n,
            ess_candidate=s.sum_w**2 / s.sum_w2 if s.sum_w2 > 0 else 0.0,
            ess_live=math.nan,
        )
        evidence = Evidence(
            estimate=estimate if n >= 2 else None,
            n_decisions=n,
            ess=estimate.ess_candidate,
            unsupported_mass=s.sum_unsupported / n,
            deterministic_share=s.n_deterministic / n,
        )
        reason, message = verdict(evidence, gate)
        if reason is GateReason.PROMOTE:
            decision = CanaryDecision.PROMOTE
        elif n >= cfg.min_rollback_decisions and high < -gate.margin:
            decision = CanaryDecision.ROLLBACK
            reason = GateReason.WORSE
            message = f"rollback: the upper bound {high:+.4f} fell below −{gate.margin:g}{summarize(evidence, gate)}"
        elif cfg.max_decisions is not None and n >= cfg.max_decisions:
            decision = CanaryDecision.EXPIRE
            message = (
                f"expire: no decision after {n} ≥ max_decisions={cfg.max_decisions} decisions; {message}"
            )
        else:
            decision = CanaryDecision.CONTINUE
        return replace(s, decision=decision, result=result_from(evidence, reason, message, gate))


# ---------------------------------------------------------------------------------------------- the split
def canary_draw(
    split: float, candidate_dist: np.ndarray, live_dist: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Serve decisions under the split: ``(served_by_candidate (n,) bool, action (n,) int64,
    logged propensity (n,) float64)``, the propensity being the product of the split and the serving policy's
    probability of the action.

    Args:
        split: the candidate's share of traffic, in (0, 1).
        candidate_dist, live_dist: ``(n, K)`` both policies' distributions on the decisions.
        rng: the generator of the arm and model draws.
    """
    cand, live = _check_split_inputs(split, candidate_dist, live_dist)
    served = np.asarray(rng.random(cand.shape[0]) < split, dtype=bool)
    action = sample_actions(np.where(served[:, None], cand, live), rng)
    return served, action, canary_propensity(split, served, cand, live, action)


def canary_propensity(
    split: float,
    served_by_candidate: np.ndarray,
    candidate_dist: np.ndarray,
    live_dist: np.ndarray,
    action: np.ndarray,
) -> np.ndarray:
    """``(n,)`` logged propensity of each served decision: ``split·π_c(a|x)`` when the candidate served,
    ``(1 − split)·π_l(a|x)`` otherwise."""
    cand, live = _check_split_inputs(split, candidate_dist, live_dist)
    rows = np.arange(cand.shape[0])
    served = np.asarray(served_by_candidate, dtype=bool)
    return np.where(served, split * cand[rows, action], (1.0 - split) * live[rows, action])


def mixture_feedback(
    logged: BanditFeedback,
    served_by_candidate: np.ndarray,
    split: float,
    candidate_dist: np.ndarray,
    live_dist: np.ndarray,
    *,
    rtol: float = 1e-6,
) -> BanditFeedback:
    """Canary traffic as feedback for both policies: the logged product propensities are checked against the
    split and the two distributions, then replaced by the mixture ``μ(a|x) = s·π_c(a|x) + (1 − s)·π_l(a|x)``
    (and ``logging_dist`` set to the full mixture), which is what both policies' weights divide by.

    Raises:
        SchemaError: a logged propensity is not the product the split and the distributions imply.
    """
    cand, live = _check_split_inputs(split, candidate_dist, live_dist)
    served = np.asarray(served_by_candidate)
    if served.shape != (logged.n_rounds,) or served.dtype != bool:
        raise ShapeError(
            f"served_by_candidate must be a bool array of shape ({logged.n_rounds},), got {served.dtype} {served.shape}"
        )
    if cand.shape != (logged.n_rounds, logged.n_actions):
        raise ShapeError(
            f"candidate_dist must have shape (n, K) = ({logged.n_rounds}, {logged.n_actions}), got {cand.shape}"
        )
    expected = canary_propensity(split, served, cand, live, logged.action)
    bad = ~np.isclose(logged.propensity, expected, rtol=rtol, atol=1e-12)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        arm = "candidate" if served[i] else "live"
        raise SchemaError(
            f"logged propensity of row {i} is {logged.propensity[i]!r}, but the split {split} and the {arm} "
            f"policy's probability give {expected[i]!r} ({int(bad.sum())} rows disagree): the log was not written "
            "by this canary"
        )
    mix = split * cand + (1.0 - split) * live
    rows = np.arange(logged.n_rounds)
    return replace(logged, propensity=mix[rows, logged.action], logging_dist=mix)


def _check_split_inputs(
    split: float, candidate_dist: np.ndarray, live_dist: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < split < 1.0:
        raise ConfigurationError(f"split must be a share of traffic in (0, 1), got {split!r}")
    cand = np.asarray(candidate_dist, dtype=np.float64)
    live = np.asarray(live_dist, dtype=np.float64)
    if cand.ndim != 2 or cand.shape != live.shape:
        raise ShapeError(
            f"candidate_dist and live_dist must both have shape (n, K), got {cand.shape} and {live.shape}"
        )
    return cand, live
