"""Per-dataset lookup tables shared by every environment instance.

Environments never copy the dataset arrays: they index the dataset's own read-only arrays, and what they derive
from them (reward matrices for a fixed cost weight, oracle actions, Python-list views for fast scalar access) is
computed once per dataset and configuration and cached here, keyed weakly by the dataset object, so a thousand env
instances over the same dataset share one set of tables.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Protocol

import numpy as np

from routing_env.data.dataset import CostScale, LoggedDataset, oracle_from_arrays
from routing_env.envs._stream import COST_WEIGHT_SAMPLINGS
from routing_env.errors import ConfigurationError, ModelMismatchError, PartialInformationError

_CACHE: weakref.WeakKeyDictionary[LoggedDataset, dict[Hashable, Any]] = weakref.WeakKeyDictionary()


def cached(dataset: LoggedDataset, key: Hashable, build: Any) -> Any:
    """``build()`` once per ``(dataset, key)``; later calls return the same object."""
    store = _CACHE.setdefault(dataset, {})
    if key not in store:
        store[key] = build()
    return store[key]


@functools.lru_cache(maxsize=1)
def default_dataset() -> LoggedDataset:
    """The bundled sample (:func:`routing_env.data.load_sample`), generated once per process."""
    from routing_env.data import load_sample

    return load_sample()


class OutcomeImputer(Protocol):
    """What the environments need from an outcome model (see :class:`routing_env.envs.OutcomeModel`)."""

    def complete(self, dataset: LoggedDataset) -> LoggedDataset:
        """A full-information copy of ``dataset`` whose unobserved cells hold predicted outcomes."""
        ...


def resolve_dataset(
    dataset: LoggedDataset | None, outcome_model: OutcomeImputer | None
) -> tuple[LoggedDataset, np.ndarray | None]:
    """Return ``(replayed dataset, imputed (n, K) bool or None)``.

    Full-information data replays as is. Partial data needs ``outcome_model``; the returned dataset is then its
    completion (cached by the outcome model), and ``imputed`` marks the cells that were never logged.
    """
    ds = default_dataset() if dataset is None else dataset
    if not isinstance(ds, LoggedDataset):
        raise ConfigurationError(f"dataset must be a LoggedDataset, got {type(ds).__name__}")
    if ds.is_full_information:
        return ds, None
    if outcome_model is None:
        missing = int((~np.isfinite(ds.quality) | ~np.isfinite(ds.cost)).sum())
        raise PartialInformationError(
            f"the dataset is partial ({missing} of {ds.quality.size} query × model outcomes were never logged), "
            "so exact replay is impossible for the arms the logs lack. Pass outcome_model="
            "routing_env.envs.OutcomeModel.fit(dataset) to impute them, or evaluate off-policy with routing_env.ope"
        )
    if not hasattr(outcome_model, "complete"):
        raise ConfigurationError(
            f"outcome_model must have a complete(dataset) method (e.g. OutcomeModel), got {type(outcome_model).__name__}"
        )
    full = outcome_model.complete(ds)
    if not full.is_full_information or full.quality.shape != ds.quality.shape or full.models != ds.models:
        raise ConfigurationError(
            "outcome_model.complete(dataset) must return a full-information dataset with the same queries and models"
        )
    imputed = cached(full, "imputed", lambda: frozen(~ds.observed))
    return full, imputed


def frozen(a: np.ndarray) -> np.ndarray:
    """``a``, made read-only (tables shared by every env over a dataset must never be written)."""
    a.setflags(write=False)
    return a


def resolve_models(dataset: LoggedDataset, models: Sequence[str] | None) -> tuple[str, ...]:
    """The model names an env routes over (all of the dataset's by default), validated."""
    if models is None:
        return dataset.models
    if isinstance(models, str):
        raise ConfigurationError(f"models must be a sequence of model names, got the string {models!r}")
    names = tuple(str(m) for m in models)
    if not names:
        raise ConfigurationError("models must name at least one model, got an empty list")
    unknown = [m for m in names if m not in dataset.models]
    if unknown:
        raise ModelMismatchError(f"models {unknown} are not in the dataset, which has {list(dataset.models)}")
    if len(set(names)) != len(names):
        raise ConfigurationError(f"models must not repeat a name, got {list(names)}")
    return names


def check_cost_weight(
    cost_weight: float, cost_weight_range: tuple[float, float] | None
) -> tuple[float, tuple[float, float] | None]:
    """Validate λ (≥ 0, finite) or a ``(low, high)`` range to sample it from per episode."""
    lam = float(cost_weight)
    if not np.isfinite(lam) or lam < 0:
        raise ConfigurationError(f"cost_weight must be a finite number ≥ 0, got {cost_weight!r}")
    if cost_weight_range is None:
        return lam, None
    try:
        lo, hi = (float(v) for v in cost_weight_range)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"cost_weight_range must be a pair (low, high), got {cost_weight_range!r}"
        ) from None
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 <= lo <= hi):
        raise ConfigurationError(
            f"cost_weight_range must satisfy 0 ≤ low ≤ high < inf, got {cost_weight_range!r}"
        )
    return lam, (lo, hi)


