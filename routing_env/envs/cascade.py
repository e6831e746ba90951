"""`CascadeEnv` (``routing_env/Cascade-v0``): call models in turn, watch their signals, then stop or escalate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, SupportsFloat

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
    frozen,
    parse_reset_options,
    resolve_models,
    reward_tables,
    signal_table,
)
from routing_env.errors import ConfigurationError

Mode = Literal["chain", "free"]
Answer = Literal["last", "best_signal"]
SignalSource = Literal["auto", "logged", "simulated"]

#: Action 0 of both modes: return the current answer and end the episode.
ACCEPT = 0
#: Action 1 of the chain mode: call the next model of the chain.
ESCALATE = 1


class CascadeEnv(ReplayEnv):
    """Answer a query by calling LLMs one after another and deciding when to stop.

    ## Description

    Replays logged outcomes of a cascade: each call reveals the called model's **signal** (a logged confidence or
    verifier score, or a simulated verifier when the logs have none) and costs its logged USD price; accepting
    returns an answer whose logged quality is the final reward. The true quality of an answer is never observed:
    at inference time it is unknowable, so it stays out of the observation.

    Two modes:

    - ``mode="chain"``: a fixed ``order`` of models (default: the env's models sorted by mean cost, cheapest
      first). The first model is called on reset; each step either accepts or escalates to the next model.
    - ``mode="free"``: nothing is called on reset; each step accepts or calls any model not yet called.
      :meth:`action_masks` gives the valid actions (for sb3-contrib's ``MaskablePPO``).

    ## Action Space

    - chain: ``Discrete(2)``: 0 = accept the current answer, 1 = escalate to the next model.
    - free: ``Discrete(K + 1)``: 0 = accept, ``1 + j`` = call ``models[j]``.

    ## Observation Space

    ``Box(float32)`` of width ``d + 2·K + 1 (+1)``: the query's ``d`` features (bounds: the whole float32 range); ``called (K)`` 0/1 per model
    (chain: per chain position); ``signals (K)`` the signal each called model returned (0 where not called);
    the USD spent so far divided by ``cost_scale``; then λ when ``observe_cost_weight``.

    ## Rewards

    Each call: ``−cost_weight · cost / cost_scale − latency_weight · latency_s`` of that call (in chain mode the
    call made on reset is charged on the first step). Accepting adds the **quality** of the returned answer: the
    last called model's (``answer="last"``) or the called model with the highest signal (``answer="best_signal"``,
    ties to the later call). A cascade that calls one model and accepts earns exactly Routing-v0's reward for that
    model. In free mode an invalid action (accept before any call, calling a model twice) changes nothing and
    costs ``invalid_action_penalty``.

    ## Starting State

    A query drawn without replacement from a pass over the data shuffled by the seed (or pinned with
    ``reset(options={"query_index": i})``); chain mode has already called the first model of the chain.

    ## Episode End

    Terminates on accept, or when ``max_depth`` models have been called: the last call's answer is then accepted
    automatically (``info["max_depth_reached"]``). Truncates after ``max_steps`` steps (free mode, only reachable
    through invalid actions), with no answer and no quality.

    ## Information

    ``reset``: ``query_id``, ``query_index``, ``cost_weight``, ``signal_source``. ``step``: ``query_id``,
    ``model`` (called this step, or ``None``), ``cost`` (USD this step), ``latency`` (s, of this step's call; only
    when the logs have latency),
    ``total_cost`` (USD so far), ``depth``;
    ``invalid_action`` in free mode; ``imputed`` with an outcome model; at the end ``answer_model``, ``quality``
    of the returned answer and ``max_depth_reached``.

    ## Arguments

    - ``dataset``: the logs (default: the bundled sample, cached per process); partial logs need ``outcome_model``.
    - ``mode``, ``order`` (chain), ``models`` (free: a subset of the dataset's models), ``max_depth``
      (default: all models), ``answer``, ``max_steps`` (free; default ``2·(K + 1)``), ``invalid_action_penalty``.
    - ``cost_weight``, ``cost_weight_range``, ``cost_weight_sampling``, ``observe_cost_weight``,
      ``latency_weight``, ``cost_scale``: as in Routing-v0.
    - ``signal``: ``"auto"`` (logged when available, else simulated), ``"logged"`` or ``"simulated"``.
      ``verifier_auroc`` and ``verifier_seed`` configure the **simulated** verifier: a score
      ``sigmoid(δ·quality + N(0, 1))`` with ROC AUC ``verifier_auroc`` on right/wrong answers, drawn once per
      (dataset, seed). ``info["signal_source"]`` and :attr:`signal_source` say which is in use.

    ## Version History

    - v0: initial version. Later, without a new id (observations and rewards unchanged): the step info leaves
      ``latency`` out when the logs have none (it was NaN), and the features' bounds became the whole float32 range (they were the logs' range).
    """

    def __init__(
        self,
        dataset: LoggedDataset | None = None,
        mode: Mode = "chain",
        order: Sequence[str] | None = None,
        models: Sequence[str] | None = None,
        cost_weight: float = 0.0,
        cost_weight_range: tuple[float, float] | None = None,
        observe_cost_weight: bool = False,
        latency_weight: float = 0.0,
        cost_scale: CostScale = "max_mean",
        max_depth: int | None = None,
        answer: Answer = "last",
        signal: SignalSource = "auto",
        verifier_auroc: float = 0.8,
        verifier_seed: int = 0,
        invalid_action_penalty: float = 0.0,
        max_steps: int | None = None,
        outcome_model: OutcomeImputer | None = None,
        render_mode: str | None = None,
        cost_weight_sampling: CostWeightSampling = "uniform",
    ) -> None:
        cost_scale = self._init_replay(**{k: v for k, v in locals().items() if k in REPLAY_ARGUMENTS})
        if mode not in ("chain", "free"):
            raise ConfigurationError(f"mode must be 'chain' or 'free', got {mode!r}")
        self.mode: Mode = mode
        self.models = self._cascade_models(order, models)
        k = self._k = len(self.models)
        self._columns = tuple(self.dataset.model_index(m) for m in self.models)
        min_depth = 2 if mode == "chain" else 1
        self.max_depth = k if max_depth is None else check_positive_int("max_depth", max_depth)
        if not min_depth <= self.max_depth <= k:
            raise ConfigurationError(
                f"max_depth must lie in [{min_depth}, {k}] for mode={mode!r} with {k} models, got {max_depth!r}"
            )
        if answer not in ("last", "best_signal"):
            raise ConfigurationError(f"answer must be 'last' or 'best_signal', got {answer!r}")
        self.answer: Answer = answer
        self.invalid_action_penalty = check_nonnegative("invalid_action_penalty", invalid_action_penalty)
        self.max_steps = 2 * (k + 1) if max_steps is None else check_positive_int("max_steps", max_steps)
        if mode == "free" and self.max_steps < self.max_depth + 1:
            raise ConfigurationError(
                f"max_steps must allow a full cascade (≥ max_depth + 1 = {self.max_depth + 1}), got {max_steps!r}"
            )
        self._init_tables(cost_scale, signal, float(verifier_auroc), int(verifier_seed))
        self.observation_space = self._observation_space()
        self.action_space = spaces.Discrete(2 if mode == "chain" else k + 1)

        self._d = d = self.dataset.n_features
        self._obs_buf = np.zeros(d + 2 * k + 1 + int(self.observe_cost_weight), dtype=np.float32)
        self._calls: list[int] = []
        self._spent = 0.0
        self._pending = 0.0
        self._steps = 0
        self._done = True

    def _cascade_models(self, order: Sequence[str] | None, models: Sequence[str] | None) -> tuple[str, ...]:
        """The env's models: the chain ``order`` (default cheapest first) or the free mode's ``models``."""
        ds = self.dataset
        if self.mode == "free":
            if order is not None:
                raise ConfigurationError(
                    "order= is for mode='chain'; in mode='free' use models= to pick a subset"
                )
            return resolve_models(ds, models)
        if models is not None:
            raise ConfigurationError(
                "mode='chain' takes the models from order=[...]; models= is for mode='free'"
            )
        if order is None:
            order = [ds.models[j] for j in np.argsort(ds.mean_cost(), kind="stable")]
        chain = resolve_models(ds, order)
        if len(chain) < 2:
            raise ConfigurationError(f"order must list at least 2 models to cascade over, got {list(chain)}")
        return chain

    def _init_tables(self, cost_scale: CostScale, signal: SignalSource, auroc: float, seed: int) -> None:
        """The per-dataset tables this env reads (shared with every env over the same dataset and columns)."""
        ds, cols_key = self.dataset, self._columns
        cols = list(cols_key)
        self._tables = tables = reward_tables(ds, cols_key, self.latency_weight, cost_scale)
        self.cost_scale = tables.cost_scale
        self._per_lambda: list[list[float]] = cached(
            ds, ("cascade_per_lambda", cols_key, cost_scale), lambda: tables.per_lambda.tolist()
        )
        # quality − base = latency_weight·latency: the part of a call's penalty that does not scale with λ.
        self._latency_pen: list[list[float]] = cached(
            ds,
            ("cascade_latency_pen", cols_key, self.latency_weight),
            lambda: (ds.quality[:, cols] - tables.base).tolist(),
        )
        sig, self.signal_source = signal_table(ds, signal, auroc, seed)
        #: ``(n, K) float32`` signal of each env model, shared per dataset (the vector env reads it too).
        self._signal_cols: np.ndarray = cached(
            ds, ("cascade_signal_cols", id(sig), cols_key), lambda: frozen(sig[:, cols])
        )
        self._signal: list[list[float]] = cached(
            ds, ("cascade_signal_lists", id(sig), cols_key), lambda: self._signal_cols.tolist()
        )
        self._imputed_rows = self._imputed_by_row()

    def _observation_space(self) -> spaces.Box:
        d, k = self.dataset.n_features, self._k
        low, high = feature_bounds(self.dataset, 2 * k + 1 + int(self.observe_cost_weight))
        low[d : d + k], high[d : d + k] = 0.0, 1.0
        low[d + k : d + 2 * k] = min(0.0, float(np.nanmin(self._signal_cols)))
        high[d + k : d + 2 * k] = max(0.0, float(np.nanmax(self._signal_cols)))
        low[d + 2 * k :], high[d + 2 * k :] = 0.0, np.finfo(np.float32).max
        return spaces.Box(low, high, dtype=np.float32)

    # ------------------------------------------------------------------ gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._stream.restart()
        rng = self.np_random
        pinned, lam_override = parse_reset_options(options, self.dataset.n_queries)
        lam = self._stream.episode_lambda(rng, self.cost_weight)
        self._lam = lam if lam_override is None else lam_override
        self._q = pinned if pinned is not None else self._stream.next(rng)
        self._calls = []
        self._spent = 0.0
        self._pending = 0.0
        self._steps = 0
        self._done = False
        if self.mode == "chain":
            self._pending = self._call(0)
        info = {
            "query_id": self._lists.query_ids[self._q],
            "query_index": self._q,
            "cost_weight": self._lam,
            "signal_source": self.signal_source,
        }
        return self._obs(), info

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        a = action if type(action) is int else int(action)
        n_actions = 2 if self.mode == "chain" else self._k + 1
        if not 0 <= a < n_actions:
            raise ConfigurationError(f"action must be an int in [0, {n_actions}), got {action!r}")
        if self._done:
            raise ConfigurationError("step() called on a finished episode; call reset() first")
        self._steps += 1
        reward = self._pending
        self._pending = 0.0
        # In chain mode the first step also accounts for the call made on reset.
        spent_before = 0.0 if self._steps == 1 else self._spent
        called: int | None = None
        invalid = False
        accept = False
        if a == ACCEPT:
            if self._calls:
                accept = True
            else:
                invalid = True
        elif self.mode == "chain":
            called = len(self._calls)
        elif (a - 1) in self._calls:
            invalid = True
        else:
            called = a - 1
        if called is not None:
            reward += self._call(called)
        max_depth_reached = called is not None and len(self._calls) >= self.max_depth
        info: dict[str, Any] = {
            "query_id": self._lists.query_ids[self._q],
            "model": None if called is None else self.models[called],
            "cost": self._spent - spent_before,
            "total_cost": self._spent,
            "depth": len(self._calls),
        }
        if self._lists.latency is not None:
            info["latency"] = self._latency_of(called)
        if self.mode == "free":
            info["invalid_action"] = invalid
        if invalid:
            reward -= self.invalid_action_penalty
        terminated = accept or max_depth_reached
        truncated = not terminated and self._steps >= self.max_steps
        if terminated:
            j = self._answer()
            quality = self._lists.quality[self._q][self._columns[j]]
            reward += quality
            info["answer_model"] = self.models[j]
            info["quality"] = quality
            info["max_depth_reached"] = max_depth_reached
        if self._imputed_rows is not None:
            # Whether an outcome used this step (the call made, or the answer returned) came from the model.
            imp = self._imputed_rows[self._q]
            info["imputed"] = (called is not None and imp[called]) or (terminated and imp[self._answer()])
        self._done = terminated or truncated
        return self._obs(), reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """Valid actions now, ``(2,)`` bool (chain) or ``(K + 1,)`` bool (free): accept needs a call first, and a
        model cannot be called twice."""
        if self.mode == "chain":
            return np.ones(2, dtype=bool)
        mask = np.ones(self._k + 1, dtype=bool)
        mask[0] = bool(self._calls)
        for j in self._calls:
            mask[1 + j] = False
        return mask

    def render(self) -> str | None:  # type: ignore[override, unused-ignore]  # ansi frames are strings
        if self.render_mode != "ansi":
            return None
        calls = ", ".join(f"{self.models[j]} (signal {self._signal[self._q][j]:.3f})" for j in self._calls)
        return f"query {self._lists.query_ids[self._q]}: called [{calls}], spent {self._spent:.6g} USD"

    # ------------------------------------------------------------------ evaluation helpers
    @property
    def called_models(self) -> tuple[str, ...]:
        """Models called so far in this episode, in call order."""
        return tuple(self.models[j] for j in self._calls)

    # ------------------------------------------------------------------ internals
    def _call(self, j: int) -> float:
        """Call model ``j`` (an env column) on the current query; returns the call's (negative) reward."""
        q = self._q
        self._calls.append(j)
        self._spent += self._lists.cost[q][self._columns[j]]
        return -self._lam * self._per_lambda[q][j] - self._latency_pen[q][j]

    def _latency_of(self, j: int | None) -> float:
        """Latency (s) of the call to column ``j`` on the current query (0 without a call); needs logged latency."""
        if j is None:
            return 0.0
        assert self._lists.latency is not None
        return self._lists.latency[self._q][self._columns[j]]

    def _answer(self) -> int:
        if self.answer == "last":
            return self._calls[-1]
        row = self._signal[self._q]
        best = self._calls[0]
        for j in self._calls[1:]:
            if row[j] >= row[best]:
                best = j
        return best

    def _obs(self) -> np.ndarray:
        buf = self._obs_buf
        d, k = self._d, self._k
        buf[:d] = self._lists.feature_rows[self._q]
        buf[d:] = 0.0
        row = self._signal[self._q]
        for j in self._calls:
            buf[d + j] = 1.0
            buf[d + k + j] = row[j]
        buf[d + 2 * k] = self._spent / self.cost_scale
        if self.observe_cost_weight:
            buf[d + 2 * k + 1] = self._lam
        return buf.copy()
