"""PPO routers trained with RLlib (new API stack) over many env runners, on logs named by path (``ray`` extra).

- :func:`train_rllib` trains RLlib's PPO on ``routing_env/Routing-v0`` (or ``routing_env/Cascade-v0``). Every
  env runner — a Ray actor on this machine or on any node of a cluster — reads the logs from ``dataset_path``
  once and steps the native numpy-batched vector env of ``num_envs_per_env_runner`` copies
  (:mod:`agents.training.rllib_env`); the learner runs in the calling process. A validation pass every
  ``eval_freq`` env steps scores the current policy exactly on a held-out split and the best parameters are
  kept, as :func:`agents.ppo.train_ppo` does.
- It returns an :class:`RLlibPolicy` (:mod:`agents.training.rllib_policy`): the RL module's policy head in plain
  torch, a :class:`~routing_env.policy.Policy` with exact action probabilities that saves to the policy directory
  format (``arrays.npz`` + ``policy.json``, no pickle) and loads without Ray. Cascades return an
  :class:`RLlibCascadePolicy`; free-choice cascades train with the action mask in the RL module
  (:mod:`agents.training.rllib_module`).
- ``python -m agents.training.rllib LOGS.parquet --cost-weight 0.2 --out policy/`` runs the same from a shell,
  which is what ``ray job submit`` starts on a cluster (see the README).

Defaults mirror :class:`agents.ppo.PPOConfig` (2,048 env steps per iteration, minibatches of 256, 10 epochs,
separate 128×128 tanh networks, no KL term, no value clipping), so both trainers learn from the same data the
same way; features are standardised with the training split's statistics, which the saved policy carries.

Ray is imported only when training starts, so ``import agents.training.rllib`` (and loading a saved policy)
needs torch but not Ray.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from agents.training.rllib_env import RLlibEnvConfig, make_rllib_env, split_logs
from agents.training.rllib_policy import ACTIVATIONS, RLlibCascadePolicy, RLlibPolicy
from routing_env.data.dataset import LoggedDataset
from routing_env.errors import ConfigurationError, RoutingEnvError
from routing_env.metrics import PolicyEvaluation, evaluate_policy

__all__ = [
    "RLlibCascadePolicy",
    "RLlibPPOConfig",
    "RLlibPolicy",
    "RLlibResult",
    "ValidationPass",
    "main",
    "train_rllib",
]

_ENV_RUNNER_CPUS = 1


class RLlibRunError(RoutingEnvError, RuntimeError):
    """The Ray cluster cannot run the training as asked (too few CPUs, env runners that sample nothing)."""


# ---------------------------------------------------------------------- hyperparameters and records
@dataclass(frozen=True)
class RLlibPPOConfig:
    """PPO hyperparameters under RLlib's names; the defaults are :class:`agents.ppo.PPOConfig`'s.

    Attributes:
        lr: Adam step size.
        train_batch_size: env steps per training iteration, over all env runners (SB3: ``n_steps · n_envs``).
        minibatch_size: samples per gradient step.
        num_epochs: passes over each iteration's batch.
        gamma: discount (irrelevant for one-step routing episodes; matters for cascades).
        lambda_: GAE λ (not the cost weight).
        clip_param: PPO's ratio clip.
        entropy_coeff: entropy bonus.
        vf_loss_coeff: value-loss weight.
        grad_clip: clip of the gradients' global norm.
        hidden: hidden widths of the (separate) policy and value networks.
        activation: ``"tanh"``, ``"relu"`` or ``"elu"``.
    """

    lr: float = 1e-3
    train_batch_size: int = 2048
    minibatch_size: int = 256
    num_epochs: int = 10
    gamma: float = 0.99
    lambda_: float = 0.95
    clip_param: float = 0.2
    entropy_coeff: float = 0.0
    vf_loss_coeff: float = 0.5
    grad_clip: float = 0.5
    hidden: tuple[int, ...] = (128, 128)
    activation: str = "tanh"

    def __post_init__(self) -> None:
        checks: dict[str, tuple[Callable[[Any], bool], str]] = {
            "lr": (lambda v: np.isfinite(v) and v > 0, "a positive number"),
            "clip_param": (lambda v: np.isfinite(v) and v > 0, "a positive number"),
            "grad_clip": (lambda v: np.isfinite(v) and v > 0, "a positive number"),
            "train_batch_size": (_positive_int, "a positive integer"),
            "minibatch_size": (_positive_int, "a positive integer"),
            "num_epochs": (_positive_int, "a positive integer"),
            "gamma": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
            "lambda_": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
            "entropy_coeff": (lambda v: np.isfinite(v) and v >= 0, "a number ≥ 0"),
            "vf_loss_coeff": (lambda v: np.isfinite(v) and v >= 0, "a number ≥ 0"),
        }
        for name, (ok, expected) in checks.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not ok(value):
                raise ConfigurationError(f"RLlibPPOConfig.{name} must be {expected}, got {value!r}")
        hidden = tuple(self.hidden)
        if not hidden or not all(_positive_int(h) for h in hidden):
            raise ConfigurationError(f"RLlibPPOConfig.hidden must hold positive widths, got {self.hidden!r}")
        object.__setattr__(self, "hidden", tuple(int(h) for h in hidden))
        if self.activation not in ACTIVATIONS:
            raise ConfigurationError(
                f"RLlibPPOConfig.activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}"
            )

    def training_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of RLlib's ``PPOConfig.training``."""
        return {
            "lr": self.lr,
            "train_batch_size_per_learner": self.train_batch_size,
            "minibatch_size": min(self.minibatch_size, self.train_batch_size),
            "num_epochs": self.num_epochs,
            "gamma": self.gamma,
            "lambda_": self.lambda_,
            "clip_param": self.clip_param,
            "entropy_coeff": self.entropy_coeff,
            "vf_loss_coeff": self.vf_loss_coeff,
            "grad_clip": self.grad_clip,
            "grad_clip_by": "global_norm",
            # SB3's PPO: no KL penalty, no clipping of the value loss.
            "use_kl_loss": False,
            "vf_clip_param": float("inf"),
        }


