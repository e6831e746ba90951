"""The literature's baseline routers under their public import path ``agents.baselines``.

They live in :mod:`agents.routers` (one module per family); this module re-exports them.
"""

from agents.routers.baselines import BestSingleModel, Cheapest, FixedModel, Oracle, RandomRouter
from agents.routers.cascades import ThresholdCascade, cascade_outcomes
from agents.routers.matrix_factorization import MatrixFactorizationRouter
from agents.routers.predictive import KNNRouter, LogisticRouter, MLPRouter

__all__ = [
    "BestSingleModel",
    "Cheapest",
    "FixedModel",
    "KNNRouter",
    "LogisticRouter",
    "MLPRouter",
    "MatrixFactorizationRouter",
    "Oracle",
    "RandomRouter",
    "ThresholdCascade",
    "cascade_outcomes",
]
