"""Routing-v0 and Cascade-v0 for RLlib: env configs that name the logs by path, built on every env runner.

RLlib builds an env on each env runner (a Ray actor, possibly on another machine) from a registered creator and
a JSON-able ``env_config``. :func:`register_rllib_envs` registers :func:`make_rllib_env` under the Gymnasium ids
``routing_env/Routing-v0`` and ``routing_env/Cascade-v0`` with ``ray.tune.registry.register_env``; the config is
an :class:`RLlibEnvConfig` (``to_env_config()`` gives the dict):

- the logs are a parquet (or csv/jsonl) file in the canonical format, read once per process (:func:`load_logs`
  caches by path, size and modification time), so a cluster trains on logs on shared storage;
- ``holdout``/``split_seed`` repeat the driver's validation split on every runner, so runners train on the same
  queries the driver holds out from; ``feature_mean``/``feature_std`` standardise the features once, there;
- with ``num_envs`` in the config (RLlib's ``gym_env_vectorize_mode="vector_entry_point"``) the creator returns
  the native numpy-batched vector env (:class:`~routing_env.envs.RoutingVectorEnv`,
  :class:`~routing_env.envs.CascadeVectorEnv`) instead of one env per copy.

The adapters (:class:`RLlibVectorEnv`, :class:`RLlibSingleEnv`) do two things RLlib needs: they present the
action mask of free-choice cascades (and of budgeted routing) in the observation, as
``Dict(observations=Box, action_mask=Box(0, 1, (A,)))`` for :class:`~agents.training.rllib_module.RoutingPPOModule`;
and they spread RLlib's seeds. RLlib seeds runner ``w`` with ``seed + w`` and Gymnasium seeds copy ``i`` with
``s + i``, so runner ``w``'s copy ``i + 1`` would replay runner ``w + 1``'s copy ``i`` query for query; the
adapters draw each copy's seed from ``SeedSequence([s, i])`` instead.

Nothing here imports Ray except :func:`register_rllib_envs`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from routing_env.data.dataset import LoggedDataset
from routing_env.envs import CASCADE_ID, ROUTING_ID
from routing_env.errors import ConfigurationError

__all__ = [
    "RLlibEnvConfig",
    "RLlibSingleEnv",
    "RLlibVectorEnv",
    "load_logs",
    "make_rllib_env",
    "register_rllib_envs",
    "spread_seeds",
]

#: Env arguments the config sets itself (or that cannot travel to a runner as JSON).
_RESERVED = frozenset(
    {
        "dataset",
        "cost_weight",
        "cost_weight_range",
        "cost_weight_sampling",
        "observe_cost_weight",
        "outcome_model",
        "autoreset_mode",
        "render_mode",
        "num_envs",
    }
)
#: Keys RLlib itself adds to an env config (the vector size; EnvContext's worker fields are attributes).
_RLLIB_KEYS = frozenset({"num_envs"})


@dataclass(frozen=True)
class RLlibEnvConfig:
    """Everything an env runner needs to rebuild the training env, JSON-able.

    Attributes:
        dataset_path: the canonical logs (``.parquet``, ``.csv`` or ``.jsonl``), readable from every node.
        cascade: build ``routing_env/Cascade-v0`` instead of ``routing_env/Routing-v0``.
        cost_weight: λ ≥ 0 (ignored when ``cost_weight_range`` is given).
        cost_weight_range: ``(low, high)``: λ drawn per episode and observed (λ-conditioned training).
        cost_weight_sampling: how λ is drawn from the range (``"uniform"`` or ``"log_uniform"``).
        holdout: share of the queries held out for validation (``LoggedDataset.split(holdout, split_seed)``);
            the env replays the rest. ``None``: the whole file.
        split_seed: seed of that split.
        feature_mean, feature_std: ``(d,)`` standardisation applied to the features (empty: none).
        env_kwargs: further keyword arguments of the env (``models``, ``mode``, ``latency_weight``…), JSON values.
    """

    dataset_path: str
    cascade: bool = False
    cost_weight: float = 0.0
    cost_weight_range: tuple[float, float] | None = None
    cost_weight_sampling: str = "uniform"
    holdout: float | None = None
    split_seed: int = 0
    feature_mean: tuple[float, ...] = ()
    feature_std: tuple[float, ...] = ()
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.dataset_path, (str, Path)) or not str(self.dataset_path):
            raise ConfigurationError(f"dataset_path must be a path to the logs, got {self.dataset_path!r}")
        object.__setattr__(self, "dataset_path", str(self.dataset_path))
        if self.holdout is not None and not 0.0 < float(self.holdout) < 1.0:
            raise ConfigurationError(f"holdout must be a share in (0, 1) or None, got {self.holdout!r}")
        if len(self.feature_mean) != len(self.feature_std):
            raise ConfigurationError(
                f"feature_mean and feature_std must have one length, got {len(self.feature_mean)} and "
                f"{len(self.feature_std)}"
            )
        if any(not s > 0 for s in self.feature_std):
            raise ConfigurationError("feature_std must be > 0 in every entry")
        if self.cost_weight_range is not None:
            object.__setattr__(self, "cost_weight_range", tuple(float(v) for v in self.cost_weight_range))
        object.__setattr__(self, "feature_mean", tuple(float(v) for v in self.feature_mean))
        object.__setattr__(self, "feature_std", tuple(float(v) for v in self.feature_std))
        reserved = sorted(_RESERVED & set(self.env_kwargs))
        if reserved:
            raise ConfigurationError(
                f"env_kwargs must not set {reserved}: the dataset comes from dataset_path and λ from "
                "cost_weight/cost_weight_range/cost_weight_sampling"
            )
        try:
            json.dumps(dict(self.env_kwargs))
        except TypeError as exc:
            raise ConfigurationError(
                f"env_kwargs must hold JSON values only (they travel to every env runner), got {exc}"
            ) from None
        object.__setattr__(self, "env_kwargs", dict(self.env_kwargs))

    @property
    def env_id(self) -> str:
        return CASCADE_ID if self.cascade else ROUTING_ID

    @property
    def masked(self) -> bool:
        """Whether some actions can be illegal: free-choice cascades, and routing under a budget."""
        if self.cascade:
            return self.env_kwargs.get("mode", "chain") == "free"
        return self.env_kwargs.get("budget") is not None

    def to_env_config(self) -> dict[str, Any]:
        """The dict RLlib's ``config.environment(env_config=...)`` takes."""
        out = asdict(self)
        out["cost_weight_range"] = None if self.cost_weight_range is None else list(self.cost_weight_range)
        out["feature_mean"], out["feature_std"] = list(self.feature_mean), list(self.feature_std)
        return out

    @classmethod
    def from_env_config(cls, env_config: Mapping[str, Any]) -> RLlibEnvConfig:
        """Read an env config (RLlib's own keys such as ``num_envs`` are ignored); unknown keys are refused."""
        known = {f for f in cls.__dataclass_fields__}
        given = {k: v for k, v in dict(env_config).items() if k not in _RLLIB_KEYS}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ConfigurationError(f"unknown env_config keys {unknown}; expected some of {sorted(known)}")
        if "dataset_path" not in given:
            raise ConfigurationError("env_config must name the logs: dataset_path='…/logs.parquet'")
        return cls(**given)

    def gym_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``gym.make``/``gym.make_vec`` besides the dataset."""
        return env_kwargs_with_cost_weight(
            self.env_kwargs, self.cost_weight, self.cost_weight_range, self.cost_weight_sampling
        )


def env_kwargs_with_cost_weight(
    env_kwargs: Mapping[str, Any],
    cost_weight: float,
    cost_weight_range: tuple[float, float] | None,
    cost_weight_sampling: str | None,
) -> dict[str, Any]:
    """A copy of ``env_kwargs`` plus the λ settings: a fixed ``cost_weight``, or, with ``cost_weight_range``,
    λ drawn per episode by ``cost_weight_sampling`` and shown to the policy (``observe_cost_weight``)."""
    kwargs = dict(env_kwargs)
    if cost_weight_range is not None:
        kwargs.update(
            cost_weight_range=cost_weight_range,
            cost_weight_sampling=cost_weight_sampling,
            observe_cost_weight=True,
        )
    else:
        kwargs["cost_weight"] = cost_weight
    return kwargs


# ---------------------------------------------------------------------- the logs, once per process
_CACHE: dict[tuple[Any, ...], LoggedDataset] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 2


def load_logs(path: str | Path) -> LoggedDataset:
    """The logs at ``path``, read once per process while the file is unchanged (same size and mtime)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigurationError(f"dataset_path {str(path)!r} is not a file on this node")
    stat = p.stat()
    key = (str(p.resolve()), stat.st_size, stat.st_mtime_ns)
    with _CACHE_LOCK:
        if key not in _CACHE:
            while len(_CACHE) >= _CACHE_SIZE:
                _CACHE.pop(next(iter(_CACHE)))
            _CACHE[key] = LoggedDataset.read(p)
        return _CACHE[key]


