"""Run a learning policy online on Routing-v0 (or a cascade policy on Cascade-v0's chain mode) and record its
cumulative reward and regret against the per-query oracle.

- :func:`run_online`: each round the env shows a query's features, the policy acts, the env replays the chosen
  model's logged outcome, and the policy learns from it — with ``update_outcomes(x, a, quality, cost)`` when it
  is cost-aware (:class:`~routing_env.policy.CostAwarePolicy`) and otherwise ``update(x, a, reward)``.
- :func:`run_cascade_online`: each round the cascade calls the chain's first model, then the policy decides
  accept or escalate after every call; at the end every decision is learned with its return (quality of the
  accepted answer minus the cost-weighted cost of the calls made after it).

Both accept a :class:`~routing_env.LoggedDataset` (an env is built over it) or a ready env, and are seeded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from routing_env.data.dataset import LoggedDataset
from routing_env.errors import ConfigurationError
from routing_env.policy import CascadePolicy, CostAwarePolicy, LearningPolicy, check_models

__all__ = ["OnlineResult", "run_cascade_online", "run_online"]


@dataclass(frozen=True)
class OnlineResult:
    """Per-round record of an online run (all arrays ``(n_rounds,)``).

    Attributes:
        rewards: reward the policy earned.
        oracle_rewards: reward of the per-query best choice (best model, or best stopping point of the chain).
        actions: the model index chosen (routing), or the chain index of the accepted answer (cascades).
        propensities: probability of the policy's choice (routing), or the product of the probabilities of the
            cascade's decisions in that round.
        query_indices: dataset rows of the queries.
        cost: USD spent per round.
    """

    rewards: np.ndarray
    oracle_rewards: np.ndarray
    actions: np.ndarray
    propensities: np.ndarray
    query_indices: np.ndarray
    cost: np.ndarray

    @property
    def cumulative_reward(self) -> np.ndarray:
        """``(n_rounds,)`` running sum of rewards."""
        return np.cumsum(self.rewards)

    @property
    def regret(self) -> np.ndarray:
        """``(n_rounds,)`` cumulative regret against the per-query oracle (non-decreasing)."""
        return np.cumsum(self.oracle_rewards - self.rewards)

    @property
    def mean_reward(self) -> float:
        return float(self.rewards.mean())

    @property
    def total_regret(self) -> float:
        return float((self.oracle_rewards - self.rewards).sum())

    def window_mean(self, start: int, stop: int | None = None) -> float:
        """Mean reward over rounds ``start:stop`` (e.g. the last rounds, once the policy has learned)."""
        return float(self.rewards[start:stop].mean())


def _check_rounds(n_rounds: int) -> int:
    if isinstance(n_rounds, bool) or not isinstance(n_rounds, (int, np.integer)) or n_rounds < 1:
        raise ConfigurationError(f"n_rounds must be an int ≥ 1, got {n_rounds!r}")
    return int(n_rounds)


def _round_arrays(n: int) -> tuple[np.ndarray, ...]:
    """The ``(n,)`` arrays of an :class:`OnlineResult`, in its field order, to fill round by round."""
    return tuple(np.empty(n, dtype=dtype) for dtype in (float, float, np.int64, float, np.int64, float))


def _policy_cost_weight(policy: Any, cost_weight: float | None) -> float:
    if cost_weight is not None:
        return float(cost_weight)
    return float(getattr(policy, "cost_weight", 0.0))


def run_online(
    env_or_dataset: Any,
    policy: LearningPolicy,
    n_rounds: int,
    seed: int = 0,
    *,
    cost_weight: float | None = None,
) -> OnlineResult:
    """Run ``policy`` for ``n_rounds`` single-query rounds, learning after every round.

    Args:
        env_or_dataset: a full-information :class:`~routing_env.LoggedDataset` (a ``RoutingEnv`` is built over it
            at ``cost_weight``) or a ``RoutingEnv`` (``gym.make("routing_env/Routing-v0", …)`` works too) whose
            observations are the query features.
        policy: a :class:`~routing_env.policy.LearningPolicy` over the env's models (same order); cost-aware
            policies learn quality and cost separately. A cost-aware policy with no ``cost_scale`` of its own
            that has not learned anything yet takes the env's.
        n_rounds: number of queries.
        seed: seeds the env's query order (the policy uses its own seed).
        cost_weight: λ of the rewards when a dataset is given; default the policy's ``cost_weight`` (or 0). A
            cost-aware policy's ``cost_weight`` is set to it, so that it routes at the λ it is rewarded with.

    Returns:
        An :class:`OnlineResult`.
    """
    from routing_env.envs import RoutingEnv

    n = _check_rounds(n_rounds)
    if isinstance(env_or_dataset, LoggedDataset):
        lam = _policy_cost_weight(policy, cost_weight)
        env: Any = RoutingEnv(env_or_dataset, cost_weight=lam)
    else:
        env = env_or_dataset
        if cost_weight is not None:
            raise ConfigurationError("cost_weight is set by the env you pass; give it to the env instead")
    base = env.unwrapped
    if not isinstance(base, RoutingEnv):
        raise ConfigurationError(
            f"run_online needs a RoutingEnv or a LoggedDataset, got {type(base).__name__}"
        )
    check_models(policy.models, base.models, what="env")
    cost_aware = isinstance(policy, CostAwarePolicy) and getattr(policy, "mode", "outcomes") != "reward"
    if cost_aware and isinstance(env_or_dataset, LoggedDataset):
        # The rewards are charged at λ: a cost-aware policy routes at the same λ (documented above).
        policy.cost_weight = lam  # type: ignore[attr-defined]
    if cost_aware and getattr(policy, "cost_scale", 0.0) is None and getattr(policy, "mode", "") == "none":
        # An unset cost_scale means "the data's": use the env's so λ means the same for policy and rewards.
        policy.cost_scale_ = float(base.cost_scale)  # type: ignore[attr-defined]
    rewards, oracle, actions, props, queries, cost = _round_arrays(n)
    obs, _ = env.reset(seed=seed)
    for t in range(n):
        queries[t] = base.query_index
        x = np.asarray(obs, dtype=np.float64)
        a_arr, p_arr = policy.act(x)
        a = int(a_arr[0])
        obs_next, r, terminated, truncated, info = env.step(a)
        if cost_aware:
            policy.update_outcomes(x, a_arr, np.array([info["quality"]]), np.array([info["cost"]]))  # type: ignore[attr-defined]
        else:
            policy.update(x, a_arr, np.array([float(r)]))
        rewards[t] = float(r)
        oracle[t] = float(info["oracle_reward"])
        actions[t] = a
        props[t] = float(p_arr[0])
        cost[t] = float(info["cost"])
        if terminated or truncated:
            obs_next, _ = env.reset()
        obs = obs_next
    return OnlineResult(rewards, oracle, actions, props, queries, cost)


def run_cascade_online(
    env_or_dataset: Any,
    policy: CascadePolicy,
    n_rounds: int,
    seed: int = 0,
    *,
    cost_weight: float | None = None,
) -> OnlineResult:
    """Run a cascade ``policy`` on Cascade-v0's chain mode for ``n_rounds`` queries, learning after each.

    Args:
        env_or_dataset: a full-information :class:`~routing_env.LoggedDataset` (a chain-mode ``CascadeEnv`` is
            built over it with ``order=policy.chain`` at ``cost_weight``) or a chain-mode ``CascadeEnv`` whose
            ``models`` equal ``policy.chain`` and whose observations start with the query features.
        policy: a :class:`~routing_env.policy.CascadePolicy`; ``update`` is called once per decision taken.
        n_rounds: number of queries.
        seed: seeds the env's query order.
        cost_weight: λ when a dataset is given; default the policy's ``cost_weight`` (or 0).

    Returns:
        An :class:`OnlineResult` whose ``actions`` are chain indices of the accepted answers and whose oracle is
        the best stopping point of the chain per query.
    """
    from routing_env.envs import CascadeEnv

    n = _check_rounds(n_rounds)
    chain = tuple(policy.chain)
    if isinstance(env_or_dataset, LoggedDataset):
        if not chain:
            raise ConfigurationError(
                "the cascade policy has no chain yet: construct it with chain=[...] or fit it"
            )
        lam = _policy_cost_weight(policy, cost_weight)
        env: Any = CascadeEnv(env_or_dataset, mode="chain", order=chain, cost_weight=lam)
    else:
        env = env_or_dataset
        if cost_weight is not None:
            raise ConfigurationError("cost_weight is set by the env you pass; give it to the env instead")
    base = env.unwrapped
    if not isinstance(base, CascadeEnv) or base.mode != "chain":
        raise ConfigurationError("run_cascade_online needs a chain-mode CascadeEnv or a LoggedDataset")
    check_models(chain, base.models, what="env's chain")
    ds = base.dataset
    cols = [ds.model_index(m) for m in base.models]
    d, k = ds.n_features, len(cols)
    lat = None if ds.latency is None else np.asarray(ds.latency, dtype=np.float64)

    rewards, oracle, actions, props, queries, cost = _round_arrays(n)
    obs, info0 = env.reset(seed=seed)
    for t in range(n):
        q = base.query_index
        lam = float(info0["cost_weight"])
        # Penalty of each call in reward units, to split the episode's return at every decision.
        pen = lam * ds.cost[q, cols] / base.cost_scale
        if base.latency_weight and lat is not None:
            pen = pen + base.latency_weight * lat[q, cols]
        x = np.asarray(obs[:d], dtype=np.float64)[None, :]
        decisions: list[tuple[np.ndarray, bool]] = []
        prob = 1.0
        total = 0.0
        terminated = truncated = False
        info: dict[str, Any] = {}
        while not (terminated or truncated):
            s = len(base.called_models)
            signals = np.asarray(obs[d + k : d + k + s], dtype=np.float64)[None, :]
            stop, p = policy.decide(x, signals)
            stop_now = bool(stop[0])
            decisions.append((signals, stop_now))
            prob *= float(p[0])
            obs, r, terminated, truncated, info = env.step(0 if stop_now else 1)
            total += float(r)
        n_calls = len(base.called_models)
        quality = float(info["quality"])
        for signals, stop_now in decisions:
            s = signals.shape[1]
            # Return after deciding at stage s: the accepted quality minus the calls made from position s on.
            ret = quality - float(pen[s:n_calls].sum())
            policy.update(x, signals, np.array([stop_now]), np.array([ret]))
        q_chain = ds.quality[q, cols]
        oracle[t] = float(np.max(q_chain - np.cumsum(pen)))
        rewards[t] = total
        actions[t] = n_calls - 1
        props[t] = prob
        queries[t] = q
        cost[t] = float(info["total_cost"])
        obs, info0 = env.reset()
    return OnlineResult(rewards, oracle, actions, props, queries, cost)
