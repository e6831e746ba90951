"""Off-policy evaluation and batch scoring of sharded parquet bandit logs with Ray Data (the ``ray`` extra).

:func:`estimate_policy_value_distributed` evaluates a policy on logs too large for one process: parquet files in
the canonical long format (``routing_env.data.schema``: ``query_id``, ``model``, ``quality``, ``cost``, ``x_0 …``
or ``prompt``/``task``, and ``logged``/``propensity``), e.g. shards of a decision store's export
(``SQLiteDecisionStore.export().save(...)``, one row per decision). Only the logged row of each query is read
into the estimates; other rows of full-information logs count only towards the cost scale. Ray Data reads the
files block by block; ``map_batches`` turns each batch of rows into the sufficient statistics of every estimator,
and the driver combines them exactly:

- every estimator is ``Σ_k mean(u_k) / mean(v_k)`` over per-row columns (:mod:`routing_env.ope.estimators`), so
  a batch's column means and centred cross-products, merged with Chan et al.'s pairwise update, give the same
  point estimates, delta-method standard errors and effective sample sizes as
  :func:`routing_env.ope.estimate_policy_value` on the same rows (to rounding, ~1e-15);
- the bootstrap is the same Poisson bootstrap, drawn per batch in the same pass: each batch adds its
  Poisson-weighted column sums to ``B`` running replicates. A batch's counts are seeded by ``seed`` and a hash of
  its query ids, so a rerun with the same seed and the same files gives the same intervals whatever order the
  batches finish in (a different batch size draws different, equally valid, counts).

**The reward model of DM and the DR family** is cross-fitted over folds of the query ids: each query's fold is a
seeded hash of its id (:func:`query_folds`), so it is the same in every block and every run. The model of fold f
(:class:`~routing_env.ope.RewardModel`, a tuned ridge per model by default) is fitted on the sample's rows outside
fold f and predicts every row of fold f, so no row is ever predicted by a model that saw it. The sample holds at
most ``sample_size`` logged rows: those whose seeded hash of the query id is smallest, an exact uniform sample
that does not depend on how the files are split. :attr:`DistributedRun.reward_model` keeps the fitted model, and
:func:`distributed_estimated_rewards` fits the same one on logs held in memory; passing its predictions as
``estimated_rewards`` to the single-process :func:`~routing_env.ope.estimate_policy_value` reproduces the
distributed table.

**Features** come from the ``x_*`` columns, or from ``featurizer`` applied per batch to ``prompt`` (and
``task``); an unfitted featurizer is fitted once, on the prompts of the sample, before the evaluation pass.

**Passes over the logs**: one for the estimates; before it, one for the sample when a reward model or a
featurizer must be fitted (a second one in the rare case that too few rows passed the first one's threshold, see
:func:`~routing_env.ope.shards.draw_sample`), and one for the cost scale when ``cost_scale="max_mean"`` and
``cost_weight ≠ 0``. Each pass streams: the driver holds the sample and ``O(B·m + m²)`` numbers (B bootstrap
replicates, m per-row columns), never the log. A worker holds what Ray Data needs for a batch and the blocks it
reads ahead, up to the object-store budget of its streaming executor
(``DataContext.execution_options.resource_limits``): its memory levels off after a few files, whatever the
number of rows (``experiments/bench_distributed.py --part ope`` measures it).

The policy, the featurizer and the fitted reward model reach Ray's workers as Ray task arguments (serialised in
memory by Ray, within the cluster); nothing is written to disk. The diagnostics warnings of the single-process
path (support, tiny propensities) are not computed here; the table's ``ess`` column is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from routing_env.data import schema as S
from routing_env.data.featurizers import Featurizer
from routing_env.errors import ConfigurationError, ModelMismatchError, SchemaError, ShapeError
from routing_env.ope.estimators import (
    DEFAULT_ESTIMATORS,
    OffPolicyEstimator,
    Replay,
    check_alpha,
    make_estimator,
    prepare_inputs,
)
from routing_env.ope.evaluate import COLUMNS
from routing_env.ope.feedback import BanditFeedback
from routing_env.ope.intervals import (
    Layout,
    percentile_interval,
    poisson_sums,
    replicate_values,
    stack_columns,
)
from routing_env.ope.reward_model import FittedRewardModel, RewardModel
from routing_env.ope.shards import (
    Logs,
    LogSpec,
    batch_rows,
    draw_sample,
    features_of,
    fit_featurizer,
    folds_of_hashes,
    hash_ids,
    hashed_sample,
    is_fitted,
    logged_index,
    map_batches_iter,
    max_mean_cost,
    mix64,
    open_logs,
    query_folds,
    read_logs,
    rewards_of,
)
from routing_env.policy import Policy

if TYPE_CHECKING:
    import ray.data

#: Rows per ``map_batches`` call: a batch's arrays (features, the (n, K) target distribution and reward model
#: predictions, the estimator columns) stay in the tens of MB on each worker.
DEFAULT_BATCH_SIZE = 65_536
#: Logged rows the reward model (and an unfitted featurizer) is fitted on.
DEFAULT_SAMPLE_SIZE = 200_000

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_SAMPLE_SIZE",
    "DistributedRun",
    "Logs",
    "distributed_estimated_rewards",
    "estimate_policy_value_distributed",
    "query_folds",
    "read_logs",
    "score_policy",
]


# ---------------------------------------------------------------------- pass: the estimates
@dataclass(frozen=True)
class _Layout:
    """Where each estimator's parts and importance weights sit among the m stacked per-row columns."""

    parts: Layout
    weights: tuple[int | None, ...]
    n_columns: int


