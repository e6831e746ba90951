"""Stacked text residuals: per-model quality predictions from the prompt's sparse TF-IDF, as feature columns.

The dense text features (:class:`~routing_env.data.TextFeaturizer`'s 64 SVD directions) keep what most prompts
share and drop the rest: the words that mark *this* question, its passage or its template. A ridge on the full
sparse TF-IDF keeps them, and they often say which model gets a query right (near-duplicate questions, a shared
passage, a template some model fails on). Routers work on dense features, so the ridge's
predictions become columns: :class:`TextResidualFeaturizer` appends, to a base featurizer's columns, one column per
model — the predicted deviation of that model's quality from its mean on the query's task.

Stacking rules: on the training logs the columns are **out-of-fold** predictions (the same grouped folds as the
routers' cross-validation, :func:`routing_env.data.folds.make_folds`), so a router fitted on them sees how good they
are on queries they were not fitted on; :meth:`TextResidualFeaturizer.transform` (test logs, served requests) uses
the ridge fitted on every training query. In a router's cross-validation a held-out query's column never saw its
own outcome, though the columns of the queries the router is fitted on came from ridges that did (nested folds
would remove that second-order optimism, at five times the fitting). The ridge's penalty is chosen by the same grouped cross-validation (mean
squared error of quality, every model) with the one-standard-error rule: the most regularised penalty whose error is
within one standard error (paired over queries) of the lowest. ``inf`` — no residual, all-zero columns — is the most
regularised, so where the words do not clearly help the columns carry nothing.

Use :func:`stack_text_residual` on a :class:`~routing_env.data.FeaturizedSplit` (what ``routing-env train`` does on
full-information logs with prompts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from routing_env.data.dataset import LoggedDataset
from routing_env.data.featurizers import (
    _KINDS,
    FeaturizedSplit,
    FeaturizerFormatError,
    NotFittedError,
    TextFeaturizer,
    _as_texts,
    _prompts_of,
    _read_kind,
    _write,
    load_featurizer,
)
from routing_env.data.folds import DEFAULT_FOLDS, make_folds
from routing_env.errors import ConfigurationError, ShapeError

__all__ = ["RESIDUAL_PENALTIES", "RESIDUAL_PREFIX", "TextResidualFeaturizer", "stack_text_residual"]

#: Name prefix of the appended columns: ``text_residual:<model>``.
RESIDUAL_PREFIX = "text_residual:"
#: Ridge penalties the cross-validation chooses from, most regularised first; rows are unit-norm TF-IDF vectors,
#: so one penalty scale suits any corpus size. ``inf`` is no residual at all.
RESIDUAL_PENALTIES: tuple[float, ...] = (math.inf, 1000.0, 300.0, 100.0, 30.0, 10.0, 3.0, 1.0)


@dataclass
class TextResidualFeaturizer:
    """A base featurizer's columns, then ``text_residual:<model>`` for each model: ``(n, d_base + K) float32``.

    Column ``k`` is a ridge prediction, from the prompt's L2-normalised TF-IDF (its own hashed vocabulary, fitted on
    the training prompts), of model ``k``'s quality minus that model's mean quality on the query's task (the global
    mean when the logs have no tasks). The task means are used only to fit the ridge; ``transform`` needs no task
    beyond what the base featurizer takes.

    Args:
        base: the featurizer of the dense columns (fitted, or fitted by :meth:`fit_stack`).
        penalties: ridge penalties to choose from by cross-validation (``inf`` = no residual).
        n_splits: folds of the grouped cross-validation (and of the out-of-fold training columns).
        seed: seeds the folds and the vocabulary's featurizer.

    Fitted: ``models_`` (the columns' models), ``penalty_`` (chosen), ``cv_mse_`` (mean squared error of quality
    per penalty, same order as ``penalties``).
    """

    base: Any
    penalties: tuple[float, ...] = RESIDUAL_PENALTIES
    n_splits: int = DEFAULT_FOLDS
    seed: int = 0

    kind: ClassVar[str] = "text_residual"
    models_: tuple[str, ...] = field(default=(), init=False)
    penalty_: float | None = field(default=None, init=False)
    cv_mse_: tuple[float, ...] = field(default=(), init=False)
    _vocabulary: TextFeaturizer | None = field(default=None, init=False, repr=False)
    _coef: np.ndarray | None = field(default=None, init=False, repr=False)
    _intercept: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        values = tuple(float(p) for p in self.penalties)
        if not values or any(not (p > 0.0) for p in values):
            raise ConfigurationError(
                f"TextResidualFeaturizer.penalties must be positive ridge penalties (inf = no residual), got "
                f"{self.penalties!r}"
            )
        self.penalties = values
        if (
            isinstance(self.n_splits, bool)
            or not isinstance(self.n_splits, (int, np.integer))
            or self.n_splits < 2
        ):
            raise ConfigurationError(
                f"TextResidualFeaturizer.n_splits must be an int ≥ 2, got {self.n_splits!r}"
            )

    # -- shape
    def _check(self) -> tuple[TextFeaturizer, np.ndarray, np.ndarray]:
        if self._vocabulary is None or self._coef is None or self._intercept is None:
            raise NotFittedError("TextResidualFeaturizer is not fitted: call fit_stack(train) first")
        return self._vocabulary, self._coef, self._intercept

    @property
    def dimension(self) -> int:
        self._check()
        return int(self.base.dimension) + len(self.models_)

    @property
    def feature_names(self) -> tuple[str, ...]:
        self._check()
        return tuple(self.base.feature_names) + tuple(RESIDUAL_PREFIX + m for m in self.models_)

    # -- fit
    def fit_stack(self, train: LoggedDataset, *, dense: np.ndarray | None = None) -> LoggedDataset:
        """Fit on full-information ``train`` (with prompts) and return it carrying the stacked features: the base
        featurizer's columns (fitted here unless it already is; ``dense (n, d_base)`` when already computed) and
        the **out-of-fold** residual columns.

        Raises:
            ConfigurationError: ``train`` has no prompts or fewer than two distinct prompts.
            PartialInformationError: ``train`` lacks some model's outcome on some query.
        """
        train.require_full_information(
            "TextResidualFeaturizer.fit_stack", "fit the routers on the base featurizer's columns alone"
        )
        prompts = _prompts_of(train)
        tasks = None if train.tasks is None else list(train.tasks)
        try:
            _ = self.base.dimension  # a fitted base keeps its fit
        except NotFittedError:
            self.base.fit(prompts, tasks)
        folds = make_folds(train, self.n_splits, self.seed)
        vocabulary = TextFeaturizer(n_components=1, seed=self.seed).fit(prompts)
        x = vocabulary.tfidf(prompts)
        y = np.asarray(train.quality, dtype=np.float64)
        task_codes = _codes(train.tasks, train.n_queries)
        oof = {p: np.zeros_like(y) for p in self.penalties}
        base_oof = np.zeros_like(y)
        for k in np.unique(folds):
            fit, held = folds != k, folds == k
            centre_fit = _task_means(y[fit], task_codes[fit], task_codes)
            base_oof[held] = centre_fit[held]
            for p in self.penalties:
                if math.isfinite(p):
                    coef, intercept = _ridge(x[fit], y[fit] - centre_fit[fit], p)
                    oof[p][held] = np.asarray(x[held] @ coef.T) + intercept
        # Squared error of each query (summed over the models) under each penalty; the one-standard-error rule
        # keeps the most regularised penalty within one standard error of the best (paired over queries), so
        # words that barely help leave the columns at zero (penalty inf) rather than adding noise features.
        errors = np.stack([((base_oof + oof[p] - y) ** 2).sum(axis=1) for p in self.penalties])
        lowest = int(np.argmin(errors.mean(axis=1)))
        diff = errors - errors[lowest]
        se = diff.std(axis=1, ddof=1) / math.sqrt(max(diff.shape[1], 1)) if diff.shape[1] > 1 else 0.0
        best = int(np.flatnonzero(diff.mean(axis=1) <= se + 1e-15)[0])
        mse = (errors.mean(axis=1) / y.shape[1]).tolist()
        self.penalty_, self.cv_mse_ = self.penalties[best], tuple(mse)
        self.models_ = tuple(train.models)
        self._vocabulary = vocabulary
        centre = _task_means(y, task_codes, task_codes)
        if math.isfinite(self.penalty_):
            self._coef, self._intercept = _ridge(x, y - centre, self.penalty_)
        else:
            self._coef = np.zeros((y.shape[1], x.shape[1]))
            self._intercept = np.zeros(y.shape[1], dtype=np.float64)
        if dense is None:
            dense = self.base.transform(prompts, tasks)
        stacked = np.hstack([np.asarray(dense, dtype=np.float32), oof[self.penalty_].astype(np.float32)])
        return train.with_features(stacked, names=self.feature_names)

    def transform(self, prompts: Sequence[str], tasks: Sequence[str | None] | None = None) -> np.ndarray:
        """``prompts (n,)`` (and ``tasks`` for the base featurizer) → ``(n, d_base + K) float32``."""
        texts = _as_texts(prompts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        dense = np.asarray(self.base.transform(texts, tasks), dtype=np.float32)
        return np.hstack([dense, self.residuals(texts)])

    def residuals(self, prompts: Sequence[str]) -> np.ndarray:
        """The residual columns alone: ``prompts (n,)`` → ``(n, K) float32`` (ridge fitted on every training query)."""
        vocabulary, coef, intercept = self._check()
        texts = _as_texts(prompts)
        if not texts:
            return np.zeros((0, len(self.models_)), dtype=np.float32)
        return (np.asarray(vocabulary.tfidf(texts) @ coef.T) + intercept).astype(np.float32)

    # -- persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``featurizer.json`` + ``arrays.npz``, the base featurizer in ``base/``, the vocabulary in
        ``vocabulary/``."""
        vocabulary, coef, intercept = self._check()
        params = {
            "penalties": [None if math.isinf(p) else p for p in self.penalties],
            "n_splits": int(self.n_splits),
            "seed": int(self.seed),
            "models": list(self.models_),
            "penalty": None if self.penalty_ is None or math.isinf(self.penalty_) else self.penalty_,
            "cv_mse": list(self.cv_mse_),
        }
        path = _write(directory, self.kind, params, {"coef": coef, "intercept": intercept})
        self.base.save(path / "base")
        vocabulary.save(path / "vocabulary")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> TextResidualFeaturizer:
        params, arrays = _read_kind(directory, cls.kind)
        root = Path(directory)
        try:
            obj = cls(
                base=load_featurizer(root / "base"),
                penalties=tuple(math.inf if p is None else float(p) for p in params["penalties"]),
                n_splits=int(params["n_splits"]),
                seed=int(params["seed"]),
            )
            models = tuple(str(m) for m in params["models"])
            penalty = math.inf if params["penalty"] is None else float(params["penalty"])
            cv_mse = tuple(float(v) for v in params["cv_mse"])
        except (KeyError, TypeError, ValueError, ConfigurationError) as exc:
            raise FeaturizerFormatError(f"{root} is not a valid text-residual featurizer ({exc})") from None
        vocabulary = load_featurizer(root / "vocabulary")
        if not isinstance(vocabulary, TextFeaturizer):
            raise FeaturizerFormatError(
                f"{root}/vocabulary holds a {type(vocabulary).__name__}, not a text one"
            )
        coef, intercept = arrays.get("coef"), arrays.get("intercept")
        coef = None if coef is None else np.asarray(coef, dtype=np.float64)
        width = int(vocabulary.tfidf(["width probe"]).shape[1])
        if (
            coef is None
            or intercept is None
            or coef.shape != (len(models), width)
            or intercept.shape != (len(models),)
        ):
            raise FeaturizerFormatError(
                f"{root}/arrays.npz must hold coef ({len(models)}, {width}) and intercept ({len(models)},)"
            )
        obj.models_, obj.penalty_, obj.cv_mse_ = models, penalty, cv_mse
        obj._vocabulary, obj._coef, obj._intercept = vocabulary, coef, intercept
        return obj


