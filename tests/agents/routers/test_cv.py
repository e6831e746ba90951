"""The cross-validation every tuned router shares: grouped stratified folds, the objective, the closed-form ridge
path, the kNN path, the λ grid, and what tuning does to the routers (choice, standardisation, persistence)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from agents.routers import KNNRouter, LinUCB, LogisticRouter, MLPRouter
from agents.routers._common import greedy_probabilities
from agents.routers._cv import (
    Objective,
    default_cost_weights,
    knn_oof,
    make_folds,
    pick,
    ridge_oof,
)
from routing_env.data import LoggedDataset
from routing_env.errors import ConfigurationError
from routing_env.metrics import aiq, evaluate_probabilities
from routing_env.policy import load_policy
from tests.agents.routers.bandit_logs import bandit_logs


def _with_duplicates(ds: LoggedDataset) -> LoggedDataset:
    """``ds`` where every third query repeats the prompt of the query before it."""
    prompts = np.array(ds.prompts, dtype=object)
    prompts[2::3] = prompts[1::3][: len(prompts[2::3])]
    return replace(ds, prompts=prompts)


# ---------------------------------------------------------------------------------------------- folds
def test_folds_keep_duplicated_prompts_together_and_tasks_balanced(small: LoggedDataset) -> None:
    ds = _with_duplicates(small)
    folds = make_folds(ds, 5, seed=3)
    assert folds.shape == (ds.n_queries,) and set(folds) == set(range(5))
    for prompt in set(ds.prompts):
        assert len(set(folds[ds.prompts == prompt])) == 1
    # Without duplicates every task spreads over the folds within one query of even.
    plain = make_folds(small, 5, seed=3)
    for task in set(small.tasks):
        counts = np.bincount(plain[small.tasks == task], minlength=5)
        assert counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(make_folds(ds, 5, seed=3), folds)
    assert not np.array_equal(make_folds(ds, 5, seed=4), folds)


def test_folds_are_capped_and_refuse_a_single_group(small: LoggedDataset) -> None:
    three = small.select([0, 1, 2])
    assert set(make_folds(three, 5)) == {0, 1, 2}
    one = LoggedDataset(models=small.models, query_ids=["q"], quality=small.quality[:1], cost=small.cost[:1])
    with pytest.raises(ConfigurationError, match="at least 2 distinct prompts"):
        make_folds(one, 5)


# ---------------------------------------------------------------------------------------------- objective
def test_objective_scores_mean_reward_at_one_lambda_and_aiq_over_a_grid(small: LoggedDataset) -> None:
    scale = small.resolve_cost_scale()
    rng = np.random.default_rng(0)
    q, c = rng.random(small.quality.shape), small.cost
    one = Objective(small, (0.4,), scale)
    probs = greedy_probabilities(q - 0.4 * c / scale)
    assert one.metric == "mean_reward"
    assert one.score(q, c) == pytest.approx(evaluate_probabilities(small, probs, 0.4).mean_reward)
    grid = (0.0, 0.2, 1.0)
    many = Objective(small, grid, scale)
    points = [evaluate_probabilities(small, greedy_probabilities(q - w * c / scale), w).point for w in grid]
    singles = np.stack([small.cost.mean(axis=0), small.quality.mean(axis=0)], axis=1)
    anchor = singles[singles[:, 0].argmin()]
    expected = aiq(np.array([*points, anchor]), (singles[:, 0].min(), singles[:, 0].max()))
    assert many.metric == "aiq" and many.score(q, c) == pytest.approx(expected)
    # The true outcomes route like the oracle on the grid: most of the gap is closed; a single model closes none.
    assert many.gap_closed(many.score(small.quality, small.cost)) > 0.8
    best = np.zeros_like(q)
    best[:, int(small.quality.mean(axis=0).argmax())] = 1.0
    assert many.gap_closed(many.score(best, np.zeros_like(c))) <= 1e-9


def test_objective_on_bandit_logs_is_the_snips_estimate(small: LoggedDataset) -> None:
    rng = np.random.default_rng(1)
    n, k = small.n_queries, small.n_models
    logged = rng.integers(k, size=n)
    logs = bandit_logs(small, logged, np.full(n, 1.0 / k))
    objective = Objective(logs, (0.0,), 1.0)
    q = rng.random((n, k))
    probs = greedy_probabilities(q)
    w = probs[np.arange(n), logged] * k
    expected = (w * small.quality[np.arange(n), logged]).sum() / w.sum()
    assert objective.mode == "snips"
    assert objective.score(q, np.zeros((n, k))) == pytest.approx(expected)


def test_pick_breaks_near_ties_towards_the_first_value() -> None:
    choice = pick(["strong", "weak"], [0.5, 0.5 + 1e-8], "aiq")
    assert choice.value == "strong" and choice.score == 0.5
    assert pick(["strong", "weak"], [0.5, 0.51], "aiq").value == "weak"
    with pytest.raises(ConfigurationError, match="no finite score"):
        pick(["a"], [float("nan")], "aiq")


def test_default_cost_weights_span_the_single_models_trade_offs(sample: LoggedDataset) -> None:
    scale = sample.resolve_cost_scale()
    grid = default_cost_weights(sample, scale)
    assert grid[0] == 0.0 and len(grid) == 17 and np.all(np.diff(grid) > 0)
    # Every switch between neighbouring models of the single models' hull lies inside the grid.
    cost, quality = sample.cost.mean(axis=0), sample.quality.mean(axis=0)
    order = np.argsort(cost)
    best_at = [int(np.argmax(quality - w * cost / scale)) for w in grid]
    assert best_at[0] == int(np.argmax(quality)) and best_at[-1] == int(order[0])
    dominant = sample.subset_models([sample.models[-1]])
    assert default_cost_weights(dominant, scale) == (0.0, 1.0)


# ---------------------------------------------------------------------------------------------- solvers
def test_ridge_oof_equals_a_direct_solve_per_fold() -> None:
    rng = np.random.default_rng(2)
    n, p, k = 120, 4, 3
    x = np.concatenate([rng.normal(size=(n, p)), np.ones((n, 1))], axis=1)
    y = rng.normal(size=(n, k))
    w = rng.random((n, k)) * (rng.random((n, k)) < 0.7)
    folds = np.arange(n) % 3
    alphas = [0.5, 20.0]
    (pred,), widths = ridge_oof(x, [y], folds, alphas, w, widths=True)
    assert widths is not None
    for f in range(3):
        tr, va = folds != f, folds == f
        for j in range(k):
            wj = w[tr, j]
            mean = (wj @ y[tr, j]) / wj.sum()
            for i, a in enumerate(alphas):
                gram = a * np.eye(p + 1) + (x[tr] * wj[:, None]).T @ x[tr]
                theta = np.linalg.solve(gram, (x[tr] * wj[:, None]).T @ (y[tr, j] - mean))
                np.testing.assert_allclose(pred[i, va, j], x[va] @ theta + mean, atol=1e-9)
                width = np.sqrt(np.einsum("ip,pq,iq->i", x[va], np.linalg.inv(gram), x[va]))
                np.testing.assert_allclose(widths[i, va, j], width, atol=1e-9)


def test_knn_oof_equals_the_neighbour_means() -> None:
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(3)
    z = rng.normal(size=(60, 2))
    y = rng.random((60, 2))
    y[::7, 1] = np.nan
    folds = np.arange(60) % 2
    (out,) = knn_oof(z, [y], folds, [5, 1])
    tr, va = np.flatnonzero(folds == 1), np.flatnonzero(folds == 0)
    _, idx = NearestNeighbors(n_neighbors=5).fit(z[tr]).kneighbors(z[va])
    np.testing.assert_allclose(out[0, va], np.nanmean(y[tr][idx], axis=1))
    np.testing.assert_allclose(out[1, va, 0], y[tr][idx[:, 0], 0])


# ---------------------------------------------------------------------------------------------- routers
def _noisy(n: int, noise: float, seed: int) -> LoggedDataset:
    """Two models whose quality gap is a linear function of 10 features, plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 10))
    gap = 0.1 * x[:, 0]
    q0 = np.clip(0.5 + gap + noise * rng.normal(size=n), 0, 1)
    q1 = np.clip(0.5 - gap + noise * rng.normal(size=n), 0, 1)
    return LoggedDataset(
        models=("a", "b"),
        query_ids=[f"q{i}" for i in range(n)],
        quality=np.stack([q0, q1], axis=1),
        cost=np.full((n, 2), 0.001),
        features=x,
    )