def _stack(terms: Sequence[Any]) -> tuple[list[np.ndarray], _Layout]:
    columns, parts = stack_columns(terms)
    position = {id(c): j for j, c in enumerate(columns)}
    weights: list[int | None] = []
    for t in terms:
        if t.weights is None:
            weights.append(None)
            continue
        if id(t.weights) not in position:
            position[id(t.weights)] = len(columns)
            columns.append(t.weights)
        weights.append(position[id(t.weights)])
    return columns, _Layout(parts, tuple(weights), len(columns))


def _layout(estimators: Sequence[OffPolicyEstimator], k: int, with_q: bool) -> _Layout:
    """The layout the estimators produce, from two synthetic rounds (it depends on the estimators only)."""
    dist = np.full((2, k), 1.0 / k)
    q = np.zeros((2, k)) if with_q else None
    inputs = prepare_inputs(
        np.array([0.0, 1.0]), np.zeros(2, dtype=np.int64), np.full(2, 1.0 / k), dist, None, q
    )
    return _stack([e.terms(inputs) for e in estimators])[1]


@dataclass(frozen=True)
class _Context:
    """What every batch of the estimation pass needs (shipped to the workers once per pass)."""

    spec: LogSpec
    policy: Policy
    estimators: tuple[OffPolicyEstimator, ...]
    layout: _Layout
    reward_model: FittedRewardModel | None
    featurizer: Any
    cost_weight: float
    cost_scale: float
    n_bootstrap: int
    seed: int