def _check_counts(**given: tuple[Any, int]) -> None:
    """Refuse any ``name=(value, low)`` whose value is not an integer ≥ low."""
    for name, (value, low) in given.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigurationError(f"{name} must be an integer ≥ {low}, got {value!r}")


def _positive_int(value: Any) -> bool:
    return bool(isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1)


@dataclass(frozen=True)
class ValidationPass:
    """One validation of the current policy.

    Attributes:
        timesteps: env steps sampled when it ran.
        evaluations: the exact evaluation at each validation λ (one unless λ-conditioned).
    """

    timesteps: int
    evaluations: tuple[PolicyEvaluation, ...]

    @property
    def mean_reward(self) -> float:
        """Expected reward per query, averaged over the validation λs."""
        return float(np.mean([e.mean_reward for e in self.evaluations]))

    @property
    def regret(self) -> float:
        """Oracle reward minus reward per query, averaged over the validation λs."""
        return float(np.mean([e.regret for e in self.evaluations]))


@dataclass(frozen=True)
class RLlibResult:
    """What :func:`train_rllib` returns.

    Attributes:
        policy: the best policy by validation reward (the last one without validation): an
            :class:`RLlibPolicy` for Routing-v0, an :class:`RLlibCascadePolicy` for Cascade-v0.
        history: one :class:`ValidationPass` per validation, in order.
        best_timesteps: env steps at which ``policy`` was taken.
        timesteps: env steps sampled in all (whole iterations of ``train_batch_size``).
        train_seconds: wall time of the training iterations (validation included, set-up excluded).
        setup_seconds: wall time to connect to Ray and start the env runners and the learner.
        fps: ``timesteps / train_seconds``.
        env_config: the env every runner built (with the feature statistics and the split).
        num_env_runners, num_envs_per_env_runner: the sampling layout.
        iterations: RLlib training iterations run.
    """

    policy: RLlibPolicy | RLlibCascadePolicy
    history: tuple[ValidationPass, ...]
    best_timesteps: int
    timesteps: int
    train_seconds: float
    setup_seconds: float
    fps: float
    env_config: RLlibEnvConfig
    num_env_runners: int
    num_envs_per_env_runner: int
    iterations: int


