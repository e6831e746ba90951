"""The per-query cost model: what it learns from the prompt's length, when it keeps the mean, its persistence,
onboarding, and how select_router pairs it with the candidates."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from agents.routers import (
    ClusterRouter,
    CostModel,
    EnsembleRouter,
    KNNRouter,
    LinUCB,
    LogisticRouter,
    TaskTableRouter,
    select_router,
)
from agents.routers.selection import COST_MODEL_SUFFIX, _preference
from routing_env.data import LoggedDataset, QueryFeaturizer, TextFeaturizer, featurize
from routing_env.data.featurizers import LENGTH_FEATURE
from routing_env.errors import ConfigurationError, ModelMismatchError, PolicyFormatError
from routing_env.policy import load_policy

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
]
#: USD per character of prompt and fixed USD per answer, per model (a price per token, roughly).
PER_CHAR = np.array([1e-7, 1e-6, 1e-5])
PER_ANSWER = {"short": np.array([1e-6, 1e-5, 1e-4]), "long": np.array([1e-5, 1e-4, 1e-3])}


def priced_logs(n: int = 600, seed: int = 0, noise: float = 0.0) -> LoggedDataset:
    """Prompts of 3–400 words; cost = price per character × length + a per-task answer price; quality depends on
    the task only (model 2 is best at "long", model 1 at "short")."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 400, size=n)
    prompts = [" ".join(rng.choice(WORDS, size=int(m))) + f" #{i}" for i, m in enumerate(lengths)]
    tasks = np.where(rng.random(n) < 0.5, "short", "long")
    chars = np.array([len(p) for p in prompts], dtype=float)
    cost = chars[:, None] * PER_CHAR[None, :] + np.stack([PER_ANSWER[t] for t in tasks])
    cost *= np.exp(noise * rng.normal(size=cost.shape))
    p_right = np.where((tasks == "long")[:, None], [0.3, 0.5, 0.9], [0.4, 0.8, 0.8])
    quality = (rng.random((n, 3)) < p_right).astype(float)
    raw = LoggedDataset(
        models=("small", "medium", "large"),
        query_ids=[f"q{i}" for i in range(n)],
        quality=quality,
        cost=cost,
        prompts=prompts,
        tasks=tasks,
    )
    featurizer = QueryFeaturizer(TextFeaturizer(n_components=4)).fit(prompts, list(tasks))
    return featurize(raw, featurizer)


def without_features(ds: LoggedDataset) -> LoggedDataset:
    """``ds``'s outcomes, prompts and tasks, without features (as logs arrive before featurizing)."""
    return LoggedDataset(
        models=ds.models,
        query_ids=ds.query_ids,
        quality=ds.quality,
        cost=ds.cost,
        prompts=ds.prompts,
        tasks=ds.tasks,
    )


@pytest.fixture(scope="module")
def priced() -> LoggedDataset:
    return priced_logs()


# ---------------------------------------------------------------------------------------------- estimates
def test_learns_a_cost_affine_in_the_prompt_length(priced: LoggedDataset) -> None:
    train, test = priced.select(np.arange(450)), priced.select(np.arange(450, 600))
    costs = CostModel().fit(train)
    pred = costs.predict(test.features)
    assert pred.shape == (150, 3) and (pred >= 0).all()
    truth = np.asarray(test.cost)
    # The per-task mean, what a table router charges, against the cost model.
    table = np.zeros_like(truth)
    for t in ("short", "long"):
        table[np.asarray(test.tasks) == t] = np.asarray(train.cost)[np.asarray(train.tasks) == t].mean(axis=0)
    err, err_table = ((pred - truth) ** 2).mean(axis=0), ((table - truth) ** 2).mean(axis=0)
    assert (err < 0.05 * err_table).all(), (err, err_table)
    assert set(costs.mode_) <= {"linear", "log"} and np.isfinite(costs.cv_mse_).all()
    assert costs.oof_ is not None and costs.oof_.shape == (450, 3)
    assert costs.chosen()["cost"]


def test_keeps_the_mean_when_every_call_has_one_price() -> None:
    flat = priced_logs(n=300)
    flat = LoggedDataset(
        models=flat.models,
        query_ids=flat.query_ids,
        quality=flat.quality,
        cost=np.broadcast_to([0.001, 0.01, 0.1], (300, 3)).copy(),
        features=flat.features,
        feature_names=flat.feature_names,
        prompts=flat.prompts,
        tasks=flat.tasks,
    )
    costs = CostModel().fit(flat)
    assert costs.mode_ == ("mean", "mean", "mean")
    np.testing.assert_allclose(costs.predict(flat.features[:5]), np.broadcast_to([0.001, 0.01, 0.1], (5, 3)))