def _statistics_batch(batch: dict[str, np.ndarray], *, ctx: _Context) -> dict[str, np.ndarray]:
    """One batch's sufficient statistics: row count, column means, centred cross-products, propensity range and
    the Poisson-bootstrap sums of the estimators' per-row columns."""
    rows = batch_rows(batch, ctx.spec, logged_index(batch, ctx.spec), check=True)
    n, m, b = rows.query_ids.shape[0], ctx.layout.n_columns, ctx.n_bootstrap
    out: dict[str, np.ndarray] = {
        "n": np.array([n], dtype=np.int64),
        "mean": np.zeros((1, m)),
        "m2": np.zeros((1, m, m)),
        "pmin": np.array([np.inf]),
        "pmax": np.array([-np.inf]),
    }
    if b:
        out["boot"] = np.zeros((1, b, m + 1))
    if n == 0:
        return out
    x = features_of(rows, ctx.featurizer)
    k = len(ctx.spec.models)
    dist = np.asarray(ctx.policy.action_probabilities(x), dtype=np.float64)
    if dist.shape != (n, k):
        raise ShapeError(
            f"{type(ctx.policy).__name__}.action_probabilities returned shape {dist.shape}, "
            f"expected (n, K) = ({n}, {k})"
        )
    q = None
    hashes = hash_ids(rows.query_ids)
    if ctx.reward_model is not None:
        q = ctx.reward_model.predict(x, folds_of_hashes(hashes, ctx.reward_model.n_folds, ctx.seed))
    reward = rewards_of(rows.quality, rows.cost, ctx.cost_weight, ctx.cost_scale)
    inputs = prepare_inputs(reward, rows.action, rows.propensity, dist, None, q)
    columns, layout = _stack([e.terms(inputs) for e in ctx.estimators])
    assert layout == ctx.layout, "the estimators' layout changed between batches"
    stacked = np.column_stack(columns)
    mean = stacked.mean(axis=0)
    dev = stacked - mean
    out["mean"][0] = mean
    out["m2"][0] = dev.T @ dev
    out["pmin"][0], out["pmax"][0] = float(rows.propensity.min()), float(rows.propensity.max())
    if b:
        # Seeded by the batch's rows (order-free): reruns with the same files and batch size give the same counts.
        word = int(np.bitwise_xor.reduce(mix64(hashes, 0x5EED)))
        rng = np.random.default_rng(np.random.SeedSequence([int(ctx.seed) % (1 << 63), word]))
        out["boot"][0] = poisson_sums(columns, b, rng)
    return out


@dataclass
class _Totals:
    """Running combination of the batches' statistics (Chan, Golub & LeVeque's pairwise update)."""

    n: int
    mean: np.ndarray  # (m,)
    m2: np.ndarray  # (m, m) centred cross-products
    boot: np.ndarray  # (B, m + 1)
    pmin: float = math.inf
    pmax: float = -math.inf
    n_batches: int = 0

    def add(self, n: int, mean: np.ndarray, m2: np.ndarray, boot: np.ndarray | None) -> None:
        self.n_batches += 1
        if n == 0:
            return
        total = self.n + n
        delta = mean - self.mean
        self.m2 = self.m2 + m2 + np.outer(delta, delta) * (self.n * n / total)
        self.mean = self.mean + delta * (n / total)
        self.n = total
        if boot is not None:
            self.boot += boot


def _combine(ds: Any, ctx: _Context, batch_size: int | None) -> _Totals:
    m = ctx.layout.n_columns
    totals = _Totals(0, np.zeros(m), np.zeros((m, m)), np.zeros((ctx.n_bootstrap, m + 1)))
    for out in map_batches_iter(ds, _statistics_batch, batch_size, ctx=ctx):
        for i in range(out["n"].shape[0]):
            boot = out["boot"][i] if ctx.n_bootstrap else None
            totals.add(int(out["n"][i]), out["mean"][i], out["m2"][i], boot)
            totals.pmin = min(totals.pmin, float(out["pmin"][i]))
            totals.pmax = max(totals.pmax, float(out["pmax"][i]))
    return totals


def _estimate(parts: Sequence[tuple[int, int | None]], t: _Totals) -> tuple[float, float]:
    """``(estimate, std_error)`` of ``Σ_k mean(u_k)/mean(v_k)`` from the combined moments (delta method)."""
    coef = np.zeros(t.mean.shape[0])
    value = 0.0
    for cu, cv in parts:
        if cv is None:
            value += float(t.mean[cu])
            coef[cu] += 1.0
            continue
        den = float(t.mean[cv])
        if den == 0:
            return math.nan, math.nan
        theta = float(t.mean[cu]) / den
        value += theta
        coef[cu] += 1.0 / den
        coef[cv] -= theta / den
    if t.n < 2:
        return value, math.nan
    ss = float(coef @ t.m2 @ coef)
    return value, math.sqrt(max(ss, 0.0) / (t.n - 1) / t.n)


def _ess(column: int | None, t: _Totals) -> float:
    if column is None:
        return float(t.n)
    s1 = t.n * float(t.mean[column])
    s2 = float(t.m2[column, column]) + t.n * float(t.mean[column]) ** 2
    return s1 * s1 / s2 if s2 > 0 else 0.0


