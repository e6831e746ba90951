"""Stacked text residuals: out-of-fold training columns, a planted word signal found, inf = no residual,
pickle-free save/load, clear errors."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing_env.data import (
    LoggedDataset,
    QueryFeaturizer,
    TextFeaturizer,
    TextResidualFeaturizer,
    featurize,
    load_featurizer,
    load_sample,
    split_and_featurize,
    stack_text_residual,
)
from routing_env.data.featurizers import FeaturizerFormatError, NotFittedError
from routing_env.data.folds import make_folds
from routing_env.data.residual import RESIDUAL_PREFIX, _ridge, _task_means
from routing_env.errors import ConfigurationError, PartialInformationError, ShapeError

WORD = "recursion"


def planted(n: int = 1200, seed: int = 0) -> LoggedDataset:
    """Sample prompts whose model-0 quality is 1 exactly when the prompt holds ``WORD`` (model 1 the reverse),
    plus noise elsewhere: a signal that lives in one word, not in the task."""
    data = load_sample().select(np.arange(n))
    rng = np.random.default_rng(seed)
    has = np.array([WORD in str(p) for p in data.prompts])
    quality = rng.uniform(0.2, 0.6, size=data.quality.shape)
    quality[:, 0] = np.where(has, 0.95, 0.05)
    quality[:, 1] = np.where(has, 0.05, 0.95)
    return dataclasses.replace(data, quality=quality)


def _codes_of(split) -> tuple[np.ndarray, np.ndarray]:
    """Task codes of the training rows and of the test rows, over the same labels (for ``_task_means``)."""
    labels = sorted(set(split.train.tasks) | set(split.test.tasks))
    index = {t: i for i, t in enumerate(labels)}
    return np.array([index[t] for t in split.train.tasks]), np.array([index[t] for t in split.test.tasks])


@pytest.fixture(scope="module")
def split():
    data = planted()
    return split_and_featurize(data, test_size=0.25, seed=0, featurizer=QueryFeaturizer(TextFeaturizer(8)))


@pytest.fixture(scope="module")
def stacked(split):
    return stack_text_residual(split, seed=0)


def test_columns_are_appended_per_model(split, stacked) -> None:
    stacker = stacked.featurizer
    k = split.train.n_models
    assert stacked.train.n_features == split.train.n_features + k == stacker.dimension
    assert stacked.train.feature_names[-k:] == tuple(RESIDUAL_PREFIX + m for m in split.train.models)
    # The dense part is the base featurizer's, unchanged.
    np.testing.assert_array_equal(stacked.train.features[:, :-k], split.train.features)
    np.testing.assert_array_equal(stacked.test.features[:, :-k], split.test.features)
    assert stacker.penalty_ is not None and math.isfinite(stacker.penalty_)
    assert len(stacker.cv_mse_) == len(stacker.penalties)


def test_planted_word_is_found_on_test_prompts(split, stacked) -> None:
    k = split.train.n_models
    has = np.array([WORD in str(p) for p in split.test.prompts])
    assert 0 < has.sum() < len(has)
    col0 = stacked.test.features[:, -k]
    # The word is commonest in code prompts, so the task means explain part of it; the column carries the rest, on
    # prompts the ridge never saw (the column predicts the deviation from the task mean).
    train_codes, test_codes = _codes_of(split)
    deviation = (split.test.quality - _task_means(split.train.quality, train_codes, test_codes))[:, 0]
    assert col0[has].mean() - col0[~has].mean() > 0.1
    assert np.corrcoef(col0, deviation)[0, 1] > 0.5


def test_training_columns_are_out_of_fold(split, stacked) -> None:
    """Each training row's column comes from a ridge fitted without its fold (the routers' folds)."""
    stacker = stacked.featurizer
    train = split.train
    folds = make_folds(train, stacker.n_splits, stacker.seed)
    prompts = [str(p) for p in train.prompts]
    vocabulary = TextFeaturizer(n_components=1, seed=stacker.seed).fit(prompts)
    x = vocabulary.tfidf(prompts)
    codes = np.unique(np.asarray(train.tasks, dtype=object), return_inverse=True)[1]
    y = train.quality.astype(np.float64)
    held = folds == 0
    centre = _task_means(y[~held], codes[~held], codes)
    coef, intercept = _ridge(x[~held], y[~held] - centre[~held], stacker.penalty_)
    expected = np.asarray(x[held] @ coef.T.astype(np.float64)) + intercept
    got = stacked.train.features[held, -train.n_models :]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # The in-sample fit would differ: the columns are not what transform gives on the training prompts.
    full = stacker.transform(prompts, list(train.tasks))[:, -train.n_models :]
    assert np.abs(full - stacked.train.features[:, -train.n_models :]).max() > 1e-3


def test_save_load_round_trip(tmp_path, split, stacked) -> None:
    path = stacked.featurizer.save(tmp_path / "f")
    doc = json.loads((path / "featurizer.json").read_text())
    assert doc["kind"] == "text_residual"
    back = load_featurizer(path)
    assert isinstance(back, TextResidualFeaturizer)
    prompts = [str(p) for p in split.test.prompts]
    np.testing.assert_array_equal(
        back.transform(prompts, list(split.test.tasks)),
        stacked.featurizer.transform(prompts, list(split.test.tasks)),
    )
    assert back.feature_names == stacked.featurizer.feature_names
    assert (back.penalty_, back.cv_mse_, back.models_) == (
        stacked.featurizer.penalty_,
        stacked.featurizer.cv_mse_,
        stacked.featurizer.models_,
    )
    # A served request: one bare prompt, no task.
    assert back.transform(["fix this recursion"]).shape == (1, back.dimension)
    assert back.transform([]).shape == (0, back.dimension)


def test_no_residual_penalty_gives_zero_columns(tmp_path, split) -> None:
    stacker = TextResidualFeaturizer(split.featurizer, penalties=(math.inf,))
    train = stacker.fit_stack(split.train)
    k = split.train.n_models
    assert stacker.penalty_ == math.inf
    assert not train.features[:, -k:].any()
    back = load_featurizer(stacker.save(tmp_path / "inf"))
    assert back.penalty_ == math.inf and back.penalties == (math.inf,)
    assert not back.transform(["anything at all"])[:, -k:].any()


def test_noise_words_choose_no_residual() -> None:
    """Where outcomes do not depend on the words, no penalty beats no residual (by one standard error)."""
    data = load_sample().select(np.arange(800))
    rng = np.random.default_rng(1)
    noise = dataclasses.replace(data, quality=rng.uniform(0.0, 1.0, size=data.quality.shape))
    split = split_and_featurize(noise, seed=1, featurizer=QueryFeaturizer(TextFeaturizer(8)))
    stacker = stack_text_residual(split, seed=1).featurizer
    assert stacker.penalty_ == math.inf


def test_fits_an_unfitted_base() -> None:
    data = planted(400)
    stacker = TextResidualFeaturizer(QueryFeaturizer(TextFeaturizer(4)))
    train = stacker.fit_stack(data)
    assert train.n_features == stacker.dimension == 4 + 1 + len(np.unique(data.tasks)) + data.n_models


def test_errors(tmp_path, split, stacked) -> None:
    with pytest.raises(ConfigurationError, match="penalties"):
        TextResidualFeaturizer(split.featurizer, penalties=(0.0,))
    with pytest.raises(ConfigurationError, match="n_splits"):
        TextResidualFeaturizer(split.featurizer, n_splits=1)
    with pytest.raises(NotFittedError):
        TextResidualFeaturizer(split.featurizer).transform(["x"])
    partial = split.train.with_features(split.train.features)
    quality = partial.quality.copy()
    quality[0, 1] = np.nan
    with pytest.raises(PartialInformationError):
        TextResidualFeaturizer(split.featurizer).fit_stack(dataclasses.replace(partial, quality=quality))
    narrow = split._replace(train=split.train.with_features(split.train.features[:, :3]))
    with pytest.raises(ShapeError, match="width"):
        stack_text_residual(narrow)
    path = stacked.featurizer.save(tmp_path / "bad")
    np.savez(path / "arrays.npz", coef=np.zeros((1, 3), dtype=np.float32), intercept=np.zeros(1))
    with pytest.raises(FeaturizerFormatError, match="coef"):
        load_featurizer(path)
    doc = json.loads((path / "featurizer.json").read_text())
    del doc["params"]["models"]
    (path / "featurizer.json").write_text(json.dumps(doc))
    with pytest.raises(FeaturizerFormatError, match="text-residual"):
        load_featurizer(path)


def test_policy_featurizes_test_logs_with_it(split, stacked) -> None:
    """What evaluate and serve do: the policy's featurizer turns the test logs' prompts into its features."""
    again = featurize(split.test, stacked.featurizer)
    np.testing.assert_array_equal(again.features, stacked.test.features)


@settings(max_examples=60, deadline=None)
@given(
    codes=st.lists(st.integers(0, 4), min_size=1, max_size=40),
    out=st.lists(st.integers(0, 6), min_size=1, max_size=20),
    seed=st.integers(0, 2**16),
)
def test_task_means_property(codes: list[int], out: list[int], seed: int) -> None:
    """Each output row gets the mean over the fitting rows of its task, or the global mean for a task none has."""
    y = np.random.default_rng(seed).normal(size=(len(codes), 3))
    fit, rows = np.array(codes), np.array(out)
    got = _task_means(y, fit, rows)
    for i, c in enumerate(rows):
        expected = y[fit == c].mean(axis=0) if (fit == c).any() else y.mean(axis=0)
        np.testing.assert_allclose(got[i], expected, atol=1e-12)
