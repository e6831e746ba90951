"""Cross-fitted reward models for the Direct Method and the doubly robust estimators.

:class:`RewardModel` predicts ``q̂(x, a)`` for every round and every action. Predictions for a round always come
from models fitted on the *other* folds (cross-fitting), so a flexible regressor cannot memorise the rewards it
is later compared with, which would bias DM and DR.

The default regressor is tuned on the logged rows themselves: the features are standardised (mean and standard
deviation of each fold's training rows), and each action gets a ridge regression whose penalty is chosen from a
log-spaced grid (``alphas``, 10⁻² … 10⁵) by efficient leave-one-out cross-validation on that action's logged rows
(scikit-learn's ``RidgeCV``). A fixed penalty cannot suit every log: with few rows per action and many features
(a softmax logger over nine models, 78 text features) ``Ridge(alpha=1)`` over-fits, its residuals ``r − q̂`` are
larger than the rewards, and DR becomes noisier than the IPS it is meant to improve. The grid's top values shrink
an action to its mean reward when its features carry no signal, and its bottom values leave a well-determined fit
alone. Why this default: on 200 simulated logs from held-out LLMRouter queries (featurizer fitted on the train
file; softmax logger with a 0.2 exploration floor, softmax target) the tuned model brings DR's RMSE below IPS's,
where ``Ridge(alpha=1)`` left it above (``tests/ope/test_reward_model.py``).

By default one regressor is fitted per action (``per_action=True``): with K models and F folds that is K·F small
fits, each on the rows where that action was logged, and prediction is one ``predict`` per action and fold. It is
faster than a single model taking the action as input (which must predict n·K rows) and lets each model's outcome
depend on the features in its own way, which is what routing needs. ``per_action=False`` fits one regressor on
``[features, one-hot(action)]`` instead, which pools data when some actions are rarely logged.
An action with fewer than ``min_rows`` training rows in a fold falls back to its mean reward there (or to the
fold's overall mean when it was never logged).

:meth:`RewardModel.fit` keeps the F fitted fold models as a :class:`FittedRewardModel`, whose
:meth:`~FittedRewardModel.predict` serves rows that arrive later (e.g. block by block in
:mod:`routing_env.ope.distributed`): a row of fold f is predicted by the model fitted without fold f.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from routing_env.errors import ConfigurationError, ShapeError

#: Ridge penalties the default reward model chooses from (on standardised features): 10⁻² … 10⁵, half decades.
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 5, 15))


@dataclass(frozen=True)
class RewardModel:
    """Cross-fitted regression of the reward on features, per action.

    Args:
        regressor: an unfitted scikit-learn regressor (cloned for every fit); default ``RidgeCV(alphas)``, the
            penalty chosen by leave-one-out cross-validation on each fit's rows.
        n_folds: number of cross-fitting folds (≥ 2).
        per_action: one regressor per action (default) or one taking the action one-hot as input.
        min_rows: an action needs this many training rows in a fold to get its own regressor.
        clip: ``(low, high)`` range the predictions are clipped to (e.g. ``(0, 1)`` for click or correctness
            rewards), or ``None``.
        seed: seed of the fold assignment.
        alphas: penalty grid of the default regressor (positive, finite; ignored when ``regressor`` is given).
        standardize: centre and scale the features on each fold's training rows before fitting, so the penalty
            does not depend on the featurizer's units.
    """

    regressor: Any = None
    n_folds: int = 5
    per_action: bool = True
    min_rows: int = 5
    clip: tuple[float, float] | None = None
    seed: int = 0
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    standardize: bool = True

    def __post_init__(self) -> None:
        if int(self.n_folds) != self.n_folds or self.n_folds < 2:
            raise ConfigurationError(f"n_folds must be an integer ≥ 2 (cross-fitting), got {self.n_folds!r}")
        if int(self.min_rows) != self.min_rows or self.min_rows < 1:
            raise ConfigurationError(f"min_rows must be an integer ≥ 1, got {self.min_rows!r}")
        if self.regressor is not None and not (
            hasattr(self.regressor, "fit") and hasattr(self.regressor, "predict")
        ):
            raise ConfigurationError(
                f"regressor must be a scikit-learn style regressor with fit and predict, got {type(self.regressor).__name__}"
            )
        if self.clip is not None:
            lo, hi = self.clip
            if not float(lo) < float(hi):
                raise ConfigurationError(f"clip must be (low, high) with low < high, got {self.clip!r}")
        grid = np.asarray(self.alphas, dtype=np.float64)
        if grid.ndim != 1 or grid.size == 0 or not (np.isfinite(grid).all() and (grid > 0).all()):
            raise ConfigurationError(
                f"alphas must be a non-empty sequence of positive finite penalties, got {self.alphas!r}"
            )
        object.__setattr__(self, "alphas", tuple(float(a) for a in grid))

    def _new(self) -> Any:
        from sklearn.base import clone

        return clone(self.regressor)

    def folds(self, n: int) -> np.ndarray:
        """``(n,) int64`` fold of each round: a seeded balanced assignment."""
        rng = np.random.default_rng(self.seed)
        return rng.permutation(np.arange(n) % self.n_folds).astype(np.int64)

    def fit(
        self,
        features: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        n_actions: int,
        folds: np.ndarray | None = None,
    ) -> FittedRewardModel:
        """Fit one model per fold, each on the rounds outside that fold.

        Args:
            features: ``(n, d)`` contexts (``d`` may be 0: then per-action means are used).
            action: ``(n,)`` logged actions in ``[0, n_actions)``.
            reward: ``(n,)`` rewards of the logged actions.
            n_actions: K.
            folds: ``(n,) int`` fold of each round in ``[0, n_folds)``; default :meth:`folds`.

        Returns:
            The fitted fold models; ``predict(features, folds)`` gives each round the prediction of the model that
            did not see its fold.
        """
        x, a, r = self._check(features, action, reward, n_actions)
        n, k = x.shape[0], int(n_actions)
        if n < self.n_folds:
            raise ConfigurationError(
                f"cross-fitting with n_folds={self.n_folds} needs at least that many rounds, got {n}"
            )
        fold = self.folds(n) if folds is None else _check_folds(folds, n, self.n_folds)
        fitted = [self._fit_one(x[fold != f], a[fold != f], r[fold != f], k) for f in range(self.n_folds)]
        return FittedRewardModel(
            n_actions=k,
            n_features=x.shape[1],
            per_action=self.per_action,
            clip=self.clip,
            folds=tuple(fitted),
        )

    def fit_predict(
        self,
        features: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        n_actions: int,
        position: np.ndarray | None = None,
        n_positions: int | None = None,
    ) -> np.ndarray:
        """``(n, K)`` cross-fitted predictions ``q̂(x_i, a)`` for every round and action.

        Args:
            features: ``(n, d)`` contexts (``d`` may be 0: then per-action means are used).
            action: ``(n,)`` logged actions in ``[0, n_actions)``.
            reward: ``(n,)`` rewards of the logged actions.
            n_actions: K.
            position: ``(n,)`` slots; when given, their one-hot encoding is appended to the features (a slate's
                position changes the reward, e.g. click rates in the Open Bandit Dataset), and the predictions are
                for each round's own logged position.
            n_positions: number of slots P (default ``max(position) + 1``).
        """
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2:
            raise ShapeError(f"features must have shape (n, d), got {x.shape}")
        if position is not None:
            pos = np.asarray(position, dtype=np.int64)
            p = int(pos.max()) + 1 if n_positions is None else int(n_positions)
            x = np.hstack([x, np.eye(p)[pos]])
        fold = self.folds(x.shape[0])
        return self.fit(x, action, reward, n_actions, folds=fold).predict(x, fold)

    # ------------------------------------------------------------------ internals
    def _check(
        self, features: np.ndarray, action: np.ndarray, reward: np.ndarray, n_actions: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.asarray(features, dtype=np.float64)
        a = np.asarray(action, dtype=np.int64)
        r = np.asarray(reward, dtype=np.float64)
        if x.ndim != 2:
            raise ShapeError(f"features must have shape (n, d), got {x.shape}")
        n = x.shape[0]
        if a.shape != (n,) or r.shape != (n,):
            raise ShapeError(f"action and reward must have shape ({n},), got {a.shape} and {r.shape}")
        k = int(n_actions)
        if k < 1 or (n and (a.min() < 0 or a.max() >= k)):
            raise ConfigurationError(f"n_actions={n_actions} does not cover the logged actions")
        return x, a, r

    def _fit_one(self, x: np.ndarray, a: np.ndarray, r: np.ndarray, k: int) -> _FoldModel:
        d = x.shape[1]
        if self.standardize and d:
            center = x.mean(axis=0)
            spread = x.std(axis=0)
            # A constant column carries nothing; scaling it by 1 keeps it constant instead of dividing by 0.
            spread = np.where(spread > 0, spread, 1.0)
        else:
            center, spread = np.zeros(d), np.ones(d)
        z = (x - center) / spread
        grid = np.asarray(self.alphas)
        if not self.per_action:
            eye = np.eye(k)
            design = np.hstack([z, eye[a]])
            if self.regressor is not None:
                return _FoldModel(center, spread, custom=(self._new().fit(design, r),))
            w, b, alpha = ridge_loo(design, r, grid)
            # q̂(x, a) = z·w_x + w_a + b: the action's coefficient joins the intercept.
            coef = np.repeat(w[:d, None], k, axis=1)
            return _FoldModel(center, spread, coef, b + w[d:], np.full(1, alpha))
        overall = float(r.mean())
        coef = np.zeros((d, k))
        intercept = np.full(k, overall)
        alphas = np.full(k, np.nan)
        custom: list[Any] = []
        for j in range(k):
            rows = a == j
            count = int(rows.sum())
            model: Any = overall
            if count and (count < self.min_rows or d == 0 or np.ptp(r[rows]) == 0):
                # Too few rows for a regression, no features, or a constant reward: the mean is the best fit.
                model = intercept[j] = float(r[rows].mean())
            elif count:
                if self.regressor is None:
                    coef[:, j], intercept[j], alphas[j] = ridge_loo(z[rows], r[rows], grid)
                else:
                    model = self._new().fit(z[rows], r[rows])
            custom.append(model)
        if self.regressor is not None:
            return _FoldModel(center, spread, custom=tuple(custom))
        return _FoldModel(center, spread, coef, intercept, alphas)


def ridge_loo(x: np.ndarray, y: np.ndarray, alphas: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Ridge regression with an unpenalised intercept, its penalty chosen by exact leave-one-out error.

    One thin SVD of the centred design gives every penalty's fit and hat-matrix diagonal at once (the
    "efficient LOO" of scikit-learn's ``RidgeCV``, here without its per-penalty overhead): the LOO residual of
    row i is ``(y_i − ŷ_i) / (1 − h_ii)``.

    Args:
        x: ``(n, d)`` design.
        y: ``(n,)`` targets.
        alphas: ``(A,)`` positive penalties.

    Returns:
        ``(coef (d,), intercept, alpha)`` at the penalty of least mean squared LOO error (the smaller on ties).
    """
    n = x.shape[0]
    x_mean, y_mean = x.mean(axis=0), float(y.mean())
    u, s, vt = np.linalg.svd(x - x_mean, full_matrices=False)
    uty = u.T @ (y - y_mean)  # (r,)
    s2 = s * s
    shrink = s2[None, :] / (s2[None, :] + alphas[:, None])  # (A, r)
    fitted = u @ (shrink * uty).T  # (n, A): centred fitted values
    hat = 1.0 / n + (u * u) @ shrink.T  # (n, A)
    resid = (y - y_mean)[:, None] - fitted
    loo = resid / np.maximum(1.0 - hat, 1e-12)
    best = int(np.argmin(np.mean(loo * loo, axis=0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(s > 0, s / (s2 + alphas[best]), 0.0)
    coef = vt.T @ (gain * uty)
    return coef, y_mean - float(x_mean @ coef), float(alphas[best])


@dataclass(frozen=True)
class _FoldModel:
    """One fold's fit on standardised features ``z = (x − center) / spread``: the default ridge as ``q̂ = z @ coef
    + intercept`` (``coef (d, K)``, ``intercept (K,)``, the chosen penalties ``alphas``), or, for a user's
    regressor, per action a fitted regressor or a constant (one pooled regressor on ``[z, one-hot(action)]``
    when not per action)."""

    center: np.ndarray
    spread: np.ndarray
    coef: np.ndarray | None = None
    intercept: np.ndarray | None = None
    alphas: np.ndarray | None = None
    custom: tuple[Any, ...] = ()


@dataclass(frozen=True)
class FittedRewardModel:
    """The F fold models of a :class:`RewardModel` fit.

    Attributes:
        n_actions: K.
        n_features: d, the width :meth:`predict` expects.
        per_action: one regressor per action, or one pooled regressor per fold.
        clip: range the predictions are clipped to, or ``None``.
        folds: the fold models (internal).
    """

    n_actions: int
    n_features: int
    per_action: bool
    clip: tuple[float, float] | None
    folds: tuple[_FoldModel, ...] = field(repr=False)

    @property
    def n_folds(self) -> int:
        return len(self.folds)

    @property
    def alphas(self) -> np.ndarray:
        """``(F, K)`` the ridge penalty chosen for each fold and action by the default regressor (NaN where the
        fit is a constant or a user's regressor); ``(F, 1)`` for a pooled model."""
        width = self.n_actions if self.per_action else 1
        return np.array([np.full(width, np.nan) if f.alphas is None else f.alphas for f in self.folds])

    def predict(self, features: np.ndarray, folds: np.ndarray) -> np.ndarray:
        """``(n, K)`` predictions: round i by the model fitted without fold ``folds[i]``.

        Args:
            features: ``(n, d)`` contexts, the width the model was fitted on.
            folds: ``(n,) int`` fold of each round in ``[0, n_folds)``.
        """
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ShapeError(f"features must have shape (n, {self.n_features}), got {x.shape}")
        n, k = x.shape[0], self.n_actions
        fold = _check_folds(folds, n, self.n_folds)
        out = np.empty((n, k))
        for f, fm in enumerate(self.folds):
            rows = np.flatnonzero(fold == f)
            if rows.size == 0:
                continue
            z = (x[rows] - fm.center) / fm.spread
            if fm.coef is not None and fm.intercept is not None:
                out[rows] = z @ fm.coef + fm.intercept
            elif not self.per_action:
                m = rows.size
                stacked = np.hstack([np.repeat(z, k, axis=0), np.tile(np.eye(k), (m, 1))])
                out[rows] = np.asarray(fm.custom[0].predict(stacked), dtype=np.float64).reshape(m, k)
            else:
                for j, model in enumerate(fm.custom):
                    out[rows, j] = model if isinstance(model, float) else model.predict(z)
        if self.clip is not None:
            np.clip(out, self.clip[0], self.clip[1], out=out)
        return out


def _check_folds(folds: np.ndarray, n: int, n_folds: int) -> np.ndarray:
    fold = np.asarray(folds)
    if fold.shape != (n,) or not np.issubdtype(fold.dtype, np.integer):
        raise ShapeError(f"folds must be an integer array of shape ({n},), got {fold.dtype} {fold.shape}")
    if n and (fold.min() < 0 or fold.max() >= n_folds):
        raise ConfigurationError(
            f"folds must lie in [0, {n_folds}) (n_folds), got values in [{fold.min()}, {fold.max()}]"
        )
    return fold.astype(np.int64, copy=False)