def test_a_free_model_costs_nothing(priced: LoggedDataset) -> None:
    cost = np.asarray(priced.cost).copy()
    cost[:, 0] = 0.0
    costs = CostModel().fit(_with_cost(priced, cost))
    assert costs.mode_[0] == "mean"
    np.testing.assert_array_equal(costs.predict(priced.features)[:, 0], 0.0)


def test_partial_logs_learn_each_model_from_its_own_rows(priced: LoggedDataset) -> None:
    cost = np.asarray(priced.cost).copy()
    hidden = np.random.default_rng(1).random(cost.shape) < 0.6
    cost[hidden] = np.nan
    quality = np.asarray(priced.quality).copy()
    quality[hidden] = np.nan
    partial = _with_cost(priced, cost, quality)
    pred = CostModel().fit(partial).predict(priced.features)
    truth = np.asarray(priced.cost)
    assert (np.abs(pred - truth).mean(axis=0) < 0.1 * truth.mean(axis=0)).all()


def test_without_a_length_column_it_still_fits(priced: LoggedDataset) -> None:
    names = list(priced.feature_names)
    keep = [i for i, n in enumerate(names) if n != "length:log_chars"]
    blind = priced.with_features(np.asarray(priced.features)[:, keep], names=[names[i] for i in keep])
    costs = CostModel().fit(blind)
    assert costs.length_index_ == -1 and costs.predict(blind.features).shape == (600, 3)


def test_untuned_uses_the_given_mode(priced: LoggedDataset) -> None:
    costs = CostModel(tune=False, mode="linear", alpha=1e-3).fit(priced)
    assert costs.mode_ == ("linear",) * 3 and costs.oof_ is None
    assert CostModel(tune=False, mode="mean").fit(priced).mode_ == ("mean",) * 3


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (7, 7), elements=st.floats(-1e6, 1e6, allow_nan=False)))
def test_estimates_are_finite_and_non_negative_for_any_finite_features(x: np.ndarray) -> None:
    pred = _FITTED.predict(x)
    assert pred.shape == (7, 3) and np.isfinite(pred).all() and (pred >= 0).all()


_FITTED = CostModel().fit(priced_logs(n=200, seed=5))


def test_refuses_bad_settings_and_inputs(priced: LoggedDataset) -> None:
    with pytest.raises(ConfigurationError, match="cv must be an int"):
        CostModel(cv=1)
    with pytest.raises(ConfigurationError, match="mode must be one of"):
        CostModel(mode="quadratic")
    bare = LoggedDataset(
        models=("a", "b"), query_ids=["q0", "q1"], quality=[[1, 0], [0, 1]], cost=[[1, 2], [3, 4]]
    )
    assert CostModel(cv=2).fit(bare).mode_ == ("mean", "mean")  # nothing to regress on: the mean
    with pytest.raises(ConfigurationError, match="folds must have shape"):
        CostModel().fit(priced, folds=np.zeros(3, dtype=np.int64))
    cost = np.asarray(priced.cost).copy()
    cost[:, 1] = np.nan
    quality = np.asarray(priced.quality).copy()
    quality[:, 1] = np.nan
    with pytest.raises(ConfigurationError, match="'medium' has no observed cost"):
        CostModel().fit(_with_cost(priced, cost, quality))
    with pytest.raises(Exception, match="features"):
        CostModel().fit(priced).predict(np.zeros((2, 4)))


# ---------------------------------------------------------------------------------------------- persistence
def test_save_load_round_trip(priced: LoggedDataset, tmp_path: Path) -> None:
    costs = CostModel().fit(priced)
    back = CostModel.load(costs.save(tmp_path / "c"))
    np.testing.assert_array_equal(back.predict(priced.features), costs.predict(priced.features))
    assert back.mode_ == costs.mode_ and back.models == costs.models


def test_a_tampered_save_is_refused(priced: LoggedDataset, tmp_path: Path) -> None:
    path = CostModel().fit(priced).save(tmp_path / "c")
    doc = json.loads((path / "policy.json").read_text())
    doc["config"]["modes"] = ["log", "log"]
    (path / "policy.json").write_text(json.dumps(doc))
    with pytest.raises(PolicyFormatError, match="not a valid CostModel"):
        CostModel.load(path)


