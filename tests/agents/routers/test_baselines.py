"""Baseline routers: each rule does what the literature's version does, and refuses bad input clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.routers import (
    BestSingleModel,
    Cheapest,
    FixedModel,
    KNNRouter,
    LogisticRouter,
    MatrixFactorizationRouter,
    MLPRouter,
    Oracle,
    RandomRouter,
    ThresholdCascade,
    cascade_outcomes,
)
from routing_env.data import LoggedDataset, make_synthetic
from routing_env.errors import (
    ConfigurationError,
    ModelMismatchError,
    PartialInformationError,
    ShapeError,
)
from routing_env.metrics import evaluate_policy
from routing_env.policy import load_policy
from tests.agents.routers.bandit_logs import hide_outcomes


@pytest.fixture(scope="module")
def split() -> tuple[LoggedDataset, LoggedDataset]:
    return make_synthetic(n_queries=1500, models=5, n_features=8, seed=21).split(test_size=0.3, seed=0)


def _value(policy, data: LoggedDataset, lam: float) -> float:
    return evaluate_policy(data, policy, cost_weight=lam).mean_reward


def test_fixed_rules(small: LoggedDataset) -> None:
    x = small.features
    assert (RandomRouter().fit(small).action_probabilities(np.zeros((3, 99))) == 0.25).all()
    fixed = FixedModel(model=small.models[2]).fit(small)
    assert (fixed.action_probabilities(x).argmax(axis=1) == 2).all()
    cheapest = Cheapest().fit(small)
    assert cheapest.model == small.models[int(np.argmin(small.mean_cost()))]
    with pytest.raises(ModelMismatchError, match="model 'nope' is not in the dataset's models"):
        FixedModel(model="nope").fit(small)
    with pytest.raises(ConfigurationError, match="model must name a model"):
        FixedModel()
    with pytest.raises(ConfigurationError, match="is not fitted"):
        Cheapest().action_probabilities(x)


def test_best_single_model_depends_on_the_cost_weight(small: LoggedDataset) -> None:
    by_quality = BestSingleModel().fit(small)
    assert by_quality.choice_ == int(np.nanargmax(np.nanmean(small.quality, axis=0)))
    for lam in (0.0, 0.3, 3.0):
        best = BestSingleModel(cost_weight=lam).fit(small)
        means = np.nanmean(small.rewards(lam), axis=0)
        assert best.choice_ == int(np.argmax(means))
        assert best.mean_reward_ == pytest.approx(means.max())
    assert BestSingleModel().fit(small, cost_weight=100.0).choice_ == Cheapest().fit(small).choice_


def test_oracle_is_the_upper_bound_and_only_routes_its_queries(split) -> None:
    train, test = split
    lam = 0.3
    oracle = Oracle(cost_weight=lam).fit(test)
    np.testing.assert_array_equal(
        oracle.action_probabilities(test.features).argmax(axis=1), test.oracle_actions(lam)
    )
    value = _value(oracle, test, lam)
    for other in (BestSingleModel(cost_weight=lam).fit(train), KNNRouter().fit(train, lam)):
        assert value >= _value(other, test, lam)
    rows = np.array([5, 2, 9])  # any rows of its dataset, matched by value
    np.testing.assert_array_equal(
        oracle.action_probabilities(test.features[rows]).argmax(axis=1), test.oracle_actions(lam)[rows]
    )
    with pytest.raises(ConfigurationError, match="can only route queries of the dataset it was fitted on"):
        oracle.action_probabilities(train.features[:3])
    partial = hide_outcomes(test, np.arange(test.n_models) == 0)
    with pytest.raises(PartialInformationError, match="needs the outcome of every model"):
        Oracle().fit(partial)


@pytest.mark.parametrize(
    "make",
    [
        lambda: KNNRouter(n_neighbors=15),
        lambda: MLPRouter(hidden_layer_sizes=(32,), max_iter=200, seed=0),
        lambda: LogisticRouter(C=1.0),
    ],
    ids=["knn", "mlp", "logistic"],
)
def test_predictive_routers_beat_the_best_single_model(make, split) -> None:
    train, test = split
    lam = 0.3
    router = make().fit(train, cost_weight=lam)
    best = BestSingleModel(cost_weight=lam).fit(train)
    assert _value(router, test, lam) > _value(best, test, lam) + 0.01
    q, c = router.predict_outcomes(test.features)
    assert q.shape == c.shape == (test.n_queries, test.n_models)
    assert ((q >= 0) & (q <= 1)).all()
    # The per-call λ override and a huge λ (everything to the cheapest model).
    cheapest = int(np.argmin(train.mean_cost()))
    assert (router.action_probabilities(test.features, cost_weight=1e6).argmax(axis=1) == cheapest).all()


def test_knn_with_one_neighbour_recovers_training_outcomes(small: LoggedDataset) -> None:
    knn = KNNRouter(n_neighbors=1).fit(small, cost_weight=0.2)
    q, c = knn.predict_outcomes(small.features)
    np.testing.assert_allclose(q, small.quality)
    np.testing.assert_allclose(c, small.cost)


def test_logistic_router_soft_labels_and_partial_logs(small: LoggedDataset) -> None:
    # Model 0 observed on half the queries only: it learns from those rows.
    mask = np.zeros(small.quality.shape, dtype=bool)
    mask[::2, 0] = True
    partial = hide_outcomes(small, mask)
    router = LogisticRouter().fit(partial)
    q, _ = router.predict_outcomes(small.features)
    # A well-specified logistic fit reproduces each model's mean quality on its training rows (calibration).
    for j in range(small.n_models):
        rows = ~np.isnan(partial.quality[:, j])
        assert q[rows, j].mean() == pytest.approx(partial.quality[rows, j].mean(), abs=0.02)
    with pytest.raises(PartialInformationError, match="needs full-information logs"):
        MLPRouter().fit(partial)


def test_mlp_router_weights_round_trip_without_sklearn_objects(split, tmp_path: Path) -> None:
    train, test = split
    router = MLPRouter(hidden_layer_sizes=(8, 4), max_iter=30, seed=1).fit(train, cost_weight=0.1)
    router.save(tmp_path / "mlp")
    with np.load(tmp_path / "mlp" / "arrays.npz", allow_pickle=False) as arrays:
        assert {"coef_0", "coef_1", "coef_2", "intercept_2"} <= set(arrays.files)
    loaded = load_policy(tmp_path / "mlp")
    np.testing.assert_array_equal(
        loaded.predict_outcomes(test.features)[0], router.predict_outcomes(test.features)[0]
    )


def test_matrix_factorization_router(split) -> None:
    train, test = split
    strong, weak = train.models[-1], train.models[0]
    mf = MatrixFactorizationRouter(strong=strong, weak=weak, seed=0).fit(train)
    p = mf.strong_win_probability(test.features)
    wins = test.quality[:, -1] > test.quality[:, 0]
    # It ranks queries by whether the strong model does better: ROC AUC well above chance.
    order = np.argsort(p)
    ranks = np.empty(len(p))
    ranks[order] = np.arange(1, len(p) + 1)
    auc = (ranks[wins].sum() - wins.sum() * (wins.sum() + 1) / 2) / (wins.sum() * (~wins).sum())
    assert auc > 0.65
    for share in (0.0, 0.25, 0.5, 1.0):
        mf.calibrate_threshold(test.features, share)
        routed = mf.action_probabilities(test.features)
        assert routed[:, [0, -1]].sum() == pytest.approx(test.n_queries)  # only the pair is used
        assert routed[:, -1].mean() == pytest.approx(share, abs=2 / test.n_queries)
    with pytest.raises(ConfigurationError, match="name strong= and weak="):
        MatrixFactorizationRouter().fit(train)
    with pytest.raises(ConfigurationError, match="strong_share must be a finite number ≥ 0 and ≤ 1"):
        mf.calibrate_threshold(test.features, 1.5)
    two = train.subset_models([weak, strong])
    auto = MatrixFactorizationRouter(epochs=5).fit(two)
    assert two.models[auto.strong_] == strong  # the more expensive model is the strong one


def test_threshold_cascade_tuning(split) -> None:
    train, test = split
    lam = 0.3
    cascade = ThresholdCascade(cost_weight=lam).fit(train)
    order = np.argsort(train.mean_cost())
    assert cascade.chain == tuple(train.models[j] for j in order)
    assert len(cascade.thresholds) == len(cascade.chain) - 1
    idx = [train.models.index(m) for m in cascade.chain]
    n = train.n_queries
    fixed = [
        cascade_outcomes(train, idx, np.full(n, s), lam, cascade.cost_scale_)["reward"].mean()
        for s in range(len(idx))
    ]
    assert cascade.train_reward_ >= max(fixed)  # every "stop after s calls" rule is a candidate
    # The tuned rule generalises: better than either fixed rule on the test split too.
    assert test.signal is not None
    stages = cascade.accept_stages(np.asarray(test.signal, dtype=np.float64)[:, idx])
    value = cascade_outcomes(test, idx, stages, lam, cascade.cost_scale_)["reward"].mean()
    m = test.n_queries
    first = cascade_outcomes(test, idx, np.zeros(m, dtype=np.int64), lam, cascade.cost_scale_)[
        "reward"
    ].mean()
    last = cascade_outcomes(test, idx, np.full(m, len(idx) - 1), lam, cascade.cost_scale_)["reward"].mean()
    assert value > max(first, last)
    # A larger λ makes the cascade stop earlier on average.
    frugal = ThresholdCascade(cost_weight=3.0).fit(train)
    sig_train = np.asarray(train.signal, dtype=np.float64)[:, idx]
    assert frugal.accept_stages(sig_train).mean() < cascade.accept_stages(sig_train).mean()
    with pytest.raises(ConfigurationError, match="does not learn online"):
        cascade.update(test.features[:1], np.ones((1, 1)), np.array([True]), np.array([1.0]))


def test_threshold_cascade_given_thresholds_and_errors(small: LoggedDataset) -> None:
    chain = small.models[:3]
    cascade = ThresholdCascade(chain=chain, thresholds=(0.9, 0.5))
    p = cascade.stop_probabilities(np.zeros((3, 8)), np.array([[0.95], [0.2], [0.9]]))
    np.testing.assert_array_equal(p, [1.0, 0.0, 1.0])
    p2 = cascade.stop_probabilities(np.zeros((2, 8)), np.array([[0.1, 0.6], [0.1, 0.4]]))
    np.testing.assert_array_equal(p2, [1.0, 0.0])
    with pytest.raises(ConfigurationError, match=r"thresholds needs len\(chain\) − 1 = 2 values, got 1"):
        ThresholdCascade(chain=chain, thresholds=(0.5,))
    with pytest.raises(ConfigurationError, match="has no thresholds"):
        ThresholdCascade().stop_probabilities(np.zeros((1, 2)), np.ones((1, 1)))
    with pytest.raises(ModelMismatchError, match="not in"):
        ThresholdCascade(chain=("x", "y")).fit(small)
    no_signal = LoggedDataset(
        models=small.models, query_ids=small.query_ids, quality=small.quality, cost=small.cost
    )
    with pytest.raises(ConfigurationError, match="has no signal"):
        ThresholdCascade().fit(no_signal)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: KNNRouter(n_neighbors=0), "n_neighbors must be an int ≥ 1 or None, got 0"),
        (lambda: KNNRouter(cv=1), "cv must be an int ≥ 2 \\(folds\\), got 1"),
        (lambda: MLPRouter(n_epochs=0), "n_epochs must be in \\[1, max_iter=300\\], got 0"),
        (lambda: KNNRouter(weights="cosine"), "weights must be 'uniform' or 'distance', got 'cosine'"),
        (lambda: MLPRouter(hidden_layer_sizes=(0,)), "hidden_layer_sizes must be positive ints"),
        (lambda: LogisticRouter(C=0.0), "C must be a finite number > 0"),
        (lambda: MatrixFactorizationRouter(threshold=2.0), "threshold must be a finite number ≥ 0 and ≤ 1"),
        (lambda: BestSingleModel(cost_weight=-1.0), "cost_weight must be a finite number ≥ 0, got -1.0"),
        (lambda: RandomRouter(seed="x"), "seed must be an int or None"),
    ],
)
def test_hyperparameters_are_validated(make, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        make()


def test_feature_width_and_model_list_are_checked(small: LoggedDataset) -> None:
    router = KNNRouter().fit(small)
    with pytest.raises(ShapeError, match="width 9"):
        router.action_probabilities(np.zeros((2, 9)))
    router.check_dataset(small)
    with pytest.raises(ModelMismatchError, match="routes over models"):
        router.check_dataset(small.subset_models(small.models[:2]))
