"""Off-policy evaluation: what would a routing policy have scored on logged bandit feedback?

- :class:`BanditFeedback` (logged action, propensity, quality and cost of the logged call; λ chosen at evaluation
  time) and :func:`simulate_bandit_feedback` (bandit logs from full-information data, keeping the ground truth);
- estimators as small dataclasses with OBP-style per-call arrays: :class:`DirectMethod`,
  :class:`InverseProbabilityWeighting`, :class:`SelfNormalizedInverseProbabilityWeighting`,
  :class:`DoublyRobust`, :class:`SelfNormalizedDoublyRobust`, :class:`SwitchDoublyRobust`,
  :class:`DoublyRobustWithShrinkage`, :class:`Replay` (short names ``DM``, ``IPS``, ``SNIPS``, ``DR``, ``SNDR``,
  ``SwitchDR``, ``DRos``);
- :class:`RewardModel`: cross-fitted reward models for DM and the DR family (by default a ridge per model, its
  penalty chosen by leave-one-out CV on the logged rows);
- :func:`estimate_policy_value`: all of the above as a tidy table with normal and bootstrap intervals, effective
  sample sizes, and diagnostics emitted as :class:`~routing_env.errors.OPEWarning`;
- :class:`PairedDifference`: ``V(candidate) − V(live)`` on the same logged rows with the interval on the difference,
  and anytime-valid confidence sequences (:func:`confidence_sequence`, :class:`RunningSequence`) for monitoring that
  re-tests as data arrive (:mod:`routing_env.ope.paired`).
- :mod:`routing_env.ope.distributed` (the ``ray`` extra, imported on its own): the same table over sharded parquet
  logs with Ray Data, and batch scoring of a policy over them.

Example::

    from routing_env.data import load_sample
    from routing_env.ope import estimate_policy_value, simulate_bandit_feedback

    ds = load_sample()
    log = simulate_bandit_feedback(ds, logging_policy, cost_weight=0.5, seed=0)
    table = estimate_policy_value(target_policy, log, n_bootstrap=500)
"""

from routing_env.errors import OPEWarning
from routing_env.ope.diagnostics import Diagnostics, DiagnosticThresholds, diagnose
from routing_env.ope.estimators import (
    DEFAULT_ESTIMATORS,
    DM,
    DR,
    ESTIMATORS,
    IPS,
    SNDR,
    SNIPS,
    DirectMethod,
    DoublyRobust,
    DoublyRobustWithShrinkage,
    DRos,
    Interval,
    InverseProbabilityWeighting,
    OffPolicyEstimator,
    Replay,
    SelfNormalizedDoublyRobust,
    SelfNormalizedInverseProbabilityWeighting,
    SwitchDoublyRobust,
    SwitchDR,
    effective_sample_size,
    make_estimator,
)
from routing_env.ope.evaluate import estimate_policy_value
from routing_env.ope.feedback import BanditFeedback, simulate_bandit_feedback
from routing_env.ope.intervals import bootstrap_values
from routing_env.ope.paired import (
    ConfidenceSequence,
    PairedDifference,
    PairedEstimate,
    RunningSequence,
    SequenceConfig,
    confidence_sequence,
)
from routing_env.ope.reward_model import RewardModel

__all__ = [
    "DEFAULT_ESTIMATORS",
    "DM",
    "DR",
    "ESTIMATORS",
    "IPS",
    "SNDR",
    "SNIPS",
    "BanditFeedback",
    "ConfidenceSequence",
    "DRos",
    "DiagnosticThresholds",
    "Diagnostics",
    "DirectMethod",
    "DoublyRobust",
    "DoublyRobustWithShrinkage",
    "Interval",
    "InverseProbabilityWeighting",
    "OPEWarning",
    "OffPolicyEstimator",
    "PairedDifference",
    "PairedEstimate",
    "Replay",
    "RewardModel",
    "RunningSequence",
    "SelfNormalizedDoublyRobust",
    "SelfNormalizedInverseProbabilityWeighting",
    "SequenceConfig",
    "SwitchDR",
    "SwitchDoublyRobust",
    "bootstrap_values",
    "confidence_sequence",
    "diagnose",
    "effective_sample_size",
    "estimate_policy_value",
    "make_estimator",
    "simulate_bandit_feedback",
]