# ---------------------------------------------------------------------------------------------- models come and go
def test_add_and_remove_a_model(priced: LoggedDataset) -> None:
    costs = CostModel().fit(priced.subset_models(("small", "medium")))
    costs.add_model("large", priced.select(np.arange(150)))
    assert costs.models == ("small", "medium", "large")
    pred = costs.predict(priced.features)[:, 2]
    truth = np.asarray(priced.cost)[:, 2]
    assert np.abs(pred - truth).mean() < 0.1 * truth.mean()
    with pytest.raises(ModelMismatchError, match="already estimated"):
        costs.add_model("large", priced)
    costs.remove_model("small")
    assert costs.models == ("medium", "large") and costs.predict(priced.features).shape == (600, 2)
    with pytest.raises(ModelMismatchError, match="not estimated"):
        costs.remove_model("small")


# ---------------------------------------------------------------------------------------------- in an ensemble
def test_ensemble_routes_on_the_cost_model_and_saves_it(priced: LoggedDataset, tmp_path: Path) -> None:
    table = TaskTableRouter().fit(priced, cost_weight=0.5)
    costs = CostModel().fit(priced)
    paired = EnsembleRouter((table,), cost_model=costs)
    q, c = paired.predict_outcomes(priced.features)
    np.testing.assert_array_equal(c, costs.predict(priced.features))
    np.testing.assert_array_equal(q, table.predict_outcomes(priced.features)[0])
    assert "cost" in paired.chosen()
    back = load_policy(paired.save(tmp_path / "p"))
    assert isinstance(back, EnsembleRouter) and back.cost_model is not None
    np.testing.assert_array_equal(
        back.action_probabilities(priced.features, cost_weight=2.0),
        paired.action_probabilities(priced.features, cost_weight=2.0),
    )
    # Long prompts of the expensive model cost more than the table's mean says: the pairing routes them cheaper.
    lam = 0.3
    long_rows = np.argsort([len(str(p)) for p in priced.prompts])[-100:]
    picks_paired = paired.action_probabilities(priced.features[long_rows], cost_weight=lam).argmax(axis=1)
    picks_table = table.action_probabilities(priced.features[long_rows], cost_weight=lam).argmax(axis=1)
    spent_paired = np.asarray(priced.cost)[long_rows, picks_paired].mean()
    spent_table = np.asarray(priced.cost)[long_rows, picks_table].mean()
    assert spent_paired < spent_table


def test_ensemble_onboards_in_its_cost_model(priced: LoggedDataset) -> None:
    two = priced.subset_models(("small", "medium"))
    paired = EnsembleRouter(
        (ClusterRouter(n_clusters=2, seed=0).fit(two, cost_weight=0.3),), cost_model=CostModel().fit(two)
    )
    paired.add_model("large", priced.select(np.arange(200)))
    assert paired.models == paired.cost_model.models == ("small", "medium", "large")  # type: ignore[union-attr]
    paired.remove_model("small")
    assert paired.cost_model is not None and paired.cost_model.models == ("medium", "large")


def test_ensemble_refuses_a_cost_model_of_other_models(priced: LoggedDataset) -> None:
    table = TaskTableRouter().fit(priced, cost_weight=0.5)
    other = CostModel().fit(priced.subset_models(("small", "large")))
    with pytest.raises(ModelMismatchError, match="the cost model estimates"):
        EnsembleRouter((table,), cost_model=other)
    with pytest.raises(ConfigurationError, match="must be a fitted CostModel"):
        EnsembleRouter((table,), cost_model="cheap")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- in select_router
def test_select_router_pairs_candidates_with_the_cost_model() -> None:
    logs = priced_logs(n=900, seed=3, noise=0.05)
    selection = select_router(logs, candidates=("task-table", "cluster"), cost_weights=(0.0, 0.3, 1.0, 3.0))
    rows = list(selection.table["router"])
    assert {"task-table+cost-model", "cluster+cost-model", "ensemble+cost-model"} <= set(rows)
    kept = selection.table.loc[selection.table["selected"], "router"].iloc[0]
    # Quality depends on the task only and cost on the length: per-query costs score higher, and are kept.
    assert kept.endswith(COST_MODEL_SUFFIX), selection.table[["router", "cv_score"]]
    router = getattr(selection.router, "router", selection.router)
    assert isinstance(router, EnsembleRouter) and router.cost_model is not None
    plain = select_router(
        logs, candidates=("task-table", "cluster"), cost_weights=(0.0, 0.3, 1.0, 3.0), cost_model=False
    )
    assert not any(r.endswith(COST_MODEL_SUFFIX) for r in plain.table["router"])


