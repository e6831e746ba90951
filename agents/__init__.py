"""Routers, training and the online service of routing-env.

- :mod:`agents.routers`: every router family — fixed baselines and the oracle, predictive routers, RouteLLM's
  matrix factorisation, cost-aware contextual bandits (:class:`LinUCB`, :class:`LinearThompsonSampling`,
  :class:`EpsilonGreedy`, :class:`SoftmaxBandit`), the per-task table and the clustering router
  (:class:`TaskTableRouter`, :class:`ClusterRouter`), per-query cost estimates (:class:`CostModel`), cascades (:class:`CascadeBandit`, ``ThresholdCascade``) and
  :func:`select_router`, which picks a router family for a user's logs by cross-validation.
  ``agents.baselines`` re-exports the baselines under their public path.
- :mod:`agents.training`: SB3 PPO (``agents.ppo.train_ppo``, ``agents.ppo.SB3Policy``; needs torch) and the
  online replay loop :func:`run_online` / :func:`run_cascade_online`.
- :mod:`agents.online`: the online router, its decision stores and its HTTP service.
- :mod:`agents.studies`: the router comparison behind ``routing-env demo`` and the study scripts.
- :mod:`agents.cli`: the ``routing-env`` console script.
"""

from agents import baselines
from agents.routers import (
    CascadeBandit,
    ClusterRouter,
    CostModel,
    EpsilonGreedy,
    LinearThompsonSampling,
    LinUCB,
    SoftmaxBandit,
    TaskTableRouter,
    select_router,
)
from agents.training.loop import OnlineResult, run_cascade_online, run_online

__all__ = [
    "CascadeBandit",
    "ClusterRouter",
    "CostModel",
    "EpsilonGreedy",
    "LinUCB",
    "LinearThompsonSampling",
    "OnlineResult",
    "SoftmaxBandit",
    "TaskTableRouter",
    "baselines",
    "run_cascade_online",
    "run_online",
    "select_router",
]
