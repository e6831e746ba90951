"""What every replay environment shares: the validation of the common arguments and the per-dataset state they
resolve to (single envs: :class:`ReplayEnv`; batched vector envs: :class:`BatchedReplayEnv`)."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from routing_env.data.dataset import CostScale, LoggedDataset
from routing_env.envs._stream import BatchedStream, QueryStream
from routing_env.envs._tables import (
    OutcomeImputer,
    RewardTables,
    ScalarLists,
    cached,
    check_cost_weight,
    check_cost_weight_sampling,
    check_nonnegative,
    resolve_dataset,
    scalar_lists,
)
from routing_env.errors import ConfigurationError


def check_vector_arguments(num_envs: object, autoreset_mode: object, render_mode: object) -> AutoresetMode:
    """Validate the arguments every batched env takes; return the resolved autoreset mode."""
    if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ConfigurationError(f"num_envs must be an integer ≥ 1, got {num_envs!r}")
    if render_mode is not None:
        raise ConfigurationError(f"the vector env does not render; got render_mode={render_mode!r}")
    return resolve_autoreset_mode(autoreset_mode)


def resolve_autoreset_mode(autoreset_mode: object) -> AutoresetMode:
    """The :class:`~gymnasium.vector.AutoresetMode` named by ``autoreset_mode``.

    Accepts the members ``AutoresetMode.NEXT_STEP``/``SAME_STEP``, their values (``"NextStep"``, ``"SameStep"``),
    their names (``"NEXT_STEP"``, ``"SAME_STEP"``) and the snake-case strings ``"next_step"``/``"same_step"``.
    ``AutoresetMode.DISABLED`` is refused: these envs always reset a finished sub-env themselves.
    """
    # "next_step", "NEXT_STEP" and "NextStep" all normalise to "nextstep".
    name = autoreset_mode.value if isinstance(autoreset_mode, AutoresetMode) else autoreset_mode
    key = name.replace("_", "").lower() if isinstance(name, str) else None
    mode = {"nextstep": AutoresetMode.NEXT_STEP, "samestep": AutoresetMode.SAME_STEP}.get(key or "")
    if mode is None:
        raise ConfigurationError(
            "autoreset_mode must be 'next_step' or 'same_step' (or AutoresetMode.NEXT_STEP / "
            f"AutoresetMode.SAME_STEP, or their values 'NextStep' / 'SameStep'), got {autoreset_mode!r}"
            + (
                "; AutoresetMode.DISABLED is not supported, the vector env always resets finished sub-envs"
                if key == "disabled"
                else ""
            )
        )
    return mode


def same_step_infos(info: dict[str, Any], final_obs_batch: np.ndarray, ended: np.ndarray) -> dict[str, Any]:
    """Gymnasium's same-step layout: the step info of sub-envs whose episode ended moves to
    ``info["final_info"]`` and their last observation to ``info["final_obs"]`` (an object array, ``None`` for the
    others); top-level entries keep describing the sub-envs that go on.

    Args:
        info: step info with ``"_key"`` masks, ``(N,)`` arrays.
        final_obs_batch: ``(N, ...)`` observations before the reset.
        ended: ``(N,) bool``, the sub-envs whose episode ended this step.
    """
    # The trailing None makes numpy build a 1-D object array of row views instead of a 2-D float array.
    final_obs = np.array([*final_obs_batch, None], dtype=object)[:-1]
    final_obs[~ended] = None
    ended = ended.copy()
    ended.setflags(write=False)
    final_info: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for key, value in info.items():
        if key.startswith("_"):
            final_info[key] = value & ended
            out[key] = value & ~ended
        else:
            final_info[key] = value
            out[key] = value
    out.update({"final_obs": final_obs, "_final_obs": ended, "final_info": final_info, "_final_info": ended})
    return out


#: The constructor arguments every single replay env shares; :meth:`ReplayEnv._init_replay` validates them.
REPLAY_ARGUMENTS = frozenset(
    {
        "dataset",
        "outcome_model",
        "cost_weight",
        "cost_weight_range",
        "cost_weight_sampling",
        "observe_cost_weight",
        "latency_weight",
        "cost_scale",
        "render_mode",
    }
)


class ReplayEnv(gym.Env[np.ndarray, int]):
    """Base of the single replay envs: validates and stores the arguments Routing-v0 and Cascade-v0 share.

    Subclasses call :meth:`_init_replay` first in their ``__init__`` with their arguments named in
    :data:`REPLAY_ARGUMENTS`, then set ``models``, ``_columns``, ``_tables`` and the spaces.
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 4}  # noqa: RUF012  (Gymnasium declares it per instance)

    dataset: LoggedDataset
    models: tuple[str, ...]
    cost_weight: float
    cost_weight_range: tuple[float, float] | None
    cost_weight_sampling: str
    observe_cost_weight: bool
    latency_weight: float
    _columns: tuple[int, ...]
    _tables: RewardTables
    _lists: ScalarLists
    _stream: QueryStream
    _imputed: np.ndarray | None
    _q: int
    _lam: float

    def _init_replay(
        self,
        *,
        dataset: LoggedDataset | None,
        outcome_model: OutcomeImputer | None,
        cost_weight: float,
        cost_weight_range: tuple[float, float] | None,
        cost_weight_sampling: str,
        observe_cost_weight: bool,
        latency_weight: float,
        cost_scale: CostScale,
        render_mode: str | None,
    ) -> CostScale:
        """Validate the shared arguments and set ``dataset`` (completed by ``outcome_model`` when partial), the
        λ settings, ``latency_weight``, ``render_mode``, the query stream and the scalar lists.

        Returns the cost scale to resolve the reward tables with: with imputed outcomes it is resolved on the
        logged costs, not the imputed ones, so that logged cells replay exactly.
        """
        ds, imputed = resolve_dataset(dataset, outcome_model)
        if imputed is not None and dataset is not None:
            cost_scale = dataset.resolve_cost_scale(cost_scale)
        self.dataset = ds
        self._imputed = imputed
        self.cost_weight, self.cost_weight_range = check_cost_weight(cost_weight, cost_weight_range)
        self.cost_weight_sampling = check_cost_weight_sampling(cost_weight_sampling, self.cost_weight_range)
        self.observe_cost_weight = bool(observe_cost_weight)
        self.latency_weight = check_nonnegative("latency_weight", latency_weight)
        if self.latency_weight and ds.latency is None:
            raise ConfigurationError(
                f"latency_weight={latency_weight!r} needs latency_s in the data, and this dataset has none"
            )
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigurationError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.render_mode = render_mode
        self._stream = QueryStream(ds.n_queries, self.cost_weight_range, self.cost_weight_sampling)
        self._lists = scalar_lists(ds)
        self._q = 0
        self._lam = self.cost_weight
        return cost_scale

    def _imputed_by_row(self) -> list[list[bool]] | None:
        """Per query, whether each env column's outcome was imputed (``None`` for logged data); shared per
        dataset and column set."""
        imputed, cols = self._imputed, self._columns
        if imputed is None:
            return None
        return cached(self.dataset, ("imputed_rows", cols), lambda: imputed[:, list(cols)].tolist())

    @property
    def query_index(self) -> int:
        """Index (row of the dataset) of the current query."""
        return self._q

    def true_rewards(self) -> np.ndarray:
        """``(K,) float64`` reward of each env model alone on the current query at the episode's λ (Routing-v0's
        rewards; for evaluation code, never observed)."""
        return self._tables.rewards(self._lam, self._q)

    def reward_table(self, cost_weight: float | np.ndarray) -> np.ndarray:
        """``(n, K) float64`` reward of each env model alone on every query of the replayed dataset at
        ``cost_weight`` (a float, or ``(n, 1)`` one λ per query): what a step pays, for evaluation code and for
        supervised warm starts (never observed by the agent)."""
        return self._tables.rewards(cost_weight)


