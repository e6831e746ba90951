"""`CascadeVectorEnv`: N copies of Cascade-v0 stepped together with numpy.

``gym.make_vec("routing_env/Cascade-v0", num_envs=N)`` builds it. Sub-env ``i`` behaves exactly like
``CascadeEnv`` reset with seed ``seed + i`` (same queries, λs, rewards and observations; tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode

from routing_env.envs._base import BatchedReplayEnv, same_step_infos
from routing_env.envs._tables import cached, frozen
from routing_env.envs.cascade import CascadeEnv
from routing_env.errors import ConfigurationError


class CascadeVectorEnv(BatchedReplayEnv):
    """A numpy-batched vector of ``num_envs`` Cascade-v0 environments.

    Arguments are those of :class:`~routing_env.envs.CascadeEnv` plus ``num_envs`` and ``autoreset_mode``
    (``"next_step"``, Gymnasium's default, or ``"same_step"``; see :class:`~routing_env.envs.RoutingVectorEnv`).
    ``reset(seed=s)`` seeds sub-env ``i`` with ``s + i``.

    Step infos are ``(N,)`` arrays with ``"_key"`` masks: ``query_index``, ``model`` (the env column called this
    step, −1 for none), ``cost`` (USD this step), ``total_cost``, ``depth``, ``invalid_action`` (free mode) for
    the sub-envs that acted; ``answer_model`` (env column), ``quality`` and ``max_depth_reached`` for those whose
    episode ended. :meth:`action_masks` returns ``(N, A)`` bool. Dataset arrays are shared, never copied.
    """

    single_env = CascadeEnv

    def _init_batch(self, env: CascadeEnv) -> None:
        n_envs = self.num_envs
        ds = env.dataset
        self.mode, self.answer = env.mode, env.answer
        self.max_depth, self.max_steps = env.max_depth, env.max_steps
        self.invalid_action_penalty = env.invalid_action_penalty
        self.signal_source = env.signal_source

        k = len(env.models)
        self._k = k
        cols = list(env._columns)
        key = env._columns
        tables = env._tables
        self._features = ds.features
        self._quality = cached(ds, ("cascade_quality_cols", key), lambda: frozen(ds.quality[:, cols]))
        self._cost = tables.cost
        self._per_lambda = tables.per_lambda
        self._latency_pen = cached(
            ds,
            ("cascade_latency_pen_array", key, env.latency_weight),
            lambda: frozen(ds.quality[:, cols] - tables.base),
        )
        self._latency = (
            None
            if ds.latency is None
            else cached(
                ds, ("cascade_latency_cols", key), lambda: frozen(ds.latency[:, cols].astype(np.float64))
            )
        )
        self._signal = env._signal_cols

        self._q = np.zeros(n_envs, dtype=np.int64)
        self._lam = np.full(n_envs, self.cost_weight)
        self._called = np.zeros((n_envs, k), dtype=bool)
        self._rank = np.full((n_envs, k), -1, dtype=np.int64)  # call order, for best-signal ties
        self._n_calls = np.zeros(n_envs, dtype=np.int64)
        self._last = np.zeros(n_envs, dtype=np.int64)
        self._spent = np.zeros(n_envs)
        self._pending = np.zeros(n_envs)
        self._steps = np.zeros(n_envs, dtype=np.int64)
        self._needs_reset = np.ones(n_envs, dtype=bool)

    # ------------------------------------------------------------------ gymnasium API
    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        self._seed(seed)
        if options:
            raise ConfigurationError(
                f"the cascade vector env takes no reset options, got {sorted(options)}; "
                "pin queries with the single CascadeEnv"
            )
        self._begin_episodes(self._all)
        self._started = True
        info = {"query_index": self._q.copy(), "cost_weight": self._lam.copy()}
        return self._obs(), info

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        a = self._check_actions(actions)
        next_step = self.autoreset_mode == AutoresetMode.NEXT_STEP
        acting = ~self._needs_reset if next_step else np.ones(self.num_envs, dtype=bool)

        reward = np.where(acting, self._pending, 0.0)
        self._pending[acting] = 0.0
        self._steps[acting] += 1
        first_step = acting & (self._steps == 1)
        spent_before = np.where(first_step, 0.0, self._spent)
        if self.mode == "chain":
            accept = acting & (a == 0)
            call = acting & (a == 1)
            col = self._n_calls.copy()
            invalid = np.zeros(self.num_envs, dtype=bool)
        else:
            col = np.maximum(a - 1, 0)
            already = self._called[self._all, col]
            accept = acting & (a == 0) & (self._n_calls > 0)
            call = acting & (a > 0) & ~already
            invalid = acting & (((a == 0) & (self._n_calls == 0)) | ((a > 0) & already))
        idx = np.flatnonzero(call)
        if idx.size:
            reward[idx] += self._call(idx, col[idx])
        max_depth_reached = call & (self._n_calls >= self.max_depth)
        if self.invalid_action_penalty:
            reward[invalid] -= self.invalid_action_penalty
        terminated = accept | max_depth_reached
        truncated = acting & ~terminated & (self._steps >= self.max_steps)
        ended = np.flatnonzero(terminated)
        answer = np.full(self.num_envs, -1, dtype=np.int64)
        quality = np.full(self.num_envs, np.nan)
        if ended.size:
            answer[ended] = self._answers(ended)
            quality[ended] = self._quality[self._q[ended], answer[ended]]
            reward[ended] += quality[ended]
        called_col = np.where(call, col, -1)
        lat = np.zeros(self.num_envs)
        if self._latency is not None:
            lat[idx] = self._latency[self._q[idx], col[idx]]
        acted = acting.copy()
        acted.setflags(write=False)
        done = terminated.copy()
        done.setflags(write=False)
        info: dict[str, Any] = {
            "query_index": self._q.copy(),
            "model": called_col,
            "cost": self._spent - spent_before,
            "total_cost": self._spent.copy(),
            "depth": self._n_calls.copy(),
        }
        if self._latency is not None:
            info["latency"] = lat
        if self.mode == "free":
            info["invalid_action"] = invalid
        for key in list(info):
            info["_" + key] = acted
        info.update({"answer_model": answer, "quality": quality, "max_depth_reached": max_depth_reached})
        info.update({"_answer_model": done, "_quality": done, "_max_depth_reached": done})
        finished = terminated | truncated
        if next_step:
            resetting = np.flatnonzero(self._needs_reset)
            if resetting.size:
                self._begin_episodes(resetting)
            self._needs_reset = finished
            return self._obs(), reward, terminated, truncated, info
        ended_all = np.flatnonzero(finished)
        if ended_all.size:
            info = same_step_infos(info, self._obs(), finished)
            self._begin_episodes(ended_all)
        return self._obs(), reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """``(N, A) bool``: valid actions per sub-env (chain: all; free: accept after a call, uncalled models)."""
        if self.mode == "chain":
            return np.ones((self.num_envs, 2), dtype=bool)
        return np.concatenate(((self._n_calls > 0)[:, None], ~self._called), axis=1)

    # ------------------------------------------------------------------ internals
    def _call(self, idx: np.ndarray, col: np.ndarray) -> np.ndarray:
        """Call column ``col[i]`` in sub-env ``idx[i]``; returns the calls' (negative) rewards."""
        q = self._q[idx]
        self._called[idx, col] = True
        self._rank[idx, col] = self._n_calls[idx]
        self._n_calls[idx] += 1
        self._last[idx] = col
        self._spent[idx] += self._cost[q, col]
        return -self._lam[idx] * self._per_lambda[q, col] - self._latency_pen[q, col]

    def _answers(self, idx: np.ndarray) -> np.ndarray:
        if self.answer == "last":
            return self._last[idx]
        sig = np.where(self._called[idx], self._signal[self._q[idx]], -np.inf)
        top = sig.max(axis=1, keepdims=True)
        # Ties go to the later call, as in CascadeEnv.
        return np.where(sig == top, self._rank[idx], -1).argmax(axis=1)

    def _begin_episodes(self, idx: np.ndarray) -> None:
        lams = self._stream.episode_lambdas(idx)
        self._lam[idx] = self.cost_weight if lams is None else lams
        self._q[idx] = self._stream.next(idx)
        self._called[idx] = False
        self._rank[idx] = -1
        self._n_calls[idx] = 0
        self._spent[idx] = 0.0
        self._pending[idx] = 0.0
        self._steps[idx] = 0
        self._needs_reset[idx] = False
        if self.mode == "chain":
            self._pending[idx] = self._call(idx, np.zeros(idx.size, dtype=np.int64))

    def _obs(self) -> np.ndarray:
        n, k = self.num_envs, self._k
        feats = self._features.take(self._q, axis=0)
        width = feats.shape[1] + 2 * k + 1 + int(self.observe_cost_weight)
        out = np.empty((n, width), dtype=np.float32)
        d = feats.shape[1]
        out[:, :d] = feats
        out[:, d : d + k] = self._called
        out[:, d + k : d + 2 * k] = np.where(self._called, self._signal[self._q], 0.0)
        out[:, d + 2 * k] = self._spent / self.cost_scale
        if self.observe_cost_weight:
            out[:, d + 2 * k + 1] = self._lam
        return out