# ---------------------------------------------------------------------- what the run needs, checked up front
@dataclass(frozen=True)
class _Plan:
    """The checked inputs of one run: the runners' env config and what the driver scores policies with."""

    env_config: RLlibEnvConfig
    validation: LoggedDataset | None
    models: tuple[str, ...]
    feature_mean: np.ndarray
    feature_std: np.ndarray
    cost_scale: float
    latency_weight: float
    #: Cascade-v0 arguments that rebuild the trained cascade on other logs (resolved order, training cost scale).
    cascade_kwargs: Mapping[str, Any]


def _feature_statistics(data: LoggedDataset) -> tuple[np.ndarray, np.ndarray]:
    x = data.features.astype(np.float64)
    if x.shape[0] == 0:
        return np.zeros(x.shape[1], np.float32), np.ones(x.shape[1], np.float32)
    std = x.std(axis=0)
    # A constant feature keeps scale 1 rather than dividing by zero.
    std[std <= 1e-6] = 1.0
    return x.mean(axis=0).astype(np.float32), std.astype(np.float32)


def _validation_data(
    validation: float | str | Path | LoggedDataset | None, config: RLlibEnvConfig
) -> tuple[RLlibEnvConfig, LoggedDataset | None]:
    """The env config with its holdout set, and the validation logs (``None``: no validation)."""
    if validation is None:
        return config, None
    if isinstance(validation, LoggedDataset):
        return config, validation
    if isinstance(validation, (str, Path)):
        return config, LoggedDataset.read(validation)
    if isinstance(validation, bool) or not isinstance(validation, (int, float)):
        raise ConfigurationError(
            f"validation must be a share in (0, 1), a LoggedDataset, a path to logs or None, got {validation!r}"
        )
    share = float(validation)
    if not 0.0 < share < 1.0:
        raise ConfigurationError(f"validation must be a share in (0, 1) when a number, got {validation!r}")
    config = replace(config, holdout=share)
    return config, split_logs(config)[1]


def _plan(
    dataset_path: str | Path,
    *,
    cost_weight: float,
    cost_weight_range: tuple[float, float] | None,
    cost_weight_sampling: str | None,
    cascade: bool,
    seed: int,
    validation: float | str | Path | LoggedDataset | None,
    env_kwargs: Mapping[str, Any] | None,
) -> _Plan:
    if not isinstance(dataset_path, (str, Path)):
        raise ConfigurationError(
            f"dataset_path must be the path of logs in the canonical format, got {type(dataset_path).__name__}; "
            "save a LoggedDataset with dataset.save('logs.parquet') first"
        )
    if not Path(dataset_path).expanduser().is_file():
        raise ConfigurationError(f"dataset_path {str(dataset_path)!r} is not a file")
    kwargs = dict(env_kwargs or {})
    if not cascade and kwargs.get("budget") is not None:
        raise ConfigurationError(
            "env_kwargs['budget'] is not supported by train_rllib: RLlibPolicy routes on the query features "
            "alone and cannot see the remaining budget"
        )
    if cost_weight_sampling is not None and cost_weight_range is None:
        raise ConfigurationError(
            f"cost_weight_sampling={cost_weight_sampling!r} needs cost_weight_range=(low, high)"
        )
    base = RLlibEnvConfig(
        dataset_path=str(Path(dataset_path).expanduser()),
        cascade=bool(cascade),
        cost_weight=float(cost_weight),
        cost_weight_range=cost_weight_range,
        cost_weight_sampling=cost_weight_sampling
        or ("uniform" if cost_weight_range is None else "log_uniform"),
        split_seed=int(seed),
        env_kwargs=kwargs,
    )
    base, valid = _validation_data(validation, base)
    if valid is not None and not valid.is_full_information:
        raise ConfigurationError("the validation logs must be full-information to be scored exactly")
    mean, std = _feature_statistics(split_logs(base)[0])
    config = replace(base, feature_mean=tuple(mean.tolist()), feature_std=tuple(std.tolist()))
    # One env in the driver checks every argument before a cluster is asked for anything.
    env = make_rllib_env(config.to_env_config())
    inner: Any = env.unwrapped
    models = tuple(str(m) for m in inner.models)
    cost_scale = float(inner.cost_scale)
    cascade_kwargs: dict[str, Any] = {}
    if cascade:
        cascade_kwargs = {**kwargs, "cost_scale": cost_scale}
        cascade_kwargs["order" if inner.mode == "chain" else "models"] = list(models)
    env.close()
    if valid is not None and not cascade and valid.models != models:
        valid = valid.subset_models(models)
    return _Plan(
        config, valid, models, mean, std, cost_scale, float(kwargs.get("latency_weight", 0.0)), cascade_kwargs
    )