def test_preference_uses_the_pairing_only_when_it_scores_higher() -> None:
    names = ["task-table", "cluster", "ensemble", "task-table+cost-model", "cluster+cost-model"]
    scores = np.array([0.5, 0.6, 0.55, 0.52, 0.6])
    # ensemble first; task-table by its pairing (higher); cluster by itself (a tie keeps the simpler).
    assert _preference(names, scores) == [2, 3, 1]


def _with_cost(ds: LoggedDataset, cost: np.ndarray, quality: np.ndarray | None = None) -> LoggedDataset:
    return LoggedDataset(
        models=ds.models,
        query_ids=ds.query_ids,
        quality=ds.quality if quality is None else quality,
        cost=cost,
        features=ds.features,
        feature_names=ds.feature_names,
        prompts=ds.prompts,
        tasks=ds.tasks,
    )


# ---------------------------------------------------------------------------------------------- length for cost only
@pytest.mark.parametrize(
    "make",
    [
        lambda: LinUCB(seed=0),
        lambda: LogisticRouter(),
        lambda: KNNRouter(),
        lambda: ClusterRouter(seed=0),
        lambda: TaskTableRouter(),
    ],
    ids=["linucb", "logistic", "knn", "cluster", "task-table"],
)
def test_routers_read_the_length_column_for_nothing(
    make: Callable[[], Any], priced: LoggedDataset, tmp_path: Path
) -> None:
    """A router fitted with the length column routes exactly as one fitted without it, and so does its save."""
    names = list(priced.feature_names)
    at = names.index(LENGTH_FEATURE)
    keep = [i for i in range(len(names)) if i != at]
    blind = priced.with_features(np.asarray(priced.features)[:, keep], names=[names[i] for i in keep])
    train, test = priced.select(np.arange(450)), priced.select(np.arange(450, 600))
    with_length = make().fit(train, cost_weight=0.5)
    without = make().fit(blind.select(np.arange(450)), cost_weight=0.5)
    assert with_length.cost_only_columns_ == (at,) and with_length.n_features == priced.n_features
    for lam in (0.0, 0.5, 3.0):
        np.testing.assert_allclose(
            with_length.action_probabilities(test.features, cost_weight=lam),
            without.action_probabilities(np.asarray(test.features)[:, keep], cost_weight=lam),
            atol=1e-9,
        )
    # One row at a time too (the bandits' per-request path zeroes the column in its buffer).
    row = np.asarray(test.features[0], dtype=np.float64)
    np.testing.assert_allclose(
        with_length.action_probabilities(row, cost_weight=0.5),
        without.action_probabilities(row[keep], cost_weight=0.5),
        atol=1e-9,
    )
    back = load_policy(with_length.save(tmp_path / "r"))
    assert back.cost_only_columns_ == (at,)
    np.testing.assert_array_equal(
        back.action_probabilities(test.features, cost_weight=0.5),
        with_length.action_probabilities(test.features, cost_weight=0.5),
    )


def test_a_router_saved_before_cost_only_columns_loads_with_none(
    priced: LoggedDataset, tmp_path: Path
) -> None:
    path = KNNRouter(n_neighbors=5).fit(priced, cost_weight=0.5).save(tmp_path / "knn")
    doc = json.loads((path / "policy.json").read_text())
    doc["config"].pop("cost_only_columns")
    (path / "policy.json").write_text(json.dumps(doc))
    assert load_policy(path).cost_only_columns_ == ()


def test_ensemble_onboards_from_prompts_alone(tmp_path: Path) -> None:
    """The labelled set of a new model may come without features: the ensemble's featurizer makes them for its
    members and for its cost model alike."""
    logs = priced_logs(n=600, seed=4)
    featurizer = QueryFeaturizer(TextFeaturizer(n_components=4)).fit(list(logs.prompts), list(logs.tasks))
    feats = featurize(logs, featurizer)
    two = feats.subset_models(("small", "medium"))
    paired = EnsembleRouter(
        (ClusterRouter(n_clusters=2, seed=0).fit(two, cost_weight=0.3, featurizer=featurizer),),
        cost_model=CostModel().fit(two),
        featurizer=featurizer,
    )
    labelled = logs.select(np.arange(200))
    paired.add_model("large", without_features(labelled))
    assert paired.models == ("small", "medium", "large")
    pred = paired.predict_outcomes(feats.features)[1][:, 2]
    truth = np.asarray(feats.cost)[:, 2]
    assert np.abs(pred - truth).mean() < 0.1 * truth.mean()