def split_logs(config: RLlibEnvConfig) -> tuple[LoggedDataset, LoggedDataset | None]:
    """``(train, validation)`` of the config's logs: the split the driver and every runner compute alike."""
    data = load_logs(config.dataset_path)
    if config.holdout is None:
        return data, None
    return data.split(test_size=float(config.holdout), seed=int(config.split_seed))


def training_data(config: RLlibEnvConfig) -> LoggedDataset:
    """The queries the env replays: the training side of the split, features standardised."""
    train, _ = split_logs(config)
    if not config.feature_mean:
        return train
    if len(config.feature_mean) != train.n_features:
        raise ConfigurationError(
            f"feature_mean has {len(config.feature_mean)} entries, the logs have {train.n_features} features"
        )
    mean = np.asarray(config.feature_mean, dtype=np.float32)
    std = np.asarray(config.feature_std, dtype=np.float32)
    return train.with_features((train.features - mean) / std, names=train.feature_names)


# ---------------------------------------------------------------------- adapters
def spread_seeds(seed: int, n: int, salt: int = 0) -> list[int]:
    """``n`` independent 32-bit seeds from ``(seed, salt)``: copy ``i`` gets ``SeedSequence([seed, salt]).spawn``'s
    ``i``-th child, so no two (runner, copy) pairs share a query stream."""
    children = np.random.SeedSequence([int(seed), int(salt)]).spawn(int(n))
    return [int(c.generate_state(1)[0]) for c in children]


