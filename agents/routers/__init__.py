"""Routers: one module per family, every one a :class:`~routing_env.policy.Policy` that saves without pickle.

- :mod:`agents.routers.baselines`: fixed rules (random, fixed model, cheapest, best single model) and the oracle;
- :mod:`agents.routers.predictive`: RouterBench-style kNN, MLP and logistic quality predictors;
- :mod:`agents.routers.matrix_factorization`: RouteLLM's strong/weak matrix-factorisation router;
- :mod:`agents.routers.bandits`: cost-aware disjoint linear bandits (LinUCB, Thompson sampling, ε-greedy,
  softmax), with their compiled kernels in :mod:`agents.routers._kernels`;
- :mod:`agents.routers.cascades`: the FrugalGPT-style threshold cascade and per-stage cascade bandits;
- :mod:`agents.routers.tables`: the per-task table and the clustering router with empirical-Bayes shrinkage
  (:class:`TaskTableRouter`, :class:`ClusterRouter`, which onboards new models with ``add_model``);
- :mod:`agents.routers.ensemble`: :class:`EnsembleRouter`, routing on the mean of several routers' estimates;
- :mod:`agents.routers.cost`: :class:`CostModel`, every model's cost of a query from its features (its length);
- :mod:`agents.routers.selection`: :func:`select_router`, the cross-validated choice among router families.

Routers with a regularisation or smoothing hyperparameter choose it on ``fit`` by grouped cross-validation on the
training logs (:mod:`agents.routers._cv`) unless it is given or ``tune=False``.
"""

from agents.routers.bandits import EpsilonGreedy, LinearThompsonSampling, LinUCB, SoftmaxBandit
from agents.routers.baselines import BestSingleModel, Cheapest, FixedModel, Oracle, RandomRouter
from agents.routers.cascades import CascadeBandit, ThresholdCascade, cascade_outcomes
from agents.routers.cost import CostModel
from agents.routers.ensemble import EnsembleRouter
from agents.routers.matrix_factorization import MatrixFactorizationRouter
from agents.routers.predictive import KNNRouter, LogisticRouter, MLPRouter
from agents.routers.selection import Selection, select_router
from agents.routers.tables import ClusterRouter, TaskTableRouter

__all__ = [
    "BestSingleModel",
    "CascadeBandit",
    "Cheapest",
    "ClusterRouter",
    "CostModel",
    "EnsembleRouter",
    "EpsilonGreedy",
    "FixedModel",
    "KNNRouter",
    "LinUCB",
    "LinearThompsonSampling",
    "LogisticRouter",
    "MLPRouter",
    "MatrixFactorizationRouter",
    "Oracle",
    "RandomRouter",
    "Selection",
    "SoftmaxBandit",
    "TaskTableRouter",
    "ThresholdCascade",
    "cascade_outcomes",
    "select_router",
]
