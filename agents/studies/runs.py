"""Fitting one router family on a training split and scoring it on the test split over the λ grid: the
operating points (:class:`Run`) that a study summarises."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from agents.studies.config import BANDITS, CompareConfig
from routing_env.data import LoggedDataset
from routing_env.errors import ConfigurationError
from routing_env.metrics import PolicyEvaluation, evaluate_cascade, evaluate_policy

__all__ = ["CASCADE_METHODS", "Log", "Run", "run_cascade_method", "run_router"]

Log = Callable[[str], None]

#: Strong-model call shares the MF router's threshold is calibrated to.
_MF_SHARES = tuple(np.round(np.linspace(0.0, 1.0, 21), 3).tolist())

#: Cascade study methods: threshold cascades, cascade bandits, PPO on Cascade-v0 (fixed chain, and free choice
#: with MaskablePPO), against single-shot routers.
CASCADE_METHODS: tuple[str, ...] = (
    "threshold-cascade",
    "cascade-bandit",
    "ppo-cascade",
    "ppo-free",
    "router-linucb",
    "router-ppo",
)


@dataclass
class Run:
    """Operating points of one router family, with the time its training took.

    Attributes:
        name: the family's name.
        evals: ``(setting, λ, evaluation on the test split)`` per operating point; λ is NaN for threshold sweeps.
        seconds: training wall time (scoring excluded).
    """

    name: str
    evals: list[tuple[str, float, PolicyEvaluation]] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, lam: float, evaluation: PolicyEvaluation) -> None:
        """Record the operating point at λ."""
        self.evals.append((f"λ={lam:g}", lam, evaluation))


def _at(policy: Any, lam: float) -> Any:
    """``policy`` set to route at λ (cost-aware routers switch without retraining)."""
    if hasattr(policy, "with_cost_weight"):
        return policy.with_cost_weight(lam)
    policy.cost_weight = lam
    return policy


def _fit_once(name: str) -> Callable[[LoggedDataset, CompareConfig], Any]:
    """How the families fitted once for the whole grid (λ set at decision time) are built and fitted."""
    from agents import baselines
    from agents.routers import EpsilonGreedy, LinearThompsonSampling, LinUCB, SoftmaxBandit

    makers: dict[str, Callable[[CompareConfig], Any]] = {
        "random": lambda c: baselines.RandomRouter(seed=c.seed),
        "knn": lambda c: baselines.KNNRouter(seed=c.seed),
        "mlp": lambda c: baselines.MLPRouter(seed=c.seed),
        "logistic": lambda c: baselines.LogisticRouter(seed=c.seed),
        "linucb": lambda c: LinUCB(alpha=c.bandit_alpha, seed=c.seed),
        "thompson": lambda c: LinearThompsonSampling(seed=c.seed),
        "epsilon-greedy": lambda c: EpsilonGreedy(epsilon=0.05, seed=c.seed),
        "softmax": lambda c: SoftmaxBandit(temperature=0.02, seed=c.seed),
    }
    return lambda train, config: makers[name](config).fit(train)


#: Families fitted once, then swept over λ at decision time.
_SWEPT = ("random", "knn", "mlp", "logistic", *BANDITS)


def run_router(
    name: str, train: LoggedDataset, test: LoggedDataset, config: CompareConfig, log: Log
) -> Run | None:
    """Fit the family ``name`` on ``train`` and score it on ``test`` (``None`` when it does not apply)."""
    if name in _SWEPT:
        return _run_swept(name, train, test, config)
    if name in _BY_TASK:
        return _run_by_task(name, train, test, config)
    runners: dict[str, Callable[[str, LoggedDataset, LoggedDataset, CompareConfig, Log], Run | None]] = {
        "best-single": _run_best_single,
        "matrix-factorization": _run_matrix_factorization,
        "ppo": _run_ppo,
        "ppo-conditioned": _run_ppo_conditioned,
    }
    if name not in runners:  # CompareConfig validates the names
        raise ConfigurationError(f"unknown router {name!r}")
    return runners[name](name, train, test, config, log)


def _run_swept(name: str, train: LoggedDataset, test: LoggedDataset, config: CompareConfig) -> Run:
    run = Run(name)
    start = time.perf_counter()
    policy = _fit_once(name)(train, config)
    run.seconds = time.perf_counter() - start
    for lam in config.cost_weights:
        run.add(lam, evaluate_policy(test, _at(policy, lam), lam))
    return run


#: Families that read the task (the table, the clusters' task level, the selection among them): fitted with the
#: task one-hot appended when the features lack it, and cross-validated over the study's λ grid.
_BY_TASK = ("task-table", "cluster", "select-router")


def _with_task_columns(train: LoggedDataset, test: LoggedDataset) -> tuple[LoggedDataset, LoggedDataset]:
    """Both splits with the task one-hot (fitted on ``train``'s tasks) appended, unless their features have one
    or the logs have no tasks."""
    from routing_env.data import TaskOneHot

    names = list(train.feature_names or ())
    if train.tasks is None or any(str(n).startswith("task=") for n in names):
        return train, test
    enc = TaskOneHot().fit(list(train.tasks))

    def add(ds: LoggedDataset) -> LoggedDataset:
        tasks = None if ds.tasks is None else list(ds.tasks)
        onehot = enc.transform(tasks if tasks is not None else [None] * ds.n_queries)
        x = np.hstack([np.asarray(ds.features, dtype=np.float32), onehot])
        return ds.with_features(
            x, names=[*(ds.feature_names or [f"x{i}" for i in range(ds.n_features)]), *enc.feature_names]
        )

    return add(train), add(test)


def _run_by_task(name: str, train: LoggedDataset, test: LoggedDataset, config: CompareConfig) -> Run:
    from agents.routers.selection import make_router, select_router

    train, test = _with_task_columns(train, test)
    grid = tuple(float(w) for w in config.cost_weights)
    run = Run(name)
    start = time.perf_counter()
    if name == "select-router":
        policy = select_router(train, cost_weights=grid, seed=config.seed).router
    else:
        policy = make_router(name, cv_cost_weights=grid, seed=config.seed).fit(train)
    run.seconds = time.perf_counter() - start
    for lam in config.cost_weights:
        run.add(lam, evaluate_policy(test, _at(policy, lam), lam))
    return run


def _run_best_single(
    name: str, train: LoggedDataset, test: LoggedDataset, config: CompareConfig, log: Log
) -> Run:
    from agents import baselines

    run = Run(name)
    for lam in config.cost_weights:
        start = time.perf_counter()
        policy = baselines.BestSingleModel(seed=config.seed).fit(train, cost_weight=lam)
        run.seconds += time.perf_counter() - start
        run.add(lam, evaluate_policy(test, policy, lam))
    return run


def _run_matrix_factorization(
    name: str, train: LoggedDataset, test: LoggedDataset, config: CompareConfig, log: Log
) -> Run | None:
    from agents import baselines

    if train.n_models != 2:
        log(
            f"  {name}: skipped (RouteLLM's MF router needs exactly two models, the data has {train.n_models})"
        )
        return None
    run = Run(name)
    start = time.perf_counter()
    policy = baselines.MatrixFactorizationRouter(seed=config.seed).fit(train)
    run.seconds = time.perf_counter() - start
    # A threshold sweep over the strong model's call share instead of λ.
    for share in _MF_SHARES:
        policy.calibrate_threshold(train.features, share)
        run.evals.append((f"share={share:g}", float("nan"), evaluate_policy(test, policy, 0.0)))
    return run


def _warm_start_setting(config: CompareConfig) -> dict[str, Any]:
    """``train_ppo``'s warm-start setting for the study: its default, or none for an ablation."""
    return {} if config.ppo_warm_start else {"warm_start": None}


def _run_ppo(name: str, train: LoggedDataset, test: LoggedDataset, config: CompareConfig, log: Log) -> Run:
    def score(result: Any, lam: float) -> PolicyEvaluation:
        assert result.policy is not None
        return evaluate_policy(test, result.policy, lam)

    return _per_lambda_ppo(name, train, config, log, score)


def _per_lambda_ppo(
    name: str,
    train: LoggedDataset,
    config: CompareConfig,
    log: Log,
    score: Callable[[Any, float], PolicyEvaluation],
    **train_kwargs: Any,
) -> Run:
    """One PPO policy per λ of ``config.ppo_cost_weights`` (default the grid), each scored by ``score``."""
    from agents.training.ppo import train_ppo

    run = Run(name)
    grid = config.ppo_cost_weights if config.ppo_cost_weights is not None else config.cost_weights
    for lam in grid:
        start = time.perf_counter()
        result = train_ppo(
            train,
            lam,
            total_timesteps=config.ppo_timesteps,
            n_envs=config.n_envs,
            seed=config.seed,
            **_warm_start_setting(config),
            **train_kwargs,
        )
        run.seconds += time.perf_counter() - start
        run.add(lam, score(result, lam))
        log(f"  {name} λ={lam:g}: test reward {run.evals[-1][2].mean_reward:.4f} ({result.fps:.0f} steps/s)")
    return run


def _run_ppo_conditioned(
    name: str, train: LoggedDataset, test: LoggedDataset, config: CompareConfig, log: Log
) -> Run:
    from agents.training.ppo import train_ppo

    run = Run(name)
    weights = config.cost_weights
    lo, hi = config.ppo_conditioned_range or (min(weights), max(weights))
    if hi <= lo:
        hi = lo + 1.0
    start = time.perf_counter()
    result = train_ppo(
        train,
        cost_weight_range=(lo, hi),
        total_timesteps=config.ppo_conditioned_timesteps,
        n_envs=config.n_envs,
        seed=config.seed,
        eval_cost_weights=tuple(w for w in weights if lo <= w <= hi) or None,
        **_warm_start_setting(config),
    )
    run.seconds = time.perf_counter() - start
    assert result.policy is not None
    # Scored only inside the λ range it was trained on (outside it the network extrapolates).
    for lam in weights:
        if lo <= lam <= hi:
            run.add(lam, evaluate_policy(test, _at(result.policy, lam), lam))
    return run


def run_cascade_method(
    method: str, train: LoggedDataset, test: LoggedDataset, config: CompareConfig, log: Log
) -> Run:
    """Fit the cascade study's ``method`` on ``train`` and score it on ``test`` (cost counts every call made)."""
    runners: dict[str, Callable[[str, LoggedDataset, LoggedDataset, CompareConfig, Log], Run]] = {
        "threshold-cascade": _run_fitted_cascade,
        "cascade-bandit": _run_fitted_cascade,
        "ppo-cascade": _run_ppo_cascade,
        "ppo-free": _run_ppo_cascade,
        "router-linucb": _run_router_linucb,
        "router-ppo": _run_ppo,
    }
    if method not in runners:
        raise ConfigurationError(
            f"unknown cascade method {method!r}; expected one of {list(CASCADE_METHODS)}"
        )
    return runners[method](method, train, test, config, log)


def _run_fitted_cascade(
    method: str, train: LoggedDataset, test: LoggedDataset, config: CompareConfig, log: Log
) -> Run:
    from agents.routers import ThresholdCascade
    from agents.routers.cascades import CascadeBandit

    cls = ThresholdCascade if method == "threshold-cascade" else CascadeBandit
    run = Run(method)
    start = time.perf_counter()
    policies = [cls(seed=config.seed).fit(train, cost_weight=lam) for lam in config.cost_weights]
    run.seconds = time.perf_counter() - start
    for lam, policy in zip(config.cost_weights, policies):
        run.add(lam, evaluate_cascade(test, policy, lam))
    return run


def _run_ppo_cascade(
    method: str, train: LoggedDataset, test: LoggedDataset, config: CompareConfig, log: Log
) -> Run:
    from agents.training.ppo import evaluate_cascade_model

    def score(result: Any, lam: float) -> PolicyEvaluation:
        ev = evaluate_cascade_model(result, test, lam)
        # The env routes over its own model order; report shares in the dataset's order.
        shares = dict(zip(ev.models, ev.call_share))
        return replace(ev, models=test.models, call_share=tuple(shares.get(m, 0.0) for m in test.models))

    mode = "chain" if method == "ppo-cascade" else "free"
    return _per_lambda_ppo(
        method, train, config, log, score, cascade=True, validation=None, env_kwargs={"mode": mode}
    )


def _run_router_linucb(
    method: str, train: LoggedDataset, test: LoggedDataset, config: CompareConfig, log: Log
) -> Run:
    from agents.routers import LinUCB

    run = Run(method)
    start = time.perf_counter()
    bandit = LinUCB(alpha=config.bandit_alpha, seed=config.seed).fit(train)
    run.seconds = time.perf_counter() - start
    for lam in config.cost_weights:
        run.add(lam, evaluate_policy(test, _at(bandit, lam), lam))
    return run
