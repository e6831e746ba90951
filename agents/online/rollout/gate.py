"""The promotion gate: swap the live policy for a candidate only when the logged evidence says it is better.

:func:`evaluate_gate` scores ``candidate − live`` on the logged traffic with the paired estimator of
:mod:`routing_env.ope.paired` (the same rows, per-row differences of the IPS/DR terms, the interval on the
difference) and promotes only if the one-sided lower confidence bound of the difference exceeds the margin δ:

    promote  ⇔  low_{confidence}(V(candidate) − V(live)) > δ      (and every diagnostic passes)

so a candidate that is no better than live + δ is promoted with probability at most ``1 − confidence``. Before
looking at the interval the gate refuses, with a named :class:`GateReason`, when the evidence cannot be trusted:

- ``too_few_decisions``: fewer logged decisions than ``min_decisions``;
- ``deterministic_logger``: most decisions were logged with propensity 1 — a live policy that never explores
  makes every other choice invisible, so the answer is to enable exploration (the result carries the smallest
  ε that would make the candidate evaluable: :mod:`agents.online.rollout.exploration`);
- ``support_violation``: the candidate (or the live target) puts probability on models the logger could not
  choose for those queries (a propensity of 1 leaves no room for any other model; a model never logged has no
  support anywhere) — importance weighting cannot see those outcomes;
- ``low_ess``: the candidate's importance weights leave fewer effective decisions than ``min_ess`` (or
  ``min_ess_ratio·n``): a handful of rows would decide.

Otherwise the reason is ``promote``, ``not_better`` (the lower bound does not clear δ) or ``worse`` (even the
upper bound is below −δ). :func:`gate_from_store` runs the gate on a decision store's export (read only), for the
``routing-env promote`` command.

``method="normal"`` (default) is a fixed-sample test: run it once, on the traffic size chosen in advance. A
process that re-runs the gate as traffic accumulates should use ``method="sequence"`` (an anytime-valid
confidence sequence, valid however often it is re-run), which is what the canary does
(:mod:`agents.online.rollout.canary`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import numpy as np

from agents.online.rollout.exploration import ExplorationPlan, required_ess, smallest_epsilon
from agents.online.stores import DecisionStore
from routing_env.data import LoggedDataset
from routing_env.errors import ConfigurationError, ShapeError
from routing_env.ope import BanditFeedback, Diagnostics, RewardModel, diagnose
from routing_env.ope.paired import Method, PairedDifference, PairedEstimate
from routing_env.policy import Policy, load_policy

#: Propensities at least this close to 1 count as a deterministic decision.
DETERMINISTIC_PROPENSITY = 1.0 - 1e-12


class GateReason(str, Enum):
    """Why the gate promoted or refused."""

    PROMOTE = "promote"
    TOO_FEW_DECISIONS = "too_few_decisions"
    DETERMINISTIC_LOGGER = "deterministic_logger"
    SUPPORT_VIOLATION = "support_violation"
    LOW_ESS = "low_ess"
    NOT_BETTER = "not_better"
    WORSE = "worse"


@dataclass(frozen=True)
class GateConfig:
    """Settings of the promotion gate (validated on construction).

    Args:
        min_decisions: logged decisions needed before the gate decides (≥ 2).
        margin: δ ≥ 0 in reward units; promote only if the lower bound of candidate − live exceeds it.
        confidence: level of the one-sided bounds, in [0.5, 1); ``1 − confidence`` is the chance of promoting a
            candidate that is no better than live + δ.
        estimator: ``"DR"`` (default), ``"IPS"``, ``"SNIPS"``, ``"SNDR"``, ``"SwitchDR"`` or ``"DRos"``.
        method: ``"normal"`` (delta method), ``"bootstrap"`` or ``"sequence"`` (anytime-valid; linear
            estimators only).
        n_bootstrap: replicates for ``method="bootstrap"``.
        plan_decisions: for ``method="sequence"``: the traffic at which the sequence is tightest (fixed in
            advance); ``None`` = ``min_decisions``.
        min_ess: refuse when the candidate's effective sample size is below this many decisions...
        min_ess_ratio: ...or below this share of the decisions.
        max_unsupported_mass: refuse when the candidate puts more than this mean probability on models the
            logger could not choose (0 = any violation refuses).
        max_deterministic_share: refuse with ``deterministic_logger`` when more than this share of decisions had
            propensity 1.
        cost_weight: λ of the reward ``quality − λ·cost/cost_scale`` (``None`` = the feedback's own).
        detectable_difference: the improvement (reward units, > margin) the exploration advice plans for;
            ``None`` = ``margin + 0.02``.
        power: the probability of promoting at ``detectable_difference`` the exploration advice plans for.
        seed: seed of the bootstrap and of the reward model's folds.
    """

    min_decisions: int = 1000
    margin: float = 0.0
    confidence: float = 0.95
    estimator: str = "DR"
    method: Method = "normal"
    n_bootstrap: int = 1000
    plan_decisions: int | None = None
    min_ess: float = 100.0
    min_ess_ratio: float = 0.01
    max_unsupported_mass: float = 0.0
    max_deterministic_share: float = 0.5
    cost_weight: float | None = None
    detectable_difference: float | None = None
    power: float = 0.8
    seed: int = 0

    def __post_init__(self) -> None:
        if int(self.min_decisions) != self.min_decisions or self.min_decisions < 2:
            raise ConfigurationError(f"min_decisions must be an integer ≥ 2, got {self.min_decisions!r}")
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ConfigurationError(f"margin must be a finite reward difference ≥ 0, got {self.margin!r}")
        if not 0.5 <= self.confidence < 1.0:
            raise ConfigurationError(f"confidence must be in [0.5, 1) (e.g. 0.95), got {self.confidence!r}")
        PairedDifference(self.estimator)  # validates the name
        if self.method not in ("normal", "bootstrap", "sequence"):
            raise ConfigurationError(
                f"method must be 'normal', 'bootstrap' or 'sequence', got {self.method!r}"
            )
        if int(self.n_bootstrap) != self.n_bootstrap or self.n_bootstrap < 2:
            raise ConfigurationError(f"n_bootstrap must be an integer ≥ 2, got {self.n_bootstrap!r}")
        if self.plan_decisions is not None and (
            int(self.plan_decisions) != self.plan_decisions or self.plan_decisions < 1
        ):
            raise ConfigurationError(
                f"plan_decisions must be an integer ≥ 1 or None, got {self.plan_decisions!r}"
            )
        if not (self.min_ess >= 0 and 0.0 <= self.min_ess_ratio <= 1.0):
            raise ConfigurationError(
                f"min_ess must be ≥ 0 and min_ess_ratio in [0, 1], got {self.min_ess!r}, {self.min_ess_ratio!r}"
            )
        if not 0.0 <= self.max_unsupported_mass < 1.0:
            raise ConfigurationError(
                f"max_unsupported_mass must be in [0, 1), got {self.max_unsupported_mass!r}"
            )
        if not 0.0 <= self.max_deterministic_share <= 1.0:
            raise ConfigurationError(
                f"max_deterministic_share must be in [0, 1], got {self.max_deterministic_share!r}"
            )
        if self.cost_weight is not None and not math.isfinite(self.cost_weight):
            raise ConfigurationError(f"cost_weight must be finite or None, got {self.cost_weight!r}")
        if self.detectable_difference is not None and not (
            math.isfinite(self.detectable_difference) and self.detectable_difference > self.margin
        ):
            raise ConfigurationError(
                f"detectable_difference must exceed margin={self.margin!r}, got {self.detectable_difference!r}"
            )
        if not 0.0 < self.power < 1.0:
            raise ConfigurationError(f"power must be in (0, 1), got {self.power!r}")

    @property
    def alpha(self) -> float:
        """Error rate of each one-sided bound."""
        return 1.0 - self.confidence

    @property
    def planned_difference(self) -> float:
        return self.margin + 0.02 if self.detectable_difference is None else self.detectable_difference


@dataclass(frozen=True)
class GateResult:
    """The gate's decision and its evidence.

    Attributes:
        promote: the candidate may replace the live policy.
        reason: why (see :class:`GateReason`).
        message: one line a person can act on (estimate, interval and reason).
        estimate: V̂(candidate) − V̂(live), reward units (NaN below two decisions).
        std_error: its standard error.
        low, high: one-sided ``confidence`` lower and upper bounds of the difference (a two-sided interval of
            level ``2·confidence − 1``).
        candidate_value, live_value: the two estimated values.
        n_decisions: logged decisions evaluated.
        ess: the candidate's effective sample size (decisions).
        unsupported_mass: mean probability the candidate (or live target) puts on models the logger could not
            choose.
        deterministic_share: share of decisions logged with propensity 1.
        estimator, method, confidence, margin: how it was decided.
        diagnostics: the OPE diagnostics of the candidate on the log (``None`` below two decisions).
        exploration: the exploration advice when the reason is about missing exploration.
    """

    promote: bool
    reason: GateReason
    message: str
    estimate: float
    std_error: float
    low: float
    high: float
    candidate_value: float
    live_value: float
    n_decisions: int
    ess: float
    unsupported_mass: float
    deterministic_share: float
    estimator: str
    method: str
    confidence: float
    margin: float
    diagnostics: Diagnostics | None = None
    exploration: ExplorationPlan | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view (NaN as ``None``), e.g. for a decision log or ``--json`` output."""

        out = {
            k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("diagnostics", "exploration")
        }
        out["reason"] = self.reason.value
        out["diagnostics"] = None if self.diagnostics is None else asdict(self.diagnostics)
        out["exploration"] = None if self.exploration is None else asdict(self.exploration)
        return {k: json_clean(v) for k, v in out.items()}


def json_clean(v: Any) -> Any:
    """``v`` with non-finite floats as ``None``, through dicts, lists and tuples (for JSON)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: json_clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_clean(x) for x in v]
    return v


# ---------------------------------------------------------------------------------------------- evidence
def unsupported_mass(
    dist: np.ndarray, action: np.ndarray, pscore: np.ndarray, logging_dist: np.ndarray | None = None
) -> float:
    """Mean probability ``dist (n, K)`` puts on (row, model) cells the logger could not produce.

    With the logger's full distribution (simulated logs) the cells are exact. Otherwise they are what the log
    proves: on a row logged with propensity 1 every other model had probability 0, and a model that never
    appears in the log is taken as unsupported everywhere.
    """
    n, k = dist.shape
    if logging_dist is not None:
        return float(np.where(np.asarray(logging_dist) <= 0, dist, 0.0).sum() / n)
    hole = np.zeros((n, k), dtype=bool)
    hole[:, np.bincount(action, minlength=k) == 0] = True
    sure = pscore >= DETERMINISTIC_PROPENSITY
    hole[sure] = True
    hole[np.flatnonzero(sure), action[sure]] = False
    return float(np.where(hole, dist, 0.0).sum() / n)


@dataclass(frozen=True)
class Evidence:
    """What a gate decision rests on (shared by the one-shot gate and the canary)."""

    estimate: PairedEstimate | None
    n_decisions: int
    ess: float
    unsupported_mass: float
    deterministic_share: float


def summarize(evidence: Evidence, config: GateConfig) -> str:
    """``": candidate − live = …, 95% bounds […] on n decisions (DR, normal)"`` (empty without an estimate)."""
    est = evidence.estimate
    if est is None:
        return ""
    return (
        f": candidate − live = {est.estimate:+.4f}, {config.confidence:.0%} bounds "
        f"[{est.low:+.4f}, {est.high:+.4f}] on {evidence.n_decisions} decisions ({est.estimator}, {est.method})"
    )


def verdict(evidence: Evidence, config: GateConfig) -> tuple[GateReason, str]:
    """The reason and message for ``evidence`` under ``config`` (diagnostics first, then the bounds)."""
    n = evidence.n_decisions
    est = evidence.estimate
    summary = summarize(evidence, config)
    if n < config.min_decisions:
        return GateReason.TOO_FEW_DECISIONS, (
            f"refuse: {n} logged decisions, the gate needs at least min_decisions={config.min_decisions}{summary}"
        )
    if est is None:
        return GateReason.TOO_FEW_DECISIONS, (
            f"refuse: {n} logged decisions are too few to estimate the difference (too few to cross-fit the reward "
            "model)"
        )
    if evidence.deterministic_share > config.max_deterministic_share:
        return GateReason.DETERMINISTIC_LOGGER, (
            f"refuse: {evidence.deterministic_share:.0%} of the decisions were logged with propensity 1 (a "
            "deterministic live policy), so a candidate that chooses differently cannot be evaluated: enable "
            f"exploration in the live policy{summary}"
        )
    if evidence.unsupported_mass > config.max_unsupported_mass + 1e-12:
        return GateReason.SUPPORT_VIOLATION, (
            f"refuse: support violation — {evidence.unsupported_mass:.2%} of the target probability is on models "
            "the logger could not choose for those queries, whose outcomes the log cannot show: enable "
            f"exploration{summary}"
        )
    floor = max(config.min_ess, config.min_ess_ratio * n)
    if not evidence.ess >= floor:
        return GateReason.LOW_ESS, (
            f"refuse: the candidate's effective sample size is {evidence.ess:.1f} of {n} decisions, below "
            f"{floor:.1f}: collect more traffic or raise exploration{summary}"
        )
    if est.low > config.margin:
        return (
            GateReason.PROMOTE,
            f"promote: the lower bound {est.low:+.4f} exceeds the margin {config.margin:g}{summary}",
        )
    if est.high < -config.margin:
        return GateReason.WORSE, (
            f"refuse: the candidate is worse — the upper bound {est.high:+.4f} is below −{config.margin:g}{summary}"
        )
    return GateReason.NOT_BETTER, (
        f"refuse: the lower bound {est.low:+.4f} does not exceed the margin {config.margin:g}{summary}"
    )


_EXPLORATION_REASONS = (GateReason.DETERMINISTIC_LOGGER, GateReason.SUPPORT_VIOLATION, GateReason.LOW_ESS)


def _exploration_advice(
    feedback: BanditFeedback,
    reward: np.ndarray,
    candidate_dist: np.ndarray,
    live_dist: np.ndarray | None,
    config: GateConfig,
) -> ExplorationPlan:
    """The smallest ε for the candidate to be evaluable. The live policy's distribution is the one given, else
    the logger's when known, else the logged choices as one-hot rows (exact for a deterministic logger)."""
    if live_dist is not None:
        base = live_dist
    elif feedback.logging_dist is not None:
        base = feedback.logging_dist
    else:
        base = np.eye(feedback.n_actions)[feedback.action]
    std = float(reward.std()) if reward.size > 1 else 0.0
    need = required_ess(
        config.planned_difference,
        reward_std=max(std, 1e-6),
        margin=config.margin,
        confidence=config.confidence,
        power=config.power,
    )
    need = max(need, config.min_ess)
    return smallest_epsilon(
        base, candidate_dist, n_decisions=max(feedback.n_rounds, config.min_decisions), required=need
    )


def _exploration_message(plan: ExplorationPlan, config: GateConfig) -> str:
    if plan.epsilon is None:
        # The expected ESS grows in proportion to the traffic, so the best ε's ESS says how much traffic is needed.
        more = (
            f"; ε = {plan.best_epsilon:.2f} would need about "
            f"{math.ceil(plan.n_decisions * plan.required_ess / plan.expected_ess)} decisions"
            if plan.expected_ess > 0
            else ""
        )
        return (
            f" (no uniform exploration share reaches the ESS of {plan.required_ess:.0f} needed to detect a "
            f"difference of {config.planned_difference:g} in {plan.n_decisions} decisions{more})"
        )
    return (
        f" (ε ≥ {plan.epsilon:.3f} of uniform exploration gives the ESS of {plan.required_ess:.0f} needed to "
        f"detect a difference of {config.planned_difference:g} with {config.power:.0%} power in "
        f"{plan.n_decisions} decisions)"
    )


def evaluate_gate(
    feedback: BanditFeedback,
    candidate: Policy | np.ndarray,
    *,
    live: Policy | np.ndarray | None = None,
    config: GateConfig | None = None,
    estimated_rewards: np.ndarray | None = None,
) -> GateResult:
    """Decide whether ``candidate`` may replace the live policy, from the logged ``feedback``.

    Args:
        feedback: the logged decisions (propensities of the policy that served them).
        candidate: the candidate policy, or its ``(n, K)`` distribution on the logged rows.
        live: the live policy to compare with (or its ``(n, K)`` distribution); ``None`` = the policy that
            logged the decisions (its value is then the mean logged reward).
        config: the gate's settings.
        estimated_rewards: ``(n, K)`` reward-model predictions for the DR family; default a cross-fitted
            :class:`~routing_env.ope.RewardModel` on the log.
    """
    cfg = config or GateConfig()
    if not isinstance(feedback, BanditFeedback):
        raise ConfigurationError(f"feedback must be a BanditFeedback, got {type(feedback).__name__}")
    cand = feedback.action_dist(candidate)
    live_dist = None if live is None else feedback.action_dist(live)
    n, k = feedback.n_rounds, feedback.n_actions
    for name, d in (("candidate", cand), ("live", live_dist)):
        if d is not None and d.shape != (n, k):
            raise ShapeError(f"the {name} distribution must have shape (n, K) = ({n}, {k}), got {d.shape}")
    reward = feedback.rewards(cfg.cost_weight)
    paired = PairedDifference(cfg.estimator)
    estimate: PairedEstimate | None = None
    diag: Diagnostics | None = None
    model = RewardModel(seed=cfg.seed)
    # A log too short to cross-fit the reward model on is refused below for its size; no estimate to show then.
    fits = estimated_rewards is not None or not paired.needs_reward_model or n >= model.n_folds
    if n >= 2 and fits:
        q = estimated_rewards
        if q is None and paired.needs_reward_model:
            q = model.fit_predict(feedback.features, feedback.action, reward, k)
        estimate = paired.interval(
            paired.terms(reward, feedback.action, feedback.propensity, cand, live_dist, q),
            alpha=cfg.alpha,
            sides="one-sided",
            method=cfg.method,
            n_bootstrap=cfg.n_bootstrap,
            seed=cfg.seed,
            n_opt=cfg.plan_decisions or cfg.min_decisions,
        )
        diag = diagnose(
            feedback.action, feedback.propensity, cand, logging_dist=feedback.logging_dist, emit=False,
            models=feedback.models,
        )  # fmt: skip
    masses = [unsupported_mass(cand, feedback.action, feedback.propensity, feedback.logging_dist)]
    if live_dist is not None:
        masses.append(
            unsupported_mass(live_dist, feedback.action, feedback.propensity, feedback.logging_dist)
        )
    evidence = Evidence(
        estimate=estimate,
        n_decisions=n,
        ess=math.nan if estimate is None else estimate.ess_candidate,
        unsupported_mass=max(masses),
        deterministic_share=float(np.mean(feedback.propensity >= DETERMINISTIC_PROPENSITY)),
    )
    reason, message = verdict(evidence, cfg)
    plan = None
    if reason in _EXPLORATION_REASONS:
        plan = _exploration_advice(feedback, reward, cand, live_dist, cfg)
        message += _exploration_message(plan, cfg)
    return result_from(evidence, reason, message, cfg, diag, plan)


def result_from(
    evidence: Evidence,
    reason: GateReason,
    message: str,
    cfg: GateConfig,
    diagnostics: Diagnostics | None = None,
    exploration: ExplorationPlan | None = None,
) -> GateResult:
    est = evidence.estimate
    nan = math.nan
    return GateResult(
        promote=reason is GateReason.PROMOTE,
        reason=reason,
        message=message,
        estimate=nan if est is None else est.estimate,
        std_error=nan if est is None else est.std_error,
        low=nan if est is None else est.low,
        high=nan if est is None else est.high,
        candidate_value=nan if est is None else est.candidate_value,
        live_value=nan if est is None else est.live_value,
        n_decisions=evidence.n_decisions,
        ess=evidence.ess,
        unsupported_mass=evidence.unsupported_mass,
        deterministic_share=evidence.deterministic_share,
        estimator=PairedDifference(cfg.estimator).label,
        method=cfg.method,
        confidence=cfg.confidence,
        margin=cfg.margin,
        diagnostics=diagnostics,
        exploration=exploration,
    )


def gate_from_store(
    store: DecisionStore,
    candidate: Policy | str | Path,
    *,
    min_decisions: int,
    margin: float,
    confidence: float,
    config: GateConfig | None = None,
    live: Policy | None = None,
    cost_scale: float | Literal["max_mean"] = "max_mean",
    versions: Sequence[str] | None = None,
    correct: Callable[[LoggedDataset], LoggedDataset] | None = None,
) -> GateResult:
    """Run the gate on the decisions a store logged (read only: :meth:`DecisionStore.counts` and
    :meth:`DecisionStore.export` are all it calls).

    Args:
        store: the decision store (its routed decisions with client feedback are evaluated).
        candidate: the candidate policy, or the directory it was saved to.
        min_decisions, margin, confidence: as in :class:`GateConfig` (they override ``config``'s).
        config: the other settings (estimator, method, ESS thresholds, cost weight...).
        live: the policy to compare with; ``None`` = the logged behaviour itself.
        cost_scale: USD per unit of cost weight, or ``"max_mean"`` (the mean logged cost of the most expensive
            model).
        versions: evaluate only decisions of these policy versions (default: all).
        correct: maps the export to the dataset evaluated (the export already carries a canary's mixture
            propensities: :meth:`~agents.online.stores.rollout.SQLRolloutRecords.canary_propensities`).

    A store with no routed decision that received feedback is refused as ``too_few_decisions``.
    """
    cfg = replace(config or GateConfig(), min_decisions=min_decisions, margin=margin, confidence=confidence)
    policy = load_policy(candidate) if isinstance(candidate, (str, Path)) else candidate
    if not isinstance(policy, Policy):
        raise ConfigurationError(
            f"candidate must be a routing_env.policy.Policy or a saved policy directory, got {type(policy).__name__}"
        )
    if store.counts().feedback.get("client", 0) == 0:
        evidence = Evidence(None, 0, math.nan, 0.0, 0.0)
        reason, message = verdict(evidence, cfg)
        return result_from(evidence, reason, message, cfg)
    dataset = store.export(versions=versions, models=policy.models)
    if correct is not None:
        dataset = correct(dataset)
    width = getattr(policy, "n_features", None)
    if width is not None and dataset.features.shape[1] != width:
        raise ShapeError(
            f"the candidate takes {width} features, but the logged decisions have {dataset.features.shape[1]}; "
            "evaluate a candidate built on the live policy's features"
        )
    feedback = BanditFeedback.from_dataset(dataset, cost_weight=cfg.cost_weight or 0.0, cost_scale=cost_scale)
    return evaluate_gate(feedback, policy, live=live, config=cfg)
