"""The shrinkage routers: empirical-Bayes offsets, the per-task table, the clustering router, onboarding a model
(``add_model``) and retiring one (``remove_model``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.routers import ClusterRouter, TaskTableRouter
from agents.routers._shrinkage import eb_offsets
from routing_env.data import LoggedDataset, TaskOneHot, make_synthetic
from routing_env.errors import ConfigurationError, ModelMismatchError, ShapeError
from routing_env.metrics import evaluate_policy
from routing_env.policy import load_policy


def with_task_columns(ds: LoggedDataset) -> LoggedDataset:
    """``ds`` with the task one-hot appended to its features (as ``QueryFeaturizer`` does)."""
    enc = TaskOneHot().fit(list(ds.tasks))
    x = np.hstack([np.asarray(ds.features), enc.transform(list(ds.tasks))])
    return ds.with_features(x, names=[*ds.feature_names, *enc.feature_names])


def blobs(n: int = 1200, seed: int = 0) -> LoggedDataset:
    """Four clusters of queries in 2-D; in cluster j model j is right 90% of the time, the others 30%; equal
    costs; two tasks spread evenly over the clusters (so the task says nothing)."""
    rng = np.random.default_rng(seed)
    centre = rng.integers(4, size=n)
    x = np.array([[0, 0], [0, 6], [6, 0], [6, 6]], dtype=float)[centre] + rng.normal(size=(n, 2))
    p = np.where(np.arange(4)[None, :] == centre[:, None], 0.9, 0.3)
    quality = (rng.random((n, 4)) < p).astype(float)
    tasks = np.where(rng.random(n) < 0.5, "t0", "t1")
    enc = TaskOneHot().fit(list(tasks))
    return LoggedDataset(
        models=("m0", "m1", "m2", "m3"),
        query_ids=[f"q{i}" for i in range(n)],
        quality=quality,
        cost=np.full((n, 4), 0.001),
        features=np.hstack([x, enc.transform(list(tasks))]),
        feature_names=("x0", "x1", *enc.feature_names),
        prompts=[f"prompt {i}" for i in range(n)],
        tasks=tasks,
    )


@pytest.fixture(scope="module")
def tasked() -> LoggedDataset:
    return with_task_columns(make_synthetic(n_queries=600, models=4, n_features=6, seed=11))


# ---------------------------------------------------------------------------------------------- empirical Bayes
def test_eb_offsets_shrink_by_the_estimated_signal_to_noise() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(20), 50)
    effects = rng.normal(scale=1.0, size=20)
    y = (effects[groups] + rng.normal(scale=0.5, size=groups.size))[:, None]
    y -= y.mean()
    offsets, tau = eb_offsets(groups, 20, y, np.ones_like(y))
    # σ²_w / σ²_b ≈ 0.25 / 1: about 50/(50 + 0.25) of each group's mean survives.
    assert 0.05 < tau[0] < 1.0
    means = np.array([y[groups == g, 0].mean() for g in range(20)])
    np.testing.assert_allclose(offsets[:, 0], means * 50 / (50 + tau[0]))
    # No between-group signal: τ = ∞ and no offsets at all.
    flat = rng.normal(size=(groups.size, 1))
    offsets, tau = eb_offsets(groups, 20, flat - flat.mean(), np.ones_like(flat))
    assert np.isinf(tau[0]) or np.abs(offsets).max() < 0.2
    # Rows outside every group (-1) and unobserved cells (weight 0) are ignored.
    offsets, _ = eb_offsets(np.full(10, -1), 3, np.ones((10, 1)), np.ones((10, 1)))
    assert (offsets == 0).all()


# ---------------------------------------------------------------------------------------------- task table
def test_task_table_routes_the_best_model_per_task_and_the_global_table_otherwise(
    tasked: LoggedDataset,
) -> None:
    table = TaskTableRouter().fit(tasked, cost_weight=0.0)
    assert table.cv_score_ is not None
    n_tasks = len(table.categories_)
    x = np.asarray(tasked.features, dtype=np.float64)
    choice = table.action_probabilities(x).argmax(axis=1)
    for task in set(tasked.tasks):
        rows = tasked.tasks == task
        means = tasked.quality[rows].mean(axis=0)
        # With hundreds of queries per task the shrinkage barely moves the means: the best model per task wins.
        assert (choice[rows] == int(means.argmax())).all() or np.sort(means)[-1] - np.sort(means)[-2] < 0.02
    unknown = x[:3].copy()
    unknown[:, -n_tasks:] = 0.0  # a bare prompt: no task columns set
    global_best = int(tasked.quality.mean(axis=0).argmax())
    assert (table.action_probabilities(unknown).argmax(axis=1) == global_best).all()
    # λ at decision time: a huge cost weight sends everything to the cheapest model.
    cheapest = int(tasked.mean_cost().argmin())
    assert (table.action_probabilities(x, cost_weight=1e6).argmax(axis=1) == cheapest).all()


def test_task_table_reads_any_categorical_column_and_refuses_none(small: LoggedDataset) -> None:
    codes = np.unique(small.tasks, return_inverse=True)[1].astype(float)
    ds = small.with_features(np.column_stack([small.features, codes]), names=[*small.feature_names, "tier"])
    table = TaskTableRouter(column="tier").fit(ds)
    assert len(table.categories_) == len(set(small.tasks))
    with pytest.raises(ConfigurationError, match="TaskTableRouter needs a categorical feature 'task'"):
        TaskTableRouter().fit(small)


# ---------------------------------------------------------------------------------------------- clusters
def test_cluster_router_finds_the_clusters_a_task_table_cannot_see() -> None:
    train, test = blobs(seed=0), blobs(seed=1)
    router = ClusterRouter(cv_cost_weights=(0.0,)).fit(train)
    table = TaskTableRouter().fit(train)
    assert router.n_clusters_ is not None and router.n_clusters_ >= 4
    gain = evaluate_policy(test, router).mean_reward - evaluate_policy(test, table).mean_reward
    assert gain > 0.4  # 0.9 against about 0.45
    assert router.cv_score_ is not None and table.cv_score_ is not None and router.cv_score_ > table.cv_score_


def test_cluster_router_keeps_k_and_residual_as_given_and_takes_a_clustering() -> None:
    train = blobs(seed=2)
    fixed = ClusterRouter(n_clusters=3, residual=False).fit(train)
    assert fixed.n_clusters_ == 3 and fixed.residual_ridge_ is None
    on = ClusterRouter(n_clusters=2, residual=True, residual_ridge=50.0).fit(train)
    assert on.residual_ridge_ == 50.0 and np.abs(on.resid_coef_).sum() > 0
    labels = (np.asarray(train.features)[:, 0] > 3).astype(np.int64) * 2 + (
        np.asarray(train.features)[:, 1] > 3
    )
    given = ClusterRouter(residual=False).fit(train, clusters=labels)
    assert given.n_clusters_ == 4
    assert evaluate_policy(blobs(seed=3), given).mean_reward > 0.85
    with pytest.raises(ShapeError, match="clusters must be"):
        ClusterRouter().fit(train, clusters=labels[:10])
    with pytest.raises(ConfigurationError, match="n_clusters must be an int ≥ 1"):
        ClusterRouter(n_clusters=0)


def test_bare_prompts_use_the_clusters_fitted_without_the_task_level() -> None:
    train = blobs(seed=4)
    router = ClusterRouter(n_clusters=4, residual=False).fit(train)
    x = np.asarray(blobs(seed=5).features, dtype=np.float64)
    bare = x.copy()
    bare[:, 2:] = 0.0
    # The task says nothing here, so knowing it or not routes the same.
    agree = (router.action_probabilities(bare).argmax(1) == router.action_probabilities(x).argmax(1)).mean()
    assert agree > 0.95


# ---------------------------------------------------------------------------------------------- onboarding
def test_add_model_routes_to_a_new_model_from_a_few_hundred_queries(tmp_path: Path) -> None:
    full, test = blobs(seed=6), blobs(seed=7)
    router = ClusterRouter(n_clusters=4, residual=False).fit(full.subset_models(["m0", "m1", "m2"]))
    onboarding = full.select(np.arange(200)).subset_models(["m3"])
    router.add_model("m3", onboarding)
    assert router.models == ("m0", "m1", "m2", "m3")
    centre_3 = (np.asarray(test.features)[:, 0] > 3) & (np.asarray(test.features)[:, 1] > 3)
    choice = router.action_probabilities(test.features).argmax(axis=1)
    assert (choice[centre_3] == 3).mean() > 0.9
    retrained = ClusterRouter(n_clusters=4, residual=False).fit(full)
    assert evaluate_policy(test, router).mean_reward > 0.95 * evaluate_policy(test, retrained).mean_reward
    router.save(tmp_path / "p")
    loaded = load_policy(tmp_path / "p")
    assert loaded.models == router.models
    np.testing.assert_array_equal(
        loaded.action_probabilities(test.features), router.action_probabilities(test.features)
    )


def test_remove_model_stops_routing_to_it(tasked: LoggedDataset) -> None:
    router = ClusterRouter(n_clusters=2).fit(tasked)
    before = router.action_probabilities(tasked.features)
    gone = tasked.models[int(before.mean(axis=0).argmax())]
    router.remove_model(gone)
    assert gone not in router.models and len(router.models) == tasked.n_models - 1
    after = router.action_probabilities(tasked.features)
    assert after.shape == (tasked.n_queries, tasked.n_models - 1)
    np.testing.assert_allclose(after.sum(axis=1), 1.0)
    evaluate_policy(tasked.subset_models(router.models), router)  # the dataset without it scores


def test_onboarding_errors(tasked: LoggedDataset) -> None:
    router = TaskTableRouter().fit(tasked.subset_models(tasked.models[:3]))
    new = tasked.models[3]
    with pytest.raises(ConfigurationError, match="already routed to"):
        router.add_model(tasked.models[0], tasked)
    with pytest.raises(ModelMismatchError, match="has no outcomes of 'nope'"):
        router.add_model("nope", tasked)
    with pytest.raises(ConfigurationError, match="at least 10 queries"):
        router.add_model(new, tasked.select(np.arange(5)))
    narrow = tasked.with_features(np.zeros((tasked.n_queries, 2)))
    with pytest.raises(ShapeError, match="width 2"):
        router.add_model(
            new,
            LoggedDataset(
                models=narrow.models,
                query_ids=narrow.query_ids,
                quality=narrow.quality,
                cost=narrow.cost,
                features=narrow.features,
            ),
        )
    with pytest.raises(ModelMismatchError, match="is not routed to"):
        router.remove_model(new)
    for m in router.models[:-1]:
        router.remove_model(m)
    with pytest.raises(ConfigurationError, match="only model left"):
        router.remove_model(router.models[0])


def test_cluster_router_on_unnamed_features_without_a_task() -> None:
    """Features with no task column and one cluster chosen: every query gets the global estimates."""
    ds = make_synthetic(n_queries=300, models=3, n_features=4, seed=5)
    bare = ds.with_features(np.asarray(ds.features))  # no names, so no task level
    router = ClusterRouter(n_clusters=1, seed=0).fit(bare, cost_weight=0.2)
    probs = router.action_probabilities(bare.features[:7])
    assert probs.shape == (7, 3) and np.allclose(probs.sum(axis=1), 1.0)
    tuned = ClusterRouter(seed=0, cv_cost_weights=(0.0, 0.5)).fit(bare)
    assert tuned.action_probabilities(bare.features[:3]).shape == (3, 3)