# ---------------------------------------------------------------------- validation
class _Validator:
    """Scores each policy exactly on the validation logs (at every validation λ) and keeps the best head."""

    def __init__(
        self,
        make_policy: Callable[[Mapping[str, np.ndarray]], RLlibPolicy | RLlibCascadePolicy],
        plan: _Plan,
        cost_weights: Sequence[float],
        verbose: int,
    ) -> None:
        assert plan.validation is not None
        self.make_policy = make_policy
        self.plan = plan
        self.validation: LoggedDataset = plan.validation
        self.cost_weights = tuple(float(c) for c in cost_weights)
        self.verbose = int(verbose)
        self.history: list[ValidationPass] = []
        self.best: tuple[float, int, Mapping[str, np.ndarray]] | None = None

    def _evaluate(self, policy: RLlibPolicy | RLlibCascadePolicy, lam: float) -> PolicyEvaluation:
        if isinstance(policy, RLlibCascadePolicy):
            return policy.evaluate(self.validation, lam)
        return evaluate_policy(
            self.validation,
            policy.with_cost_weight(lam),
            lam,
            latency_weight=self.plan.latency_weight,
            cost_scale=self.plan.cost_scale,
        )

    def __call__(self, params: Mapping[str, np.ndarray], timesteps: int) -> ValidationPass:
        policy = self.make_policy(params)
        record = ValidationPass(
            int(timesteps), tuple(self._evaluate(policy, lam) for lam in self.cost_weights)
        )
        self.history.append(record)
        if self.best is None or record.mean_reward > self.best[0]:
            self.best = (record.mean_reward, int(timesteps), params)
        if self.verbose:
            quality = np.mean([e.mean_quality for e in record.evaluations])
            cost = np.mean([e.mean_cost for e in record.evaluations])
            print(
                f"[rllib] t={timesteps} quality={quality:.4f} cost=${cost:.6f} "
                f"reward={record.mean_reward:.4f} regret={record.regret:.4f}",
                flush=True,
            )
        return record


# ---------------------------------------------------------------------- Ray and RLlib
def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            f"RLlib training needs the 'ray' extra: pip install 'routing-env[ray]' ({exc})"
        ) from None
    return ray


def _connect(address: str | None, num_env_runners: int) -> bool:
    """Join the Ray cluster at ``address`` (or start a local one), unless connected; True when joined here.

    Refuses a cluster with fewer CPUs than the env runners need, which would otherwise wait forever.
    """
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        ray.init(address=address, logging_level=logging.WARNING)
        started = True
    cpus = float(ray.cluster_resources().get("CPU", 0.0))
    needed = num_env_runners * _ENV_RUNNER_CPUS
    if needed > cpus:
        if started:
            ray.shutdown()
        raise RLlibRunError(
            f"num_env_runners={num_env_runners} needs {needed} CPUs, but the Ray cluster has {cpus:g}; "
            "use fewer env runners or add nodes (ray start --address=<head>:6379)"
        )
    return started


def _algorithm_config(
    plan: _Plan,
    config: RLlibPPOConfig,
    num_env_runners: int,
    num_envs_per_env_runner: int,
    seed: int,
    verbose: int,
) -> Any:
    """RLlib's ``PPOConfig`` for this run: our env by id, the native vector env per runner, our RL module."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from agents.training.rllib_module import RoutingPPOModule

    return (
        PPOConfig()
        .environment(plan.env_config.env_id, env_config=plan.env_config.to_env_config())
        .env_runners(
            num_env_runners=num_env_runners,
            num_envs_per_env_runner=num_envs_per_env_runner,
            num_cpus_per_env_runner=_ENV_RUNNER_CPUS,
            gym_env_vectorize_mode="vector_entry_point",
        )
        .learners(num_learners=0)
        .training(**config.training_kwargs())
        .rl_module(
            rl_module_spec=RLModuleSpec(
                module_class=RoutingPPOModule,
                model_config={"hidden": list(config.hidden), "activation": config.activation},
            )
        )
        .debugging(seed=seed, log_level="INFO" if verbose > 1 else "ERROR")
    )


def _policy_parameters(algo: Any) -> dict[str, np.ndarray]:
    """The learner's current policy head (``pi.*`` of the RL module) as numpy arrays, without the prefix."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    weights = algo.learner_group.get_weights([DEFAULT_MODULE_ID])[DEFAULT_MODULE_ID]
    return {k[len("pi.") :]: np.array(v, dtype=np.float32) for k, v in weights.items() if k.startswith("pi.")}


