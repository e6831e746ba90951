"""Contextual bandits with disjoint ridge-regression arms: LinUCB, linear Thompson sampling, ε-greedy, softmax.

Every bandit here keeps, per arm ``k`` (one arm per model), a ridge regression of the outcome on the query
features ``x`` (plus a constant when ``fit_intercept``)::

    A_k = ridge·I + Σ x xᵀ        θ_k = A_k⁻¹ Σ y x

Single-row updates use the Sherman–Morrison identity on ``A_k⁻¹`` and the matching rank-one step on ``θ_k``; the
exact sums ``A_k`` and ``Σ y x`` are accumulated on the side (rows are buffered and folded in in bulk) and
``A_k⁻¹`` and ``θ_k`` are recomputed from them by a Cholesky factorisation every ``refresh_every`` single-row
updates and after every bulk update, so rounding drift cannot build up over millions of updates.

Two ways to learn:

- **cost-aware** (``fit(dataset, cost_weight=…)`` or ``update_outcomes(features, actions, quality, cost)``): one
  regression for quality and one for cost (USD) per arm, sharing ``A_k``. Arms are scored by
  ``q̂ − cost_weight · ĉ / cost_scale``, so ``cost_weight`` (λ) can change at decision time without retraining —
  set the attribute, or pass ``cost_weight=`` to :meth:`action_probabilities`.
- **reward-only** (``update(features, actions, rewards)``): one regression of the scalar reward per arm.

A bandit uses one of the two, fixed by its first ``fit``/``update``; mixing them raises
:class:`~routing_env.errors.ConfigurationError`.

Shapes: ``features (n, d)`` (a single ``(d,)`` vector is a batch of one), ``actions (n,)`` int indices into
``models``, ``rewards``/``quality`` ``(n,)`` and ``cost (n,)`` USD. ``act`` returns ``(actions (n,) int64,
propensities (n,) float64)``; ``action_probabilities`` returns ``(n, K) float64`` with rows summing to 1.

Policies are not thread-safe: a server must serialise calls to one instance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from scipy import linalg as sla

from agents.routers._common import (
    _check_models_arg,
    _finite,
    _scalar_action,
    _scalar_value,
    blind,
    cost_only_columns,
    draw,
    featurize_prompts,
)
from agents.routers._cv import (
    Objective,
    Tunable,
    make_folds,
    outcome_weights,
    pick,
    ridge_oof,
    standardizer,
)
from agents.routers._kernels import (
    rank_one_update,
)
from routing_env.data.dataset import LoggedDataset
from routing_env.errors import (
    ConfigurationError,
    ShapeError,
)
from routing_env.policy import (
    check_features,
    check_models,
)

Mode = Literal["none", "reward", "outcomes"]
# Batches up to this size are learned row by row (rank-one updates); larger ones by an exact bulk solve.
_SEQUENTIAL_MAX = 32
# Rows of (K, n, p) work arrays per chunk in batched scoring, to bound memory.
_CHUNK = 2048
#: Ridge penalties cross-validation tries, as multiples of an arm's training rows (most regularised first).
RIDGE_GRID = (10.0, 3.0, 1.0, 0.3, 0.1, 0.03, 0.01, 1e-3, 1e-4)


# ---------------------------------------------------------------------------------------------- base class
@dataclass(eq=False, kw_only=True)
class _LinearBandit(Tunable):
    """Shared state and learning rule of the disjoint linear bandits (see the module docstring).

    Hyperparameters (keyword only):
        ridge: prior precision of each arm's weights (> 0); larger = more shrinkage and slower initial learning.
            ``None`` (default): :meth:`fit` chooses it by grouped cross-validation on the training logs
            (:mod:`agents.routers._cv`), among multiples 1e-4 … 10 of each model's number of training rows; a
            bandit that is not fitted, or fitted with ``tune=False``, uses 1.0. The value in use is ``ridge_``.
        standardize: :meth:`fit` rescales each feature to mean 0, variance 1 on the training logs (kept for every
            later call), so that the features' scale never decides the regularisation, and shrinks each arm
            towards its mean outcome there instead of towards 0 (with ``fit_intercept``).
        cost_weight: λ, quality points one ``cost_scale`` of USD is worth (≥ 0). Used by cost-aware learning only.
        cost_scale: USD charged per unit of ``cost_weight``. ``None`` (default): :meth:`fit` uses the dataset's
            ``resolve_cost_scale("max_mean")`` (the mean cost of its most expensive model); a bandit that only
            learns online with ``update_outcomes`` then uses 1.0 USD.
        fit_intercept: add a constant feature.
        refresh_every: single-row updates between exact recomputations of ``A⁻¹`` and ``θ`` (1 … 65,536).
        models: the K model names; needed before the first ``act``/``update`` when the bandit is not ``fit``.
        seed: seed of the policy's random generator (exploration draws and tie-breaking).
        featurizer: optional text featurizer (``transform(prompts) -> (n, d)``, ``save(dir)``) saved with the policy.
        tune, cv, cv_cost_weights: the cross-validation (see :class:`agents.routers._cv.Tunable`).

    Only the ridge penalty (and LinUCB's ``alpha`` on bandit logs, where it changes the greedy choice) is chosen
    from data: Thompson sampling's posterior scale, ε and the softmax temperature buy exploration, whose value
    logged outcomes cannot show.
    """

    chosen_names: ClassVar[tuple[str, ...]] = ("ridge_",)

    ridge: float | None = None
    standardize: bool = True
    cost_weight: float = 0.0
    cost_scale: float | None = None
    fit_intercept: bool = True
    refresh_every: int = 4096
    models: tuple[str, ...] = ()
    seed: int | None = 0
    featurizer: Any = field(default=None, repr=False)

    n_features: int | None = field(default=None, init=False)
    mode: Mode = field(default="none", init=False)
    cost_scale_: float = field(default=1.0, init=False)
    n_updates: int = field(default=0, init=False)
    ridge_: float = field(default=1.0, init=False)
    cv_score_: float | None = field(default=None, init=False)
    #: Feature columns left out (set to 0): the ``length:…`` columns of the training features (see ``fit``).
    cost_only_columns_: tuple[int, ...] = field(default=(), init=False, repr=False)

    def __post_init__(self) -> None:
        if self.ridge is not None:
            self.ridge = _finite("ridge", self.ridge, 0.0, strict=True)
        self.ridge_ = 1.0 if self.ridge is None else self.ridge
        if not isinstance(self.standardize, (bool, np.bool_)):
            raise ConfigurationError(f"standardize must be True or False, got {self.standardize!r}")
        self._validate_cv()
        self.cost_weight = _finite("cost_weight", self.cost_weight, 0.0)
        if self.cost_scale is not None:
            self.cost_scale = _finite("cost_scale", self.cost_scale, 0.0, strict=True)
            self.cost_scale_ = self.cost_scale
        if not isinstance(self.refresh_every, (int, np.integer)) or not 1 <= int(self.refresh_every) <= 65536:
            raise ConfigurationError(
                f"refresh_every must be an int in [1, 65536], got {self.refresh_every!r}"
            )
        self.refresh_every = int(self.refresh_every)
        if self.seed is not None and not isinstance(self.seed, (int, np.integer)):
            raise ConfigurationError(f"seed must be an int or None, got {self.seed!r}")
        self.models = _check_models_arg(self.models)
        self._validate()
        self._rng = np.random.default_rng(self.seed)
        self._w_cached = math.nan
        self._alloc_done = False
        # Feature standardisation (fit on the training logs; None = identity) and each arm's prior mean.
        self._shift: np.ndarray | None = None
        self._unit: np.ndarray | None = None
        self._mq = np.zeros(len(self.models))
        self._mc = np.zeros(len(self.models))

    def _validate(self) -> None:
        """Subclasses check their own hyperparameters here."""

    # ------------------------------------------------------------------ sizing and state
    @property
    def n_models(self) -> int:
        return len(self.models)

    def _hyperparameters(self) -> dict[str, Any]:
        return {
            "ridge": self.ridge,
            "standardize": self.standardize,
            **self._cv_hyperparameters(),
            "cost_weight": self.cost_weight,
            "cost_scale": self.cost_scale,
            "fit_intercept": self.fit_intercept,
            "refresh_every": self.refresh_every,
            "seed": self.seed,
        }

    def _allocate(self, n_features: int) -> None:
        if not self.models:
            raise ConfigurationError(
                f"{type(self).__name__} does not know its models yet: call fit(dataset) or construct it with "
                "models=[...]"
            )
        k, d = len(self.models), int(n_features)
        p = d + int(self.fit_intercept)
        self.n_features = d
        self._d, self._p = d, p
        self._k, self._kp = k, k * p
        eye = np.eye(p) * self.ridge_
        self._A = np.repeat(eye[None], k, axis=0)
        # A⁻¹ of every arm and the score weights live in one (K·p + K, p) array, so that one matrix-vector
        # product gives A⁻¹x for every arm and every arm's mean score: per-call overhead dominates at d ≈ 64.
        self._stack = np.zeros((k * p + k, p))
        self._Ainv = self._stack[: k * p].reshape(k, p, p)
        self._Ainv[:] = np.eye(p) / self.ridge_
        self._teff = self._stack[k * p :]
        self._bq = np.zeros((k, p))
        self._bc = np.zeros((k, p))
        # Reward-only (and not yet learning) bandits score with θ directly, so θ is the stacked weights.
        self._tq = self._teff
        self._tc = np.zeros((k, p))
        self._w_cached = math.nan
        self._counts = np.zeros(k, dtype=np.int64)
        self._buf_x = np.zeros((self.refresh_every, p))
        self._buf_a = np.zeros(self.refresh_every, dtype=np.int64)
        self._buf_q = np.zeros(self.refresh_every)
        self._buf_c = np.zeros(self.refresh_every)
        self._buf_n = 0
        self._x1 = np.ones(p)
        if self._mq.shape != (k,):
            self._mq, self._mc = np.zeros(k), np.zeros(k)
        self._alloc_done = True

    def _ensure(self, width: int) -> None:
        if not self._alloc_done:
            self._allocate(width)

    def _set_mode(self, mode: Mode) -> None:
        if self.mode == mode:
            return
        if self.mode != "none":
            if self.mode == "outcomes":
                learned, call = (
                    "quality and cost separately",
                    "update_outcomes(features, actions, quality, cost)",
                )
            else:
                learned, call = "scalar rewards", "update(features, actions, rewards)"
            raise ConfigurationError(
                f"{type(self).__name__} already learns {learned}; keep calling {call} "
                "(one bandit cannot mix reward-only and cost-aware learning)"
            )
        self.mode = mode
        if mode == "outcomes":
            # Quality weights get their own array; the stacked weights become θ_q − (λ/scale)·θ_c.
            self._tq = self._teff.copy()
            self._w_cached = math.nan

    def _weights(self, cost_weight: float | None = None) -> np.ndarray:
        """``(K, p)`` score weights: θ_q − (λ/scale)·θ_c (cost-aware) or θ_r (reward-only)."""
        if self.mode != "outcomes":
            if cost_weight is not None and self.mode == "reward":
                raise ConfigurationError(
                    f"cost_weight={cost_weight!r} cannot apply: this bandit learned scalar rewards with update(); "
                    "learn with fit() or update_outcomes() to change λ at decision time"
                )
            return self._teff
        if cost_weight is not None:
            w = _finite("cost_weight", cost_weight, 0.0) / self._scale()
            return self._tq - w * self._tc
        w = self.cost_weight / self._scale()
        if w != self._w_cached:
            # λ was changed on the instance: rebuild the cached score weights once.
            _finite("cost_weight", self.cost_weight, 0.0)
            np.subtract(self._tq, w * self._tc, out=self._teff)
            self._w_cached = w
        return self._teff

    def _scale(self) -> float:
        return self.cost_scale_

    # ------------------------------------------------------------------ input handling
    def _fast_row(self, features: Any) -> np.ndarray | None:
        """The intercept-extended row buffer for a single ``(d,)`` or ``(1, d)`` float array, else ``None``."""
        if type(features) is not np.ndarray or features.dtype.kind != "f":
            return None
        if not self._alloc_done:
            return None
        shape = features.shape
        if shape == (self._d,):
            row = features
        elif shape == (1, self._d):
            row = features[0]
        else:
            return None
        if self._unit is not None:
            assert self._shift is not None
            out = self._x1[: self._d]
            np.subtract(row, self._shift, out=out)
            out /= self._unit
        elif self.fit_intercept or self.cost_only_columns_:
            self._x1[: self._d] = row
        else:
            return row
        if self.cost_only_columns_:
            # Cost-only columns standardise to 0 (they were 0 in training): zeroed in the buffer, no copy per call.
            self._x1[list(self.cost_only_columns_)] = 0.0
        return self._x1 if self.fit_intercept else self._x1[: self._d]

    def _batch(self, features: Any) -> np.ndarray:
        """``(n, p)`` float64 design rows for ``features (n, d)``."""
        if self._alloc_done:
            x = check_features(features, self._d)
        else:
            x = check_features(features, None)
            self._ensure(x.shape[1])
        x = blind(x, self.cost_only_columns_)
        if self._unit is not None:
            x = (x - self._shift) / self._unit
        if self.fit_intercept:
            x = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
        return x

    # ------------------------------------------------------------------ statistics
    def _mean_var(
        self, X1: np.ndarray, weights: np.ndarray, need_var: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(n, K)`` posterior mean score and ``xᵀA⁻¹x`` of every arm."""
        if X1.shape[0] == 1 and weights is self._teff:
            # One row with the stored weights (a server's request): one product with the stacked [A⁻¹; θ] gives
            # A⁻¹x of every arm and the means, as in the single-round choice.
            x1 = X1[0]
            v = self._stack @ x1
            var1 = v[: self._kp].reshape(self._k, self._p) @ x1
            np.maximum(var1, 0.0, out=var1)
            return v[None, self._kp :], var1[None]
        mean = X1 @ weights.T
        if not need_var:
            return mean, mean
        var = np.empty_like(mean)
        for s in range(0, X1.shape[0], _CHUNK):
            xs = X1[s : s + _CHUNK]
            z = np.matmul(xs[None], self._Ainv)  # (K, m, p)
            var[s : s + _CHUNK] = np.einsum("kmp,mp->mk", z, xs)
        np.maximum(var, 0.0, out=var)
        return mean, var

    # ------------------------------------------------------------------ the policy interface
    def act(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Choose a model per row: ``features (n, d)`` → ``(actions (n,) int64, propensities (n,) float64)``.

        Draws come from the policy's seeded generator. A bandit that is neither fitted nor updated sizes itself
        here (it needs ``models``).
        """
        x1 = self._fast_row(features)
        if x1 is not None:
            a, p = self._choose_one(x1)
            return np.array([a], dtype=np.int64), np.array([p])
        X1 = self._batch(features)
        return self._choose_batch(X1)

    def action_probabilities(self, features: np.ndarray, cost_weight: float | None = None) -> np.ndarray:
        """``(n, K) float64`` probability of each model per row of ``features (n, d)``; rows sum to 1.

        ``cost_weight`` overrides λ for this call (cost-aware learning only).
        """
        if cost_weight is None:
            x1 = self._fast_row(features)
            if x1 is not None:
                probs = self._probabilities_one(x1)
                if probs is not None:
                    return probs
        X1 = self._batch(features)
        return self._probabilities(X1, self._weights(cost_weight))

    def _probabilities_one(self, x1: np.ndarray) -> np.ndarray | None:
        """``(1, K)`` probabilities of one design row with the stored weights (a fast path; ``None`` = take the
        general one, which also reports bad input)."""
        return None

    def update(self, features: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        """Learn scalar ``rewards (n,)`` of the chosen ``actions (n,)`` on ``features (n, d)``."""
        x1 = self._fast_row(features)
        if x1 is not None and self.mode == "reward":
            a = _scalar_action(actions, self.n_models)
            r = _scalar_value(rewards, "rewards")
            self._update_one(x1, a, r, 0.0)
            return
        X1, acts, (r_arr,) = self._check_update(features, actions, (("rewards", rewards),))
        self._set_mode("reward")
        self._update_many(X1, acts, r_arr, np.zeros_like(r_arr))

    def update_outcomes(
        self, features: np.ndarray, actions: np.ndarray, quality: np.ndarray, cost: np.ndarray
    ) -> None:
        """Learn ``quality (n,)`` in [0, 1] and ``cost (n,)`` USD of the chosen ``actions (n,)`` separately."""
        x1 = self._fast_row(features)
        if x1 is not None and self.mode == "outcomes":
            a = _scalar_action(actions, self.n_models)
            q = _scalar_value(quality, "quality")
            c = _scalar_value(cost, "cost")
            if c < 0:
                raise ConfigurationError(f"cost must be ≥ 0 USD, got {c!r}")
            self._update_one(x1, a, q, c)
            return
        X1, acts, (q_arr, c_arr) = self._check_update(
            features, actions, (("quality", quality), ("cost", cost))
        )
        if (c_arr < 0).any():
            raise ConfigurationError(f"cost must be ≥ 0 USD, got {c_arr[c_arr < 0][0]!r}")
        self._set_mode("outcomes")
        self._update_many(X1, acts, q_arr, c_arr)

    def _check_update(
        self, features: Any, actions: Any, values: tuple[tuple[str, Any], ...]
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        X1 = self._batch(features)
        n = X1.shape[0]
        acts = np.asarray(actions)
        if acts.ndim == 0:
            acts = acts[None]
        if acts.shape != (n,):
            raise ShapeError(f"actions must have shape ({n},) to match features, got {acts.shape}")
        if acts.dtype.kind not in "iu" and not (acts.dtype.kind == "f" and np.all(acts == np.round(acts))):
            raise ShapeError(f"actions must be integer model indices, got dtype {acts.dtype}")
        acts = acts.astype(np.int64)
        k = self.n_models
        if ((acts < 0) | (acts >= k)).any():
            raise ShapeError(f"actions must lie in [0, {k}), got {acts[(acts < 0) | (acts >= k)][0]}")
        out = []
        for name, v in values:
            arr = np.asarray(v, dtype=np.float64)
            if arr.ndim == 0:
                arr = arr[None]
            if arr.shape != (n,):
                raise ShapeError(f"{name} must have shape ({n},) to match features, got {arr.shape}")
            if not np.isfinite(arr).all():
                raise ConfigurationError(f"{name} must be finite, got {arr[~np.isfinite(arr)][0]!r}")
            out.append(arr)
        return X1, acts, out

    # ------------------------------------------------------------------ learning
    def _update_one(self, x: np.ndarray, a: int, q: float, c: float) -> None:
        """Rank-one update of arm ``a`` with design row ``x (p,)`` (already intercept-extended)."""
        status = rank_one_update(
            self._Ainv[a],
            x,
            self._tq[a],
            self._tc[a],
            self._teff[a],
            q,
            c,
            self._w_cached,
            self.mode == "outcomes",
        )
        if status:
            raise ShapeError("features must be finite, got NaN or inf")
        i = self._buf_n
        self._buf_x[i] = x
        self._buf_a[i] = a
        self._buf_q[i] = q
        self._buf_c[i] = c
        self._buf_n = i + 1
        self.n_updates += 1
        if self._buf_n == self.refresh_every:
            self._flush(refresh=True)

    def _update_many(self, X1: np.ndarray, acts: np.ndarray, q: np.ndarray, c: np.ndarray) -> None:
        if X1.shape[0] <= _SEQUENTIAL_MAX:
            for i in range(X1.shape[0]):
                self._update_one(X1[i], int(acts[i]), float(q[i]), float(c[i]))
            return
        self._flush(refresh=False)
        self._accumulate(X1, acts, q, c, np.ones(X1.shape[0]))
        self.n_updates += X1.shape[0]

    def _accumulate(
        self, X1: np.ndarray, acts: np.ndarray, q: np.ndarray, c: np.ndarray, w: np.ndarray
    ) -> None:
        """Add weighted rows to the exact sums and recompute the touched arms exactly."""
        touched = np.unique(acts)
        for a in touched:
            m = acts == a
            xa = X1[m]
            wa = w[m]
            xw = xa * wa[:, None]
            self._A[a] += xw.T @ xa
            self._bq[a] += xw.T @ (q[m] - self._mq[a])
            self._bc[a] += xw.T @ (c[m] - self._mc[a])
            self._counts[a] += int(m.sum())
        self._solve(touched)

    def _flush(self, refresh: bool) -> None:
        """Fold buffered single-row updates into the exact sums; with ``refresh``, recompute those arms."""
        n = self._buf_n
        if n == 0:
            return
        X = self._buf_x[:n]
        acts = self._buf_a[:n]
        touched = np.unique(acts)
        self._counts += np.bincount(acts, minlength=self._k)
        for a in touched:
            m = acts == a
            xa = X[m]
            self._A[a] += xa.T @ xa
            self._bq[a] += xa.T @ (self._buf_q[:n][m] - self._mq[a])
            self._bc[a] += xa.T @ (self._buf_c[:n][m] - self._mc[a])
        self._buf_n = 0
        if refresh:
            self._solve(touched)

    def _solve(self, arms: np.ndarray) -> None:
        eye = np.eye(self._p)
        for a in arms:
            factor = sla.cho_factor(self._A[a], lower=True, check_finite=False)
            ainv = sla.cho_solve(factor, eye, check_finite=False)
            self._Ainv[a] = 0.5 * (ainv + ainv.T)
            self._tq[a] = sla.cho_solve(factor, self._bq[a], check_finite=False)
            self._tc[a] = sla.cho_solve(factor, self._bc[a], check_finite=False)
            if self.fit_intercept:
                # The sums hold outcomes minus the arm's prior mean; the constant feature carries it back. A
                # rank-one step on the raw outcome then moves these weights exactly as one on the centred sums.
                self._tq[a, -1] += self._mq[a]
                self._tc[a, -1] += self._mc[a]
        if self.mode == "outcomes":
            self._w_cached = math.nan

    # ------------------------------------------------------------------ warm start
    def fit(
        self,
        dataset: LoggedDataset,
        cost_weight: float | None = None,
        *,
        featurizer: Any = None,
        max_importance_weight: float | None = None,
    ) -> _LinearBandit:
        """Warm-start the per-arm quality and cost regressions from logged outcomes (resets learned state).

        - Full-information logs: every (query, model) cell trains that model's arm.
        - Bandit logs (``dataset.has_propensities`` and not full information): only the logged action's row
          trains its arm, weighted by ``1/propensity`` (optionally clipped at ``max_importance_weight``) and
          rescaled to average 1 per arm, which corrects the logging policy's covariate shift without inflating
          the arm's effective sample size.
        - Other partial logs: every observed cell, unweighted.

        With ``standardize`` the features are standardised on ``dataset`` first; with ``tune`` the hyperparameters
        left at ``None`` are chosen by grouped cross-validation on ``dataset`` (``ridge_``, ``cv_score_``).

        Args:
            dataset: logs over the same models (order matters) as ``self.models`` when those were given.
            cost_weight: λ to route with afterwards (default: keep ``self.cost_weight``).
            featurizer: the featurizer that produced ``dataset.features``, saved with the policy.
            max_importance_weight: clip of ``1/propensity`` (> 0) for bandit logs.

        Returns:
            ``self``.
        """
        if not isinstance(dataset, LoggedDataset):
            raise ConfigurationError(f"fit expects a LoggedDataset, got {type(dataset).__name__}")
        if self.models:
            check_models(self.models, dataset.models)
        if cost_weight is not None:
            self.cost_weight = _finite("cost_weight", cost_weight, 0.0)
        if featurizer is not None:
            self.featurizer = featurizer
        if max_importance_weight is not None:
            max_importance_weight = _finite("max_importance_weight", max_importance_weight, 0.0, strict=True)
        self.models = dataset.models
        self.cost_scale_ = (
            float(self.cost_scale) if self.cost_scale is not None else dataset.resolve_cost_scale("max_mean")
        )
        weight = outcome_weights(dataset, max_importance_weight)
        quality = np.nan_to_num(dataset.quality)
        cost = np.nan_to_num(dataset.cost)
        # Columns that describe the call's size (length:…) are left out of the quality and cost ridges: a
        # CostModel reads them (and they shift between logs more than they predict quality).
        self.cost_only_columns_ = cost_only_columns(dataset.feature_names)
        self._set_standardization(
            blind(np.asarray(dataset.features, dtype=np.float64), self.cost_only_columns_)
        )
        if self.fit_intercept:
            total = np.maximum(weight.sum(axis=0), 1e-300)
            self._mq, self._mc = (weight * quality).sum(axis=0) / total, (weight * cost).sum(axis=0) / total
        else:
            self._mq, self._mc = np.zeros(dataset.n_models), np.zeros(dataset.n_models)
        self._alloc_done = False
        X1 = self._batch(dataset.features)
        self.cv_score_ = None
        self.ridge_ = 1.0 if self.ridge is None else self.ridge
        if self.tune:
            self._tune(dataset, X1, weight)
        self._allocate(dataset.n_features)
        self.mode = "none"
        self._set_mode("outcomes")
        self.n_updates = 0
        rows, arms = np.nonzero(weight > 0)
        self._accumulate(X1[rows], arms, quality[rows, arms], cost[rows, arms], weight[rows, arms])
        return self

    def _set_standardization(self, x: np.ndarray) -> None:
        if self.standardize and x.shape[0] > 1:
            self._shift, self._unit = standardizer(x, center=self.fit_intercept)
        else:
            self._shift = self._unit = None

    def _tuned_names(self) -> tuple[str, ...]:
        """The hyperparameters this fit chooses by cross-validation."""
        return ("ridge",) if self.ridge is None else ()

    def _tune(self, dataset: LoggedDataset, X1: np.ndarray, weight: np.ndarray) -> None:
        """Choose ``ridge_`` (and what subclasses add through :meth:`_cv_bonus`) by grouped cross-validation."""
        folds = make_folds(dataset, self.cv, self.seed)
        objective = Objective(dataset, self.cv_cost_weights or (self.cost_weight,), self.cost_scale_)
        n_arm = float(np.median(weight.sum(axis=0)))
        ridges = [self.ridge] if self.ridge is not None else [max(n_arm, 1.0) * r for r in RIDGE_GRID]
        (q, c), widths = ridge_oof(
            X1,
            [dataset.quality, dataset.cost],
            folds,
            ridges,
            weight,
            center_targets=self.fit_intercept,
            widths=True,
        )
        assert widths is not None
        options, scores = [], []
        for i, r in enumerate(ridges):
            for extra, bonus in self._cv_bonus(widths[i]):
                options.append((r, extra))
                scores.append(objective.score(q[i], c[i], bonus))
        choice = pick(options, scores, objective.metric)
        i = ridges.index(choice.value[0])
        self._cv_oof = (q[i], c[i])
        self.ridge_ = float(choice.value[0])
        self._apply_cv_extra(choice.value[1])
        self.cv_score_ = choice.score

    def _chosen(self) -> dict[str, Any]:
        """JSON-able values a subclass chose on fit (saved with the policy)."""
        return {}

    def _restore_chosen(self, chosen: dict[str, Any]) -> None:
        """Inverse of :meth:`_chosen`."""

    def _cv_bonus(self, width: np.ndarray) -> list[tuple[Any, np.ndarray | None]]:
        """``(value, bonus (n, K))`` pairs of a subclass's tuned exploration (none by default)."""
        return [(None, None)]

    def _apply_cv_extra(self, value: Any) -> None:
        """Subclasses store what :meth:`_cv_bonus` offered and cross-validation chose."""

    def fit_rewards(self, features: np.ndarray, rewards: np.ndarray) -> _LinearBandit:
        """Warm-start reward-only learning (resets learned state) from ``rewards (n, K)`` of every model on
        ``features (n, d)``; NaN marks a model whose reward on that row is unknown. Needs ``models``.
        Standardises the features with ``standardize``; the penalty is ``ridge`` (1.0 when ``None``).
        Returns ``self``."""
        if not self.models:
            raise ConfigurationError(f"{type(self).__name__}.fit_rewards needs models=[...] at construction")
        x = check_features(features, None)
        r = np.asarray(rewards, dtype=np.float64)
        if r.shape != (x.shape[0], self.n_models):
            raise ShapeError(
                f"rewards must have shape (n, K) = ({x.shape[0]}, {self.n_models}), got {r.shape}"
            )
        if np.isinf(r).any():
            raise ConfigurationError("rewards must be finite or NaN (unknown), got ±inf")
        self._set_standardization(x)
        seen = ~np.isnan(r)
        with np.errstate(invalid="ignore"):
            mean = np.nan_to_num(np.nanmean(r, axis=0)) if self.fit_intercept else np.zeros(self.n_models)
        self._mq, self._mc = mean, np.zeros(self.n_models)
        self.ridge_ = 1.0 if self.ridge is None else self.ridge
        self._allocate(x.shape[1])
        self.mode = "none"
        self._set_mode("reward")
        self.n_updates = 0
        X1 = self._batch(x)
        rows, arms = np.nonzero(seen)
        self._accumulate(X1[rows], arms, r[rows, arms], np.zeros(rows.size), np.ones(rows.size))
        return self

    # ------------------------------------------------------------------ per-algorithm rules
    def _choose_one(self, x1: np.ndarray) -> tuple[int, float]:
        raise ConfigurationError(f"{type(self).__name__} does not define a choice rule")  # pragma: no cover

    def _choose_batch(self, X1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return draw(self._probabilities(X1, self._weights()), self._rng)

    def _probabilities(self, X1: np.ndarray, weights: np.ndarray) -> np.ndarray:
        raise ConfigurationError(f"{type(self).__name__} does not define probabilities")  # pragma: no cover

    def _choose_one_checked(self, x1: np.ndarray) -> tuple[int, float]:
        """Careful path of a single choice, taken when the fast path met a non-finite score."""
        if not np.isfinite(x1).all():
            raise ShapeError("features must be finite, got NaN or inf")
        actions, props = self._choose_batch(x1[None])
        return int(actions[0]), float(props[0])

    def _argmax_tie(self, scores: np.ndarray) -> tuple[int, int]:
        """Index of the best score, ties broken with the policy's generator, and the number of tied arms."""
        a = int(scores.argmax())
        top = scores[a]
        if not math.isfinite(float(top)):
            raise ShapeError("features must be finite, got NaN or inf")
        n_ties = int(np.count_nonzero(scores == top))
        if n_ties > 1:
            a = int(self._rng.choice(np.flatnonzero(scores == top)))
        return a, n_ties

    # ------------------------------------------------------------------ convenience
    def featurize(self, prompts: Sequence[str]) -> np.ndarray:
        """``(n, d)`` features of ``prompts`` from the policy's featurizer."""
        return featurize_prompts(self, prompts)

    def estimates(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Posterior means per model for ``features (n, d)``: ``quality``/``cost`` (cost-aware) or ``reward``,
        each ``(n, K)``, and ``width`` ``(n, K)`` = ``sqrt(xᵀA⁻¹x)``."""
        X1 = self._batch(features)
        if self.mode == "outcomes":
            mq, var = self._mean_var(X1, self._tq)
            return {"quality": mq, "cost": X1 @ self._tc.T, "width": np.sqrt(var)}
        mr, var = self._mean_var(X1, self._tq)
        return {"reward": mr, "width": np.sqrt(var)}

    def predict_outcomes(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean ``quality (n, K)`` and ``cost (n, K)`` USD for ``features (n, d)`` (cost-aware learning
        only: a bandit that learned scalar rewards has no separate estimates)."""
        if self.mode != "outcomes":
            raise ConfigurationError(
                f"{type(self).__name__} has no quality and cost estimates: it "
                + ("learned scalar rewards with update()" if self.mode == "reward" else "has not learned yet")
                + "; fit() or update_outcomes() learns them"
            )
        X1 = self._batch(features)
        return X1 @ self._tq.T, X1 @ self._tc.T

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the policy to directory ``path`` (JSON + npz, no pickle) and return it.

        Everything that determines future behaviour is saved — weights, exact sums, the pending buffer and the
        generator state — so loading and replaying the same calls reproduces the same state bit for bit.
        """
        from agents.routers._linear_io import save_bandit

        return save_bandit(self, path)

    @classmethod
    def load(cls, path: str | Path) -> Any:
        """Restore a policy written by :meth:`save` (also reachable through ``routing_env.policy.load_policy``)."""
        from agents.routers._linear_io import load_bandit

        return load_bandit(cls, path)
