"""BanditFeedback validation, its builders, and simulate_bandit_feedback's ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from routing_env.data import LoggedDataset
from routing_env.errors import (
    ConfigurationError,
    ModelMismatchError,
    PartialInformationError,
    SchemaError,
    ShapeError,
)
from routing_env.ope import BanditFeedback, simulate_bandit_feedback
from tests.ope.ope_policies import ConstantPolicy, random_linear

MODELS = ("a", "b", "c")


def _fb(**overrides: object) -> BanditFeedback:
    args: dict[str, object] = {
        "models": MODELS,
        "features": np.zeros((3, 2)),
        "action": np.array([0, 1, 2]),
        "propensity": np.array([0.5, 0.25, 1.0]),
        "quality": np.array([1.0, 0.0, 0.5]),
        "cost": np.array([0.01, 0.02, 0.0]),
        "cost_scale": 0.02,
    }
    args.update(overrides)
    return BanditFeedback(**args)  # type: ignore[arg-type]


def test_rewards_use_the_cost_weight_chosen_at_evaluation() -> None:
    fb = _fb()
    np.testing.assert_allclose(fb.rewards(0.0), [1.0, 0.0, 0.5])
    # λ = 1, cost_scale 0.02 USD: 1 − 0.5, 0 − 1, 0.5 − 0
    np.testing.assert_allclose(fb.rewards(1.0), [0.5, -1.0, 0.5])
    assert _fb(cost_weight=1.0).rewards() == pytest.approx([0.5, -1.0, 0.5])
    assert not fb.action.flags.writeable and fb.n_rounds == 3 and len(fb) == 3


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        (
            {"propensity": np.array([0.5, 0.0, 1.0])},
            SchemaError,
            r"propensity must lie in \(0, 1\]; row 1 has 0.0",
        ),
        ({"propensity": np.array([0.5, 1.5, 1.0])}, SchemaError, r"propensity must lie in \(0, 1\]"),
        ({"action": np.array([0, 3, 1])}, SchemaError, r"action must lie in \[0, 3\)"),
        ({"action": np.array([0.5, 1, 2])}, SchemaError, "action must hold integer"),
        ({"quality": np.array([1.0, np.nan, 0.0])}, SchemaError, "quality must be finite"),
        ({"quality": np.ones(2)}, ShapeError, r"quality must have shape \(n,\) = \(3,\)"),
        ({"features": np.zeros((2, 2))}, ShapeError, r"features must have shape \(n, d\) with n = 3"),
        ({"cost": np.array([0.1, -1.0, 0.0])}, SchemaError, "cost must be a finite USD amount"),
        ({"cost_scale": 0.0}, ConfigurationError, "cost_scale must be a positive USD amount"),
        ({"cost": None, "cost_weight": 1.0}, ConfigurationError, "cost_weight=1.0 needs a cost per round"),
        ({"models": ("a", "a", "b")}, SchemaError, r"models must be unique, got duplicates \[.a.\]"),
        ({"position": np.array([0, 1])}, ShapeError, "position must be an"),
        ({"n_positions": 3}, ConfigurationError, "n_positions is given without position"),
        ({"full_quality": np.zeros((3, 3))}, ConfigurationError, "full_quality and full_cost go together"),
        ({"logging_dist": np.ones((3, 3))}, SchemaError, "logging_dist rows must be probabilities"),
    ],
)
def test_validation(overrides: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        _fb(**overrides)


def test_partial_feedback_has_no_truth() -> None:
    with pytest.raises(PartialInformationError, match="no hidden outcomes"):
        _fb().true_value(np.full((3, 3), 1 / 3))
    with pytest.raises(ConfigurationError, match="needs a cost per round"):
        _fb(cost=None).rewards(0.5)


def test_simulation_is_seeded_and_exposes_only_the_logged_outcome(small: LoggedDataset) -> None:
    logger = random_linear(small.models, small.n_features, seed=1, temperature=2.0, epsilon=0.1)
    a = simulate_bandit_feedback(small, logger, cost_weight=0.5, seed=3)
    b = simulate_bandit_feedback(small, logger, cost_weight=0.5, seed=3)
    c = simulate_bandit_feedback(small, logger, cost_weight=0.5, seed=4)
    np.testing.assert_array_equal(a.action, b.action)
    assert not np.array_equal(a.action, c.action)
    rows = np.arange(small.n_queries)
    dist = logger.action_probabilities(small.features)
    np.testing.assert_allclose(a.propensity, dist[rows, a.action])
    np.testing.assert_allclose(a.quality, small.quality[rows, a.action])
    np.testing.assert_allclose(a.cost, small.cost[rows, a.action])
    assert a.cost_scale == small.resolve_cost_scale() and a.cost_weight == 0.5
    assert a.has_ground_truth and "ground truth" in repr(a)


def test_simulated_actions_follow_the_logging_distribution(small: LoggedDataset) -> None:
    probs = [0.1, 0.2, 0.3, 0.4]
    counts = np.zeros(4)
    for seed in range(20):
        fb = simulate_bandit_feedback(small, ConstantPolicy(small.models, probs), seed=seed)
        counts += np.bincount(fb.action, minlength=4)
    freq = counts / counts.sum()
    # 6,000 draws: standard error ≤ 0.0064 per share
    np.testing.assert_allclose(freq, probs, atol=0.03)
    # zero-probability actions are never drawn
    fb = simulate_bandit_feedback(small, ConstantPolicy(small.models, [0.0, 0.5, 0.0, 0.5]), seed=0)
    assert set(np.unique(fb.action)) <= {1, 3}


def test_true_value_is_exact(small: LoggedDataset) -> None:
    fb = simulate_bandit_feedback(small, ConstantPolicy(small.models, [0.25] * 4), cost_weight=0.3, seed=0)
    target = random_linear(small.models, small.n_features, seed=2)
    dist = target.action_probabilities(small.features)
    expected = float((dist * small.rewards(0.3)).sum(axis=1).mean())
    assert fb.true_value(target) == pytest.approx(expected, rel=1e-12)
    assert fb.true_value(dist, cost_weight=0.0) == pytest.approx((dist * small.quality).sum(1).mean())


def test_simulation_input_errors(small: LoggedDataset) -> None:
    with pytest.raises(ModelMismatchError, match="routes over models"):
        simulate_bandit_feedback(small, ConstantPolicy(("x", "y", "z", "w"), [0.25] * 4))
    with pytest.raises(ShapeError, match=r"must have shape \(n, K\)"):
        simulate_bandit_feedback(small, np.full((small.n_queries, 3), 1 / 3))
    with pytest.raises(SchemaError, match="rows summing to 1"):
        simulate_bandit_feedback(small, np.full((small.n_queries, 4), 0.3))
    with pytest.raises(ConfigurationError, match=r"must implement routing_env\.policy\.Policy"):
        simulate_bandit_feedback(small, "uniform")  # type: ignore[arg-type]


def _as_bandit_dataset(ds: LoggedDataset, seed: int = 0) -> LoggedDataset:
    """Keep only one uniformly drawn model per query, with its propensity (a partial bandit log)."""
    rng = np.random.default_rng(seed)
    n, k = ds.n_queries, ds.n_models
    act = rng.integers(0, k, n)
    observed = np.zeros((n, k), dtype=bool)
    observed[np.arange(n), act] = True
    return LoggedDataset(
        models=ds.models,
        query_ids=ds.query_ids,
        quality=np.where(observed, ds.quality, np.nan),
        cost=np.where(observed, ds.cost, np.nan),
        observed=observed,
        features=ds.features,
        feature_names=ds.feature_names,
        logged_action=act,
        propensity=np.full(n, 1.0 / k),
    )


def test_from_dataset_of_bandit_logs(small: LoggedDataset) -> None:
    logs = _as_bandit_dataset(small)
    fb = BanditFeedback.from_dataset(logs, cost_weight=0.2)
    rows = np.arange(small.n_queries)
    np.testing.assert_array_equal(fb.action, logs.logged_action)
    np.testing.assert_allclose(fb.quality, small.quality[rows, fb.action])
    np.testing.assert_allclose(fb.propensity, 0.25)
    assert fb.cost_scale == logs.resolve_cost_scale() and not fb.has_ground_truth
    with pytest.raises(PartialInformationError, match="needs bandit logs"):
        BanditFeedback.from_dataset(small)
    with pytest.raises(ConfigurationError, match="position_feature='slot' is not a feature"):
        BanditFeedback.from_dataset(logs, position_feature="slot")


def test_from_dataset_reads_positions_from_a_named_feature(small: LoggedDataset) -> None:
    logs = _as_bandit_dataset(small)
    slot = np.arange(small.n_queries) % 3
    x = np.hstack([logs.features, slot[:, None]])
    logs = logs.with_features(x, names=[*logs.feature_names, "position"])
    fb = BanditFeedback.from_dataset(logs, position_feature="position")
    np.testing.assert_array_equal(fb.position, slot)
    assert fb.n_positions == 3 and fb.features.shape[1] == small.n_features + 1


def test_slate_ids_are_coded_by_first_appearance() -> None:
    fb = _fb(slate_id=["z", "a", "z"])
    np.testing.assert_array_equal(fb.slate_id, [0, 1, 0])
    assert fb.slate_id.dtype == np.int64 and not fb.slate_id.flags.writeable


def test_feedback_needs_a_model() -> None:
    with pytest.raises(SchemaError, match="models must name at least one model"):
        BanditFeedback(models=(), features=np.zeros((1, 0)), action=[0], propensity=[1.0], quality=[1.0])