def check_cost_weight_sampling(sampling: str, cost_weight_range: tuple[float, float] | None) -> str:
    """Validate ``cost_weight_sampling``: one of :data:`COST_WEIGHT_SAMPLINGS`, and only with a λ range."""
    if not isinstance(sampling, str) or sampling not in COST_WEIGHT_SAMPLINGS:
        raise ConfigurationError(
            f"cost_weight_sampling must be one of {list(COST_WEIGHT_SAMPLINGS)}, got {sampling!r}"
        )
    if sampling != "uniform" and cost_weight_range is None:
        raise ConfigurationError(
            f"cost_weight_sampling={sampling!r} draws λ from cost_weight_range, which is not set; "
            "give cost_weight_range=(low, high) or leave cost_weight_sampling='uniform'"
        )
    return sampling


def check_nonnegative(name: str, value: float) -> float:
    v = float(value)
    if not np.isfinite(v) or v < 0:
        raise ConfigurationError(f"{name} must be a finite number ≥ 0, got {value!r}")
    return v


RESET_OPTIONS = frozenset({"query_index", "cost_weight"})


def parse_reset_options(options: dict[str, Any] | None, n_queries: int) -> tuple[int | None, float | None]:
    """``(pinned query index, λ override)`` from a single env's ``reset(options=…)``; ``None`` where not given."""
    if not options:
        return None, None
    unknown = set(options) - RESET_OPTIONS
    if unknown:
        raise ConfigurationError(
            f"unknown reset options {sorted(unknown)}; expected some of {sorted(RESET_OPTIONS)}"
        )
    pinned: int | None = None
    qi = options.get("query_index")
    if qi is not None:
        if isinstance(qi, bool) or not isinstance(qi, (int, np.integer)):
            raise ConfigurationError(f"options['query_index'] must be an int, got {qi!r}")
        if not 0 <= qi < n_queries:
            raise ConfigurationError(f"options['query_index'] must be in [0, {n_queries}), got {qi}")
        pinned = int(qi)
    lam = options.get("cost_weight")
    return pinned, None if lam is None else check_nonnegative("options['cost_weight']", lam)


