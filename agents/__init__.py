"""Routers for routing-env: baselines, contextual bandits, PPO, and the online router service.

- :mod:`agents.bandits`: :class:`LinUCB`, :class:`LinearThompsonSampling`, :class:`EpsilonGreedy`,
  :class:`SoftmaxBandit` — cost-aware disjoint linear bandits that keep learning online.
- :mod:`agents.baselines`: the literature's baseline routers (random, fixed, cheapest, best single model, oracle,
  kNN / MLP / logistic predictive routers, RouteLLM matrix factorisation, FrugalGPT threshold cascade).
- :mod:`agents.cascade`: :class:`CascadeBandit`, per-stage stop-or-escalate bandits.
- :mod:`agents.loop`: :func:`run_online` / :func:`run_cascade_online`, online runs with cumulative reward and regret.
"""

from agents import baselines
from agents.bandits import EpsilonGreedy, LinearThompsonSampling, LinUCB, SoftmaxBandit
from agents.cascade import CascadeBandit
from agents.loop import OnlineResult, run_cascade_online, run_online

__all__ = [
    "CascadeBandit",
    "EpsilonGreedy",
    "LinUCB",
    "LinearThompsonSampling",
    "OnlineResult",
    "SoftmaxBandit",
    "baselines",
    "run_cascade_online",
    "run_online",
]