class BatchedReplayEnv(VectorEnv, metaclass=ABCMeta):
    """Base of the numpy-batched vector envs: one template single env (``single_env``, built from the same
    keyword arguments) validates the arguments and resolves the shared tables (it is never stepped); the vector
    env copies its settings and holds one query stream per sub-env. Subclasses set up their per-sub-env state in
    :meth:`_init_batch`."""

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}  # noqa: RUF012  (Gymnasium declares it per instance)
    single_env: type[ReplayEnv]

    def __init__(
        self,
        num_envs: int = 1,
        dataset: LoggedDataset | None = None,
        *,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        **env_kwargs: Any,
    ) -> None:
        mode = check_vector_arguments(num_envs, autoreset_mode, render_mode)
        env = self.single_env(dataset=dataset, **env_kwargs)  # type: ignore[call-arg]
        self._adopt(env, int(num_envs), mode)
        self._init_batch(env)

    @abstractmethod
    def _init_batch(self, env: Any) -> None:
        """Per-sub-env state and the tables read from the template ``env`` (an instance of ``single_env``)."""

    def _adopt(self, env: ReplayEnv, num_envs: int, autoreset_mode: AutoresetMode) -> None:
        """Take the template ``env``'s settings and spaces, batched over ``num_envs`` sub-envs."""
        self._template = env
        self.num_envs = n_envs = int(num_envs)
        self.metadata = {**self.metadata, "autoreset_mode": autoreset_mode}
        self.autoreset_mode = autoreset_mode
        self.dataset = env.dataset
        self.models = env.models
        self.cost_weight, self.cost_weight_range = env.cost_weight, env.cost_weight_range
        self.cost_weight_sampling = env.cost_weight_sampling
        self.observe_cost_weight = env.observe_cost_weight
        self.cost_scale = env._tables.cost_scale
        self.single_observation_space = env.observation_space
        self.single_action_space = env.action_space
        self.observation_space = batch_space(env.observation_space, n_envs)
        n_actions = int(env.action_space.n)  # type: ignore[attr-defined]
        self.action_space = spaces.MultiDiscrete(np.full(n_envs, n_actions))
        self._n_actions = n_actions
        self._stream = BatchedStream(
            n_envs, env.dataset.n_queries, env.cost_weight_range, env.cost_weight_sampling
        )
        self._all = np.arange(n_envs)
        self._started = False

    def reward_table(self, cost_weight: float | np.ndarray) -> np.ndarray:
        """``(n, K) float64`` rewards of every query × model at ``cost_weight`` (see
        :meth:`ReplayEnv.reward_table`)."""
        return self._template.reward_table(cost_weight)

    def _seed(self, seed: int | Sequence[int] | None) -> None:
        """Seed sub-env ``i`` with ``seed + i`` (or with ``seed[i]`` for a list), as ``reset(seed=…)`` does."""
        if seed is None:
            return
        seeds = [int(seed) + i for i in range(self.num_envs)] if np.isscalar(seed) else list(seed)  # type: ignore[arg-type]
        if len(seeds) != self.num_envs:
            raise ConfigurationError(f"seed must be an int or {self.num_envs} ints, got {len(seeds)} seeds")
        self._stream.seed(seeds)
        self._np_random_seed = seeds[0]

    def _check_actions(self, actions: Any) -> np.ndarray:
        """``(N,) int64`` actions, validated against the shape and the action count."""
        if not self._started:
            raise ConfigurationError("step() called before reset()")
        a = np.asarray(actions)
        if a.shape != (self.num_envs,) or a.dtype.kind not in "iu":
            raise ConfigurationError(
                f"actions must be {self.num_envs} ints, got {a.dtype} array of shape {a.shape}"
            )
        if a.size and (a.min() < 0 or a.max() >= self._n_actions):
            raise ConfigurationError(
                f"actions must lie in [0, {self._n_actions}), got values {a.min()}..{a.max()}"
            )
        return a.astype(np.int64, copy=False)