def test_cross_validation_regularises_more_when_the_outcomes_are_noisier() -> None:
    clean = LinUCB(seed=0).fit(_noisy(400, 0.01, 0))
    noisy = LinUCB(seed=0).fit(_noisy(400, 0.6, 0))
    assert noisy.ridge_ > clean.ridge_
    assert (
        KNNRouter().fit(_noisy(400, 0.6, 1)).n_neighbors_ > KNNRouter().fit(_noisy(400, 0.0, 1)).n_neighbors_
    )


def test_standardised_bandits_do_not_depend_on_the_features_scale(small: LoggedDataset) -> None:
    """Regression: the penalty used to act on raw features, so rescaling them changed the routing."""
    scaled = small.with_features(np.asarray(small.features) * 1000.0)
    a = LinUCB(seed=0, ridge=5.0).fit(small, cost_weight=0.3)
    b = LinUCB(seed=0, ridge=5.0).fit(scaled, cost_weight=0.3)
    np.testing.assert_allclose(
        a.action_probabilities(small.features), b.action_probabilities(scaled.features), atol=1e-12
    )


@pytest.mark.parametrize(
    ("make", "attr", "fallback"),
    [
        (lambda **kw: LinUCB(**kw), "ridge_", 1.0),
        (lambda **kw: KNNRouter(**kw), "n_neighbors_", 10),
        (lambda **kw: LogisticRouter(**kw), "C_", 1.0),
        (lambda **kw: MLPRouter(hidden_layer_sizes=(8,), max_iter=30, **kw), "l2_", 1e-3),
    ],
)
def test_chosen_values_are_shown_saved_and_off_with_tune_false(
    make, attr: str, fallback: float, small: LoggedDataset, tmp_path: Path
) -> None:
    tuned = make(seed=0).fit(small, cost_weight=0.2)
    assert tuned.cv_score_ is not None and f"{attr}=" in repr(tuned)
    assert attr.rstrip("_") in tuned.chosen()
    tuned.save(tmp_path / "p")
    loaded = load_policy(tmp_path / "p")
    assert getattr(loaded, attr) == getattr(tuned, attr)
    np.testing.assert_array_equal(
        loaded.action_probabilities(small.features), tuned.action_probabilities(small.features)
    )
    fixed = make(seed=0, tune=False).fit(small, cost_weight=0.2)
    assert getattr(fixed, attr) == fallback and fixed.cv_score_ is None


def test_linucb_tunes_its_bonus_only_where_it_changes_the_choice(small: LoggedDataset) -> None:
    full = LinUCB(seed=0).fit(small)
    assert full.alpha is None and full.alpha_ == 1.0
    assert LinUCB(alpha=0.3, seed=0).fit(small).alpha_ == 0.3