_KINDS[TextResidualFeaturizer.kind] = TextResidualFeaturizer


def stack_text_residual(
    split: FeaturizedSplit, *, n_splits: int = DEFAULT_FOLDS, seed: int = 0
) -> FeaturizedSplit:
    """``split`` with the text-residual columns stacked on its features: out-of-fold on ``split.train``, from the
    ridge fitted on all of it on ``split.test``; the returned featurizer makes the test-side columns from prompts.

    Raises:
        PartialInformationError: the training split lacks some outcome (stacking needs every model's quality).
        ShapeError: the split's features are not the featurizer's.
    """
    for side, data in (("training", split.train), ("test", split.test)):
        if data.n_features != split.featurizer.dimension:
            raise ShapeError(
                f"the split's {side} features have width {data.n_features}, its featurizer makes "
                f"{split.featurizer.dimension}"
            )
    stacker = TextResidualFeaturizer(split.featurizer, n_splits=n_splits, seed=seed)
    # Both sides already carry the base featurizer's columns: only the residual columns are computed here.
    train = stacker.fit_stack(split.train, dense=split.train.features)
    test = np.hstack(
        [np.asarray(split.test.features, dtype=np.float32), stacker.residuals(_prompts_of(split.test))]
    )
    return FeaturizedSplit(train, split.test.with_features(test, names=stacker.feature_names), stacker)


