"""Per-query cost estimates: what each model would charge for *this* query, from its features.

A call's price grows with the prompt's length (input tokens) and with the answer's (output tokens, which depend
on the task and the model), so a router that estimates a model's cost by its mean over a task or a cluster
overpays for long prompts and underuses a strong model on short ones. :class:`CostModel` fits, for every model, a
ridge regression of its cost on the standardised query features — on ``log(cost + ε)`` (costs are multiplicative
in length: price × tokens) or on the cost itself — or keeps the model's mean cost, whichever has the least
out-of-fold squared error (USD²) in grouped cross-validation. With :class:`~routing_env.data.QueryFeaturizer`'s
``length:log_chars`` column, the log model learns ``cost ∝ length^β`` per model and task, and the linear model
also reads the length in characters: a price per token makes the cost affine in the prompt's length. That column
is read here only: the routers' quality estimates leave ``length:…`` columns out (on held-out logs they shifted
more than they predicted quality).

:func:`~agents.routers.select_router` pairs every candidate router (and their average) with a fitted cost model
too and keeps the pairing only when it scores better in the same cross-validation as the routers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from agents.routers._common import _finite, reading_saved
from agents.routers._cv import DEFAULT_FOLDS, make_folds, standardizer
from routing_env.data.dataset import LoggedDataset
from routing_env.data.featurizers import LENGTH_FEATURE
from routing_env.errors import ConfigurationError, ModelMismatchError
from routing_env.policy import check_features, write_policy_dir

__all__ = ["COST_ALPHA_GRID", "CostModel"]

#: Ridge penalties tried, as multiples of the number of rows a model's cost is observed on.
COST_ALPHA_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
#: How each model's cost is estimated (saved as its index).
MODES = ("mean", "log", "linear")
#: ε of ``log(cost + ε)`` as a share of the model's mean cost (a free call must not become ``log 0``).
_LOG_FLOOR = 0.01


@dataclass(eq=False)
class CostModel:
    """Each model's cost (USD) of a query from the query's features ``(n, d)``.

    Per model, one of: its mean cost (``mean``), a ridge on ``log(cost + ε)`` with Duan's smearing back to USD
    (``log``), or a ridge on the cost (``linear``), with the ridge penalty from :data:`COST_ALPHA_GRID` — chosen
    by grouped ``cv``-fold cross-validation (folds as the routers' own) on squared error in USD. ``tune=False``
    fits ``mode`` with ``alpha`` (× rows) for every model.

    Args:
        cv: folds of the cross-validation (≥ 2).
        seed: seeds the folds.
        tune: choose mode and penalty per model by cross-validation.
        mode: the mode every model uses when ``tune`` is off.
        alpha: the ridge penalty (× rows) when ``tune`` is off.

    Attributes (after ``fit``): ``models``, ``mode_`` (per model), ``alpha_`` (per model, × rows),
    ``cv_mse_`` (per model, USD², of the chosen option), ``oof_`` (``(n, K)`` out-of-fold estimates on the
    training rows, when tuned).

    Example::

        costs = CostModel().fit(train)
        costs.predict(test.features)         # (n, K) USD
    """

    # A model whose mean is kept has penalty +inf; a model onboarded by add_model has no CV error (NaN).
    nonfinite_arrays: ClassVar[tuple[str, ...]] = ("alpha", "cv_mse")

    cv: int = DEFAULT_FOLDS
    seed: int | None = 0
    tune: bool = True
    mode: str = "log"
    alpha: float = 1e-2

    models: tuple[str, ...] = field(default=(), init=False)
    n_features: int = field(default=0, init=False, repr=False)
    mode_: tuple[str, ...] = field(default=(), init=False)
    alpha_: np.ndarray = field(default_factory=lambda: np.zeros(0), init=False, repr=False)
    cv_mse_: np.ndarray = field(default_factory=lambda: np.zeros(0), init=False, repr=False)
    oof_: np.ndarray | None = field(default=None, init=False, repr=False)
    # The largest cost seen per model: it bounds the log model's extrapolation.
    max_cost_: np.ndarray = field(default_factory=lambda: np.zeros(0), init=False, repr=False)
    # Where the length column is (-1: none) and how its characters are standardised.
    length_index_: int = field(default=-1, init=False, repr=False)
    chars_mean_: float = field(default=0.0, init=False, repr=False)
    chars_scale_: float = field(default=1.0, init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.cv, bool) or not isinstance(self.cv, (int, np.integer)) or self.cv < 2:
            raise ConfigurationError(f"cv must be an int ≥ 2, got {self.cv!r}")
        if self.mode not in MODES:
            raise ConfigurationError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        self.alpha = _finite("alpha", self.alpha, 0.0, strict=True)

    # ------------------------------------------------------------------ fitting
    def fit(self, dataset: LoggedDataset, folds: np.ndarray | None = None) -> CostModel:
        """Fit every model's cost on the rows where it is observed.

        Args:
            dataset: logs with features; full-information or partial (each model learns from its own rows).
            folds: ``(n,)`` fold of each query (default: :func:`~agents.routers._cv.make_folds` with ``cv``,
                ``seed``), so that the out-of-fold estimates line up with the routers'.

        Raises:
            ConfigurationError: no features, or a model whose cost is never observed.
        """
        if dataset.features is None:
            raise ConfigurationError("CostModel.fit needs features (featurize the logs first)")
        x = np.asarray(dataset.features, dtype=np.float64)
        cost = np.asarray(dataset.cost, dtype=np.float64)
        n, k = cost.shape
        self.models = tuple(dataset.models)
        self.n_features = int(x.shape[1])
        self.mean_, self.scale_ = standardizer(x)
        names = list(dataset.feature_names or ())
        self.length_index_ = names.index(LENGTH_FEATURE) if LENGTH_FEATURE in names else -1
        self.chars_mean_, self.chars_scale_ = 0.0, 1.0
        if self.length_index_ >= 0:
            (cm,), (cs,) = standardizer(_chars(x[:, self.length_index_])[:, None])
            self.chars_mean_, self.chars_scale_ = float(cm), float(cs)
        z = self._design(x)
        if self.tune and folds is None:
            folds = make_folds(dataset, self.cv, self.seed)
        elif folds is not None and np.shape(folds) != (n,):
            raise ConfigurationError(f"folds must have shape ({n},), got {np.shape(folds)}")
        modes, alphas, mses = [], [], []
        coef, intercept = np.zeros((z.shape[1], k)), np.zeros(k)
        eps, smear, max_cost = np.zeros(k), np.ones(k), np.zeros(k)
        self.oof_ = np.zeros((n, k)) if self.tune else None
        for j in range(k):
            seen = np.isfinite(cost[:, j])
            if not seen.any():
                raise ConfigurationError(
                    f"model {self.models[j]!r} has no observed cost to learn from; drop it or log its costs"
                )
            fit = _fit_one(
                z[seen], cost[seen, j], None if folds is None else folds[seen], self, extra=self._extra
            )
            modes.append(fit.mode)
            alphas.append(fit.alpha)
            mses.append(fit.mse)
            coef[:, j], intercept[j], eps[j], smear[j] = fit.coef, fit.intercept, fit.eps, fit.smear
            max_cost[j] = fit.max_cost
            if self.oof_ is not None:
                self.oof_[seen, j] = fit.oof
                self.oof_[~seen, j] = fit.predict(z[~seen])
        self.mode_, self.alpha_, self.cv_mse_ = tuple(modes), np.array(alphas), np.array(mses)
        self.coef_, self.intercept_, self.eps_, self.smear_ = coef, intercept, eps, smear
        self.max_cost_ = max_cost
        return self

    def chosen(self) -> dict[str, Any]:
        """How many models use each mode, and the median penalty of the ridges."""
        counts = {m: self.mode_.count(m) for m in MODES if m in self.mode_}
        ridged = [a for a, m in zip(self.alpha_, self.mode_) if m != "mean"]
        out: dict[str, Any] = {"cost": "+".join(f"{m}×{c}" for m, c in counts.items())}
        if ridged:
            out["cost_alpha"] = float(np.median(ridged))
        return out

    # ------------------------------------------------------------------ estimates
    def _design(self, x: np.ndarray) -> np.ndarray:
        """Standardised features, then (with a length column) the standardised length in characters."""
        z = (x - self.mean_) / self.scale_
        if self.length_index_ < 0:
            return z
        chars = (_chars(x[:, self.length_index_]) - self.chars_mean_) / self.chars_scale_
        return np.hstack([z, chars[:, None]])

    def predict(self, features: np.ndarray) -> np.ndarray:
        """``(n, K)`` estimated cost (USD, ≥ 0) of every model for ``features (n, d)``."""
        x = check_features(features, self.n_features)
        z = self._design(x)
        raw = z @ self.coef_ + self.intercept_[None, :]
        log = np.array([m == "log" for m in self.mode_])
        with np.errstate(over="ignore"):
            # A query far outside the training range must not overflow exp: cap at 50 × the largest cost seen.
            out = np.where(
                log[None, :], np.exp(np.minimum(raw, self._log_cap[None, :])) * self.smear_ - self.eps_, raw
            )
        return np.maximum(out, 0.0)

    @property
    def _extra(self) -> int:
        """Columns of the design beyond the standardised features (the length in characters)."""
        return int(self.length_index_ >= 0)

    @property
    def _log_cap(self) -> np.ndarray:
        return np.log(np.maximum(self.max_cost_, 1e-300) * 50.0 + self.eps_)

    # ------------------------------------------------------------------ models come and go
    def add_model(self, name: str, dataset: LoggedDataset) -> CostModel:
        """Learn ``name``'s cost from the labelled ``dataset`` (same features), with the mode and penalty most
        models chose. Returns ``self``."""
        if name in self.models:
            raise ModelMismatchError(f"{name!r} is already estimated")
        j = dataset.model_index(name)
        x = check_features(dataset.features, self.n_features)
        seen = np.isfinite(dataset.cost[:, j])
        if not seen.any():
            raise ConfigurationError(f"the labelled set has no cost of {name!r}")
        mode = max(MODES, key=self.mode_.count)
        alpha = float(np.median(self.alpha_))
        z = self._design(x[seen])
        fit = _fit_one(
            z, np.asarray(dataset.cost[seen, j], dtype=np.float64), None, self, mode, alpha, self._extra
        )
        self.models = (*self.models, name)
        self.mode_ = (*self.mode_, fit.mode)
        self.alpha_ = np.append(self.alpha_, fit.alpha)
        self.cv_mse_ = np.append(self.cv_mse_, math.nan)
        self.coef_ = np.hstack([self.coef_, fit.coef[:, None]])
        for attr, value in (
            ("intercept_", fit.intercept),
            ("eps_", fit.eps),
            ("smear_", fit.smear),
            ("max_cost_", fit.max_cost),
        ):
            setattr(self, attr, np.append(getattr(self, attr), value))
        self.oof_ = None
        return self

    def remove_model(self, name: str) -> CostModel:
        """Stop estimating ``name``. Returns ``self``."""
        if name not in self.models:
            raise ModelMismatchError(f"{name!r} is not estimated; models: {list(self.models)}")
        j = self.models.index(name)
        keep = np.arange(len(self.models)) != j
        self.models = tuple(m for m in self.models if m != name)
        self.mode_ = tuple(m for i, m in enumerate(self.mode_) if i != j)
        self.coef_ = self.coef_[:, keep]
        for attr in ("alpha_", "cv_mse_", "intercept_", "eps_", "smear_", "max_cost_"):
            setattr(self, attr, getattr(self, attr)[keep])
        self.oof_ = None
        return self

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write ``policy.json`` + ``arrays.npz`` into ``path``."""
        config = {
            "cv": int(self.cv),
            "seed": self.seed,
            "tune": bool(self.tune),
            "mode": self.mode,
            "alpha": float(self.alpha),
            "models": list(self.models),
            "n_features": int(self.n_features),
            "modes": list(self.mode_),
            "length_index": int(self.length_index_),
            "chars_mean": float(self.chars_mean_),
            "chars_scale": float(self.chars_scale_),
        }
        arrays = {
            "alpha": self.alpha_,
            "cv_mse": self.cv_mse_,
            "mean": self.mean_,
            "scale": self.scale_,
            "coef": self.coef_,
            "intercept": self.intercept_,
            "eps": self.eps_,
            "smear": self.smear_,
            "max_cost": self.max_cost_,
        }
        return write_policy_dir(path, type(self), config, arrays)

    @classmethod
    def load(cls, path: str | Path) -> CostModel:
        """Restore a cost model written by :meth:`save`."""
        with reading_saved(path, cls, (KeyError, TypeError, ValueError)) as (_, config, arrays):
            obj = cls(
                cv=int(config["cv"]),
                seed=config["seed"],
                tune=bool(config["tune"]),
                mode=str(config["mode"]),
                alpha=float(config["alpha"]),
            )
            obj.models = tuple(str(m) for m in config["models"])
            obj.n_features = int(config["n_features"])
            obj.mode_ = tuple(str(m) for m in config["modes"])
            obj.length_index_ = int(config["length_index"])
            obj.chars_mean_, obj.chars_scale_ = float(config["chars_mean"]), float(config["chars_scale"])
            k, d = len(obj.models), obj.n_features
            if not -1 <= obj.length_index_ < d or not obj.chars_scale_ > 0:
                raise ValueError(f"length_index {obj.length_index_} / chars_scale {obj.chars_scale_}")
            if len(obj.mode_) != k or any(m not in MODES for m in obj.mode_):
                raise ValueError(f"modes {obj.mode_!r} for {k} models")
            obj.mean_, obj.scale_ = arrays["mean"], arrays["scale"]
            obj.coef_ = arrays["coef"]
            if obj.mean_.shape != (d,) or obj.scale_.shape != (d,) or obj.coef_.shape != (d + obj._extra, k):
                raise ValueError(f"arrays of the wrong shape for {d} features and {k} models")
            for attr, key in (
                ("alpha_", "alpha"),
                ("cv_mse_", "cv_mse"),
                ("intercept_", "intercept"),
                ("eps_", "eps"),
                ("smear_", "smear"),
                ("max_cost_", "max_cost"),
            ):
                value = np.asarray(arrays[key], dtype=np.float64)
                if value.shape != (k,):
                    raise ValueError(f"{key} has shape {value.shape}, not ({k},)")
                setattr(obj, attr, value)
            obj.oof_ = None
        return obj


@dataclass
class _Fit:
    mode: str
    alpha: float
    mse: float
    coef: np.ndarray
    intercept: float
    eps: float
    smear: float
    max_cost: float
    oof: np.ndarray

    def predict(self, z: np.ndarray) -> np.ndarray:
        raw = z @ self.coef + self.intercept
        if self.mode != "log":
            return np.maximum(raw, 0.0)
        cap = math.log(max(self.max_cost, 1e-300) * 50.0 + self.eps)
        return np.maximum(np.exp(np.minimum(raw, cap)) * self.smear - self.eps, 0.0)


def _fit_one(
    z: np.ndarray,
    cost: np.ndarray,
    folds: np.ndarray | None,
    model: CostModel,
    mode: str | None = None,
    alpha: float | None = None,
    extra: int = 0,
) -> _Fit:
    """One model's cost from its observed rows ``z (m, d)``, ``cost (m,)``: the option with the least
    out-of-fold squared error when ``folds`` is given, else ``mode``/``alpha`` (default: the model's settings).
    The last ``extra`` columns of ``z`` (the length in characters) enter the linear model only."""
    m = len(cost)
    mean_cost = float(cost.mean())
    eps = _LOG_FLOOR * mean_cost if mean_cost > 0 else 0.0
    options: list[tuple[str, float]] = [("mean", math.inf)]
    if mean_cost > 0 and z.shape[1] and m >= 2:
        for kind in ("log", "linear"):
            options += [(kind, a) for a in sorted(COST_ALPHA_GRID, reverse=True)]
    if folds is None:
        chosen_mode = model.mode if mode is None else mode
        chosen_alpha = model.alpha if alpha is None else alpha
        if chosen_mode != "mean" and ("log", 1.0) not in options:
            chosen_mode = "mean"  # a free model, or nothing to regress on
        best, oof, mse = (chosen_mode, chosen_alpha), np.full(m, mean_cost), math.nan
    else:
        oofs = {o: np.zeros(m) for o in options}
        for f in np.unique(folds):
            tr, va = folds != f, folds == f
            if not tr.any():
                continue
            for (kind, a), pred in _fold_predictions(z[tr], cost[tr], z[va], options, eps, extra).items():
                oofs[(kind, a)][va] = pred
        errors = {o: float(((p - cost) ** 2).mean()) for o, p in oofs.items()}
        # Near-ties (within float noise) go to the simplest option: the mean, then the most regularised ridge.
        least = min(errors.values())
        best = next(o for o in options if errors[o] <= least * (1 + 1e-6) + (1e-9 * mean_cost) ** 2)
        oof, mse = oofs[best], errors[best]
    coef, intercept, smear = _solve(_for_mode(z, best[0], extra), cost, best[0], best[1], eps)
    return _Fit(best[0], best[1], mse, coef, intercept, eps, smear, float(cost.max()), oof)


def _chars(log_chars: np.ndarray) -> np.ndarray:
    """Characters from ``log(1 + characters)`` (clipped: a hand-made feature must not overflow)."""
    return np.expm1(np.clip(log_chars, 0.0, 30.0))


def _for_mode(z: np.ndarray, mode: str, extra: int) -> np.ndarray:
    """The design a mode reads: the log model leaves the raw length out (its log is among the features)."""
    if mode == "linear" or not extra:
        return z
    out = z.copy()
    out[:, -extra:] = (
        0.0  # a zero column gets a zero coefficient, so one coefficient layout serves both modes
    )
    return out


def _target(cost: np.ndarray, mode: str, eps: float) -> np.ndarray:
    return np.log(cost + eps) if mode == "log" else cost


def _solve(
    z: np.ndarray, cost: np.ndarray, mode: str, alpha: float, eps: float
) -> tuple[np.ndarray, float, float]:
    """``(coef (d,), intercept, smear)`` of one option fitted on every row."""
    d = z.shape[1]
    if mode == "mean":
        return np.zeros(d), float(cost.mean()), 1.0
    y = _target(cost, mode, eps)
    zc, ym = z - z.mean(axis=0), float(y.mean())
    coef = np.linalg.solve(zc.T @ zc + alpha * len(y) * np.eye(d), zc.T @ (y - ym))
    intercept = ym - float(z.mean(axis=0) @ coef)
    smear = float(np.exp(y - (z @ coef + intercept)).mean()) if mode == "log" else 1.0
    return coef, intercept, smear


def _fold_predictions(
    z_all: np.ndarray,
    cost: np.ndarray,
    zv_all: np.ndarray,
    options: list[tuple[str, float]],
    eps: float,
    extra: int,
) -> dict[tuple[str, float], np.ndarray]:
    """Validation-row predictions (USD) of every option fitted on ``z_all``, ``cost``: one SVD per mode serves
    every penalty."""
    out: dict[tuple[str, float], np.ndarray] = {("mean", math.inf): np.full(len(zv_all), float(cost.mean()))}
    for kind in ("log", "linear"):
        alphas = [a for o, a in options if o == kind]
        if not alphas:
            continue
        z, zv = _for_mode(z_all, kind, extra), _for_mode(zv_all, kind, extra)
        mu = z.mean(axis=0)
        u, s, vt = np.linalg.svd(z - mu, full_matrices=False)
        y = _target(cost, kind, eps)
        ym = float(y.mean())
        uty = u.T @ (y - ym)
        for a in alphas:
            coef = vt.T @ (s / (s**2 + a * len(y)) * uty)
            raw_train = (z - mu) @ coef + ym
            raw = (zv - mu) @ coef + ym
            if kind == "log":
                smear = float(np.exp(y - raw_train).mean())
                cap = math.log(max(float(cost.max()), 1e-300) * 50.0 + eps)
                out[(kind, a)] = np.maximum(np.exp(np.minimum(raw, cap)) * smear - eps, 0.0)
            else:
                out[(kind, a)] = np.maximum(raw, 0.0)
    return out
