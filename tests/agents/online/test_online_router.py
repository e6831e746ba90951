"""OnlineRouter and the SQLite decision store in process: propensities, feedback rules, expiry, cascades, restore, export."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from agents.online import (
    DecisionConflictError,
    DecisionNotFoundError,
    OnlineRouter,
    SQLiteDecisionStore,
)
from agents.routers import LinUCB
from routing_env.data import LoggedDataset, make_synthetic
from routing_env.errors import ConfigurationError, ModelMismatchError, OPEWarning, ShapeError
from routing_env.policy import load_policy
from tests.agents.online.online_policies import FixedPolicy, LearningThresholdCascade, assert_same_state

MODELS = ("a", "b", "c")


@pytest.fixture(scope="module")
def data() -> LoggedDataset:
    return make_synthetic(n_queries=400, models=4, n_features=6, seed=3)


def linucb(data: LoggedDataset) -> LinUCB:
    policy = LinUCB(alpha=0.5, epsilon=0.2, seed=1)
    policy.fit(data.select(np.arange(200)), cost_weight=0.5)
    return policy


def fixed_router(tmp_path: Path, probs: list[float] | None = None, **kw: object) -> OnlineRouter:
    policy = FixedPolicy(MODELS, probs or [0.5, 0.3, 0.2])
    return OnlineRouter(policy, tmp_path / "d.db", **kw)


# ---------------------------------------------------------------------------------------------------- route
def test_route_logs_decision_with_propensity(tmp_path: Path, data: LoggedDataset) -> None:
    router = OnlineRouter(linucb(data), tmp_path / "d.db")
    d = router.route(data.features[300])
    assert d.models == data.models and d.kind == "route" and d.status == "open"
    assert d.probabilities.shape == (4,) and abs(d.probabilities.sum() - 1) < 1e-12
    assert d.propensity == d.probabilities[d.action] > 0 and d.model == data.models[d.action]
    expected = router.policy.action_probabilities(data.features[300:301])[0]
    np.testing.assert_allclose(d.probabilities, expected)
    stored = router.store.get_decision(d.decision_id)
    assert stored.policy_version == d.policy_version == "v1"
    np.testing.assert_array_equal(stored.features, data.features[300])
    np.testing.assert_array_equal(stored.probabilities, d.probabilities)


def test_same_seed_same_decisions(tmp_path: Path, data: LoggedDataset) -> None:
    runs = []
    for name in ("x", "y"):
        router = OnlineRouter(linucb(data), tmp_path / f"{name}.db", seed=5)
        runs.append([router.route(data.features[i]).model for i in range(200, 260)])
    assert runs[0] == runs[1]
    other = OnlineRouter(linucb(data), tmp_path / "z.db", seed=6)
    assert [other.route(data.features[i]).model for i in range(200, 260)] != runs[0]


def test_routing_does_not_touch_policy_state(tmp_path: Path, data: LoggedDataset) -> None:
    router = OnlineRouter(linucb(data), tmp_path / "d.db")
    untouched = linucb(data)
    untouched.action_probabilities(data.features[:1])  # the same lazily built caches, no draws
    for i in range(50):
        router.route(data.features[i])
    assert_same_state(router.policy, untouched, tmp_path)


def test_allowed_models_renormalises_and_reports_sampled_propensity(tmp_path: Path) -> None:
    router = fixed_router(tmp_path)
    counts = {m: 0 for m in MODELS}
    n = 1200
    for _ in range(n):
        d = router.route([0.0, 0.0, 0.0], allowed_models=["b", "c"])
        counts[d.model] += 1
        np.testing.assert_allclose(d.probabilities, [0.0, 0.6, 0.4])
        assert d.propensity == pytest.approx(0.6 if d.model == "b" else 0.4)
    assert counts["a"] == 0
    # Binomial(1200, 0.6): sd ≈ 0.014, so 0.06 is ~4 sd.
    assert abs(counts["b"] / n - 0.6) < 0.06


def test_allowed_models_without_mass_fall_back_to_uniform(tmp_path: Path) -> None:
    router = fixed_router(tmp_path, [1.0, 0.0, 0.0])
    d = router.route([0, 0, 0], allowed_models=["b", "c"])
    np.testing.assert_allclose(d.probabilities, [0.0, 0.5, 0.5])
    assert d.propensity == 0.5


def test_route_rejects_bad_input(tmp_path: Path) -> None:
    router = fixed_router(tmp_path)
    with pytest.raises(ShapeError, match="width 2, but this policy was fitted on width 3"):
        router.route([0.0, 1.0])
    with pytest.raises(ShapeError, match="finite"):
        router.route([0.0, np.nan, 1.0])
    with pytest.raises(ModelMismatchError, match=r"allowed_models must name .* got \['zz'\]"):
        router.route([0, 0, 0], allowed_models=["zz"])
    with pytest.raises(ConfigurationError, match=r"needs features=\.\.\. or prompt=\.\.\."):
        router.route()
    with pytest.raises(ConfigurationError, match="needs a featurizer"):
        router.route(prompt="hello")
    with pytest.raises(ConfigurationError, match="cost-aware policy"):
        router.route([0, 0, 0], cost_weight=2.0)
    assert router.store.max_decision_seq() == 0  # nothing was logged for the refused requests
    assert router.route([0, 0, 0], cost_weight=0.0).cost_weight == 0.0  # the router's own λ is fine


def test_request_id_is_idempotent(tmp_path: Path) -> None:
    router = fixed_router(tmp_path)
    first = router.route([0, 0, 0], request_id="req-1")
    again = router.route([1, 1, 1], request_id="req-1")
    assert again.decision_id == first.decision_id and again.model == first.model
    assert router.store.max_decision_seq() == 1


def test_per_request_cost_weight_for_cost_aware_policy(tmp_path: Path, data: LoggedDataset) -> None:
    router = OnlineRouter(linucb(data), tmp_path / "d.db")
    cheap = router.route(data.features[201], cost_weight=50.0)
    assert cheap.cost_weight == 50.0
    expected = router.policy.action_probabilities(data.features[201:202], cost_weight=50.0)[0]
    np.testing.assert_allclose(cheap.probabilities, expected)
    assert router.policy.cost_weight == 0.5  # the policy's own λ is untouched


def test_route_with_prompt_uses_the_policys_featurizer(tmp_path: Path) -> None:
    from routing_env.data import TextFeaturizer

    ds = make_synthetic(n_queries=120, models=3, n_features=4, seed=1)
    assert ds.prompts is not None
    feat = TextFeaturizer(n_components=8, hash_bits=12, max_buckets=512, seed=0).fit(list(ds.prompts))
    policy = LinUCB(seed=0).fit(ds.with_features(feat.transform(list(ds.prompts))), featurizer=feat)
    router = OnlineRouter(policy, tmp_path / "d.db")
    d = router.route(prompt=str(ds.prompts[0]))
    np.testing.assert_array_equal(d.features, feat.transform([str(ds.prompts[0])])[0])
    assert d.prompt == ds.prompts[0]
    router.store.close()
    restored = OnlineRouter.restore(tmp_path / "d.db")
    assert restored.route(prompt=str(ds.prompts[0])).features.tolist() == d.features.tolist()


# ---------------------------------------------------------------------------------------------------- feedback
def test_feedback_updates_policy_and_is_stored(tmp_path: Path) -> None:
    router = fixed_router(tmp_path, cost_weight=1.0, cost_scale=0.01)
    d = router.route([0, 0, 0])
    fb = router.feedback(d.decision_id, 0.8, cost=0.002, latency_s=1.5)
    assert fb.reward == pytest.approx(0.8 - 1.0 * 0.002 / 0.01) and fb.applied and fb.seq == 1
    assert router.policy.updates == [(d.action, pytest.approx(0.6))]
    assert router.store.get_decision(d.decision_id).status == "closed"
    assert router.store.get_feedback(d.decision_id) == fb


def test_feedback_errors(tmp_path: Path) -> None:
    router = fixed_router(tmp_path)
    d = router.route([0, 0, 0])
    with pytest.raises(DecisionNotFoundError, match="unknown decision_id 'nope'"):
        router.feedback("nope", 0.5)
    with pytest.raises(ConfigurationError, match=r"quality must lie in \[0, 1\], got 1.5"):
        router.feedback(d.decision_id, 1.5)
    with pytest.raises(ConfigurationError, match=r"cost must be a USD amount in \[0, 100\] .*, got -1\.0"):
        router.feedback(d.decision_id, 0.5, cost=-1)
    with pytest.raises(ConfigurationError, match="latency_s must be finite"):
        router.feedback(d.decision_id, 0.5, latency_s=float("inf"))
    router.feedback(d.decision_id, 0.5)
    with pytest.raises(
        DecisionConflictError, match=r"already closed: feedback was received .* once per decision"
    ):
        router.feedback(d.decision_id, 0.9)
    assert len(router.policy.updates) == 1


def test_out_of_order_feedback_is_applied_in_arrival_order(tmp_path: Path) -> None:
    router = fixed_router(tmp_path)
    ds = [router.route([i, 0, 0]) for i in range(6)]
    for i, d in enumerate(reversed(ds)):
        router.feedback(d.decision_id, quality=i / 10)
    applied = list(router.store.feedback())
    assert [f.decision_id for f, _ in applied] == [d.decision_id for d in reversed(ds)]
    assert [r for _, r in router.policy.updates] == pytest.approx([i / 10 for i in range(6)])


def test_missing_feedback_gets_the_default_reward(tmp_path: Path) -> None:
    router = fixed_router(tmp_path, feedback_timeout_s=60.0, default_quality=0.25, model_costs={"a": 0.0})
    old = router.route([0, 0, 0])
    fresh = router.route([0, 0, 0])
    assert router.expire(now=old.created_at + 30) == []
    assert router.expire(now=old.created_at + 61) == [old.decision_id, fresh.decision_id]
    fb = router.store.get_feedback(old.decision_id)
    assert fb is not None and fb.source == "default" and fb.quality == 0.25 and fb.applied
    assert router.store.get_decision(old.decision_id).status == "expired"
    with pytest.raises(DecisionConflictError, match="the default reward was applied"):
        router.feedback(old.decision_id, 1.0)
    assert len(router.policy.updates) == 2
    assert router.stats()["pending"] == 0 and router.stats()["feedback"] == {"default": 2}


def test_missing_feedback_without_default_learns_nothing(tmp_path: Path) -> None:
    router = fixed_router(tmp_path, feedback_timeout_s=1.0)
    d = router.route([0, 0, 0])
    assert router.expire(now=d.created_at + 2) == [d.decision_id]
    assert router.policy.updates == [] and router.store.get_feedback(d.decision_id) is None
    with pytest.raises(DecisionConflictError, match=r"expired after 1.0 s without feedback"):
        router.feedback(d.decision_id, 1.0)


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="checkpoint_every must be ≥ 1, got 0"):
        fixed_router(tmp_path, checkpoint_every=0)
    with pytest.raises(ConfigurationError, match=r"default_quality must lie in \[0, 1\] or be None, got 2.0"):
        fixed_router(tmp_path, default_quality=2.0)
    with pytest.raises(ModelMismatchError, match=r"model_costs names models \['zz'\]"):
        fixed_router(tmp_path, model_costs={"zz": 1.0})
    with pytest.raises(ConfigurationError, match="must have save"):
        OnlineRouter(object(), tmp_path / "x.db")
    with pytest.raises(ConfigurationError, match="database file"):
        SQLiteDecisionStore(":memory:")
    with pytest.raises(ConfigurationError, match="no policy checkpoint"):
        OnlineRouter.restore(tmp_path / "empty.db")


# ---------------------------------------------------------------------------------------------------- restore
def _traffic(router: OnlineRouter, data: LoggedDataset, rows: range, seed: int) -> None:
    """Routes with delayed, shuffled feedback (a third never answered), like a gateway would."""
    rng = np.random.default_rng(seed)
    pending = []
    for i in rows:
        pending.append(router.route(data.features[i]))
        if len(pending) >= 5:
            rng.shuffle(pending)
            d = pending.pop()
            if rng.random() < 0.7:
                router.feedback(d.decision_id, float(rng.random()), cost=float(rng.random() * 1e-3))


def test_restore_is_bit_identical_to_a_router_that_never_crashed(tmp_path: Path, data: LoggedDataset) -> None:
    router = OnlineRouter(linucb(data), tmp_path / "d.db", checkpoint_every=7)
    _traffic(router, data, range(200, 320), seed=0)
    assert router.store.latest_checkpoint() is not None
    assert router.store.max_feedback_seq() % 7 != 0  # some feedback came after the last checkpoint
    restored = OnlineRouter.restore(SQLiteDecisionStore(tmp_path / "d.db", readonly=True), checkpoint_every=7)
    assert_same_state(router.policy, restored.policy, tmp_path)  # includes the generator state
    assert restored.policy._rng.bit_generator.state == router.policy._rng.bit_generator.state
    # Both policies keep going identically: same draws from their generators, same updates.
    for policy in (router.policy, restored.policy):
        actions, _ = policy.act(data.features[320:360])
        policy.update_outcomes(
            data.features[320:360], actions, data.quality[320:360, 0], data.cost[320:360, 0]
        )
    assert_same_state(router.policy, restored.policy, tmp_path)


def test_restore_equals_full_replay_of_the_store(tmp_path: Path, data: LoggedDataset) -> None:
    initial = linucb(data)
    initial.action_probabilities(data.features[:1])  # warm the same caches the served policy has
    router = OnlineRouter(linucb(data), tmp_path / "d.db", checkpoint_every=10)
    _traffic(router, data, range(200, 300), seed=2)
    replay = initial
    for fb, d in router.store.feedback():
        replay.update_outcomes(
            d.features[None, :], np.array([d.action]), np.array([fb.quality]), np.array([fb.cost])
        )
    assert_same_state(router.policy, replay, tmp_path)


def test_hot_swap_records_versions_and_survives_restart(tmp_path: Path, data: LoggedDataset) -> None:
    router = OnlineRouter(linucb(data), tmp_path / "d.db", version="base")
    before = router.route(data.features[250])
    new = LinUCB(alpha=0.0, seed=9).fit(data.select(np.arange(100, 300)), cost_weight=0.5)
    saved = new.save(tmp_path / "new")
    assert router.swap_policy_dir(saved, version="retrained") == "retrained"
    after = router.route(data.features[251])
    assert before.policy_version == "base" and after.policy_version == "retrained"
    router.feedback(before.decision_id, 0.9, cost=0.0)  # an old decision teaches the new policy
    with pytest.raises(ConfigurationError, match="already served"):
        router.swap_policy(load_policy(saved), version="base")
    restored = OnlineRouter.restore(SQLiteDecisionStore(tmp_path / "d.db", readonly=True))
    assert restored.version == "retrained"
    assert_same_state(router.policy, restored.policy, tmp_path)
    assert router.store.get_decision(before.decision_id).policy_version == "base"


# ---------------------------------------------------------------------------------------------------- cascades
def test_cascade_observe_accept_and_learn(tmp_path: Path) -> None:
    cascade = LearningThresholdCascade(("small", "mid", "large"))
    router = OnlineRouter(cascade, tmp_path / "d.db", cost_weight=1.0, cost_scale=1.0)
    d = router.route([0, 0, 0])
    assert d.kind == "cascade" and d.model == "small" and d.propensity == 1.0 and d.max_calls == 3
    low = router.observe(d.decision_id, signal=-5.0, cost=0.1)  # p(stop) ≈ 0 → call the next model
    assert (
        low.action == "call"
        and low.model == "mid"
        and low.propensity == pytest.approx(1 - low.stop_probability)
    )
    high = router.observe(d.decision_id, signal=5.0, cost=0.2)  # p(stop) ≈ 1 → accept
    assert high.action == "accept" and high.model == "mid" and high.n_calls == 2
    with pytest.raises(DecisionConflictError, match="already accepted 'mid'"):
        router.observe(d.decision_id, 1.0)
    fb = router.feedback(d.decision_id, 0.9)
    assert fb.cost == pytest.approx(0.3) and fb.reward == pytest.approx(0.6)
    # Step 0 chose to continue: its return is quality minus the later call's cost; step 1 stopped: quality.
    assert router.policy.history == [(0, False, pytest.approx(0.7)), (1, True, pytest.approx(0.9))]
    route_router = fixed_router(tmp_path / "r")
    rd = route_router.route([0, 0, 0])
    with pytest.raises(DecisionConflictError, match="observe applies to cascade decisions"):
        route_router.observe(rd.decision_id, 0.5)


def test_cascade_forced_accept_at_the_end_of_the_allowed_chain(tmp_path: Path) -> None:
    router = OnlineRouter(LearningThresholdCascade(("small", "mid", "large")), tmp_path / "d.db")
    d = router.route([0, 0, 0], allowed_models=["small", "mid"])
    assert d.max_calls == 2
    assert router.observe(d.decision_id, -9.0).model == "mid"
    last = router.observe(d.decision_id, -9.0)
    assert last.action == "accept" and last.model == "mid" and last.propensity == 1.0
    router.feedback(d.decision_id, 0.4, cost=0.5)
    assert [h[0] for h in router.policy.history] == [0]  # the forced step is not learned from
    with pytest.raises(ModelMismatchError, match="excludes 'small'"):
        router.route([0, 0, 0], allowed_models=["mid"])


def test_cascade_restore_replays_steps(tmp_path: Path) -> None:
    router = OnlineRouter(LearningThresholdCascade(("s", "m", "l")), tmp_path / "d.db", checkpoint_every=4)
    rng = np.random.default_rng(0)
    for _ in range(30):
        d = router.route([0, 0, 0])
        ob = router.observe(d.decision_id, float(rng.normal()))
        while ob.action == "call":
            ob = router.observe(d.decision_id, float(rng.normal()), cost=0.01)
        router.feedback(d.decision_id, float(rng.random()), cost=0.05)
    restored = OnlineRouter.restore(SQLiteDecisionStore(tmp_path / "d.db", readonly=True))
    assert_same_state(router.policy, restored.policy, tmp_path)


def test_cascade_bandit_served_learns_and_restores_bit_identically(tmp_path: Path) -> None:
    from agents.routers.cascades import CascadeBandit

    logs = make_synthetic(n_queries=300, models=3, n_features=4, seed=5)
    assert logs.signal is not None
    policy = CascadeBandit(alpha=0.5, epsilon=0.1, seed=0).fit(logs.select(np.arange(200)), cost_weight=0.5)
    router = OnlineRouter(policy, tmp_path / "d.db", checkpoint_every=6)
    assert router.kind == "cascade" and router.cost_weight == 0.5
    chain_idx = [logs.models.index(m) for m in router.models]
    steps = 0
    for i in range(200, 263):
        d = router.route(logs.features[i])
        ob = router.observe(
            d.decision_id, float(logs.signal[i, chain_idx[0]]), cost=float(logs.cost[i, chain_idx[0]])
        )
        steps += 1
        while ob.action == "call":
            j = chain_idx[ob.n_calls - 1]
            ob = router.observe(d.decision_id, float(logs.signal[i, j]), cost=float(logs.cost[i, j]))
            steps += 1
        assert 0 < ob.propensity <= 1
        router.feedback(d.decision_id, float(logs.quality[i, logs.models.index(ob.model)]))
    assert steps > 63  # some queries escalated
    assert router.store.latest_checkpoint().last_feedback_seq == 60  # type: ignore[union-attr]  # 3 to replay
    restored = OnlineRouter.restore(SQLiteDecisionStore(tmp_path / "d.db", readonly=True))
    assert_same_state(router.policy, restored.policy, tmp_path)


# ---------------------------------------------------------------------------------------------------- export
def test_export_is_canonical_bandit_logs_usable_for_ope(tmp_path: Path, data: LoggedDataset) -> None:
    from routing_env.ope import estimate_policy_value

    router = OnlineRouter(linucb(data), tmp_path / "d.db")
    decisions = []
    for i in range(200, 400):
        d = router.route(data.features[i])
        decisions.append(d)
        router.feedback(d.decision_id, float(data.quality[i, d.action]), cost=float(data.cost[i, d.action]))
    router.route(data.features[0])  # open: not exported
    ds = router.store.export()
    assert ds.n_queries == 200 and ds.models == data.models and not ds.is_full_information
    assert ds.observed.sum(axis=1).tolist() == [1] * 200
    np.testing.assert_array_equal(ds.logged_action, [d.action for d in decisions])
    np.testing.assert_array_equal(ds.propensity, [d.propensity for d in decisions])
    np.testing.assert_array_equal(ds.features, data.features[200:400])
    back = LoggedDataset.read(ds.save(tmp_path / "log.parquet"))
    np.testing.assert_array_equal(back.propensity, ds.propensity)
    feedback = router.store.export_bandit_feedback(cost_weight=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OPEWarning)  # 200 rounds: a small effective sample size is expected
        table = estimate_policy_value(linucb(data), feedback, estimators=["IPS", "SNIPS"], n_bootstrap=0)
    assert np.isfinite(table["estimate"]).all()
    with pytest.raises(ConfigurationError, match=r"versions \['zz'\] were never served"):
        router.store.export(versions=["zz"])


def test_export_of_an_empty_store_is_an_error(tmp_path: Path) -> None:
    router = fixed_router(tmp_path)
    with pytest.raises(ConfigurationError, match="nothing to export"):
        router.store.export()


def test_package_imports_without_fastapi() -> None:
    code = (
        "import sys; sys.modules['fastapi'] = None\n"
        "import agents.online as o\n"
        "assert o.OnlineRouter and o.DecisionStore and o.SQLiteDecisionStore\n"
        "try:\n"
        "    o.create_app(None)\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'routing-env[serve]'" in out.stdout


@pytest.mark.parametrize(
    "probs",
    [[np.inf, -np.inf, 1.0], [np.nan, 0.5, 0.5], [-0.1, 0.6, 0.5], [0.2, 0.2, 0.2]],
    ids=["inf", "nan", "negative", "sum"],
)
def test_route_refuses_a_policy_that_returns_no_distribution(tmp_path: Path, probs: list[float]) -> None:
    router = OnlineRouter(FixedPolicy(("a", "b", "c"), [1 / 3] * 3), SQLiteDecisionStore(tmp_path / "d.db"))
    router.policy.probs = np.array(probs)
    with pytest.raises(ConfigurationError, match="action_probabilities returned"):
        router.route([0.1, 0.2, 0.3])
    assert router.store.max_decision_seq() == 0
