"""`estimate_policy_value`: a policy's estimated value on bandit feedback, by several estimators, as a table."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from routing_env.errors import ConfigurationError, ShapeError
from routing_env.ope.diagnostics import DiagnosticThresholds, diagnose
from routing_env.ope.estimators import (
    DEFAULT_ESTIMATORS,
    OffPolicyEstimator,
    Terms,
    check_alpha,
    combine,
    effective_sample_size,
    make_estimator,
    prepare_inputs,
)
from routing_env.ope.feedback import BanditFeedback
from routing_env.ope.intervals import bootstrap_values, normal_interval, percentile_interval
from routing_env.ope.reward_model import RewardModel
from routing_env.policy import Policy

#: Columns of the table :func:`estimate_policy_value` returns (``true_value`` only for simulated feedback).
COLUMNS = (
    "estimator",
    "estimate",
    "std_error",
    "ci_low",
    "ci_high",
    "boot_std_error",
    "boot_ci_low",
    "boot_ci_high",
    "ess",
    "n_rounds",
    "cost_weight",
)


def estimate_policy_value(
    policy: Policy | np.ndarray,
    feedback: BanditFeedback,
    estimators: Sequence[OffPolicyEstimator | str] | None = None,
    n_bootstrap: int = 1000,
    *,
    cost_weight: float | None = None,
    alpha: float = 0.05,
    reward_model: RewardModel | None = None,
    estimated_rewards: np.ndarray | None = None,
    seed: int = 0,
    thresholds: DiagnosticThresholds | None = None,
) -> pd.DataFrame:
    """Estimate ``policy``'s mean reward on ``feedback`` with several estimators.

    Args:
        policy: a :class:`~routing_env.policy.Policy` (its ``action_probabilities`` on ``feedback.features``), or
            the target distribution directly, ``(n, K)`` or ``(n, K, P)`` when the feedback has positions.
        feedback: the logs.
        estimators: instances or short names (``"DM"``, ``"IPS"``, ``"SNIPS"``, ``"DR"``, ``"SNDR"``,
            ``"SwitchDR"``, ``"DRos"``, ``"Replay"``); default all but Replay.
        n_bootstrap: Poisson-bootstrap replicates for the ``boot_*`` columns (0 skips the bootstrap).
        cost_weight: λ of the reward ``quality − λ·cost/cost_scale``; ``None`` uses ``feedback.cost_weight``.
        alpha: the intervals cover ``1 − alpha``.
        reward_model: cross-fitted model for DM and the DR family (default ``RewardModel(seed=seed)``); fitted once,
            shared by all estimators, and held fixed across bootstrap replicates (the intervals are conditional
            on it).
        estimated_rewards: ``(n, K)`` predictions to use instead of fitting a reward model.
        seed: seed of the bootstrap (and of the default reward model's folds).
        thresholds: when the diagnostics warn.

    Returns:
        One row per estimator: ``estimate``; ``std_error``, ``ci_low``, ``ci_high`` (normal interval, delta method);
        ``boot_std_error``, ``boot_ci_low``, ``boot_ci_high`` (percentile bootstrap; NaN when ``n_bootstrap=0``);
        ``ess`` (effective sample size of the weights that estimator applies, n for DM); ``n_rounds``;
        ``cost_weight``; and ``true_value`` when the feedback keeps ground truth (simulated logs).
        ``frame.attrs["diagnostics"]`` holds the :class:`~routing_env.ope.Diagnostics`. When the feedback has
        ``slate_id``, both intervals are cluster-robust (slates resampled whole; variance summed per slate).

    Warns:
        OPEWarning: support violation, tiny propensities, small effective sample size (see
        :mod:`routing_env.ope.diagnostics`).
    """
    ests = _check_arguments(feedback, estimators, n_bootstrap, alpha)
    weight = feedback.resolve_cost_weight(cost_weight)
    dist = _target_dist(policy, feedback)
    reward = feedback.rewards(weight)
    position = feedback.position if dist.ndim == 3 else None
    q = estimated_rewards
    if q is None and any(e.needs_reward_model for e in ests):
        model = reward_model if reward_model is not None else RewardModel(seed=seed)
        q = model.fit_predict(
            feedback.features,
            feedback.action,
            reward,
            feedback.n_actions,
            position=feedback.position,
            n_positions=feedback.n_positions,
        )
    inputs = prepare_inputs(reward, feedback.action, feedback.propensity, dist, position, q)
    all_terms: list[Terms] = [e.terms(inputs) for e in ests]
    diag = diagnose(
        feedback.action,
        feedback.propensity,
        dist,
        position=position,
        logging_dist=feedback.logging_dist,
        thresholds=thresholds,
        models=feedback.models,
        target_prob=inputs.pi_logged,
        weights=inputs.cache.get((0.0, math.inf)),
    )
    rows = _rows(ests, all_terms, alpha, feedback, weight)
    if n_bootstrap:
        reps = bootstrap_values(all_terms, n_bootstrap=int(n_bootstrap), seed=seed, groups=feedback.slate_id)
        for row, rep in zip(rows, reps):
            row["boot_std_error"], row["boot_ci_low"], row["boot_ci_high"] = percentile_interval(rep, alpha)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    if feedback.has_ground_truth and dist.ndim == 2:
        frame["true_value"] = feedback.true_value(dist, weight)
    frame.attrs["diagnostics"] = diag
    return frame


def _check_arguments(
    feedback: BanditFeedback,
    estimators: Sequence[OffPolicyEstimator | str] | None,
    n_bootstrap: int,
    alpha: float,
) -> list[OffPolicyEstimator]:
    """The estimator instances, once the arguments of :func:`estimate_policy_value` are known to be valid."""
    if not isinstance(feedback, BanditFeedback):
        raise ConfigurationError(f"feedback must be a BanditFeedback, got {type(feedback).__name__}")
    check_alpha(alpha)
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 0 or n_bootstrap == 1:
        raise ConfigurationError(
            f"n_bootstrap must be 0 (no bootstrap) or an integer ≥ 2, got {n_bootstrap!r}"
        )
    specs = list(DEFAULT_ESTIMATORS if estimators is None else estimators)
    if not specs:
        raise ConfigurationError("estimators is empty: name at least one estimator")
    ests = [make_estimator(s) for s in specs]
    labels = [e.label for e in ests]
    if len(set(labels)) != len(labels):
        raise ConfigurationError(f"estimator names must be unique in one table, got {labels}; set name=...")
    return ests


def _target_dist(policy: Policy | np.ndarray, feedback: BanditFeedback) -> np.ndarray:
    """``(n, K)`` or ``(n, K, P)`` target distribution of ``policy`` on the logged rounds, shape-checked."""
    dist = feedback.action_dist(policy)
    n, k = feedback.n_rounds, feedback.n_actions
    if dist.ndim == 3:
        if feedback.position is None:
            raise ShapeError(f"a 3-D action_dist {dist.shape} needs feedback with positions")
        if dist.shape[:2] != (n, k) or dist.shape[2] < (feedback.n_positions or 0):
            raise ShapeError(
                f"action_dist must have shape (n, K, P) = ({n}, {k}, {feedback.n_positions}), got {dist.shape}"
            )
    elif dist.shape != (n, k):
        raise ShapeError(f"action_dist must have shape (n, K) = ({n}, {k}), got {dist.shape}")
    return dist


def _rows(
    ests: list[OffPolicyEstimator],
    all_terms: list[Terms],
    alpha: float,
    feedback: BanditFeedback,
    weight: float,
) -> list[dict[str, object]]:
    """One table row per estimator: the estimate, its normal interval and ESS (bootstrap columns NaN)."""
    n = feedback.n_rounds
    ess_of: dict[int, float] = {}
    rows = []
    for est, terms in zip(ests, all_terms):
        key = id(terms.weights)
        if key not in ess_of:
            ess_of[key] = effective_sample_size(terms.weights, n)
        value, influence = combine(terms)
        se, low, high = normal_interval(value, influence, alpha, groups=feedback.slate_id)
        rows.append(
            {
                "estimator": est.label,
                "estimate": value,
                "std_error": se,
                "ci_low": low,
                "ci_high": high,
                "boot_std_error": math.nan,
                "boot_ci_low": math.nan,
                "boot_ci_high": math.nan,
                "ess": ess_of[key],
                "n_rounds": n,
                "cost_weight": weight,
            }
        )
    return rows