def _table(ctx: _Context, totals: _Totals, alpha: float) -> pd.DataFrame:
    z = NormalDist().inv_cdf(1 - alpha / 2)
    reps = replicate_values(ctx.layout.parts, totals.boot) if ctx.n_bootstrap else None
    rows = []
    for i, est in enumerate(ctx.estimators):
        value, se = _estimate(ctx.layout.parts[i], totals)
        ok = math.isfinite(value) and math.isfinite(se)
        boot = percentile_interval(reps[i], alpha) if reps is not None else (math.nan,) * 3
        rows.append(
            {
                "estimator": est.label,
                "estimate": value,
                "std_error": se if ok else math.nan,
                "ci_low": value - z * se if ok else math.nan,
                "ci_high": value + z * se if ok else math.nan,
                "boot_std_error": boot[0],
                "boot_ci_low": boot[1],
                "boot_ci_high": boot[2],
                "ess": _ess(ctx.layout.weights[i], totals),
                "n_rounds": totals.n,
                "cost_weight": ctx.cost_weight,
            }
        )
    return pd.DataFrame(rows, columns=list(COLUMNS))


# ---------------------------------------------------------------------- public API
@dataclass(frozen=True)
class DistributedRun:
    """How :func:`estimate_policy_value_distributed` got its table (``frame.attrs["distributed"]``).

    Attributes:
        n_rounds: logged rows evaluated.
        n_batches: ``map_batches`` calls of the estimation pass.
        cost_scale: USD per unit of ``cost_weight`` used in the reward.
        reward_model: the cross-fitted reward model of DM/DR (``None`` when no estimator needs one); a row of
            query id ``q`` is predicted with fold ``query_folds([q], reward_model.n_folds, fold_seed)``.
        fold_seed: seed of the fold hash.
        sample_rows: logged rows the reward model (or the featurizer) was fitted on (0 when none was fitted).
        featurizer: the featurizer applied to the prompts, fitted on the sample if it was not already.
    """

    n_rounds: int
    n_batches: int
    cost_scale: float
    reward_model: FittedRewardModel | None = field(repr=False)
    fold_seed: int
    sample_rows: int
    featurizer: Any = field(default=None, repr=False)


def _check_rows(sample_size: int, batch_size: int | None) -> None:
    for name, value in (("sample_size", sample_size), ("batch_size", batch_size)):
        if value is None and name == "batch_size":
            continue  # Ray's blocks as batches
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigurationError(f"{name} must be a positive integer (rows), got {value!r}")


def _estimators(estimators: Sequence[OffPolicyEstimator | str] | None) -> tuple[OffPolicyEstimator, ...]:
    specs = list(DEFAULT_ESTIMATORS if estimators is None else estimators)
    if not specs:
        raise ConfigurationError("estimators is empty: name at least one estimator")
    ests = tuple(make_estimator(s) for s in specs)
    labels = [e.label for e in ests]
    if len(set(labels)) != len(labels):
        raise ConfigurationError(f"estimator names must be unique in one table, got {labels}; set name=...")
    return ests


def _scale(
    ds: Any, spec: LogSpec, cost_scale: float | str, cost_weight: float, batch_size: int | None
) -> float:
    if isinstance(cost_scale, str):
        if cost_scale != "max_mean":
            raise ConfigurationError(f"cost_scale must be 'max_mean' or a positive float, got {cost_scale!r}")
        # With λ = 0 the scale multiplies nothing: no pass over the logs for it.
        return max_mean_cost(ds, spec, batch_size) if cost_weight != 0 else 1.0
    scale = float(cost_scale)
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigurationError(f"cost_scale must be a positive USD amount, got {cost_scale!r}")
    return scale


def _check_width(policy: Policy, spec: LogSpec, featurizer: Any) -> None:
    # Checked on the driver: a worker's error would surface wrapped in Ray's task error, after the passes.
    width = int(featurizer.dimension) if featurizer is not None else len(spec.features)
    expected = getattr(policy, "n_features", None)
    if expected is not None and int(expected) != width:
        source = "the featurizer gives" if featurizer is not None else "the logs have"
        raise ShapeError(
            f"{type(policy).__name__} was fitted on {expected} features, but {source} {width} "
            f"({'x_* columns' if featurizer is None else 'dimension'})"
        )