def check_positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigurationError(f"{name} must be an integer ≥ 1, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class RewardTables:
    """Reward decomposition ``reward(λ) = base − λ·per_lambda`` over the env's model columns.

    ``base = quality − latency_weight·latency`` and ``per_lambda = cost/cost_scale``, both ``(n, K') float64``
    derived from :meth:`LoggedDataset.rewards` (never re-deriving the formula), so a per-episode λ costs one
    multiply-add. ``cost (n, K')`` USD and ``mean_cost (K',)`` serve the oracle's tie-break.
    """

    base: np.ndarray
    per_lambda: np.ndarray
    cost: np.ndarray
    mean_cost: np.ndarray
    cost_scale: float

    def rewards(self, cost_weight: float | np.ndarray, rows: Any = slice(None)) -> np.ndarray:
        """``(m, K')`` rewards at ``cost_weight`` (a float, or ``(m, 1)`` per row) for the queries ``rows``."""
        return self.base[rows] - cost_weight * self.per_lambda[rows]

    def oracle(self, rewards: np.ndarray, rows: Any = slice(None)) -> np.ndarray:
        """``(m,) int64`` oracle column per row of ``rewards (m, K')``; ties to the cheaper model."""
        return oracle_from_arrays(rewards, self.cost[rows], self.mean_cost)


def reward_tables(
    dataset: LoggedDataset, columns: tuple[int, ...], latency_weight: float, cost_scale: CostScale
) -> RewardTables:
    """Cached :class:`RewardTables` for the model ``columns`` of ``dataset``.

    The cost scale is resolved on the whole dataset, so a model subset sees the same rewards as the full env.
    """

    def build() -> RewardTables:
        cols = np.asarray(columns, dtype=np.int64)
        base = dataset.rewards(0.0, latency_weight, cost_scale)[:, cols]
        at_one = dataset.rewards(1.0, latency_weight, cost_scale)[:, cols]
        return RewardTables(
            base=frozen(base),
            per_lambda=frozen(base - at_one),
            cost=frozen(dataset.cost[:, cols]),
            mean_cost=frozen(dataset.mean_cost()[cols]),
            cost_scale=dataset.resolve_cost_scale(cost_scale),
        )

    return cached(dataset, ("reward_tables", columns, latency_weight, cost_scale), build)


@dataclass(frozen=True)
class FixedLambdaTables:
    """Rewards at one fixed λ, with the oracle, as arrays and as Python lists (fast scalar lookups per step).

    ``outcomes (n·K', 4) float64`` holds ``[reward, quality, cost, latency]`` per (query, model) cell at row
    ``query·K' + model``, so the vector env gathers a step's numbers from one table in one pass.
    """

    rewards: list[list[float]]
    oracle_action: list[int]
    oracle_reward: list[float]
    rewards_array: np.ndarray
    oracle_array: np.ndarray
    oracle_reward_array: np.ndarray
    outcomes: np.ndarray


def fixed_lambda_tables(
    dataset: LoggedDataset,
    columns: tuple[int, ...],
    latency_weight: float,
    cost_scale: CostScale,
    cost_weight: float,
) -> FixedLambdaTables:
    """Cached rewards and oracle at a fixed ``cost_weight`` (exactly :meth:`LoggedDataset.rewards`' values)."""

    def build() -> FixedLambdaTables:
        cols = np.asarray(columns, dtype=np.int64)
        r = frozen(np.ascontiguousarray(dataset.rewards(cost_weight, latency_weight, cost_scale)[:, cols]))
        mean_cost = dataset.mean_cost()[cols]
        oracle = frozen(oracle_from_arrays(r, dataset.cost[:, cols], mean_cost))
        best = frozen(r[np.arange(r.shape[0]), oracle])
        latency = (
            np.full(r.shape, np.nan)
            if dataset.latency is None
            else dataset.latency[:, cols].astype(np.float64)
        )
        outcomes = np.stack((r, dataset.quality[:, cols], dataset.cost[:, cols], latency), axis=2)
        outcomes = frozen(np.ascontiguousarray(outcomes.reshape(-1, 4)))
        return FixedLambdaTables(r.tolist(), oracle.tolist(), best.tolist(), r, oracle, best, outcomes)

    key = ("fixed_lambda", columns, latency_weight, cost_scale, cost_weight)
    return cached(dataset, key, build)


@dataclass(frozen=True)
class ScalarLists:
    """Per-dataset Python-list views of the outcome arrays (fast per-step scalar reads for ``info``)."""

    quality: list[list[float]]
    cost: list[list[float]]
    latency: list[list[float]] | None
    query_ids: list[str]
    feature_rows: list[np.ndarray]


def scalar_lists(dataset: LoggedDataset) -> ScalarLists:
    """Cached :class:`ScalarLists`; ``feature_rows`` are read-only row views of ``dataset.features`` (no copy)."""

    def build() -> ScalarLists:
        return ScalarLists(
            quality=dataset.quality.tolist(),
            cost=dataset.cost.tolist(),
            latency=None if dataset.latency is None else dataset.latency.astype(np.float64).tolist(),
            query_ids=[str(q) for q in dataset.query_ids],
            feature_rows=list(dataset.features),
        )

    return cached(dataset, "scalar_lists", build)


def feature_bounds(dataset: LoggedDataset, n_extra: int) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` float32 vectors of width ``d + n_extra``: the whole float32 range for the ``d`` query features
    (a new query's features may fall anywhere, not only in the logs' range; every finite float32 fits, and finite
    bounds keep Gymnasium's checker from warning about infinite ones), then zeros for the caller to fill in for the
    extra entries."""
    d, big = dataset.n_features, np.finfo(np.float32).max
    low = np.concatenate((np.full(d, -big), np.zeros(n_extra))).astype(np.float32)
    high = np.concatenate((np.full(d, big), np.zeros(n_extra))).astype(np.float32)
    return low, high


def simulated_signal(quality: np.ndarray, auroc: float, seed: int) -> np.ndarray:
    """A simulated verifier score per call, ``(n, K) float32`` in (0, 1).

    ``score = sigmoid(δ·quality + ε)`` with ``ε ~ N(0, 1)`` and ``δ = √2·Φ⁻¹(auroc)``: for 0/1 quality the score
    separates right from wrong answers with ROC AUC ``auroc``; for graded quality it is monotone in quality plus the
    same noise. Drawn once from ``seed`` (a verifier returns one score for a given answer).
    """
    if not 0.5 <= auroc < 1.0:
        raise ConfigurationError(f"verifier_auroc must lie in [0.5, 1), got {auroc!r}")
    delta = np.sqrt(2.0) * NormalDist().inv_cdf(auroc) if auroc > 0.5 else 0.0
    noise = np.random.default_rng(seed).normal(size=quality.shape)
    return (1.0 / (1.0 + np.exp(-(delta * np.nan_to_num(quality) + noise)))).astype(np.float32)


def signal_table(dataset: LoggedDataset, source: str, auroc: float, seed: int) -> tuple[np.ndarray, str]:
    """``(signal (n, K) float32, description)`` for cascades.

    ``source="auto"`` uses the logged signal when the dataset has one (cells with no logged signal get the
    simulated verifier's score) and the simulated verifier otherwise; ``"logged"`` requires a logged signal;
    ``"simulated"`` always simulates.
    """
    if source not in ("auto", "logged", "simulated"):
        raise ConfigurationError(f"signal must be 'auto', 'logged' or 'simulated', got {source!r}")
    if source == "logged" and dataset.signal is None:
        raise ConfigurationError(
            "signal='logged' needs a signal column in the data, and this dataset has none"
        )
    if dataset.signal is not None and source != "simulated":
        logged = dataset.signal
        missing = np.isnan(logged)
        if not missing.any():
            return logged, "logged"

        def fill() -> np.ndarray:
            sim = simulated_signal(dataset.quality, auroc, seed)
            return frozen(np.where(missing, sim, logged).astype(np.float32))

        table = cached(dataset, ("signal_filled", auroc, seed), fill)
        return table, f"logged; {int(missing.sum())} cells simulated (verifier AUROC {auroc}, seed {seed})"
    table = cached(
        dataset,
        ("signal_sim", auroc, seed),
        lambda: frozen(simulated_signal(dataset.quality, auroc, seed)),
    )
    return table, f"simulated verifier (AUROC {auroc}, seed {seed})"