def _policy_factory(
    plan: _Plan, config: RLlibPPOConfig, cost_weight: float, seed: int
) -> Callable[[Mapping[str, np.ndarray]], RLlibPolicy | RLlibCascadePolicy]:
    env = plan.env_config
    common: dict[str, Any] = {
        "models": plan.models,
        "feature_mean": plan.feature_mean,
        "feature_std": plan.feature_std,
        "hidden": config.hidden,
        "activation": config.activation,
        "cost_weight": cost_weight,
        "conditioned": env.cost_weight_range is not None,
        "cost_weight_range": env.cost_weight_range,
        "seed": seed,
    }
    if env.cascade:
        return lambda params: RLlibCascadePolicy(params, env_kwargs=plan.cascade_kwargs, **common)
    return lambda params: RLlibPolicy(params, **common)


def _sampled(result: Mapping[str, Any]) -> int:
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

    return int(result.get(ENV_RUNNER_RESULTS, {}).get(NUM_ENV_STEPS_SAMPLED_LIFETIME, 0))


def _validator_for(
    plan: _Plan,
    make_policy: Callable[[Mapping[str, np.ndarray]], RLlibPolicy | RLlibCascadePolicy],
    eval_cost_weights: Sequence[float] | None,
    verbose: int,
) -> _Validator | None:
    if plan.validation is None:
        return None
    lam_range = plan.env_config.cost_weight_range
    if lam_range is None:
        weights: Sequence[float] = (plan.env_config.cost_weight,)
    elif eval_cost_weights is not None:
        weights = tuple(float(w) for w in eval_cost_weights)
    else:
        weights = tuple(np.linspace(lam_range[0], lam_range[1], 5).tolist())
    return _Validator(make_policy, plan, weights, verbose)


@dataclass(frozen=True)
class _Run:
    timesteps: int
    iterations: int
    seconds: float
    final: Mapping[str, np.ndarray]


def _iterate(algo: Any, total_timesteps: int, eval_freq: int, validator: _Validator | None) -> _Run:
    """Train until ``total_timesteps`` env steps are sampled, validating every ``eval_freq`` steps and at the end.

    Parameters change only between iterations, so a validation after an iteration sees every update so far.
    """
    start = time.perf_counter()
    sampled, iterations, next_eval = 0, 0, eval_freq
    while sampled < total_timesteps:
        now = _sampled(algo.train())
        iterations += 1
        if now <= sampled:
            raise RLlibRunError(
                f"RLlib sampled no env steps in iteration {iterations}; the env runners failed "
                "(see the Ray logs: ray logs cluster)"
            )
        sampled = now
        if validator is not None and sampled >= next_eval:
            next_eval = sampled + eval_freq
            validator(_policy_parameters(algo), sampled)
    final = _policy_parameters(algo)
    if validator is not None and (not validator.history or validator.history[-1].timesteps != sampled):
        validator(final, sampled)
    return _Run(sampled, iterations, time.perf_counter() - start, final)


