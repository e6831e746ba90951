"""estimate_policy_value's table, its diagnostics, the reward model and the bootstrap."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import KNeighborsRegressor

from routing_env.data import LoggedDataset, make_synthetic
from routing_env.errors import ConfigurationError, ModelMismatchError, OPEWarning, ShapeError
from routing_env.ope import (
    DEFAULT_ESTIMATORS,
    IPS,
    SNIPS,
    BanditFeedback,
    DiagnosticThresholds,
    RewardModel,
    bootstrap_values,
    diagnose,
    estimate_policy_value,
    simulate_bandit_feedback,
)
from routing_env.ope.estimators import Terms
from routing_env.ope.evaluate import COLUMNS
from routing_env.ope.intervals import _TABLE, poisson_weights
from tests.ope.ope_policies import ConstantPolicy, LinearSoftmaxPolicy, random_linear


@pytest.fixture(scope="module")
def data() -> LoggedDataset:
    return make_synthetic(n_queries=3000, models=4, n_features=6, seed=11)


@pytest.fixture(scope="module")
def log(data: LoggedDataset) -> BanditFeedback:
    logger = random_linear(data.models, data.n_features, seed=5, temperature=3.0, epsilon=0.2)
    return simulate_bandit_feedback(data, logger, cost_weight=0.5, seed=0)


def test_table_has_one_row_per_estimator(data: LoggedDataset, log: BanditFeedback) -> None:
    target = random_linear(data.models, data.n_features, seed=9, temperature=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OPEWarning)  # a healthy log/target pair raises no diagnostics
        table = estimate_policy_value(target, log, n_bootstrap=200, seed=0)
    assert list(table["estimator"]) == list(DEFAULT_ESTIMATORS)
    assert list(table.columns) == [*COLUMNS, "true_value"]
    for col in COLUMNS[1:]:
        assert table[col].notna().all(), col
    assert (table["ci_low"] < table["estimate"]).all() and (table["estimate"] < table["ci_high"]).all()
    truth = log.true_value(target)
    assert (table["true_value"] == truth).all()
    # n = 3,000 from an ε-greedy logger: every unbiased estimator lands within 4 standard errors of the truth.
    for name in ("IPS", "SNIPS", "DR", "SNDR"):
        row = table.set_index("estimator").loc[name]
        assert abs(row["estimate"] - truth) < 4 * row["std_error"], name
    # the bootstrap and the delta-method standard errors agree for the linear estimators
    ips = table.set_index("estimator").loc["IPS"]
    assert ips["boot_std_error"] == pytest.approx(ips["std_error"], rel=0.25)
    assert table.loc[table.estimator == "DM", "ess"].item() == log.n_rounds
    diag = table.attrs["diagnostics"]
    assert diag.ok and 0 < diag.ess < log.n_rounds


def test_same_seed_same_table_and_cost_weight_changes_rewards(
    data: LoggedDataset, log: BanditFeedback
) -> None:
    target = random_linear(data.models, data.n_features, seed=9)
    a = estimate_policy_value(target, log, ["IPS", "DR"], n_bootstrap=50, seed=1)
    b = estimate_policy_value(target, log, ["IPS", "DR"], n_bootstrap=50, seed=1)
    assert a.equals(b)
    zero = estimate_policy_value(target, log, ["IPS"], n_bootstrap=0, cost_weight=0.0)
    assert zero["cost_weight"].item() == 0.0 and math.isnan(zero["boot_ci_low"].item())
    w = target.action_probabilities(log.features)[np.arange(log.n_rounds), log.action] / log.propensity
    assert zero["estimate"].item() == pytest.approx(np.mean(w * log.quality))
    assert a.loc[0, "cost_weight"] == 0.5


def test_array_target_and_estimator_instances(log: BanditFeedback) -> None:
    dist = np.eye(log.n_actions)[np.zeros(log.n_rounds, dtype=int)]
    table = estimate_policy_value(
        dist, log, [IPS(name="IPS"), IPS(max_weight=2.0, name="IPS-clip2")], n_bootstrap=0
    )
    assert list(table["estimator"]) == ["IPS", "IPS-clip2"]
    assert table["estimate"][1] <= table["estimate"][0] + 1e-12 or (log.rewards() < 0).any()


def test_evaluate_errors(data: LoggedDataset, log: BanditFeedback) -> None:
    good = random_linear(data.models, data.n_features, seed=1)
    with pytest.raises(ModelMismatchError, match="routes over models"):
        estimate_policy_value(ConstantPolicy(("x", "y", "z", "w"), [0.25] * 4), log)
    with pytest.raises(ShapeError, match=r"action_dist must have shape \(n, K\)"):
        estimate_policy_value(np.full((10, 4), 0.25), log)
    with pytest.raises(ConfigurationError, match="n_bootstrap must be 0"):
        estimate_policy_value(good, log, n_bootstrap=1)
    with pytest.raises(ConfigurationError, match="alpha must be in"):
        estimate_policy_value(good, log, alpha=1.5)
    with pytest.raises(ConfigurationError, match="estimator names must be unique"):
        estimate_policy_value(good, log, ["IPS", IPS()])
    with pytest.raises(ConfigurationError, match="estimators is empty"):
        estimate_policy_value(good, log, [])
    with pytest.raises(ConfigurationError, match="feedback must be a BanditFeedback"):
        estimate_policy_value(good, data)  # type: ignore[arg-type]


def test_support_violation_warns(data: LoggedDataset) -> None:
    # The logger never picks model 3; a target that does is partly invisible to importance weighting.
    logger = ConstantPolicy(data.models, [0.4, 0.3, 0.3, 0.0])
    fb = simulate_bandit_feedback(data, logger, seed=0)
    target = ConstantPolicy(data.models, [0.25, 0.25, 0.25, 0.25])
    with pytest.warns(OPEWarning, match=r"support violation: .*25\.000% .*"):
        table = estimate_policy_value(target, fb, ["IPS"], n_bootstrap=0)
    diag = table.attrs["diagnostics"]
    assert diag.unsupported_actions == (3,) and diag.unsupported_mass == pytest.approx(0.25)
    # Without the logger's distribution (real logs), an action absent from the log is the violation.
    real = BanditFeedback(
        models=fb.models, features=fb.features, action=fb.action, propensity=fb.propensity, quality=fb.quality
    )
    d = diagnose(real.action, real.propensity, target.action_probabilities(real.features), emit=False)
    assert d.unsupported_actions == (3,) and d.warnings


def test_a_deterministic_logger_is_named_as_the_cause(data: LoggedDataset) -> None:
    # A greedy logger logs propensity 1 on every round; read back from disk, the logs no longer say what else it
    # could have done. OPE must blame the missing support (and say how to get it), not the propensities.
    logger = random_linear(data.models, data.n_features, seed=3, temperature=0.0)
    fb = simulate_bandit_feedback(data, logger, seed=0)
    assert (fb.propensity == 1.0).all() and len(set(fb.action.tolist())) == data.n_models
    logs = BanditFeedback.from_dataset(fb.to_dataset())
    target = random_linear(data.models, data.n_features, seed=9, temperature=1.0)
    with pytest.warns(OPEWarning) as record:
        table = estimate_policy_value(target, logs, ["IPS", "SNIPS"], n_bootstrap=0)
    messages = " | ".join(str(w.message) for w in record)
    assert "propensities may not be" not in messages
    assert "no support: the logging policy was deterministic (every propensity is 1)" in messages
    assert "no other policy can be evaluated" in messages and "exploration" in messages
    diag = table.attrs["diagnostics"]
    assert diag.n_deterministic == data.n_queries
    pi = target.action_probabilities(logs.features)[np.arange(logs.n_rounds), logs.action]
    assert diag.unsupported_mass == pytest.approx(1.0 - pi.mean())
    # Some deterministic rounds among stochastic ones are counted and named as such.
    mixed = logs.propensity.copy()
    mixed[: logs.n_rounds // 2] = 0.5
    partly = diagnose(logs.action, mixed, target.action_probabilities(logs.features), emit=False)
    assert partly.n_deterministic == logs.n_rounds - logs.n_rounds // 2
    assert any(
        f"deterministic on {partly.n_deterministic} of {logs.n_rounds} rounds" in m for m in partly.warnings
    )
    # The logger itself is evaluated on its own logs without a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", OPEWarning)
        own = estimate_policy_value(logger, logs, ["IPS"], n_bootstrap=0)
    assert own["estimate"].iloc[0] == pytest.approx(logs.quality.mean())


def test_no_support_at_all_is_named_and_snips_is_undefined() -> None:
    # The target never chooses a logged action: every importance weight is 0. IPS says 0 (it is unbiased for the
    # supported part only), the self-normalised estimators have no denominator: NaN, and the diagnostics say why.
    n = 200
    action = np.zeros(n, dtype=np.int64)
    dist = np.tile([0.0, 1.0], (n, 1))
    reward = np.linspace(0.0, 1.0, n)
    with pytest.warns(OPEWarning, match=r"no support: the target never chooses a logged action"):
        d = diagnose(action, np.full(n, 0.5), dist)
    assert d.unsupported_mass == pytest.approx(1.0) and d.ess == 0.0
    with pytest.warns(
        OPEWarning, match=r"SNIPS: no support: .*every importance weight is 0 .*undefined \(NaN\)"
    ):
        value = SNIPS().estimate_policy_value(reward, action, np.full(n, 0.5), dist)
    assert math.isnan(value)
    assert IPS().estimate_policy_value(reward, action, np.full(n, 0.5), dist) == 0.0


def test_tiny_propensities_and_small_ess_warn() -> None:
    n = 400
    action = np.zeros(n, dtype=np.int64)
    pscore = np.full(n, 0.5)
    pscore[:3] = 1e-6
    target = np.tile([1.0, 0.0], (n, 1))
    with pytest.warns(OPEWarning) as record:
        d = diagnose(action, pscore, target)
    messages = " | ".join(str(w.message) for w in record)
    assert "3 of 400 rounds have a propensity below 0.0001" in messages
    assert "small effective sample size" in messages
    assert d.n_tiny_propensity == 3 and d.ess < 4
    quiet = diagnose(action, np.full(n, 0.5), target, thresholds=DiagnosticThresholds(min_ess=10), emit=False)
    assert "mean importance weight is 2.000" in quiet.warnings[0]
    with pytest.raises(ConfigurationError, match="tiny_propensity must be in"):
        DiagnosticThresholds(tiny_propensity=2.0)


def test_reward_model_is_cross_fitted() -> None:
    rng = np.random.default_rng(0)
    n = 200
    x = rng.normal(size=(n, 3))
    a = rng.integers(0, 2, n)
    r = rng.normal(size=n)  # pure noise: a 1-nearest-neighbour model would memorise it in-sample
    model = RewardModel(regressor=KNeighborsRegressor(n_neighbors=1), n_folds=4)
    q = model.fit_predict(x, a, r, n_actions=2)
    assert q.shape == (n, 2)
    assert not np.allclose(q[np.arange(n), a], r)  # never predicted from its own row
    np.testing.assert_allclose(q, model.fit_predict(x, a, r, n_actions=2))  # seeded folds
    pooled = RewardModel(per_action=False).fit_predict(x, a, r, n_actions=2)
    assert pooled.shape == (n, 2)


def test_reward_model_fallbacks_and_errors() -> None:
    x = np.zeros((20, 0))
    a = np.array([0] * 10 + [1] * 10)
    r = np.array([1.0] * 10 + [0.0] * 10)
    q = RewardModel(n_folds=2).fit_predict(x, a, r, n_actions=3)
    np.testing.assert_allclose(q[:, 0], 1.0)
    np.testing.assert_allclose(q[:, 1], 0.0)
    # action 2 is never logged: the fold's overall mean
    np.testing.assert_allclose(q[:, 2], 0.5, atol=0.2)
    clipped = RewardModel(clip=(0.2, 0.8), n_folds=2).fit_predict(x, a, r, n_actions=2)
    assert clipped.min() == 0.2 and clipped.max() == 0.8
    with pytest.raises(ConfigurationError, match="n_folds must be an integer ≥ 2"):
        RewardModel(n_folds=1)
    with pytest.raises(ConfigurationError, match="regressor must be a scikit-learn style regressor"):
        RewardModel(regressor="ridge")
    with pytest.raises(ConfigurationError, match="needs at least that many rounds"):
        RewardModel(n_folds=5).fit_predict(x[:3], a[:3], r[:3], n_actions=2)


def test_poisson_table_has_poisson_moments() -> None:
    counts = _TABLE.astype(np.float64)
    assert counts.mean() == pytest.approx(1.0, abs=1e-4)
    assert counts.var() == pytest.approx(1.0, abs=1e-3)
    assert np.mean(counts == 0) == pytest.approx(math.exp(-1), abs=2e-5)
    # The generator's comparisons give exactly the table's counts for the same 16-bit draws.
    draws = np.random.default_rng(5).integers(0, 1 << 16, size=(7, 3000), dtype=np.uint16)
    np.testing.assert_array_equal(poisson_weights(np.random.default_rng(5), (7, 3000)), _TABLE[draws])


def test_bootstrap_of_a_mean_matches_its_standard_error() -> None:
    rng = np.random.default_rng(0)
    u = rng.exponential(size=5000)
    reps = bootstrap_values([Terms(((u, None),), None)], n_bootstrap=400, seed=1, chunk=1000)[0]
    assert reps.mean() == pytest.approx(u.mean(), rel=0.01)
    assert reps.std(ddof=1) == pytest.approx(u.std() / math.sqrt(u.size), rel=0.15)
    again = bootstrap_values([Terms(((u, None),), None)], n_bootstrap=400, seed=1, chunk=1000)[0]
    np.testing.assert_array_equal(reps, again)
    with pytest.raises(ConfigurationError, match="n_bootstrap must be an integer ≥ 2"):
        bootstrap_values([Terms(((u, None),), None)], n_bootstrap=1)


def test_open_bandit_style_positions(data: LoggedDataset) -> None:
    # A slate with 2 positions and a target that depends on the position: (n, K, P) action_dist.
    n, k = data.n_queries, data.n_models
    rng = np.random.default_rng(0)
    fb = BanditFeedback(
        models=data.models,
        features=data.features,
        action=rng.integers(0, k, n),
        propensity=np.full(n, 1.0 / k),
        quality=rng.random(n),
        position=rng.integers(0, 2, n),
    )
    dist = np.zeros((n, k, 2))
    dist[:, 0, 0] = 1.0
    dist[:, 1, 1] = 1.0
    table = estimate_policy_value(dist, fb, ["IPS", "Replay", "DR"], n_bootstrap=0)
    match = ((fb.position == 0) & (fb.action == 0)) | ((fb.position == 1) & (fb.action == 1))
    rep = table.set_index("estimator").loc["Replay", "estimate"]
    assert rep == pytest.approx(fb.quality[match].mean())
    with pytest.raises(ShapeError, match="needs feedback with positions"):
        estimate_policy_value(dist, simulate_bandit_feedback(data, ConstantPolicy(data.models, [0.25] * 4)))


def test_policy_object_and_its_array_agree(data: LoggedDataset, log: BanditFeedback) -> None:
    target = LinearSoftmaxPolicy(data.models, np.ones((data.n_features, data.n_models)), temperature=0.0)
    a = estimate_policy_value(target, log, ["IPS", "SNIPS"], n_bootstrap=0)
    b = estimate_policy_value(target.action_probabilities(log.features), log, ["IPS", "SNIPS"], n_bootstrap=0)
    assert a.equals(b)


def test_slate_ids_make_the_intervals_cluster_robust(data: LoggedDataset, log: BanditFeedback) -> None:
    target = random_linear(data.models, data.n_features, seed=9)

    def fb(rows: np.ndarray, slate: np.ndarray | None) -> BanditFeedback:
        return BanditFeedback(
            models=log.models,
            features=log.features[rows],
            action=log.action[rows],
            propensity=log.propensity[rows],
            quality=log.quality[rows],
            slate_id=slate,
        )

    n = log.n_rounds
    rows = np.arange(n)
    plain = estimate_policy_value(target, fb(rows, None), ["IPS", "SNIPS"], n_bootstrap=100)
    # One round per slate: exactly the per-round intervals (same draws, same variance).
    singletons = estimate_policy_value(
        target, fb(rows, [f"s{i}" for i in rows]), ["IPS", "SNIPS"], n_bootstrap=100
    )
    pd.testing.assert_frame_equal(plain, singletons, check_exact=False, rtol=1e-6)
    # Every round logged twice in one slate: the per-round SE shrinks by ~√2, the slate SE does not.
    twice = np.repeat(rows, 2)
    naive = estimate_policy_value(target, fb(twice, None), ["IPS"], n_bootstrap=100)
    robust = estimate_policy_value(target, fb(twice, twice), ["IPS"], n_bootstrap=100)
    ratio_naive = plain["std_error"][0] / naive["std_error"][0]
    assert ratio_naive == pytest.approx(math.sqrt(2), rel=0.01)
    assert robust["std_error"][0] == pytest.approx(plain["std_error"][0], rel=0.01)
    assert robust["boot_std_error"][0] == pytest.approx(plain["boot_std_error"][0], rel=0.3)
    assert naive["boot_std_error"][0] < 0.85 * robust["boot_std_error"][0]
    with pytest.raises(ShapeError, match=r"slate_id must have shape"):
        fb(rows, np.zeros(3))