def _models_of(policy: Policy, models: Sequence[str] | None) -> tuple[str, ...]:
    if not isinstance(policy, Policy):
        raise ConfigurationError(
            f"policy must implement routing_env.policy.Policy, got {type(policy).__name__}"
        )
    names = tuple(str(m) for m in (policy.models if models is None else models))
    if names != tuple(policy.models):
        raise ModelMismatchError(
            f"models={list(names)} must be the policy's models in its order, {list(policy.models)}"
        )
    return names


def estimate_policy_value_distributed(
    policy: Policy,
    logs: Logs,
    estimators: Sequence[OffPolicyEstimator | str] | None = None,
    n_bootstrap: int = 200,
    *,
    cost_weight: float = 0.0,
    cost_scale: float | str = "max_mean",
    alpha: float = 0.05,
    models: Sequence[str] | None = None,
    reward_model: RewardModel | None = None,
    fitted_reward_model: FittedRewardModel | None = None,
    featurizer: Featurizer | None = None,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
    seed: int = 0,
) -> pd.DataFrame:
    """Estimate ``policy``'s mean reward on sharded parquet bandit logs with Ray Data (see the module docstring).

    Uses the running Ray instance (``ray.init()``, or ``ray.init(address=…)`` for a cluster), or starts a local
    one.

    Args:
        policy: the target :class:`~routing_env.policy.Policy`; its ``models`` name the log's arms.
        logs: parquet path, folder, glob, list of them, or a ``ray.data.Dataset`` in the canonical format.
        estimators: instances or short names (default DM, IPS, SNIPS, DR, SNDR, SwitchDR, DRos; Replay too).
            Every estimator must be a mean (or ratio of means) of per-row terms, as all built-in ones are.
        n_bootstrap: Poisson-bootstrap replicates (0 skips them). The default is lower than the single-process
            200 … 1000 because the cost is ``B × rows``; 200 gives percentile intervals stable to a few percent.
        cost_weight: λ of the reward ``quality − λ·cost/cost_scale``.
        cost_scale: USD per unit of λ, or ``"max_mean"`` (the mean cost of the most expensive model over all
            rows of the logs: one extra pass when λ ≠ 0).
        alpha: the intervals cover ``1 − alpha``.
        models: the arms' names; must equal ``policy.models`` (the default).
        reward_model: the (unfitted) model of DM and the DR family, default ``RewardModel()``; fitted on a sample
            of at most ``sample_size`` logged rows, cross-fitted over hashed query folds.
        fitted_reward_model: a model fitted before (``frame.attrs["distributed"].reward_model`` of an earlier run
            with the same ``seed``): skips the sample pass, e.g. to evaluate several policies with one model.
        featurizer: turns ``prompt`` (and ``task``) into features per batch instead of the ``x_*`` columns;
            fitted on the sample's prompts first when not fitted yet.
        sample_size: rows of the sample the reward model and the featurizer are fitted on.
        batch_size: rows per ``map_batches`` call; ``None`` passes Ray's blocks whole.
        seed: seed of the fold hash, the sample and the bootstrap.

    Returns:
        The table of :func:`routing_env.ope.estimate_policy_value` (one row per estimator: estimate, normal and
        bootstrap intervals, ESS, ``n_rounds``, ``cost_weight``); ``frame.attrs["distributed"]`` is the
        :class:`DistributedRun`.
    """
    check_alpha(alpha)
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 0 or n_bootstrap == 1:
        raise ConfigurationError(
            f"n_bootstrap must be 0 (no bootstrap) or an integer ≥ 2, got {n_bootstrap!r}"
        )
    _check_rows(sample_size, batch_size)
    weight = float(cost_weight)
    if not math.isfinite(weight):
        raise ConfigurationError(f"cost_weight must be finite, got {cost_weight!r}")
    names = _models_of(policy, models)
    ests = _estimators(estimators)
    ds, spec = open_logs(logs, names, featurizer, bandit=True)
    scale = _scale(ds, spec, cost_scale, weight, batch_size)
    need_q = any(e.needs_reward_model for e in ests)
    fitted, sample_rows = _fit_on_sample(
        ds,
        spec,
        need_q,
        featurizer,
        reward_model,
        fitted_reward_model,
        weight,
        scale,
        sample_size,
        batch_size,
        seed,
    )
    _check_width(policy, spec, featurizer)
    ctx = _Context(
        spec=spec,
        policy=policy,
        estimators=ests,
        layout=_layout(ests, len(names), need_q),
        reward_model=fitted if need_q else None,
        featurizer=featurizer,
        cost_weight=weight,
        cost_scale=scale,
        n_bootstrap=int(n_bootstrap),
        seed=int(seed),
    )
    totals = _combine(ds, ctx, batch_size)
    if totals.n == 0:
        raise SchemaError("the logs have no logged rows (no 'logged' row with a propensity) to evaluate on")
    _check_replay(ests, totals)
    frame = _table(ctx, totals, alpha)
    frame.attrs["distributed"] = DistributedRun(
        totals.n, totals.n_batches, scale, ctx.reward_model, int(seed), sample_rows, featurizer
    )
    return frame


