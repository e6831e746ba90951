"""Cross-fitted reward models for the Direct Method and the doubly robust estimators.

:class:`RewardModel` predicts ``q̂(x, a)`` for every round and every action. Predictions for a round always come
from models fitted on the *other* folds (cross-fitting), so a flexible regressor cannot memorise the rewards it
is later compared with, which would bias DM and DR.

By default one scikit-learn regressor is fitted per action (``per_action=True``): with K models and F folds that is
K·F small fits, each on the rows where that action was logged, and prediction is one ``predict`` per action and
fold. It is faster than a single model taking the action as input (which must predict n·K rows) and lets each
model's outcome depend on the features in its own way, which is what routing needs. ``per_action=False`` fits one
regressor on ``[features, one-hot(action)]`` instead, which pools data when some actions are rarely logged.
An action with fewer than ``min_rows`` training rows in a fold falls back to its mean reward there (or to the
fold's overall mean when it was never logged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from routing_env.errors import ConfigurationError, ShapeError


def _default_regressor() -> Any:
    from sklearn.linear_model import Ridge

    return Ridge(alpha=1.0)


@dataclass(frozen=True)
class RewardModel:
    """Cross-fitted regression of the reward on features, per action.

    Args:
        regressor: an unfitted scikit-learn regressor (cloned for every fit); default ``Ridge(alpha=1.0)``.
        n_folds: number of cross-fitting folds (≥ 2).
        per_action: one regressor per action (default) or one taking the action one-hot as input.
        min_rows: an action needs this many training rows in a fold to get its own regressor.
        clip: ``(low, high)`` range the predictions are clipped to (e.g. ``(0, 1)`` for click or correctness
            rewards), or ``None``.
        seed: seed of the fold assignment.
    """

    regressor: Any = None
    n_folds: int = 5
    per_action: bool = True
    min_rows: int = 5
    clip: tuple[float, float] | None = None
    seed: int = 0

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

    def _new(self) -> Any:
        from sklearn.base import clone

        return _default_regressor() if self.regressor is None else clone(self.regressor)

    def folds(self, n: int) -> np.ndarray:
        """``(n,) int64`` fold of each round: a seeded balanced assignment."""
        rng = np.random.default_rng(self.seed)
        return rng.permutation(np.arange(n) % self.n_folds).astype(np.int64)

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
        if n < self.n_folds:
            raise ConfigurationError(
                f"cross-fitting with n_folds={self.n_folds} needs at least that many rounds, got {n}"
            )
        if position is not None:
            pos = np.asarray(position, dtype=np.int64)
            p = int(pos.max()) + 1 if n_positions is None else int(n_positions)
            x = np.hstack([x, np.eye(p)[pos]])
        fold = self.folds(n)
        out = np.empty((n, k))
        for f in range(self.n_folds):
            test = fold == f
            train = ~test
            if self.per_action:
                out[test] = self._per_action(x[train], a[train], r[train], x[test], k)
            else:
                out[test] = self._pooled(x[train], a[train], r[train], x[test], k)
        if self.clip is not None:
            np.clip(out, self.clip[0], self.clip[1], out=out)
        return out

    def _per_action(
        self, x: np.ndarray, a: np.ndarray, r: np.ndarray, x_new: np.ndarray, k: int
    ) -> np.ndarray:
        overall = float(r.mean())
        pred = np.empty((x_new.shape[0], k))
        for j in range(k):
            rows = a == j
            count = int(rows.sum())
            if count == 0:
                pred[:, j] = overall
            elif count < self.min_rows or x.shape[1] == 0 or np.ptp(r[rows]) == 0:
                # Too few rows for a regression, no features, or a constant reward: the mean is the best fit.
                pred[:, j] = float(r[rows].mean())
            else:
                model = self._new()
                model.fit(x[rows], r[rows])
                pred[:, j] = model.predict(x_new)
        return pred

    def _pooled(self, x: np.ndarray, a: np.ndarray, r: np.ndarray, x_new: np.ndarray, k: int) -> np.ndarray:
        eye = np.eye(k)
        model = self._new()
        model.fit(np.hstack([x, eye[a]]), r)
        m = x_new.shape[0]
        stacked = np.hstack([np.repeat(x_new, k, axis=0), np.tile(eye, (m, 1))])
        return np.asarray(model.predict(stacked), dtype=np.float64).reshape(m, k)
