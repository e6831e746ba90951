"""``select_router``: the cross-validated choice among router families, its table, and what it returns."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agents import select_router
from agents.routers import BestSingleModel, ClusterRouter, LinUCB, TaskTableRouter
from agents.routers._cv import Objective, make_folds, paired_difference
from agents.routers.ensemble import EnsembleRouter
from agents.routers.selection import GuardedRouter, _one_se, guard, make_router
from routing_env.data import LoggedDataset
from routing_env.errors import ConfigurationError
from routing_env.metrics import evaluate_policy
from tests.agents.routers.test_tables import blobs, with_task_columns


def test_select_router_picks_the_family_that_fits_the_structure() -> None:
    train, test = blobs(seed=10), blobs(seed=11)
    candidates = ("task-table", "cluster", "linucb")
    selection = select_router(
        train, candidates=candidates, cost_weights=(0.0, 1.0), ensemble=False, selection_se=0
    )
    table = selection.table
    assert list(table["router"]) == [
        "task-table",
        "cluster",
        "linucb",
        "task-table+cost-model",
        "cluster+cost-model",
        "linucb+cost-model",
    ]
    assert {"chosen", "cv_score", "cv_gap_closed", "cv_behind_best", "cv_se", "selected", "note"} <= set(
        table.columns
    )
    assert table["selected"].sum() == 1
    # Four clusters that a linear score cannot separate: the clustering router wins, on CV and on new queries.
    # Every call has one price, so the cost model keeps each model's mean and its pairing is never preferred.
    assert isinstance(selection.router, ClusterRouter)
    paired = table.set_index("router")
    assert paired.loc["cluster+cost-model", "cv_score"] == pytest.approx(paired.loc["cluster", "cv_score"])
    assert selection.metric == "aiq" and selection.cost_weights == (0.0, 1.0)
    best = table.loc[table["selected"], "cv_score"].iloc[0]
    assert best == table["cv_score"].max()
    assert evaluate_policy(test, selection.router).mean_reward > 0.85
    assert selection.router.cost_weight == 0.0  # the smallest λ served, until told otherwise
    # The task table is far behind, by many standard errors: the one-standard-error rule never keeps it.
    behind = table.set_index("router").loc["task-table"]
    assert behind["cv_behind_best"] > 5 * behind["cv_se"] > 0


def test_the_average_is_kept_when_cross_validation_cannot_beat_it() -> None:
    train, test = blobs(seed=10), blobs(seed=11)
    selection = select_router(train, candidates=("task-table", "cluster", "linucb"), cost_weights=(0.0, 1.0))
    table = selection.table.set_index("router")
    assert list(table.index)[:4] == ["task-table", "cluster", "linucb", "ensemble"]
    assert list(table.index)[4:] == [
        f"{r}+cost-model" for r in ("task-table", "cluster", "linucb", "ensemble")
    ]
    assert bool(table.loc["ensemble", "selected"]) and isinstance(selection.router, EnsembleRouter)
    assert table.loc["ensemble", "cv_behind_best"] <= table.loc["ensemble", "cv_se"] + 1e-12
    assert len(selection.router.members) == 3
    assert evaluate_policy(test, selection.router).mean_reward > 0.85
    with pytest.raises(ConfigurationError, match="selection_se"):
        select_router(train, candidates=("linucb",), selection_se=-1.0)
    with pytest.raises(ConfigurationError, match="guard_se"):
        select_router(train, candidates=("linucb",), guard_se=math.inf)


def test_one_standard_error_rule_prefers_the_first_router_within_reach() -> None:
    scores = np.array([0.50, 0.52, 0.40])
    folds = [np.array([0.5, 0.5, 0.5, 0.5]), np.array([0.56, 0.48, 0.56, 0.48]), np.array([0.4] * 4)]
    kept, behind, se = _one_se(scores, folds, order=[0, 1, 2], width=1.0)
    assert kept == 0  # 0.02 behind with a standard error of 0.023
    np.testing.assert_allclose(behind, [0.02, 0.0, 0.12])
    np.testing.assert_allclose(
        se, [np.std([0.06, -0.02] * 2, ddof=1) / 2, 0.0, np.std([0.16, 0.08] * 2, ddof=1) / 2]
    )
    assert _one_se(scores, folds, order=[0, 1, 2], width=0.0)[0] == 1
    assert _one_se(scores, folds, order=[2, 1, 0], width=1.0)[0] == 1  # the third is clearly worse
    mean, err = paired_difference(np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0, 1.0]))
    assert mean == pytest.approx(4 / 3) and err == pytest.approx(np.std([1, 1, 2], ddof=1) / math.sqrt(3))
    assert paired_difference(np.array([1.0]), np.array([0.0]))[1] == math.inf


def test_select_router_never_routes_below_the_best_single_model(sample: LoggedDataset) -> None:
    data = with_task_columns(sample)
    train, test = data.split(test_size=0.3, seed=0)
    selection = select_router(train, candidates=("task-table", "cluster", "linucb"))
    scale = selection.router.cost_scale_
    for lam in selection.cost_weights:
        single = BestSingleModel(cost_weight=lam, cost_scale=scale).fit(train)
        routed = evaluate_policy(test, _at(selection.router, lam), lam, cost_scale=scale).mean_reward
        assert routed >= evaluate_policy(test, single, lam, cost_scale=scale).mean_reward - 0.005, lam


def _at(router, lam: float):
    router.cost_weight = lam
    return router


def test_skipped_candidates_are_reported_and_instances_keep_their_settings(small: LoggedDataset) -> None:
    selection = select_router(
        small, candidates=("task-table", LinUCB(ridge=3.0)), cost_weights=0.2, cv=3, cost_model=False
    )
    table = selection.table.set_index("router")
    assert (
        "skipped" in table.loc["task-table", "note"]
        and "categorical feature" in table.loc["task-table", "note"]
    )
    assert table.loc["LinUCB", "chosen"].startswith("ridge=3")
    assert selection.metric == "mean_reward" and isinstance(selection.router, LinUCB)
    assert selection.router.ridge == 3.0 and selection.router.cv == 3


def test_select_router_refuses_bad_requests(small: LoggedDataset) -> None:
    with pytest.raises(ConfigurationError, match="unknown router 'nope'"):
        select_router(small, candidates=("nope",))
    with pytest.raises(ConfigurationError, match="non-empty sequence"):
        select_router(small, candidates=())
    with pytest.raises(ConfigurationError, match="could not fit any candidate"):
        select_router(small, candidates=("task-table",))
    with pytest.raises(ConfigurationError, match="cost_weights must hold"):
        select_router(small, cost_weights=(-1.0,))
    with pytest.raises(ConfigurationError, match="router names or unfitted router instances"):
        make_router(object())


def test_make_router_applies_the_cross_validation_settings() -> None:
    router = make_router(TaskTableRouter(column="tier"), cv=4, seed=9, cv_cost_weights=(0.0, 0.5))
    assert (router.column, router.cv, router.seed, router.cv_cost_weights) == ("tier", 4, 9, (0.0, 0.5))
    assert np.isclose(make_router("cluster", cv=3).cv, 3)


def test_the_guard_needs_an_advantage_of_one_standard_error() -> None:
    # Two models of equal cost; model 0 is the best single one (0.6 against 0.5). A router whose out-of-fold
    # choices of model 1 win on 20 queries and lose on 18 is ahead by 0.005, well under its standard error.
    n, rng = 400, np.random.default_rng(0)
    quality = np.zeros((n, 2))
    quality[:20, 1], quality[20:38, 0] = 1.0, 1.0
    quality[38 : 38 + 222, 0], quality[38 : 38 + 180, 1] = 1.0, 1.0
    order = rng.permutation(n)
    train = LoggedDataset(
        models=("a", "b"),
        query_ids=[f"q{i}" for i in range(n)],
        quality=quality[order],
        cost=np.full((n, 2), 0.001),
        features=rng.normal(size=(n, 3)),
        prompts=[f"prompt {i}" for i in range(n)],
    )
    q_hat = np.column_stack([np.full(n, 0.5), (np.arange(n) < 38).astype(float)])[order]
    router = LinUCB(seed=1).fit(train)
    router._cv_oof = (q_hat, np.full((n, 2), 0.001))
    objective = Objective(train, (0.0, 1.0), router.cost_scale_)
    folds = make_folds(train, 5, 0)
    guarded, note = guard(router, train, objective, folds)
    assert isinstance(guarded, GuardedRouter) and guarded.defers_at(0.0) and guarded.defers_at(1.0)
    assert "1 standard error" in note
    assert guard(router, train, objective, folds, se=0.0)[0] is router  # ahead on the point estimate
    assert guard(router, train, objective, folds, se=None) == (router, "")