def _fit_on_sample(
    ds: Any,
    spec: LogSpec,
    need_q: bool,
    featurizer: Any,
    reward_model: RewardModel | None,
    fitted: FittedRewardModel | None,
    cost_weight: float,
    cost_scale: float,
    sample_size: int,
    batch_size: int | None,
    seed: int,
) -> tuple[FittedRewardModel | None, int]:
    """Draw the sample when something must be fitted on it; fit the featurizer, then the reward model."""
    unfitted = featurizer is not None and not is_fitted(featurizer)
    k = len(spec.models)
    if fitted is not None and (fitted.n_actions != k):
        raise ShapeError(
            f"fitted_reward_model predicts {fitted.n_actions} actions, the policy has {k} models"
        )
    if not unfitted and not (need_q and fitted is None):
        return fitted, 0
    sample = draw_sample(ds, spec, sample_size, seed, batch_size)
    if unfitted:
        fit_featurizer(featurizer, sample)
    if need_q and fitted is None:
        reward = rewards_of(sample.quality, sample.cost, cost_weight, cost_scale)
        x = features_of(sample, featurizer)
        fitted = _fit_model(reward_model, x, sample.action, reward, k, sample.query_ids, seed)
    return fitted, int(sample.query_ids.shape[0])


def _fit_model(
    reward_model: RewardModel | None,
    features: np.ndarray,
    action: np.ndarray,
    reward: np.ndarray,
    k: int,
    query_ids: np.ndarray,
    seed: int,
) -> FittedRewardModel:
    model = RewardModel(seed=seed) if reward_model is None else reward_model
    if not isinstance(model, RewardModel):
        raise ConfigurationError(f"reward_model must be a RewardModel, got {type(model).__name__}")
    folds = query_folds(query_ids, model.n_folds, seed)
    return model.fit(features, action, reward, k, folds=folds)


def distributed_estimated_rewards(
    feedback: BanditFeedback,
    *,
    cost_weight: float | None = None,
    reward_model: RewardModel | None = None,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    seed: int = 0,
) -> np.ndarray:
    """``(n, K)`` the reward model predictions :func:`estimate_policy_value_distributed` uses, for logs held in
    memory: the same hashed sample of at most ``sample_size`` rounds, the same hashed folds, the same fit.

    Passed as ``estimated_rewards`` to :func:`routing_env.ope.estimate_policy_value`, they reproduce the
    distributed table in one process (the logs' query ids must be those of the parquet files).

    Args:
        feedback: the logs, with ``query_ids``.
        cost_weight: λ of the reward the model is fitted on (default ``feedback.cost_weight``).
        reward_model: as in :func:`estimate_policy_value_distributed`.
        sample_size: as in :func:`estimate_policy_value_distributed`.
        seed: as in :func:`estimate_policy_value_distributed`.
    """
    if not isinstance(feedback, BanditFeedback) or feedback.query_ids is None:
        raise ConfigurationError("feedback must be a BanditFeedback with query_ids (the folds hash them)")
    _check_rows(sample_size, None)
    ids = feedback.query_ids
    rows = hashed_sample(ids, sample_size, seed)
    reward = feedback.rewards(cost_weight)
    fitted = _fit_model(
        reward_model,
        feedback.features[rows],
        feedback.action[rows],
        reward[rows],
        feedback.n_actions,
        ids[rows],
        seed,
    )
    return fitted.predict(feedback.features, query_folds(ids, fitted.n_folds, seed))


