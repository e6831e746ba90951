"""`RoutingVectorEnv`: N copies of Routing-v0 stepped together with numpy, no Python loop per sub-env.

``gym.make_vec("routing_env/Routing-v0", num_envs=N)`` builds it (``vectorization_mode="vector_entry_point"``).
Sub-env ``i`` behaves exactly like ``RoutingEnv`` reset with seed ``seed + i``: each holds its own
``np.random.Generator`` and draws the same per-pass blocks (a permutation of the queries, then the λ block) at the
same moments, so N single envs and the vector env produce the same queries, λs and rewards (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode

from routing_env.envs._base import BatchedReplayEnv, same_step_infos
from routing_env.envs.routing import RoutingEnv
from routing_env.errors import ConfigurationError


class RoutingVectorEnv(BatchedReplayEnv):
    """A numpy-batched vector of ``num_envs`` Routing-v0 environments.

    Arguments are those of :class:`~routing_env.envs.RoutingEnv` plus ``num_envs`` and ``autoreset_mode``
    (a :class:`~gymnasium.vector.AutoresetMode` member, its value, or its snake-case name:
    ``"next_step"``, Gymnasium's default: the step after an episode ends resets that sub-env, ignores its action
    and returns reward 0; or ``"same_step"``: the sub-env resets within the step that ended it, and the final
    observation and step info go to ``infos["final_obs"]`` and ``infos["final_info"]``).

    ``reset(seed=s)`` seeds sub-env ``i`` with ``s + i`` (a list seeds each one); ``reset(options=...)`` takes
    ``cost_weight`` (float or ``(N,)``) and ``query_index`` (``(N,)`` ints) like the single env.

    Step infos are arrays of shape ``(N,)`` with a ``"_key"`` boolean mask of the sub-envs they describe (the
    sub-envs that acted this step): the single env's step info keys, except that ``query_index`` (the dataset
    row; ``dataset.query_ids[query_index]`` is the id) replaces ``query_id`` and ``model`` is the action (the index
    into ``models``), to keep string objects out of the batched path. A next-step autoreset step where every sub-env resets returns an empty info dict.
    :meth:`action_masks` returns ``(N, K)`` bool.

    The dataset arrays are shared with every other env over the same dataset, never copied; per sub-env state is
    a :class:`~routing_env.envs._stream.BatchedStream` slot (a query position and one shuffled permutation of the
    query indices, ``int32``, plus a λ block when λ is sampled).
    """

    single_env = RoutingEnv

    def _init_batch(self, env: RoutingEnv) -> None:
        n_envs = self.num_envs
        self.queries_per_episode = env.queries_per_episode
        self.budget = env.budget

        ds = env.dataset
        self._n = ds.n_queries
        self._k = len(env.models)
        self._features = ds.features
        self._query_ids = ds.query_ids
        self._tables = env._tables
        self._cost = env._tables.cost
        cols = list(env._columns)
        self._quality_cols = ds.quality[:, cols] if cols != list(range(ds.n_models)) else ds.quality
        self._latency_cols = (
            None
            if ds.latency is None
            else (ds.latency[:, cols] if cols != list(range(ds.n_models)) else ds.latency)
        )
        self._imputed_cols = None if env._imputed is None else env._imputed[:, cols]
        self._fixed = env._fixed
        self._cheapest = None if env.budget is None else np.nanmin(self._cost, axis=1)

        self._q = np.zeros(n_envs, dtype=np.int64)
        self._t = np.zeros(n_envs, dtype=np.int64)
        self._lam = np.full(n_envs, self.cost_weight)
        self._left = np.full(n_envs, 0.0 if self.budget is None else self.budget)
        self._needs_reset = np.ones(n_envs, dtype=bool)
        self._varying = self.cost_weight_range is not None

    # ------------------------------------------------------------------ gymnasium API
    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        self._seed(seed)
        pinned = lam_override = None
        if options:
            unknown = set(options) - {"query_index", "cost_weight"}
            if unknown:
                raise ConfigurationError(
                    f"unknown reset options {sorted(unknown)}; expected 'query_index' and/or 'cost_weight'"
                )
            if options.get("query_index") is not None:
                pinned = np.broadcast_to(np.asarray(options["query_index"]), (self.num_envs,))
                if pinned.dtype.kind not in "iu" or pinned.min() < 0 or pinned.max() >= self._n:
                    raise ConfigurationError(
                        f"options['query_index'] must be ints in [0, {self._n}), one per sub-env, got {options['query_index']!r}"
                    )
            if options.get("cost_weight") is not None:
                lam_override = np.broadcast_to(
                    np.asarray(options["cost_weight"], dtype=np.float64), (self.num_envs,)
                )
                if not (np.isfinite(lam_override).all() and (lam_override >= 0).all()):
                    raise ConfigurationError(
                        f"options['cost_weight'] must be ≥ 0, got {options['cost_weight']!r}"
                    )
        self._varying = self.cost_weight_range is not None or lam_override is not None
        self._begin_episodes(self._all, pinned, lam_override)
        self._started = True
        return self._obs(), {"query_index": self._q.copy(), "cost_weight": self._lam.copy()}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        a = self._check_actions(actions)
        next_step = self.autoreset_mode == AutoresetMode.NEXT_STEP
        resetting = self._needs_reset if next_step else None
        if resetting is not None and resetting.all():
            # Every sub-env starts a new episode (always so every other step with one query per episode).
            self._begin_episodes(self._all, None, None)
            zeros = np.zeros(self.num_envs, dtype=bool)
            return self._obs(), np.zeros(self.num_envs), zeros, zeros.copy(), {}
        q = self._q
        flat = q * self._k + a
        info: dict[str, Any]
        if self._varying:
            rows = self._tables.rewards(self._lam[:, None], q)
            oracle = self._tables.oracle(rows, q)
            reward = rows[self._all, a]
            best = rows[self._all, oracle]
            cost = self._cost.take(flat)
            info = {
                "query_index": q.copy(),
                "model": a.copy(),
                "quality": self._quality_cols.take(flat),
                "cost": cost,
            }
            if self._latency_cols is not None:
                info["latency"] = self._latency_cols.take(flat).astype(np.float64)
        else:
            assert self._fixed is not None
            # One gather of [reward, quality, cost, latency] rows from the shared outcome table.
            cells = self._fixed.outcomes.take(flat, axis=0)
            reward, cost = cells[:, 0], cells[:, 2]
            oracle = self._fixed.oracle_array.take(q)
            best = self._fixed.oracle_reward_array.take(q)
            info = {"query_index": q.copy(), "model": a.copy(), "quality": cells[:, 1], "cost": cost}
            if self._latency_cols is not None:
                info["latency"] = cells[:, 3]
        info["oracle_action"] = oracle
        info["oracle_reward"] = best
        info["regret"] = best - reward
        if self._imputed_cols is not None:
            info["imputed"] = self._imputed_cols.take(flat)
        if self._varying:
            info["cost_weight"] = self._lam.copy()
        self._t += 1
        terminated = self._t >= self.queries_per_episode
        if self.budget is not None:
            refused = cost > self._left
            reward = np.where(refused, 0.0, reward)
            self._left = np.where(refused, self._left, self._left - cost)
            info["refused"] = refused
            info["budget_left"] = self._left.copy()
        acted = None
        if resetting is not None and resetting.any():
            acted = ~resetting
            reward = np.where(resetting, 0.0, reward)
            terminated &= acted
        cont = ~terminated if acted is None else (~terminated & acted)
        idx = np.flatnonzero(cont)
        if idx.size:
            self._advance(idx)
            if self.budget is not None:
                assert self._cheapest is not None
                exhausted = np.zeros(self.num_envs, dtype=bool)
                exhausted[idx] = self._cheapest[self._q[idx]] > self._left[idx]
                terminated |= exhausted
                info["budget_exhausted"] = exhausted
        elif self.budget is not None:
            info["budget_exhausted"] = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        mask = np.ones(self.num_envs, dtype=bool) if acted is None else acted
        mask.setflags(write=False)
        for key in list(info):
            info["_" + key] = mask
        if next_step:
            if acted is not None:
                assert resetting is not None
                self._begin_episodes(np.flatnonzero(resetting), None, None)
            self._needs_reset = terminated.copy()
            return self._obs(), reward, terminated, truncated, info
        # Same-step autoreset: report the final observation and step info, then start the next episodes.
        done = np.flatnonzero(terminated)
        if done.size:
            info = same_step_infos(info, self._obs(), terminated)
            self._begin_episodes(done, None, None)
        return self._obs(), reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """``(N, K) bool``: the models each sub-env's remaining budget can pay for on its current query."""
        if self.budget is None:
            return np.ones((self.num_envs, self._k), dtype=bool)
        return np.asarray(self._cost[self._q] <= self._left[:, None])

    # ------------------------------------------------------------------ internals
    def _advance(self, idx: np.ndarray) -> None:
        self._q[idx] = self._stream.next(idx)

    def _begin_episodes(
        self, idx: np.ndarray, pinned: np.ndarray | None, lam_override: np.ndarray | None
    ) -> None:
        lams = self._stream.episode_lambdas(idx)
        if lam_override is not None:
            self._lam[idx] = lam_override[idx]
        elif lams is not None:
            self._lam[idx] = lams
        else:
            self._lam[idx] = self.cost_weight
        self._t[idx] = 0
        if self.budget is not None:
            self._left[idx] = self.budget
        if pinned is not None:
            self._q[idx] = pinned[idx]
        else:
            self._advance(idx)
        self._needs_reset[idx] = False

    def _obs(self) -> np.ndarray:
        feats = self._features.take(self._q, axis=0)
        extra = []
        if self.observe_cost_weight:
            extra.append(self._lam.astype(np.float32))
        if self.budget is not None:
            extra.append((self._left / self.budget).astype(np.float32))
        if not extra:
            return feats
        return np.concatenate((feats, np.stack(extra, axis=1)), axis=1)