def _masked_space(obs_space: gym.Space, n_actions: int) -> spaces.Dict:
    return spaces.Dict(
        {"observations": obs_space, "action_mask": spaces.Box(0.0, 1.0, (n_actions,), np.float32)}
    )


class RLlibVectorEnv(gym.vector.VectorWrapper):
    """A native batched routing vector env as RLlib's env runner consumes it.

    Observations are the env's ``(N, width) float32``, or with ``masked`` a dict of those (``"observations"``)
    and ``action_masks()`` as ``(N, A) float32`` (``"action_mask"``). ``reset(seed=s)`` seeds copy ``i`` with
    :func:`spread_seeds` ``(s, N)[i]``. Rewards, terminations and infos pass through.
    """

    def __init__(self, env: gym.vector.VectorEnv, masked: bool = False) -> None:
        super().__init__(env)
        self._masked = bool(masked)
        if self._masked:
            if not callable(getattr(env, "action_masks", None)):
                raise ConfigurationError(
                    f"masked=True needs action_masks(), which {type(env).__name__} lacks"
                )
            n_actions = int(env.single_action_space.n)  # type: ignore[attr-defined]
            self.single_observation_space = _masked_space(env.single_observation_space, n_actions)
            self.observation_space = batch_space(self.single_observation_space, env.num_envs)

    def _observe(self, obs: np.ndarray) -> Any:
        if not self._masked:
            return obs
        masks = self.env.action_masks()  # type: ignore[attr-defined]
        return {"observations": obs, "action_mask": np.asarray(masks, dtype=np.float32)}

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            seed = spread_seeds(int(seed), self.num_envs)
        obs, info = self.env.reset(seed=seed, options=options)
        return self._observe(obs), info

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(np.asarray(actions, dtype=np.int64))
        return self._observe(obs), reward, terminated, truncated, info