# ---------------------------------------------------------------------------------------------- helpers
def _codes(tasks: np.ndarray | None, n: int) -> np.ndarray:
    """``(n,) int64`` task code of each query (one code for all when there are no tasks; missing tasks share one)."""
    if tasks is None:
        return np.zeros(n, dtype=np.int64)
    labels = np.array(["\x00none" if t is None else str(t) for t in tasks], dtype=object)
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def _task_means(y: np.ndarray, codes_fit: np.ndarray, codes_out: np.ndarray) -> np.ndarray:
    """Each ``codes_out`` row's task mean of ``y (n_fit, K)`` over the fitting rows (the global mean for a task
    with no fitting row)."""
    n_codes = int(max(codes_fit.max(initial=0), codes_out.max(initial=0))) + 1
    sums = np.zeros((n_codes, y.shape[1]))
    np.add.at(sums, codes_fit, y)
    counts = np.bincount(codes_fit, minlength=n_codes)[:, None]
    means = np.where(counts > 0, sums / np.maximum(counts, 1), y.mean(axis=0))
    return means[codes_out]


def _ridge(x: Any, y: np.ndarray, penalty: float) -> tuple[np.ndarray, np.ndarray]:
    """Multi-output ridge with an unpenalised intercept on sparse ``x (n, B)``: ``(coef (K, B), intercept (K,))``,
    float64."""
    from sklearn.linear_model import Ridge

    model = Ridge(alpha=penalty, fit_intercept=True, solver="sparse_cg", tol=1e-6).fit(x, y)
    coef = np.atleast_2d(model.coef_).astype(np.float64)
    return coef, np.atleast_1d(np.asarray(model.intercept_, dtype=np.float64))
