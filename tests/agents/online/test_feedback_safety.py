"""Feedback cannot poison or break the router: outcome bounds, finite rewards, the learner's own mode, updates that
fail or break the policy refused before anything is stored, and a restore that skips what serving would refuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.online import Feedback, OnlineRouter, SQLiteDecisionStore
from agents.online.config import COST_BOUND_FACTOR
from agents.online.errors import ContractChangeError
from agents.routers import LinUCB
from agents.routers.predictive import LogisticRouter
from routing_env.data import LoggedDataset, make_synthetic
from routing_env.errors import ConfigurationError
from tests.agents.online.online_policies import FixedPolicy, FragilePolicy, assert_same_state

MODELS = ("a", "b", "c")


@pytest.fixture(scope="module")
def data() -> LoggedDataset:
    return make_synthetic(n_queries=300, models=3, n_features=4, seed=2)


def _reward_linucb(data: LoggedDataset) -> LinUCB:
    """A LinUCB warm-started on scalar rewards: it learns with update(), never update_outcomes()."""
    policy = LinUCB(models=list(data.models), epsilon=0.1, seed=0)
    return policy.fit_rewards(data.features[:100], data.rewards(cost_weight=0.5)[:100])


# ---------------------------------------------------------------------------------------------------- bounds
def test_the_cost_bound_defaults_to_100x_the_dearest_models_mean_cost(
    data: LoggedDataset, tmp_path: Path
) -> None:
    linucb = LinUCB(seed=0).fit(data, cost_weight=0.5)
    router = OnlineRouter(linucb, tmp_path / "a.db")
    dearest = float(np.nanmax(data.mean_cost()))
    assert router.served.bounds.max_cost == pytest.approx(COST_BOUND_FACTOR * dearest)
    logistic = LogisticRouter().fit(data, cost_weight=0.5)  # carries the per-model mean costs itself
    assert OnlineRouter(logistic, tmp_path / "b.db").served.bounds.max_cost == pytest.approx(100 * dearest)
    priced = OnlineRouter(
        FixedPolicy(MODELS, [1 / 3] * 3), tmp_path / "c.db", model_costs={"a": 0.002, "b": 0.01}
    )
    assert priced.served.bounds.max_cost == pytest.approx(1.0)
    unpriced = OnlineRouter(FixedPolicy(MODELS, [1 / 3] * 3), tmp_path / "d.db")
    assert unpriced.served.bounds.max_cost == 100.0  # no price information: 100 × the 1 USD cost scale
    explicit = OnlineRouter(FixedPolicy(MODELS, [1 / 3] * 3), tmp_path / "e.db", max_cost=0.5)
    assert explicit.served.bounds.max_cost == 0.5


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"cost": 1e308}, r"cost must be a USD amount in \[0, 100\]"),
        ({"cost": 1e300}, r"cost must be a USD amount in \[0, 100\]"),
        ({"cost": 100.01}, r"cost must be a USD amount in \[0, 100\]"),
        ({"latency_s": 1e9}, r"latency_s must lie in \[0, 3600\] seconds"),
    ],
)
def test_outcomes_beyond_the_bounds_are_refused_and_nothing_is_stored(
    tmp_path: Path, kwargs: dict[str, float], fragment: str
) -> None:
    router = OnlineRouter(FixedPolicy(MODELS, [0.5, 0.3, 0.2]), tmp_path / "d.db")
    d = router.route([1000.0, 1000.0, 1000.0], allowed_models=["a"])
    with pytest.raises(ConfigurationError, match=fragment):
        router.feedback(d.decision_id, 0.0, **kwargs)
    assert router.store.get_feedback(d.decision_id) is None and router.policy.updates == []
    assert router.store.get_decision(d.decision_id).status == "open"
    assert router.feedback(d.decision_id, 0.0, cost=100.0).applied  # the bound itself is accepted


def test_a_per_request_cost_weight_is_bounded(data: LoggedDataset, tmp_path: Path) -> None:
    router = OnlineRouter(LinUCB(seed=0).fit(data, cost_weight=0.5), tmp_path / "d.db")
    with pytest.raises(ConfigurationError, match=r"cost_weight must lie in \[0, 1000\]"):
        router.route(data.features[0], cost_weight=1e300)


def test_a_non_finite_reward_is_refused(tmp_path: Path) -> None:
    router = OnlineRouter(
        FixedPolicy(MODELS, [0.5, 0.3, 0.2]),
        tmp_path / "d.db",
        cost_weight=1.0,
        cost_scale=1e-307,
        max_cost=100.0,
    )
    d = router.route([0.0, 0.0, 0.0])
    with pytest.raises(ConfigurationError, match="is not finite; nothing was stored"):
        router.feedback(d.decision_id, 0.0, cost=90.0)
    assert router.store.max_feedback_seq() == 0


# ---------------------------------------------------------------------------------------------------- learner mode
def test_a_reward_learning_bandit_is_updated_in_its_own_mode(data: LoggedDataset, tmp_path: Path) -> None:
    router = OnlineRouter(_reward_linucb(data), tmp_path / "d.db", cost_weight=0.5)
    assert router.served.mode == "reward"
    replay = _reward_linucb(data)
    replay.action_probabilities(data.features[:1])
    for i in range(100, 140):
        d = router.route(data.features[i])
        fb = router.feedback(
            d.decision_id, float(data.quality[i, d.action]), cost=float(data.cost[i, d.action])
        )
        assert fb.applied
        replay.update(data.features[i : i + 1], np.array([d.action]), np.array([fb.reward]))
    assert router.n_applied == 40
    assert_same_state(router.policy, replay, tmp_path)
    router.store.close()
    restored = OnlineRouter.restore(tmp_path / "d.db", cost_weight=0.5)
    assert_same_state(restored.policy, replay, tmp_path)


# ---------------------------------------------------------------------------------------------------- refusals
def test_an_update_that_raises_stores_nothing_and_changes_nothing(tmp_path: Path) -> None:
    router = OnlineRouter(FragilePolicy(MODELS, [0.5, 0.3, 0.2]), tmp_path / "d.db", checkpoint_every=3)
    for _ in range(4):  # a checkpoint, then an update the undo has to replay on top of it
        d = router.route([0.0, 0.0, 0.0])
        router.feedback(d.decision_id, 0.5)
    before = list(router.policy.updates)
    d = router.route([0.0, 0.0, 0.0])
    with pytest.raises(
        ConfigurationError, match=r"refused: learning it would leave FragilePolicy unable to route"
    ):
        router.feedback(d.decision_id, FragilePolicy.FAIL)
    assert router.store.get_feedback(d.decision_id) is None
    assert router.store.get_decision(d.decision_id).status == "open"
    assert router.policy.updates == before
    # The same request is refused the same way (never a 500, then a 409), and other feedback is accepted.
    with pytest.raises(ConfigurationError, match="refused"):
        router.feedback(d.decision_id, FragilePolicy.FAIL)
    assert router.feedback(d.decision_id, 0.25).applied
    assert router.health() is None


def test_an_update_that_breaks_the_policy_is_undone_and_refused(tmp_path: Path) -> None:
    router = OnlineRouter(FragilePolicy(MODELS, [0.5, 0.3, 0.2]), tmp_path / "d.db")
    d = router.route([0.0, 0.0, 0.0])
    with pytest.raises(ConfigurationError, match="action_probabilities returned"):
        router.feedback(d.decision_id, FragilePolicy.BREAK)
    assert np.isfinite(router.policy.probs).all() and router.policy.updates == []
    assert router.store.max_feedback_seq() == 0
    assert router.route([0.0, 0.0, 0.0]).propensity > 0
    assert router.health() is None


def test_restore_skips_stored_feedback_that_serving_would_refuse(tmp_path: Path) -> None:
    router = OnlineRouter(FixedPolicy(MODELS, [0.5, 0.3, 0.2]), tmp_path / "d.db", checkpoint_every=1000)
    good = [router.route([0.0, 0.0, 0.0]) for _ in range(3)]
    router.feedback(good[0].decision_id, 0.5, cost=0.01)
    poisoned = router.route([1000.0, 1000.0, 1000.0])
    # What an older version stored: a committed, applied feedback of cost 1e308 (reward −inf).
    router.store.insert_feedback(
        Feedback(2, poisoned.decision_id, 0.0, "client", 0.0, 1e308, None, -np.inf, True, "v1")
    )
    router.store.close()
    restored = OnlineRouter.restore(tmp_path / "d.db", checkpoint_every=1000)
    assert restored.restored is not None and restored.restored.skipped == (2,)
    assert restored.policy.updates == [(good[0].action, 0.5)]
    assert "skipped 1 stored feedback the bounds refuse (seq 2)" in restored.restored.describe("d.db")
    assert restored.feedback(good[1].decision_id, 0.5).seq == 3


# ---------------------------------------------------------------------------------------------------- health
def test_health_names_a_policy_that_cannot_route(tmp_path: Path) -> None:
    router = OnlineRouter(FixedPolicy(MODELS, [0.5, 0.3, 0.2]), tmp_path / "d.db")
    assert router.health() is None
    router.policy.probs = np.array([np.nan, 0.5, 0.5])
    problem = router.health()
    assert problem is not None and "the policy 'v1' cannot route" in problem and "nan" in problem


def test_a_policy_that_cannot_route_is_refused_before_it_serves(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot route a query of zeros"):
        OnlineRouter(FixedPolicy(MODELS, [np.nan, 0.5, 0.5]), tmp_path / "d.db")
    router = OnlineRouter(FixedPolicy(MODELS, [0.5, 0.3, 0.2]), tmp_path / "e.db")
    with pytest.raises(ConfigurationError, match="cannot route a query of zeros"):
        router.swap_policy(FixedPolicy(MODELS, [np.inf, 0.0, 0.0]), version="v2")
    assert router.version == "v1"


# ---------------------------------------------------------------------------------------------------- prompts, cache
def test_prompts_are_stored_only_when_featurized_and_bounded(tmp_path: Path) -> None:
    from routing_env.data import TextFeaturizer

    ds = make_synthetic(n_queries=80, models=3, n_features=4, seed=1)
    assert ds.prompts is not None
    feat = TextFeaturizer(n_components=4, hash_bits=10, max_buckets=256, seed=0).fit(list(ds.prompts))
    policy = LinUCB(seed=0).fit(ds.with_features(feat.transform(list(ds.prompts))))
    router = OnlineRouter(policy, tmp_path / "d.db", featurizer=feat, max_stored_prompt_chars=10)
    long_prompt = "😀" * 20_000
    beside = router.route(np.zeros(4), prompt=long_prompt)
    assert beside.prompt is None and beside.prompt_chars == 20_000
    featurized = router.route(prompt=long_prompt)
    stored = router.store.get_decision(featurized.decision_id)
    assert stored.prompt == "😀" * 10 and stored.prompt_chars == 20_000
    always = OnlineRouter(policy, tmp_path / "e.db", featurizer=feat, store_prompts="always")
    assert always.route(np.zeros(4), prompt="hello").prompt == "hello"
    never = OnlineRouter(policy, tmp_path / "f.db", featurizer=feat, store_prompts="never")
    assert never.route(prompt="hello").prompt is None


def test_the_open_decision_cache_is_bounded_in_bytes(tmp_path: Path) -> None:
    router = OnlineRouter(
        FixedPolicy(MODELS, [0.5, 0.3, 0.2]),
        tmp_path / "d.db",
        store_prompts="always",
        open_cache_bytes=400_000,
    )
    ids = [router.route([0.0, 0.0, 0.0], prompt="x" * 4000).decision_id for _ in range(300)]
    assert router.stats()["open_cache_bytes"] <= 400_000 + 100_000
    assert router.feedback(ids[0], 0.5).applied  # evicted from memory, read back from the store


# ---------------------------------------------------------------------------------------------------- contract
def test_a_swap_that_changes_the_request_contract_needs_force(data: LoggedDataset, tmp_path: Path) -> None:
    router = OnlineRouter(LinUCB(seed=0).fit(data), tmp_path / "d.db")
    wider = LinUCB(seed=0).fit(make_synthetic(n_queries=100, models=3, n_features=6, seed=3))
    with pytest.raises(ContractChangeError, match=r"feature width 4 → 6.*send force: true"):
        router.swap_policy(wider, version="wide")
    assert router.version == "v1" and "wide" not in router.store.policy_versions()
    assert router.swap_policy(wider, version="wide", force=True) == "wide"
    assert (
        router.swap_policy(
            LinUCB(seed=1).fit(make_synthetic(n_queries=100, models=3, n_features=6, seed=4)), version="same"
        )
        == "same"
    )


def test_a_featurizer_of_the_wrong_width_is_refused(tmp_path: Path, data: LoggedDataset) -> None:
    from routing_env.data import TextFeaturizer

    assert data.prompts is not None
    feat = TextFeaturizer(n_components=8, hash_bits=10, max_buckets=256, seed=0).fit(list(data.prompts))
    with pytest.raises(
        ConfigurationError, match=r"makes features of shape \(1, 8\), but the policy takes width 4"
    ):
        OnlineRouter(LinUCB(seed=0).fit(data), tmp_path / "d.db", featurizer=feat)


def test_a_router_featurizer_is_kept_in_checkpoints(tmp_path: Path) -> None:
    from routing_env.data import TextFeaturizer

    ds = make_synthetic(n_queries=80, models=3, n_features=4, seed=1)
    assert ds.prompts is not None
    feat = TextFeaturizer(n_components=4, hash_bits=10, max_buckets=256, seed=0).fit(list(ds.prompts))
    router = OnlineRouter(
        LinUCB(seed=0).fit(ds.with_features(feat.transform(list(ds.prompts)))),
        tmp_path / "d.db",
        featurizer=feat,
    )
    first = router.route(prompt="which model?")
    router.store.close()
    restored = OnlineRouter.restore(tmp_path / "d.db")
    assert restored.restored is not None and restored.restored.featurizer is not None
    np.testing.assert_array_equal(restored.route(prompt="which model?").features, first.features)


def test_exploration_warning_for_a_deterministic_policy(data: LoggedDataset, tmp_path: Path) -> None:
    greedy = OnlineRouter(LinUCB(seed=0).fit(data, cost_weight=0.5), tmp_path / "a.db")
    warning = greedy.exploration_warning()
    assert warning is not None and "is deterministic" in warning and "epsilon=0.05" in warning
    exploring = OnlineRouter(LinUCB(epsilon=0.1, seed=0).fit(data, cost_weight=0.5), tmp_path / "b.db")
    assert exploring.exploration_warning() is None


def test_store_and_router_stay_consistent_when_the_feedback_write_fails(tmp_path: Path) -> None:
    store = SQLiteDecisionStore(tmp_path / "d.db")
    router = OnlineRouter(FixedPolicy(MODELS, [0.5, 0.3, 0.2]), store)
    d = router.route([0.0, 0.0, 0.0])
    real = store.insert_feedback

    def full_disk(fb: Feedback) -> None:
        raise OSError("No space left on device (injected)")

    store.insert_feedback = full_disk  # type: ignore[method-assign]
    with pytest.raises(OSError, match="injected"):
        router.feedback(d.decision_id, 0.5)
    store.insert_feedback = real  # type: ignore[method-assign]
    assert router.policy.updates == [] and router.stats()["last_feedback_seq"] == 0
    assert router.feedback(d.decision_id, 0.5).seq == 1
