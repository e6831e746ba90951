"""`OutcomeModel`: per-model regressors that impute the outcomes partial (bandit) logs lack."""

from __future__ import annotations

import weakref
from dataclasses import replace
from typing import Any

import numpy as np

from routing_env.data.dataset import LoggedDataset
from routing_env.errors import ModelMismatchError, PartialInformationError, ShapeError


def _default_regressor(seed: int) -> Any:
    from sklearn.ensemble import RandomForestRegressor

    # Single-threaded on purpose: fits are small, and thread pools oversubscribe shared CPUs badly.
    return RandomForestRegressor(n_estimators=50, min_samples_leaf=5, n_jobs=1, random_state=seed)


class OutcomeModel:
    """Predicts each model's quality, cost (USD) and latency (s) from query features.

    One scikit-learn regressor per model and target, fitted on that model's logged rows only. Environments use it
    through :meth:`complete` to replay partial logs: logged cells keep their logged values, the others get the
    prediction (quality clipped to [0, 1], cost and latency to ≥ 0), and the env marks those steps as imputed.
    Imputed outcomes are model predictions, not logs: rewards on them are only as good as the fit.

    Build one with :meth:`fit`.

    Attributes:
        models: the K model names, in the dataset's column order.
        n_features: the width d of the features it was fitted on.
        n_rows: ``(K,)`` logged rows each model's regressors were fitted on.
    """

    def __init__(
        self,
        models: tuple[str, ...],
        n_features: int,
        quality: list[Any],
        cost: list[Any],
        latency: list[Any] | None,
        n_rows: np.ndarray,
    ) -> None:
        self.models = models
        self.n_features = n_features
        self._quality = quality
        self._cost = cost
        self._latency = latency
        self.n_rows = n_rows
        self._completed: weakref.WeakKeyDictionary[LoggedDataset, LoggedDataset] = weakref.WeakKeyDictionary()

    @classmethod
    def fit(cls, dataset: LoggedDataset, regressor: Any = None, seed: int = 0) -> OutcomeModel:
        """Fit on ``dataset``'s logged rows.

        Args:
            dataset: logs, possibly partial; every model needs at least one logged row.
            regressor: a scikit-learn regressor to clone per model and target; default
                ``RandomForestRegressor(n_estimators=50, min_samples_leaf=5, random_state=seed)``. Models with fewer than
                2 logged rows, and datasets without features, use the logged mean.
            seed: seed of the default regressor.
        """
        from sklearn.base import clone
        from sklearn.dummy import DummyRegressor

        template = _default_regressor(seed) if regressor is None else regressor
        counts = dataset.observed.sum(axis=0)
        if (counts == 0).any():
            empty = [m for m, c in zip(dataset.models, counts) if c == 0]
            raise PartialInformationError(
                f"models {empty} have no logged rows, so no outcome model can be fitted for them; "
                "drop them with dataset.subset_models(...)"
            )
        x = dataset.features
        targets: dict[str, list[Any]] = {"quality": [], "cost": [], "latency": []}
        for j in range(dataset.n_models):
            rows = dataset.observed[:, j]
            for name, ests in targets.items():
                values = getattr(dataset, name)
                if values is None:
                    continue
                y = np.asarray(values[rows, j], dtype=np.float64)
                keep = np.isfinite(y)
                est: Any
                if keep.sum() < 2 or dataset.n_features == 0:
                    est = DummyRegressor()
                    est.fit(np.zeros((max(int(keep.sum()), 1), 1)), y[keep] if keep.any() else np.zeros(1))
                else:
                    est = clone(template)
                    est.fit(x[rows][keep], y[keep])
                ests.append(est)
        return cls(
            models=dataset.models,
            n_features=dataset.n_features,
            quality=targets["quality"],
            cost=targets["cost"],
            latency=targets["latency"] if dataset.latency is not None else None,
            n_rows=counts.astype(np.int64),
        )

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``features (n, d)`` → ``(quality (n, K) in [0, 1], cost (n, K) USD ≥ 0, latency (n, K) s ≥ 0 or None)``."""
        from sklearn.dummy import DummyRegressor

        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ShapeError(f"features must have shape (n, {self.n_features}), got {x.shape}")

        def run(ests: list[Any], lo: float, hi: float) -> np.ndarray:
            out = np.empty((x.shape[0], len(ests)), dtype=np.float64)
            for j, est in enumerate(ests):
                xs = np.zeros((x.shape[0], 1)) if isinstance(est, DummyRegressor) else x
                out[:, j] = np.clip(est.predict(xs), lo, hi)
            return out

        latency = None if self._latency is None else run(self._latency, 0.0, np.inf)
        return run(self._quality, 0.0, 1.0), run(self._cost, 0.0, np.inf), latency

    def complete(self, dataset: LoggedDataset) -> LoggedDataset:
        """A full-information copy of ``dataset``: logged cells as logged, the rest predicted.

        Cached per dataset object, so every env over the same data shares one completion. The logged signal
        stays NaN where nothing was logged.
        """
        if dataset.models != self.models:
            raise ModelMismatchError(
                f"the outcome model was fitted on models {list(self.models)}, but the dataset has {list(dataset.models)}"
            )
        done = self._completed.get(dataset)
        if done is not None:
            return done
        quality, cost, latency = self.predict(dataset.features)
        obs = dataset.observed
        filled_latency = dataset.latency
        if dataset.latency is not None and latency is not None:
            filled_latency = np.where(np.isnan(dataset.latency), latency, dataset.latency)
        done = replace(
            dataset,
            quality=np.where(obs, dataset.quality, quality),
            cost=np.where(obs, dataset.cost, cost),
            observed=np.ones_like(obs),
            latency=filled_latency,
            meta={**dataset.meta, "imputed": f"{int((~obs).sum())} cells predicted by OutcomeModel"},
        )
        self._completed[dataset] = done
        return done