def _check_replay(estimators: Sequence[OffPolicyEstimator], totals: _Totals) -> None:
    # Each batch checked its own propensities; a uniform logger must be uniform across batches too.
    for est in estimators:
        if isinstance(est, Replay) and totals.pmax - totals.pmin > est.rtol * totals.pmax:
            raise SchemaError(
                f"Replay needs a uniformly random logger, but pscore ranges over [{totals.pmin:.6g}, "
                f"{totals.pmax:.6g}] across the logs; use SNIPS or DR instead"
            )


def _score_batch(
    batch: dict[str, np.ndarray], *, spec: LogSpec, policy: Policy, featurizer: Any
) -> dict[str, np.ndarray]:
    rows = batch_rows(batch, spec, None, check=False)
    n, k = rows.query_ids.shape[0], len(spec.models)
    x = features_of(rows, featurizer)
    dist = np.asarray(policy.action_probabilities(x), dtype=np.float64)
    if dist.shape != (n, k):
        raise ShapeError(
            f"{type(policy).__name__}.action_probabilities returned shape {dist.shape}, expected ({n}, {k})"
        )
    best = dist.argmax(axis=1)
    out: dict[str, np.ndarray] = {S.QUERY_ID: rows.query_ids}
    if spec.has_model:
        out[S.MODEL] = np.asarray(spec.models, dtype=object)[rows.action]
        out["target_probability"] = dist[np.arange(n), rows.action]
    for col in (S.LOGGED, S.PROPENSITY):
        if col in batch:
            out[col] = batch[col]
    out["chosen_model"] = np.asarray(spec.models, dtype=object)[best]
    out["chosen_probability"] = dist[np.arange(n), best]
    out["action_probabilities"] = dist
    return out


def score_policy(
    policy: Policy,
    dataset_path: Logs,
    *,
    models: Sequence[str] | None = None,
    featurizer: Featurizer | None = None,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    batch_size: int | None = DEFAULT_BATCH_SIZE,
    seed: int = 0,
) -> ray.data.Dataset:
    """``policy``'s action distribution for every row of a large log, as a lazy ``ray.data.Dataset``.

    Args:
        policy: the :class:`~routing_env.policy.Policy` to score.
        dataset_path: parquet path, folder, glob, list of them, or a ``ray.data.Dataset`` (canonical columns;
            only ``query_id`` and the features, or ``prompt`` with a featurizer, are needed).
        models: must equal ``policy.models`` (the default).
        featurizer: features from ``prompt``/``task`` per batch; an unfitted one is fitted first on a sample of at
            most ``sample_size`` distinct queries (one eager pass).
        sample_size: queries the featurizer is fitted on.
        batch_size: rows per ``map_batches`` call; ``None`` passes Ray's blocks whole.
        seed: seed of the sample.

    Returns:
        One row per input row: ``query_id``; ``model`` and ``target_probability`` (the policy's probability of
        that row's model) when the log has a ``model`` column; ``logged`` and ``propensity`` when present;
        ``chosen_model`` (the most probable model, ties to the first in ``models``) and ``chosen_probability``;
        ``action_probabilities`` (K,) in ``models`` order. Write it with ``.write_parquet(folder)`` or iterate it.
    """
    _check_rows(sample_size, batch_size)
    names = _models_of(policy, models)
    ds, spec = open_logs(dataset_path, names, featurizer, bandit=False)
    if featurizer is not None and not is_fitted(featurizer):
        fit_featurizer(featurizer, draw_sample(ds, spec, sample_size, seed, batch_size))
    _check_width(policy, spec, featurizer)
    return ds.map_batches(
        _score_batch,
        batch_size=batch_size,
        batch_format="numpy",
        fn_kwargs={"spec": spec, "policy": policy, "featurizer": featurizer},
    )