class RLlibSingleEnv(gym.Wrapper):
    """One routing env as RLlib vectorises it itself (``gym_env_vectorize_mode`` ``"sync"``/``"async"``).

    With ``masked`` the observation is ``{"observations": obs, "action_mask": action_masks() as float32}``.
    ``reset(seed=s)`` reseeds with :func:`spread_seeds` ``(s, 1, worker_index)[0]``: Gymnasium gives copy ``i``
    of runner ``w`` the seed ``base + w + i``, and the salt ``w`` makes every (runner, copy) pair distinct.
    """

    def __init__(self, env: gym.Env, masked: bool = False, worker_index: int = 0) -> None:
        super().__init__(env)
        self._masked = bool(masked)
        self._salt = int(worker_index)
        if self._masked:
            if not callable(getattr(env.unwrapped, "action_masks", None)):
                raise ConfigurationError(
                    f"masked=True needs action_masks(), which {type(env.unwrapped).__name__} lacks"
                )
            n_actions = int(env.action_space.n)  # type: ignore[attr-defined]
            self.observation_space = _masked_space(env.observation_space, n_actions)

    def _observe(self, obs: np.ndarray) -> Any:
        if not self._masked:
            return obs
        masks = self.env.unwrapped.action_masks()  # type: ignore[attr-defined]
        return {"observations": obs, "action_mask": np.asarray(masks, dtype=np.float32)}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if seed is not None:
            seed = spread_seeds(int(seed), 1, self._salt)[0]
        obs, info = self.env.reset(seed=seed, options=options)
        return self._observe(obs), info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(int(action))
        return self._observe(obs), reward, terminated, truncated, info


def make_rllib_env(
    env_config: Mapping[str, Any], *, cascade: bool | None = None
) -> gym.Env | gym.vector.VectorEnv:
    """The env creator registered with RLlib: an :class:`RLlibEnvConfig` dict → the env.

    With ``env_config["num_envs"] = N`` (RLlib's vector-entry-point mode) it returns the native batched vector
    env of N copies in an :class:`RLlibVectorEnv`; otherwise one env in an :class:`RLlibSingleEnv`.
    ``cascade`` (set by the registered id) fills in ``env_config["cascade"]`` and refuses a config that says
    otherwise.
    """
    import routing_env.envs  # noqa: F401  (registers the env ids)

    config = RLlibEnvConfig.from_env_config(env_config)
    if cascade is not None and "cascade" not in env_config:
        config = replace(config, cascade=bool(cascade))
    elif cascade is not None and config.cascade != cascade:
        raise ConfigurationError(
            f"env_config has cascade={config.cascade}, but the env id is {CASCADE_ID if cascade else ROUTING_ID!r}; "
            f"use {config.env_id!r}"
        )
    data = training_data(config)
    kwargs = config.gym_kwargs()
    num_envs = env_config.get("num_envs")
    if num_envs is None:
        env = gym.make(config.env_id, dataset=data, **kwargs)
        worker = int(getattr(env_config, "worker_index", 0) or 0)
        return RLlibSingleEnv(env, masked=config.masked, worker_index=worker)
    venv = gym.make_vec(
        config.env_id, num_envs=int(num_envs), vectorization_mode="vector_entry_point", dataset=data, **kwargs
    )
    return RLlibVectorEnv(venv, masked=config.masked)


def register_rllib_envs() -> tuple[str, str]:
    """Register :func:`make_rllib_env` with RLlib (``ray.tune.registry.register_env``) under
    ``routing_env/Routing-v0`` and ``routing_env/Cascade-v0``; returns the two ids.

    Then ``PPOConfig().environment("routing_env/Routing-v0", env_config=RLlibEnvConfig(...).to_env_config())``
    trains on them; with ``env_runners(gym_env_vectorize_mode="vector_entry_point")`` each runner steps the native
    batched env.
    """
    try:
        from ray.tune.registry import register_env
    except ImportError as exc:
        raise ImportError(
            f"RLlib training needs the 'ray' extra: pip install 'routing-env[ray]' ({exc})"
        ) from None
    register_env(ROUTING_ID, _routing_creator)
    register_env(CASCADE_ID, _cascade_creator)
    return ROUTING_ID, CASCADE_ID


def _routing_creator(env_config: Mapping[str, Any]) -> gym.Env | gym.vector.VectorEnv:
    return make_rllib_env(env_config, cascade=False)


def _cascade_creator(env_config: Mapping[str, Any]) -> gym.Env | gym.vector.VectorEnv:
    return make_rllib_env(env_config, cascade=True)