# ---------------------------------------------------------------------- training
def train_rllib(
    dataset_path: str | Path,
    cost_weight: float = 0.0,
    *,
    cost_weight_range: tuple[float, float] | None = None,
    cost_weight_sampling: str | None = None,
    cascade: bool = False,
    num_env_runners: int = 1,
    num_envs_per_env_runner: int = 8,
    total_timesteps: int = 100_000,
    seed: int = 0,
    validation: float | str | Path | LoggedDataset | None = 0.15,
    eval_freq: int | None = None,
    eval_cost_weights: Sequence[float] | None = None,
    config: RLlibPPOConfig | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    address: str | None = None,
    torch_threads: int | None = 1,
    verbose: int = 0,
) -> RLlibResult:
    """Train a PPO router with RLlib on logs at ``dataset_path``, sampling on ``num_env_runners`` Ray actors.

    Args:
        dataset_path: full-information logs in the canonical format (``.parquet``, ``.csv`` or ``.jsonl``),
            readable at the same path from every node that runs an env runner.
        cost_weight: λ ≥ 0 of the reward ``quality − λ·cost/cost_scale`` (ignored with ``cost_weight_range``).
        cost_weight_range: ``(low, high)``: λ-conditioned training — λ is drawn per episode and observed, and the
            policy serves any λ in the range through :attr:`RLlibPolicy.cost_weight`.
        cost_weight_sampling: ``"log_uniform"`` (default with a range) or ``"uniform"``.
        cascade: train on ``routing_env/Cascade-v0`` (``env_kwargs={"mode": "free"}`` for free choice, with the
            action mask in the RL module); returns an :class:`RLlibCascadePolicy`.
        num_env_runners: Ray actors that sample (one CPU each); 0 samples in this process.
        num_envs_per_env_runner: copies each runner's native vector env steps together.
        total_timesteps: env steps to sample (rounded up to whole iterations of ``config.train_batch_size``).
        seed: seeds the runners' envs, the network initialisation, the validation split and the sampler.
        validation: a share in (0, 1) of the queries to hold out (split by prompt when present; runners train on
            the rest), full-information validation logs (a :class:`LoggedDataset` or a path), or ``None``.
        eval_freq: validate every this many env steps (default: 10 validations per run).
        eval_cost_weights: the λs a conditioned policy is validated at (default: 5 evenly spaced over the range).
        config: PPO hyperparameters (:class:`RLlibPPOConfig`).
        env_kwargs: further env arguments, JSON values (``models``, ``latency_weight``; cascades: ``mode``,
            ``order``, ``max_depth``…); ``budget`` is refused for routing.
        address: the Ray cluster to join (``"auto"``, ``"ray://head:10001"``…); default a local Ray. Ignored when
            this process is already connected (``ray.init`` was called).
        torch_threads: torch threads of the learner in this process during training (1: small networks run
            fastest on one thread and leave the cores to the env runners); ``None`` leaves it.
        verbose: 1 prints each validation; 2 also lets RLlib log at INFO.

    Returns:
        :class:`RLlibResult` with the best policy and the validation history.
    """
    cfg = config if config is not None else RLlibPPOConfig()
    if not isinstance(cfg, RLlibPPOConfig):
        raise ConfigurationError(f"config must be an RLlibPPOConfig, got {type(cfg).__name__}")
    _check_counts(
        total_timesteps=(total_timesteps, 1),
        num_env_runners=(num_env_runners, 0),
        num_envs_per_env_runner=(num_envs_per_env_runner, 1),
        eval_freq=(1 if eval_freq is None else eval_freq, 1),
        torch_threads=(1 if torch_threads is None else torch_threads, 1),
    )
    plan = _plan(
        dataset_path,
        cost_weight=cost_weight,
        cost_weight_range=cost_weight_range,
        cost_weight_sampling=cost_weight_sampling,
        cascade=cascade,
        seed=seed,
        validation=validation,
        env_kwargs=env_kwargs,
    )
    lam_range = plan.env_config.cost_weight_range
    make_policy = _policy_factory(
        plan, cfg, plan.env_config.cost_weight if lam_range is None else lam_range[0], seed
    )
    validator = _validator_for(plan, make_policy, eval_cost_weights, verbose)
    freq = int(eval_freq) if eval_freq is not None else max(int(total_timesteps) // 10, 1)

    import torch

    setup_start = time.perf_counter()
    started = _connect(address, int(num_env_runners))
    previous_threads = torch.get_num_threads()
    try:
        from agents.training.rllib_env import register_rllib_envs

        register_rllib_envs()
        with warnings.catch_warnings():
            # RLlib re-registers its private gym id for every in-process env runner it builds.
            warnings.filterwarnings("ignore", message=".*Overriding environment rllib-single-agent-env")
            algo = _algorithm_config(
                plan, cfg, int(num_env_runners), int(num_envs_per_env_runner), int(seed), verbose
            ).build_algo()
        setup_seconds = time.perf_counter() - setup_start
        if torch_threads is not None:
            torch.set_num_threads(int(torch_threads))
        try:
            run = _iterate(algo, int(total_timesteps), freq, validator)
        finally:
            algo.stop()
    finally:
        torch.set_num_threads(previous_threads)
        if started:
            _import_ray().shutdown()
    best_timesteps, params = run.timesteps, run.final
    if validator is not None and validator.best is not None:
        _, best_timesteps, params = validator.best
    return RLlibResult(
        policy=make_policy(params),
        history=tuple(validator.history) if validator is not None else (),
        best_timesteps=int(best_timesteps),
        timesteps=run.timesteps,
        train_seconds=run.seconds,
        setup_seconds=setup_seconds,
        fps=run.timesteps / run.seconds if run.seconds > 0 else 0.0,
        env_config=plan.env_config,
        num_env_runners=int(num_env_runners),
        num_envs_per_env_runner=int(num_envs_per_env_runner),
        iterations=run.iterations,
    )


# ---------------------------------------------------------------------- command line (what `ray job submit` runs)
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m agents.training.rllib",
        description="Train a PPO router with RLlib on logs at a path and save the policy (no pickle).",
    )
    p.add_argument(
        "dataset_path", type=Path, help="canonical logs (.parquet/.csv/.jsonl), same path on every node"
    )
    p.add_argument("--out", type=Path, required=True, help="directory to save the policy to")
    p.add_argument("--cost-weight", type=float, default=0.0, help="λ of quality − λ·cost/cost_scale")
    p.add_argument("--cost-weight-range", type=float, nargs=2, metavar=("LOW", "HIGH"), help="λ-conditioned")
    p.add_argument("--cascade", choices=("chain", "free"), help="train on Cascade-v0 in this mode")
    p.add_argument("--num-env-runners", type=int, default=2)
    p.add_argument("--num-envs-per-env-runner", type=int, default=8)
    p.add_argument("--timesteps", type=int, default=100_000, help="env steps to sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--validation", type=float, default=0.15, help="share held out for validation (0: none)")
    p.add_argument("--address", default=None, help="Ray cluster to join (default: RAY_ADDRESS, else local)")
    p.add_argument("--quiet", action="store_true", help="do not print the validation passes")
    hyper = p.add_argument_group("PPO hyperparameters (RLlibPPOConfig)")
    for f in fields(RLlibPPOConfig):
        default = getattr(RLlibPPOConfig(), f.name)
        # GAE's λ is not the cost weight λ: its flag says so.
        flag = "--gae-lambda" if f.name == "lambda_" else "--" + f.name.replace("_", "-")
        if isinstance(default, tuple):
            hyper.add_argument(
                flag, dest=f.name, type=int, nargs="+", default=list(default), help=f"default {default}"
            )
        else:
            hyper.add_argument(
                flag, dest=f.name, type=type(default), default=default, help=f"default {default}"
            )
    return p


