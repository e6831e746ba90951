"""PPO routers trained with Stable-Baselines3 on the native batched routing environments.

- :func:`train_ppo` trains SB3's PPO (or sb3-contrib's MaskablePPO when the environment exposes action masks,
  e.g. free-choice cascades) on ``routing_env/Routing-v0`` or ``routing_env/Cascade-v0``, driving the native
  numpy-batched Gymnasium ``VectorEnv`` through :class:`~agents.training.sb3_env.SB3VecEnv`, with an evaluation
  callback on a validation split that keeps the best model. Its settings are one typed
  :class:`PPOTrainConfig` (the PPO hyperparameters are its :class:`PPOConfig`); keyword arguments override
  single fields.
- λ-conditioned training: with ``cost_weight_range=(low, high)`` the environment draws the cost weight λ per
  episode (log-uniformly by default, see ``cost_weight_sampling``) and shows it to the policy (on a log scale,
  :class:`~agents.training.sb3_env.CostWeightInput`), so one network serves the whole cost–quality frontier; set
  :attr:`SB3Policy.cost_weight` at inference time to move along it. The network also reads the products of λ and
  the features (:class:`~agents.training.sb3_networks.CostWeightInteractions`; ``cost_weight_interactions``).
- Warm start (default, :mod:`agents.training.warm_start`): before PPO, the actor is set to a ridge teacher's
  policy on the full-information training rewards (one ridge per model over every training query, its penalty
  chosen by grouped cross-validation of the routing reward, as the bandits choose theirs): exactly, through the
  default network's linear skip path (:mod:`agents.training.sb3_networks`; ``PPOConfig.linear_skip``), or by
  behaviour cloning without it; the critic is fitted to that policy's value. PPO then fine-tunes at a small
  learning rate, and the validation callback keeps whichever parameters score best, the warm start's included.
  PPO alone learns from one sampled model per step and needs far more steps than a bandit warm-started on the
  same logs; this puts them on an equal footing.
- :class:`~agents.training.sb3_policy.SB3Policy` adapts the trained network to the
  :class:`~routing_env.policy.Policy` protocol with exact action probabilities, and saves/loads without pickle.

Features are standardised with the training split's mean and standard deviation before they reach the network
(the statistics are part of the saved policy), so the same hyperparameters work for one-hot, TF-IDF-SVD or
embedding features.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy

from agents.routers._common import cost_only_columns
from agents.routers._cv import make_folds
from agents.training.ppo_config import DEFAULT_CONDITIONED_SAMPLING, PPOConfig, PPOTrainConfig
from agents.training.sb3_env import CostWeightInput, SB3VecEnv
from agents.training.sb3_networks import CostWeightInteractions, build_sb3_policy, has_skip, policy_class
from agents.training.sb3_policy import SB3Policy
from agents.training.warm_start import TeacherData, WarmStartRecord, warm_start
from routing_env.data.dataset import LoggedDataset
from routing_env.errors import ConfigurationError, PartialInformationError, ShapeError
from routing_env.metrics import PolicyEvaluation, evaluate_policy

__all__ = [
    "CASCADE_ENV_ID",
    "DEFAULT_CONDITIONED_SAMPLING",
    "ROUTING_ENV_ID",
    "EvalRecord",
    "PPOConfig",
    "PPOResult",
    "PPOTrainConfig",
    "SB3Policy",
    "SB3VecEnv",
    "evaluate_cascade_model",
    "train_ppo",
]

ROUTING_ENV_ID = "routing_env/Routing-v0"
CASCADE_ENV_ID = "routing_env/Cascade-v0"


# ---------------------------------------------------------------------- records
@dataclass(frozen=True)
class EvalRecord:
    """One validation pass of the evaluation callback (averaged over ``cost_weights`` when λ-conditioned).

    Attributes:
        timesteps: environment steps taken when the evaluation ran.
        cost_weights: the λ values the policy was evaluated at.
        mean_quality: expected quality per query in [0, 1].
        mean_cost: expected USD per query.
        mean_reward: expected reward per query.
        regret: oracle reward minus ``mean_reward``.
    """

    timesteps: int
    cost_weights: tuple[float, ...]
    mean_quality: float
    mean_cost: float
    mean_reward: float
    regret: float


@dataclass(frozen=True)
class PPOResult:
    """What :func:`train_ppo` returns.

    Attributes:
        policy: the best policy found (by validation reward when a validation split is used, else the last);
            ``None`` for cascade training (use ``model``).
        model: the SB3 algorithm object (its policy holds the same best parameters).
        history: one :class:`EvalRecord` per evaluation, in order.
        best_timesteps: timesteps at which ``policy`` was evaluated best (the total when not evaluated).
        train_seconds: wall time of ``model.learn``.
        fps: environment steps per second during training.
        feature_mean, feature_std: ``(d,)`` standardisation of the query features the network was trained on
            (the first ``d`` observation entries); apply it to observations fed to ``model`` directly.
        env_id, env_kwargs: the environment trained on (without ``dataset``), to rebuild it for evaluation.
        config: the settings of the run.
        warm_start: what the supervised warm start did (``None`` when it did not run).
    """

    policy: SB3Policy | None
    model: BaseAlgorithm
    history: tuple[EvalRecord, ...] = field(default_factory=tuple)
    best_timesteps: int = 0
    train_seconds: float = 0.0
    fps: float = 0.0
    feature_mean: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    feature_std: np.ndarray = field(default_factory=lambda: np.ones(0, np.float32))
    env_id: str = ROUTING_ENV_ID
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    config: PPOTrainConfig = field(default_factory=PPOTrainConfig)
    warm_start: WarmStartRecord | None = None


# ---------------------------------------------------------------------- evaluation callback
# ---------------------------------------------------------------------- evaluation callback
class ValidationCallback(BaseCallback):
    """At the start, and at the end of the first rollout after every ``eval_freq`` environment steps, score the
    current policy exactly on a full-information validation split (averaged over ``cost_weights``) and keep a copy
    of the best parameters.

    A later evaluation replaces the best only when it beats it by ``significance`` standard errors of the paired
    per-query reward difference (0: any higher mean replaces it): with a few hundred validation queries, the
    noise between two nearly equal policies would otherwise pick the checkpoint, which then does worse on new
    queries than the one it replaced.
    """

    def __init__(
        self,
        make_policy: Callable[[], SB3Policy],
        validation: LoggedDataset,
        cost_weights: Sequence[float],
        eval_freq: int,
        verbose: int = 0,
        significance: float = 0.0,
    ) -> None:
        super().__init__(verbose)
        self.make_policy = make_policy
        self.validation = validation
        self.cost_weights = tuple(float(c) for c in cost_weights)
        self.eval_freq = int(eval_freq)
        self.significance = float(significance)
        self.history: list[EvalRecord] = []
        self.best_reward = -np.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_timesteps = 0
        self._best_per_query: np.ndarray | None = None
        self._rewards = [validation.rewards(lam) for lam in self.cost_weights]
        self._next = self.eval_freq

    def _beats_best(self, per_query: np.ndarray) -> bool:
        if self._best_per_query is None:
            return True
        diff = per_query - self._best_per_query
        margin = self.significance * float(diff.std(ddof=1)) / np.sqrt(diff.size) if diff.size > 1 else 0.0
        return float(diff.mean()) > margin

    def evaluate(self) -> EvalRecord:
        policy = self.make_policy()
        evals = validation_evaluations(policy, self.validation, self.cost_weights)
        per_query = np.mean(
            [
                (_at(policy, lam).action_probabilities(self.validation.features) * r).sum(axis=1)
                for lam, r in zip(self.cost_weights, self._rewards)
            ],
            axis=0,
        )
        record = EvalRecord(
            timesteps=int(self.num_timesteps),
            cost_weights=self.cost_weights,
            mean_quality=float(np.mean([e.mean_quality for e in evals])),
            mean_cost=float(np.mean([e.mean_cost for e in evals])),
            mean_reward=float(np.mean([e.mean_reward for e in evals])),
            regret=float(np.mean([e.regret for e in evals])),
        )
        self.history.append(record)
        if self._beats_best(per_query):
            self.best_reward = record.mean_reward
            self._best_per_query = per_query
            self.best_state = copy.deepcopy(self.model.policy.state_dict())
            self.best_timesteps = record.timesteps
        if self.verbose:
            print(
                f"[ppo] t={record.timesteps} quality={record.mean_quality:.4f} cost=${record.mean_cost:.6f} "
                f"reward={record.mean_reward:.4f} regret={record.regret:.4f}"
            )
        return record

    def _on_step(self) -> bool:
        return True

    def _on_training_start(self) -> None:
        # The starting parameters (a warm start's) are a candidate too: PPO must improve on them to replace them.
        self.evaluate()

    def _on_rollout_end(self) -> None:
        # Parameters change only between rollouts, so that is when an evaluation can see something new.
        if self.num_timesteps >= self._next:
            self._next = self.num_timesteps + self.eval_freq
            self.evaluate()

    def _on_training_end(self) -> None:
        # The last rollout's update has not been scored yet: score the final parameters, then restore the best.
        self.evaluate()
        if self.best_state is not None:
            self.model.policy.load_state_dict(self.best_state)


def validation_evaluations(
    policy: SB3Policy, validation: LoggedDataset, cost_weights: Sequence[float]
) -> list[PolicyEvaluation]:
    """``policy`` scored exactly on ``validation`` at each λ of ``cost_weights`` (a conditioned policy is set to
    each λ; a per-λ one is scored as it is)."""
    return [evaluate_policy(validation, _at(policy, lam), lam) for lam in cost_weights]


def _at(policy: SB3Policy, cost_weight: float) -> SB3Policy:
    """A conditioned policy set to ``cost_weight``; a per-λ one as it is."""
    return policy.with_cost_weight(cost_weight) if policy.conditioned else policy


# ---------------------------------------------------------------------- training
class _Unset:
    """Marks an argument left to the config."""


_UNSET = _Unset()


def train_ppo(
    dataset_or_env_id: LoggedDataset | str,
    cost_weight: float | None = None,
    *,
    config: PPOTrainConfig | PPOConfig | None = None,
    validation: LoggedDataset | float | _Unset | None = _UNSET,
    featurizer: Any = None,
    **overrides: Any,
) -> PPOResult:
    """Train a PPO router with Stable-Baselines3 on the native batched routing environment.

    ``train_ppo(train, cost_weight=0.3, total_timesteps=20_000, seed=0)``: the settings are a
    :class:`PPOTrainConfig` (``config``, default ``PPOTrainConfig()``) with the keyword arguments overriding its
    fields by name (``cost_weight_range``, ``n_envs``, ``ppo``, ``env_kwargs``, ``eval_freq``...). Passing a
    :class:`PPOConfig` as ``config`` sets the PPO hyperparameters (``ppo=``) of the default settings.

    Args:
        dataset_or_env_id: the training logs (full-information :class:`LoggedDataset`), or a registered env id
            (``"routing_env/Routing-v0"``; its ``dataset`` comes from ``env_kwargs``, default the bundled sample).
        cost_weight: λ ≥ 0 of the reward (the ``cost_weight`` field).
        config: the settings (:class:`PPOTrainConfig`), or only the PPO hyperparameters (:class:`PPOConfig`).
        validation: a full-information validation dataset (data, not a setting), or a share in (0, 1) / ``None``
            overriding :attr:`PPOTrainConfig.validation`.
        featurizer: the featurizer that produced the dataset's features (``transform(prompts) -> (n, d)``,
            ``save(dir)``); the policy carries it (and saves it), so that a server routes ``{"prompt": …}``.
        overrides: fields of :class:`PPOTrainConfig`.

    Raises:
        PartialInformationError: the training logs lack some query × model outcomes (and no ``outcome_model`` is
            given in ``env_kwargs``), or the validation split does.

    Returns:
        :class:`PPOResult` with the best :class:`SB3Policy` and the training history (``policy=None`` for cascade
        training and for routing under a budget, whose network also observes the budget left; use the SB3 model
        in ``model``, or ``agents.routers.cascades``).
    """
    valid_data = validation if isinstance(validation, LoggedDataset) else None
    if not isinstance(validation, (LoggedDataset, _Unset)):
        overrides["validation"] = validation
    cfg = _resolve_config(config, cost_weight, overrides)
    data, env_id, env_kwargs = _training_data(dataset_or_env_id, cfg)
    if env_kwargs.get("outcome_model") is None:
        _check_complete(data, "the training logs")
    _check_featurizer(featurizer, data)
    train, valid = _validation_split(data, valid_data, cfg)
    mean, std = _feature_stats(train)
    lam_input = None if cfg.cost_weight_range is None else CostWeightInput.for_range(*cfg.cost_weight_range)
    env = _make_env(train, mean, std, env_id, env_kwargs, cfg, lam_input)
    n_actions = int(env.action_space.n)  # type: ignore[attr-defined]
    # An SB3Policy routes one query from its features (and λ): a budget's remaining fraction is not among them.
    routing = (env_id == ROUTING_ENV_ID or (not cfg.cascade and n_actions == train.n_models)) and (
        env_kwargs.get("budget") is None
    )
    models = tuple(env_kwargs.get("models") or train.models)
    if valid is not None and env_kwargs.get("models"):
        valid = valid.subset_models(models)
    warm: WarmStartRecord | None = None
    warming = cfg.warm_start is not None and _can_warm_start(routing, env_kwargs)
    with _torch_threads(cfg.torch_threads):
        try:
            lr = cfg.warm_start.fine_tune_learning_rate if warming and cfg.warm_start else None
            model, algorithm = _make_model(
                env, cfg, learning_rate=lr, interactions=_interactions(cfg, lam_input)
            )

            def make_policy() -> SB3Policy:
                return _policy(model.policy, models, mean, std, algorithm, cfg, featurizer, lam_input)  # type: ignore[arg-type]

            if warming:
                warm = _warm_start(
                    model, env, make_policy, train, valid, mean, std, cfg, lam_input, data, env_kwargs
                )
            callback = None
            if valid is not None and routing:
                callback = _make_callback(make_policy, valid, cfg)
            start = time.perf_counter()
            model.learn(total_timesteps=cfg.total_timesteps, callback=callback, progress_bar=cfg.progress_bar)
            seconds = time.perf_counter() - start
        finally:
            env.close()
    model.policy.set_training_mode(False)
    env_kwargs_out = {k: v for k, v in env_kwargs.items() if k != "autoreset_mode"}
    result = PPOResult(
        policy=None,
        model=model,
        history=tuple(callback.history) if callback else (),
        best_timesteps=callback.best_timesteps if callback else int(model.num_timesteps),
        train_seconds=seconds,
        fps=model.num_timesteps / seconds if seconds > 0 else 0.0,
        feature_mean=mean,
        feature_std=std,
        env_id=env_id,
        env_kwargs=env_kwargs_out,
        config=cfg,
        warm_start=warm,
    )
    if not routing:
        return result
    return dataclasses.replace(result, policy=_detached(make_policy(), algorithm, cfg))


def _detached(policy: SB3Policy, algorithm: str, cfg: PPOTrainConfig) -> SB3Policy:
    """``policy`` over a copy of its network, so that further training of the model does not change it."""
    source = policy.network
    network = build_sb3_policy(
        algorithm,
        int(np.prod(source.observation_space.shape or (0,))),
        int(source.action_space.n),  # type: ignore[attr-defined]
        cfg.ppo.net_arch,
        cfg.ppo.activation,
        policy.interactions,
        skip=has_skip(source),
    )
    network.load_state_dict(source.state_dict())
    network.set_training_mode(False)
    policy.network = network
    return policy


def _resolve_config(
    config: PPOTrainConfig | PPOConfig | None, cost_weight: float | None, overrides: dict[str, Any]
) -> PPOTrainConfig:
    """The run's settings: ``config`` with ``cost_weight`` and the keyword ``overrides`` applied (validated)."""
    if isinstance(config, PPOConfig):
        if "ppo" in overrides:
            raise ConfigurationError("give the PPO hyperparameters either as config= or as ppo=, not both")
        base, overrides = PPOTrainConfig(), {**overrides, "ppo": config}
    elif config is None or isinstance(config, PPOTrainConfig):
        base = config if config is not None else PPOTrainConfig()
    else:
        raise ConfigurationError(
            f"config must be a PPOTrainConfig or a PPOConfig, got {type(config).__name__}"
        )
    if cost_weight is not None:
        overrides = {**overrides, "cost_weight": cost_weight}
    names = {f.name for f in dataclasses.fields(PPOTrainConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigurationError(
            f"train_ppo got unknown settings {unknown}; the settings are the fields of PPOTrainConfig: "
            f"{sorted(names)}"
        )
    if "eval_cost_weights" in overrides and overrides["eval_cost_weights"] is not None:
        overrides["eval_cost_weights"] = tuple(overrides["eval_cost_weights"])
    return dataclasses.replace(base, **overrides)


def _training_data(
    dataset_or_env_id: LoggedDataset | str, cfg: PPOTrainConfig
) -> tuple[LoggedDataset, str, dict[str, Any]]:
    """``(training data, env id, env keyword arguments without the dataset)``."""
    kwargs = cfg.env_arguments()
    if isinstance(dataset_or_env_id, LoggedDataset):
        if "dataset" in kwargs:
            raise ConfigurationError("give the dataset either positionally or in env_kwargs, not both")
        return dataset_or_env_id, CASCADE_ENV_ID if cfg.cascade else ROUTING_ENV_ID, kwargs
    if not isinstance(dataset_or_env_id, str):
        raise ConfigurationError(
            f"dataset_or_env_id must be a LoggedDataset or an env id string, got {type(dataset_or_env_id).__name__}"
        )
    given = kwargs.pop("dataset", None)
    if given is None:
        from routing_env.data import load_sample

        given = load_sample()
    if not isinstance(given, LoggedDataset):
        raise ConfigurationError(f"env_kwargs['dataset'] must be a LoggedDataset, got {type(given).__name__}")
    return given, dataset_or_env_id, kwargs


def _validation_split(
    data: LoggedDataset, validation: LoggedDataset | None, cfg: PPOTrainConfig
) -> tuple[LoggedDataset, LoggedDataset | None]:
    """``(train, validation or None)``: the given validation data, or a share of ``data`` held out."""
    if validation is not None:
        train, valid = data, validation
    elif cfg.validation is None:
        train, valid = data, None
    else:
        train, valid = data.split(test_size=cfg.validation, seed=cfg.seed)
    if valid is not None:
        _check_complete(valid, "the validation split", remedy_validation=True)
    return train, valid


def _check_complete(data: LoggedDataset, what: str, remedy_validation: bool = False) -> None:
    """Refuse logs that lack some query × model outcome, with the counts and what to do instead."""
    complete = np.isfinite(data.quality).all(axis=1) & np.isfinite(data.cost).all(axis=1)
    if complete.all():
        return
    missing = int((~np.isfinite(data.quality) | ~np.isfinite(data.cost)).sum())
    remedy = (
        "pass validation=None, or a validation dataset with every outcome"
        if remedy_validation
        else "give env_kwargs={'outcome_model': routing_env.envs.OutcomeModel.fit(dataset)} to impute them"
    )
    raise PartialInformationError(
        f"train_ppo replays every model's outcome on every query, but {what} lack them on "
        f"{int((~complete).sum())} of {data.n_queries} queries ({missing} of {data.quality.size} query × model "
        "cells); keep the complete queries with "
        "dataset.select(np.flatnonzero(np.isfinite(dataset.quality).all(axis=1) & "
        f"np.isfinite(dataset.cost).all(axis=1))), or {remedy}"
    )


def _check_featurizer(featurizer: Any, data: LoggedDataset) -> None:
    """A featurizer must transform prompts into the dataset's feature width (checked on its first prompt)."""
    if featurizer is None:
        return
    if not callable(getattr(featurizer, "transform", None)):
        raise ConfigurationError(
            f"featurizer must have a transform(prompts) method, got {type(featurizer).__name__}"
        )
    if data.prompts is not None and data.n_queries:
        width = np.asarray(featurizer.transform([str(data.prompts[0])])).shape[-1]
        if width != data.n_features:
            raise ShapeError(
                f"the featurizer makes {width} features from a prompt, but the dataset has {data.n_features}: "
                "give the featurizer that produced dataset.features"
            )


def _feature_stats(ds: LoggedDataset) -> tuple[np.ndarray, np.ndarray]:
    x = ds.features.astype(np.float64)
    mean = x.mean(axis=0) if x.shape[0] else np.zeros(x.shape[1])
    std = x.std(axis=0) if x.shape[0] else np.ones(x.shape[1])
    # Constant features (e.g. a task absent from the split) keep scale 1 instead of blowing up.
    std = np.where(std > 1e-6, std, 1.0)
    # Columns that describe the call's size (length:…) are read for cost only, as the routers do: an infinite
    # scale flattens them to 0 for the network (with them, PPO generalised worse to LLMRouter's test file).
    cols = list(cost_only_columns(ds.feature_names))
    mean[cols], std[cols] = 0.0, np.inf
    return mean.astype(np.float32), std.astype(np.float32)


def _make_env(
    train: LoggedDataset,
    mean: np.ndarray,
    std: np.ndarray,
    env_id: str,
    kwargs: dict[str, Any],
    cfg: PPOTrainConfig,
    lam_input: CostWeightInput | None,
) -> SB3VecEnv:
    """The training env: ``n_envs`` copies of ``env_id`` over the standardised training features, seeded; a
    conditioned network sees λ through ``lam_input``."""
    import routing_env.envs  # noqa: F401  (registers the env ids)

    # Standardise the features once, here, rather than on every step inside the training loop.
    scaled = train.with_features((train.features - mean) / std, names=train.feature_names)
    if gym.spec(env_id).vector_entry_point is not None:
        kwargs.setdefault("autoreset_mode", gym.vector.AutoresetMode.SAME_STEP)
        venv = gym.make_vec(
            env_id, num_envs=cfg.n_envs, vectorization_mode="vector_entry_point", dataset=scaled, **kwargs
        )
    else:
        # No native batched env for this id: Gymnasium's synchronous vector env over single copies.
        venv = gym.make_vec(
            env_id,
            num_envs=cfg.n_envs,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
            dataset=scaled,
            **kwargs,
        )
    # Masks matter only where some actions can be illegal: cascades, and routing under a budget.
    maskable = cfg.cascade or kwargs.get("budget") is not None
    env = SB3VecEnv(
        venv,
        use_masks=None if maskable else False,
        cost_weight_input=lam_input,
        cost_weight_index=None if lam_input is None else train.n_features,
    )
    env.seed(cfg.seed)
    return env


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)`` (unchanged for ``None``), then restore it."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads is not None:
            torch.set_num_threads(previous)


def _interactions(cfg: PPOTrainConfig, lam_input: CostWeightInput | None) -> dict[str, float] | None:
    """The :class:`CostWeightInteractions` keyword arguments of a conditioned network (``None`` otherwise)."""
    if lam_input is None or cfg.cost_weight_range is None or not cfg.cost_weight_interactions:
        return None
    return CostWeightInteractions.kwargs_for(lam_input, cfg.cost_weight_range[1])


def _make_model(
    env: SB3VecEnv,
    cfg: PPOTrainConfig,
    learning_rate: float | None = None,
    interactions: dict[str, float] | None = None,
) -> tuple[BaseAlgorithm, str]:
    """``(SB3 algorithm, its name)``: MaskablePPO when the env serves action masks, PPO otherwise
    (``learning_rate`` in place of the PPOConfig's, when given; ``interactions``: the conditioned network's
    :class:`CostWeightInteractions` input layer)."""
    algo_kwargs = cfg.ppo.sb3_kwargs()
    algo_kwargs["batch_size"] = min(cfg.ppo.batch_size, cfg.ppo.n_steps * cfg.n_envs)
    if learning_rate is not None:
        algo_kwargs["learning_rate"] = learning_rate
    if interactions is not None:
        algo_kwargs["policy_kwargs"]["features_extractor_class"] = CostWeightInteractions
        algo_kwargs["policy_kwargs"]["features_extractor_kwargs"] = interactions
    if env.has_attr("action_masks"):
        from sb3_contrib import MaskablePPO

        network = policy_class("MaskablePPO", cfg.ppo.linear_skip)
        masked = MaskablePPO(network, env, seed=cfg.seed, verbose=0, device="cpu", **algo_kwargs)
        return masked, "MaskablePPO"
    network = policy_class("PPO", cfg.ppo.linear_skip)
    return PPO(network, env, seed=cfg.seed, verbose=0, device="cpu", **algo_kwargs), "PPO"


def _policy(
    network: ActorCriticPolicy,
    models: tuple[str, ...],
    mean: np.ndarray,
    std: np.ndarray,
    algorithm: str,
    cfg: PPOTrainConfig,
    featurizer: Any,
    lam_input: CostWeightInput | None,
) -> SB3Policy:
    """An :class:`SB3Policy` over ``network`` with the run's settings."""
    return SB3Policy(
        network,
        models,
        mean,
        std,
        cost_weight=cfg.cost_weight if cfg.cost_weight_range is None else cfg.cost_weight_range[0],
        conditioned=cfg.conditioned,
        cost_weight_range=cfg.cost_weight_range,
        algorithm=algorithm,
        net_arch=cfg.ppo.net_arch,
        activation=cfg.ppo.activation,
        seed=cfg.seed,
        featurizer=featurizer,
        cost_weight_input=lam_input,
    )


def _make_callback(
    make_policy: Callable[[], SB3Policy], valid: LoggedDataset, cfg: PPOTrainConfig
) -> ValidationCallback:
    """The callback that scores the policy on ``valid`` every ``eval_freq`` steps and keeps the best."""
    freq = cfg.eval_freq if cfg.eval_freq is not None else max(cfg.total_timesteps // 10, 1)
    return ValidationCallback(
        make_policy,
        valid,
        cfg.validation_cost_weights(),
        freq,
        cfg.verbose,
        significance=cfg.eval_significance,
    )


def _can_warm_start(routing: bool, env_kwargs: Mapping[str, Any]) -> bool:
    """The supervised warm start applies to routing (no budget) without an outcome model and with one query per
    episode: every reward is known and no step depends on another."""
    return (
        routing
        and env_kwargs.get("outcome_model") is None
        and int(env_kwargs.get("queries_per_episode", 1)) == 1
    )


def _warm_start(
    model: BaseAlgorithm,
    env: SB3VecEnv,
    make_policy: Callable[[], SB3Policy],
    train: LoggedDataset,
    valid: LoggedDataset | None,
    mean: np.ndarray,
    std: np.ndarray,
    cfg: PPOTrainConfig,
    lam_input: CostWeightInput | None,
    teacher: LoggedDataset,
    env_kwargs: Mapping[str, Any],
) -> WarmStartRecord:
    """Fit the model's networks to the training rewards before PPO (scored on the validation split, or on the
    training queries without one). The ridge teacher is fitted on ``teacher``: all the training logs, the
    queries held out for validation included (its penalty is chosen by grouped K-fold on them, so it needs no
    held-out data; the validation split still chooses the temperature and PPO's checkpoints)."""
    import routing_env.envs  # noqa: F401  (registers the env ids)
    from routing_env.envs import draw_cost_weights

    assert cfg.warm_start is not None
    unwrapped = env.venv.unwrapped
    table = unwrapped.reward_table
    features = ((train.features - mean) / std).astype(np.float32)
    # The rewards of every training query at the training env's own cost scale (not the full data's).
    kwargs = {k: v for k, v in env_kwargs.items() if k != "autoreset_mode"}
    teacher_env = gym.make(
        ROUTING_ENV_ID, dataset=teacher, **{**kwargs, "cost_scale": float(unwrapped.cost_scale)}
    )
    teacher_table = teacher_env.unwrapped.reward_table  # type: ignore[attr-defined]
    teacher_env.close()  # only its reward table is read
    teacher_features = ((teacher.features - mean) / std).astype(np.float32)

    def teacher_rewards(lams: np.ndarray | None) -> np.ndarray:
        return teacher_table(cfg.cost_weight if lams is None else lams)

    weights = cfg.validation_cost_weights()
    scored = valid if valid is not None else train

    def rewards(lams: np.ndarray | None) -> np.ndarray:
        return table(cfg.cost_weight if lams is None else lams)

    def score() -> float:
        return float(np.mean([e.mean_reward for e in validation_evaluations(make_policy(), scored, weights)]))

    draw = None
    if cfg.cost_weight_range is not None:
        lam_range, sampling = cfg.cost_weight_range, str(cfg.cost_weight_sampling)

        def draw(rng: np.random.Generator, m: int) -> np.ndarray:
            return draw_cost_weights(rng, lam_range, sampling, m)

    return warm_start(
        model.policy,  # type: ignore[arg-type]
        features,
        rewards,
        score,
        cfg.warm_start,
        draw_lambdas=draw,
        lambda_input=lam_input,
        seed=cfg.seed,
        teacher_data=TeacherData(
            teacher_features, teacher_rewards, _folds(teacher, cfg.seed), tuple(weights)
        ),
    )


def _folds(data: LoggedDataset, seed: int) -> np.ndarray | None:
    """Grouped K-fold ids of ``data`` for the teacher's penalty (``None`` with fewer than two distinct prompts:
    the teacher falls back to leave-one-out penalties)."""
    try:
        return make_folds(data, seed=seed)
    except ConfigurationError:
        return None


def evaluate_cascade_model(
    result: PPOResult, dataset: LoggedDataset, cost_weight: float | None = None
) -> PolicyEvaluation:
    """Score a PPO model trained on ``routing_env/Cascade-v0`` on every query of a full-information ``dataset``.

    Each query is replayed once through the cascade environment (pinned with ``options={"query_index": i}``)
    with the policy's most probable action at every step (masked in free mode), so the result is exact for that
    deterministic policy. ``cost_weight`` (default: the training λ; required for a λ-conditioned model) sets the
    reward. ``call_share`` is the share of answers returned by each model of the environment's ``models``.
    """
    import routing_env.envs  # noqa: F401  (registers the env ids)

    if result.env_id != CASCADE_ENV_ID:
        raise ConfigurationError(
            f"evaluate_cascade_model needs a Cascade-v0 model, got one for {result.env_id!r}"
        )
    kwargs = dict(result.env_kwargs)
    conditioned = "cost_weight_range" in kwargs
    kwargs.pop("cost_weight_range", None)
    kwargs.pop("cost_weight_sampling", None)
    if cost_weight is None:
        if conditioned:
            raise ConfigurationError("a λ-conditioned cascade model needs cost_weight= to be evaluated")
        lam = float(kwargs.get("cost_weight", 0.0))
    else:
        lam = float(cost_weight)
        if not np.isfinite(lam) or lam < 0:
            raise ConfigurationError(f"cost_weight must be a finite number ≥ 0, got {cost_weight!r}")
    kwargs["cost_weight"] = lam
    if dataset.n_features != result.feature_mean.shape[0]:
        raise ShapeError(
            f"the model was trained on {result.feature_mean.shape[0]} features, the dataset has {dataset.n_features}"
        )
    scaled = dataset.with_features(
        (dataset.features - result.feature_mean) / result.feature_std, names=dataset.feature_names
    )
    env = gym.make(CASCADE_ENV_ID, dataset=scaled, **kwargs).unwrapped
    policy = result.model.policy
    maskable = hasattr(policy, "action_dist") and "Maskable" in type(policy).__name__
    models = tuple(env.models)  # type: ignore[attr-defined]
    n = dataset.n_queries
    quality = np.empty(n)
    cost = np.empty(n)
    reward = np.empty(n)
    answer = np.zeros(n, dtype=np.int64)
    for i in range(n):
        obs, _ = env.reset(options={"query_index": i, "cost_weight": lam})
        total, done = 0.0, False
        info: dict[str, Any] = {}
        while not done:
            with torch.no_grad():
                x = torch.as_tensor(obs[None, :])
                if maskable:
                    masks = env.action_masks()[None, :]  # type: ignore[attr-defined]
                    action = int(policy.predict(obs[None, :], deterministic=True, action_masks=masks)[0][0])  # type: ignore[call-arg]
                else:
                    dist = cast(ActorCriticPolicy, policy).get_distribution(x)
                    action = int(dist.distribution.probs.argmax())  # type: ignore[union-attr]
            obs, r, terminated, truncated, info = env.step(action)
            total += float(r)
            done = terminated or truncated
        quality[i] = float(info.get("quality", 0.0) or 0.0)
        cost[i] = float(info["total_cost"])
        reward[i] = total
        model = info.get("answer_model")
        answer[i] = models.index(model) if model in models else 0
    rewards = dataset.rewards(lam, cost_scale=float(env.cost_scale))  # type: ignore[attr-defined]
    best = dataset.oracle_actions(lam, rewards=rewards)
    share = np.bincount(answer, minlength=len(models)) / max(n, 1)
    oracle_reward = float(rewards[np.arange(n), best].mean())
    scale = float(env.cost_scale)  # type: ignore[attr-defined]
    return PolicyEvaluation.from_outcomes(models, lam, quality, cost, reward, share, oracle_reward, scale)
