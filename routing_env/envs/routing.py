"""`RoutingEnv` (``routing_env/Routing-v0``): pick one model per query, replaying logged outcomes exactly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, SupportsFloat

import numpy as np
from gymnasium import spaces

from routing_env.data.dataset import CostScale, LoggedDataset
from routing_env.envs._base import REPLAY_ARGUMENTS, ReplayEnv
from routing_env.envs._stream import CostWeightSampling
from routing_env.envs._tables import (
    OutcomeImputer,
    cached,
    check_nonnegative,
    check_positive_int,
    feature_bounds,
    fixed_lambda_tables,
    parse_reset_options,
    resolve_models,
    reward_tables,
)
from routing_env.errors import ConfigurationError


class RoutingEnv(ReplayEnv):
    """Route each query to one LLM and receive the logged outcome of that call.

    ## Description

    Replays logged query × model outcomes (a :class:`~routing_env.LoggedDataset`). Each step shows one query's
    features; the agent picks a model and receives that model's logged quality minus the cost-weighted USD cost of
    the call: exactly the reward of ``dataset.rewards(...)`` for that cell. With ``cost_weight_range`` the cost
    weight λ is drawn per episode, and ``observe_cost_weight=True`` appends it to the observation, so one
    λ-conditioned policy can serve the whole cost–quality frontier.

    ## Action Space

    ``Discrete(K)`` over ``models`` (default: all of the dataset's models, in its column order):
    action ``j`` calls ``models[j]``.

    ## Observation Space

    ``Box(low, high, (d + e,), float32)``: the query's ``d`` features (bounds: the whole float32 range, as a new query's
    features may fall outside the range of the logs), then (in this order, when enabled) the episode's cost weight λ ≥ 0 and the
    remaining budget as a fraction of ``budget`` in [0, 1].

    ## Rewards

    ``quality − cost_weight · cost / cost_scale − latency_weight · latency_s`` of the logged call
    (``cost_scale="max_mean"``: the mean cost of the dataset's most expensive model, resolved on the whole dataset
    so a model subset sees the same rewards). A call refused for lack of budget yields 0.

    ## Starting State

    The first query of the episode, drawn without replacement from a pass over the data shuffled by the seed (a
    new shuffle per pass), or pinned with ``reset(options={"query_index": i})``. ``options={"cost_weight": λ}``
    fixes λ for that episode.

    ## Episode End

    Terminates after ``queries_per_episode`` queries, or earlier when the remaining budget cannot pay for any
    model on the next query. There is no truncation.

    ## Information

    ``reset``: ``query_id``, ``query_index``, ``cost_weight``. ``step`` (about the query just answered):
    ``query_id``, ``model`` (the name of the model called), ``quality``, ``cost`` (USD), ``latency`` (s; only
    when the logs have latency), ``oracle_action`` and
    ``oracle_reward`` (best model of that query at this λ, ties to the cheaper), ``regret`` (oracle reward −
    reward); ``cost_weight`` when λ varies by episode; ``imputed`` (the outcome came from the outcome model, not
    the logs) when an outcome model is in use; with a budget ``refused``, ``budget_left`` (USD) and
    ``budget_exhausted``.

    ## Arguments

    - ``dataset``: the logs; default the bundled sample (:func:`routing_env.data.load_sample`, cached per process).
    - ``cost_weight``: λ ≥ 0 (default 0). ``cost_weight_range=(low, high)``: draw λ per episode from that range.
    - ``cost_weight_sampling``: how λ is drawn from ``cost_weight_range``: ``"uniform"`` (default) or
      ``"log_uniform"`` (log λ uniform; with ``low = 0``, log(λ + ε) uniform with ε = 1e-3·high, so λ = 0 stays
      reachable). Log-uniform spends as many episodes on each decade of λ, i.e. far more on the small λ where the
      frontier bends most. Only with ``cost_weight_range``.
    - ``observe_cost_weight``: append λ to the observation.
    - ``latency_weight``: reward per second of latency (needs latency in the data). ``cost_scale``: see Rewards.
    - ``models``: route over this subset of the dataset's models, in this order.
    - ``queries_per_episode``: queries per episode (default 1: a contextual bandit).
    - ``budget``: USD per episode; the remaining fraction is observed and :meth:`action_masks` masks models the
      budget cannot pay for on the current query (an unaffordable call is refused: no answer, no cost, reward 0).
    - ``outcome_model``: needed for partial (bandit) logs; imputes the outcomes the logs lack
      (:class:`routing_env.envs.OutcomeModel`). Without it partial data raises ``PartialInformationError``.

    ## Version History

    - v0: initial version. Later, without a new id (observations and rewards unchanged): the step info names the
      ``model`` and leaves ``latency`` out when the logs have none (it was NaN, which broke Gymnasium's
      determinism check), and the features' bounds became the whole float32 range (they were the logs' range).
    """

    def __init__(
        self,
        dataset: LoggedDataset | None = None,
        cost_weight: float = 0.0,
        cost_weight_range: tuple[float, float] | None = None,
        observe_cost_weight: bool = False,
        latency_weight: float = 0.0,
        cost_scale: CostScale = "max_mean",
        models: Sequence[str] | None = None,
        queries_per_episode: int = 1,
        budget: float | None = None,
        outcome_model: OutcomeImputer | None = None,
        render_mode: str | None = None,
        cost_weight_sampling: CostWeightSampling = "uniform",
    ) -> None:
        cost_scale = self._init_replay(**{k: v for k, v in locals().items() if k in REPLAY_ARGUMENTS})
        ds = self.dataset
        self.models = resolve_models(ds, models)
        self._columns = tuple(ds.model_index(m) for m in self.models)
        self._k = len(self.models)
        self.queries_per_episode = check_positive_int("queries_per_episode", queries_per_episode)
        self._init_tables(cost_scale)
        self.budget = self._check_budget(budget)
        self._cheapest: list[float] | None = (
            None if self.budget is None else np.nanmin(self._tables.cost, axis=1).tolist()
        )
        self._n_extra = int(self.observe_cost_weight) + int(self.budget is not None)
        self.observation_space = self._observation_space()
        self.action_space = spaces.Discrete(self._k)

        self._t = 0
        self._left = 0.0 if self.budget is None else self.budget
        self._done = True
        self._varying = self.cost_weight_range is not None
        # The current query's rewards at the episode's λ and its oracle (set by _load).
        self._row: list[float] = []
        self._oracle = 0
        self._oracle_reward = 0.0

    def _init_tables(self, cost_scale: CostScale) -> None:
        """The per-dataset tables this env reads (shared with every env over the same dataset and columns)."""
        ds = self.dataset
        self._tables = tables = reward_tables(ds, self._columns, self.latency_weight, cost_scale)
        self.cost_scale = tables.cost_scale
        self._fixed = (
            None
            if self.cost_weight_range is not None
            else fixed_lambda_tables(ds, self._columns, self.latency_weight, cost_scale, self.cost_weight)
        )
        # Row views of the features (indexing a list of rows is cheaper than indexing the 2-D array).
        self._feature_rows = self._lists.feature_rows
        self._base_lists: list[list[float]] = cached(
            ds, ("base_lists", id(tables)), lambda: tables.base.tolist()
        )
        self._per_lambda_lists: list[list[float]] = cached(
            ds, ("per_lambda_lists", id(tables)), lambda: tables.per_lambda.tolist()
        )
        self._cost_lists: list[list[float]] = cached(
            ds, ("cost_lists", id(tables)), lambda: tables.cost.tolist()
        )
        mean_cost = np.nan_to_num(tables.mean_cost, nan=np.inf)
        self._mean_cost_rank = np.argsort(np.argsort(mean_cost, kind="stable"), kind="stable").tolist()
        self._imputed_rows = self._imputed_by_row()

    def _check_budget(self, budget: float | None) -> float | None:
        """The validated episode budget (USD): it must pay for the cheapest model on every query."""
        if budget is None:
            return None
        b = check_nonnegative("budget", budget)
        need = float(np.nanmin(self._tables.cost, axis=1).max())
        if b <= 0 or b < need:
            raise ConfigurationError(
                f"budget must be a positive USD amount that pays for the cheapest of {list(self.models)} on "
                f"every query (≥ {need:.6g} USD), got {budget!r}"
            )
        return b

    def _observation_space(self) -> spaces.Box:
        d = self.dataset.n_features
        if d + self._n_extra == 0:
            raise ConfigurationError(
                "the dataset has no features and nothing else is observed: give it features "
                "(LoggedDataset.with_features) or set observe_cost_weight=True"
            )
        low, high = feature_bounds(self.dataset, self._n_extra)
        i = d
        if self.observe_cost_weight:
            # A per-episode override may leave the configured range, hence the wide upper bound.
            low[i], high[i] = 0.0, np.finfo(np.float32).max
            i += 1
        if self.budget is not None:
            low[i], high[i] = 0.0, 1.0
        return spaces.Box(low, high, dtype=np.float32)

    # ------------------------------------------------------------------ gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            super().reset(seed=seed)  # Env.reset only seeds the generator
            self._stream.restart()
        rng = self.np_random
        pinned, lam_override = parse_reset_options(options, self._stream.n) if options else (None, None)
        lam = self._stream.episode_lambda(rng, self.cost_weight)
        self._lam = lam if lam_override is None else lam_override
        self._varying = self.cost_weight_range is not None or lam_override is not None
        self._t = 0
        self._left = 0.0 if self.budget is None else self.budget
        self._load(pinned if pinned is not None else self._stream.next(rng))
        self._done = False
        return self._obs(), {
            "query_id": self._lists.query_ids[self._q],
            "query_index": self._q,
            "cost_weight": self._lam,
        }

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        a = action if type(action) is int else int(action)
        if not 0 <= a < self._k:
            raise ConfigurationError(f"action must be an int in [0, {self._k}), got {action!r}")
        if self._done:
            raise ConfigurationError("step() called on a finished episode; call reset() first")
        q = self._q
        r = self._row[a]
        lists = self._lists
        col = self._columns[a]
        cost = lists.cost[q][col]
        info = {
            "query_id": lists.query_ids[q],
            "model": self.models[a],
            "quality": lists.quality[q][col],
            "cost": cost,
            "oracle_action": self._oracle,
            "oracle_reward": self._oracle_reward,
            "regret": self._oracle_reward - r,
        }
        if lists.latency is not None:
            info["latency"] = lists.latency[q][col]
        if self._imputed_rows is not None:
            info["imputed"] = self._imputed_rows[q][a]
        if self._varying:
            info["cost_weight"] = self._lam
        self._t += 1
        terminated = self._t >= self.queries_per_episode
        if self.budget is not None:
            refused = cost > self._left
            if refused:
                r = 0.0
            else:
                self._left -= cost
            info["refused"] = refused
            info["budget_left"] = self._left
            if not terminated:
                self._load(self._stream.next(self.np_random))
                assert self._cheapest is not None
                terminated = self._cheapest[self._q] > self._left
            info["budget_exhausted"] = terminated and self._t < self.queries_per_episode
        elif not terminated:
            self._load(self._stream.next(self.np_random))
        self._done = terminated
        if self._n_extra:
            return self._obs(), r, terminated, False, info
        return self._feature_rows[self._q].copy(), r, terminated, False, info

    def action_masks(self) -> np.ndarray:
        """``(K,) bool``: the models the remaining budget can pay for on the current query (all without budget)."""
        if self.budget is None:
            return np.ones(self._k, dtype=bool)
        return np.asarray(self._tables.cost[self._q] <= self._left)

    def render(self) -> str | None:  # type: ignore[override, unused-ignore]  # ansi frames are strings
        if self.render_mode != "ansi":
            return None
        ds = self.dataset
        text = f"query {self._lists.query_ids[self._q]} (index {self._q}), λ={self._lam:g}"
        if ds.prompts is not None:
            text += f": {ds.prompts[self._q]!s}"
        if self.budget is not None:
            text += f"; budget left {self._left:.6g} USD"
        return text

    # ------------------------------------------------------------------ internals
    def _load(self, q: int) -> None:
        """Make query ``q`` current: its rewards at the episode's λ and its oracle."""
        self._q = q
        if not self._varying:
            assert self._fixed is not None
            self._row = self._fixed.rewards[q]
            self._oracle = self._fixed.oracle_action[q]
            self._oracle_reward = self._fixed.oracle_reward[q]
            return
        # The same float operations as RewardTables.rewards, on one row in plain Python (a numpy call per
        # query would cost more than the whole step).
        lam = self._lam
        base, per_lambda = self._base_lists[q], self._per_lambda_lists[q]
        row = [b - lam * p for b, p in zip(base, per_lambda)]
        best = max(row)
        tol = 1e-12 * max(1.0, abs(best))
        cands = [j for j, r in enumerate(row) if r >= best - tol]
        if len(cands) > 1:
            # Ties go to the cheaper call, then to the model with the lower mean cost (oracle_from_arrays).
            cost = self._cost_lists[q]
            cands.sort(key=lambda j: (cost[j], self._mean_cost_rank[j]))
        self._row = row
        self._oracle = cands[0]
        self._oracle_reward = row[cands[0]]

    def _obs(self) -> np.ndarray:
        row = self._feature_rows[self._q]
        if not self._n_extra:
            # A fresh array per call: users keep observations, and the dataset row must stay untouched.
            return row.copy()
        d = row.shape[0]
        out = np.empty(d + self._n_extra, dtype=np.float32)
        out[:d] = row
        if self.observe_cost_weight:
            out[d] = self._lam
            d += 1
        if self.budget is not None:
            out[d] = self._left / self.budget
        return out