def main(argv: Sequence[str] | None = None) -> RLlibResult:
    """``python -m agents.training.rllib LOGS --out DIR [...]``: train, print the validations, save the policy."""
    args = _parser().parse_args(argv)
    config = RLlibPPOConfig(**{f.name: getattr(args, f.name) for f in fields(RLlibPPOConfig)})
    result = train_rllib(
        args.dataset_path,
        args.cost_weight,
        cost_weight_range=None if args.cost_weight_range is None else tuple(args.cost_weight_range),
        cascade=args.cascade is not None,
        env_kwargs={"mode": args.cascade} if args.cascade else None,
        num_env_runners=args.num_env_runners,
        num_envs_per_env_runner=args.num_envs_per_env_runner,
        total_timesteps=args.timesteps,
        seed=args.seed,
        validation=args.validation or None,
        address=args.address,
        config=config,
        verbose=0 if args.quiet else 1,
    )
    path = result.policy.save(args.out)
    print(
        f"[rllib] {result.timesteps} env steps on {result.num_env_runners} env runners × "
        f"{result.num_envs_per_env_runner} envs in {result.train_seconds:.1f} s ({result.fps:.0f} steps/s); "
        f"best at t={result.best_timesteps}; saved {type(result.policy).__name__} to {path}",
        flush=True,
    )
    return result


if __name__ == "__main__":
    main()
