"""OutcomeModel: per-model regressors fitted on logged rows, used to complete partial logs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from routing_env.data import LoggedDataset, make_synthetic
from routing_env.envs import OutcomeModel
from routing_env.errors import ModelMismatchError, PartialInformationError, ShapeError


@pytest.fixture(scope="module")
def full() -> LoggedDataset:
    return make_synthetic(n_queries=300, models=3, n_features=6, tasks=("math", "code"), seed=5)


def _blank(ds: LoggedDataset, keep: float, seed: int = 0) -> LoggedDataset:
    observed = np.random.default_rng(seed).random(ds.quality.shape) < keep
    return replace(ds, observed=observed)


@pytest.mark.slow
def test_completion_keeps_logged_cells_and_predicts_the_rest(full: LoggedDataset) -> None:
    partial = _blank(full, 0.5)
    model = OutcomeModel.fit(partial, seed=0)
    done = model.complete(partial)
    assert done.is_full_information
    logged = partial.observed
    np.testing.assert_array_equal(done.quality[logged], full.quality[logged])
    np.testing.assert_array_equal(done.cost[logged], full.cost[logged])
    hidden = ~logged
    assert ((done.quality[hidden] >= 0) & (done.quality[hidden] <= 1)).all()
    assert (done.cost[hidden] >= 0).all() and not np.isnan(done.latency).any()
    # The predictions carry signal about the hidden truth (the features drive quality and cost).
    assert np.corrcoef(done.quality[hidden], full.quality[hidden])[0, 1] > 0.3
    assert np.corrcoef(done.cost[hidden], full.cost[hidden])[0, 1] > 0.3
    assert model.complete(partial) is done, "completions are cached per dataset"
    np.testing.assert_array_equal(model.n_rows, logged.sum(axis=0))


@pytest.mark.slow
def test_same_seed_same_predictions(full: LoggedDataset) -> None:
    partial = _blank(full.select(np.arange(60)), 0.5)
    a = OutcomeModel.fit(partial, seed=1).predict(full.features[:50])
    b = OutcomeModel.fit(partial, seed=1).predict(full.features[:50])
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_errors(full: LoggedDataset) -> None:
    observed = np.ones(full.quality.shape, dtype=bool)
    observed[:, 2] = False
    with pytest.raises(PartialInformationError, match=r"models \['mixture-47b'\] have no logged rows"):
        OutcomeModel.fit(replace(full, observed=observed))
    from sklearn.linear_model import Ridge

    model = OutcomeModel.fit(_blank(full, 0.7), regressor=Ridge())
    with pytest.raises(ShapeError, match=r"features must have shape \(n, 6\), got \(4, 2\)"):
        model.predict(np.zeros((4, 2)))
    with pytest.raises(ModelMismatchError, match="fitted on models"):
        model.complete(full.subset_models(["small-3b", "open-8b"]))


def test_featureless_data_falls_back_to_logged_means() -> None:
    ds = LoggedDataset(
        models=("a", "b"),
        query_ids=["q0", "q1", "q2"],
        quality=[[1.0, np.nan], [0.0, 1.0], [np.nan, 1.0]],
        cost=[[1.0, np.nan], [3.0, 2.0], [np.nan, 4.0]],
    )
    done = OutcomeModel.fit(ds).complete(ds)
    assert done.quality[2, 0] == pytest.approx(0.5) and done.cost[2, 0] == pytest.approx(2.0)
    assert done.quality[0, 1] == pytest.approx(1.0) and done.cost[0, 1] == pytest.approx(3.0)
