"""Every estimator on a hand-computed four-round case, plus input validation and clipping options."""

from __future__ import annotations

import math

import numpy as np
import pytest

from routing_env import ope
from routing_env.errors import ConfigurationError, OPEWarning, SchemaError, ShapeError

# Four logged rounds, K = 2. Importance weights w = π(a|x)/pscore = [2, 2, 4, 0.4];
# residuals r − q̂(x, a) = [0.2, −0.5, 0.4, 0.2]; dm rows Σ_a π q̂ = [0.8, 0.5, 0.6, 0.78].
REWARD = np.array([1.0, 0.0, 1.0, 0.5])
ACTION = np.array([0, 1, 1, 0])
PSCORE = np.array([0.5, 0.25, 0.25, 0.5])
TARGET = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.2, 0.8]])
QHAT = np.array([[0.8, 0.2], [0.5, 0.5], [0.4, 0.6], [0.3, 0.9]])

HAND = {
    # (2.68) / 4
    "DM": 0.67,
    # (2 + 0 + 4 + 0.2) / 4
    "IPS": 1.55,
    # 6.2 / 8.4
    "SNIPS": 6.2 / 8.4,
    # (2.68 + 0.4 − 1.0 + 1.6 + 0.08) / 4
    "DR": 0.94,
    # 0.67 + 1.08 / 8.4
    "SNDR": 0.67 + 1.08 / 8.4,
}


@pytest.mark.parametrize("name", sorted(HAND))
def test_hand_computed_values(name: str) -> None:
    est = ope.make_estimator(name)
    value = est.estimate_policy_value(REWARD, ACTION, PSCORE, TARGET, estimated_rewards=QHAT)
    assert value == pytest.approx(HAND[name], abs=1e-12)
    rounds = est.estimate_round_rewards(REWARD, ACTION, PSCORE, TARGET, estimated_rewards=QHAT)
    assert rounds.shape == (4,)
    assert rounds.mean() == pytest.approx(HAND[name], abs=1e-12)


def test_switch_dr_drops_the_correction_above_tau() -> None:
    # tau = 3 switches round 3 (w = 4) to DM: (2.68 + 0.4 − 1.0 + 0 + 0.08) / 4 = 0.54.
    value = ope.SwitchDR(tau=3.0).estimate_policy_value(
        REWARD, ACTION, PSCORE, TARGET, estimated_rewards=QHAT
    )
    assert value == pytest.approx(0.54, abs=1e-12)
    # tau = inf is DR, tau = 0 is DM.
    inf = ope.SwitchDR(tau=math.inf).estimate_policy_value(
        REWARD, ACTION, PSCORE, TARGET, estimated_rewards=QHAT
    )
    zero = ope.SwitchDR(tau=0.0).estimate_policy_value(REWARD, ACTION, PSCORE, TARGET, estimated_rewards=QHAT)
    assert inf == pytest.approx(HAND["DR"]) and zero == pytest.approx(HAND["DM"])


def test_dr_optimistic_shrinkage() -> None:
    # λ = 4: w̃ = 4w/(w² + 4) = [1, 1, 0.8, 1.6/4.16]; Σ w̃·res = 0.2 − 0.5 + 0.32 + 0.2·1.6/4.16.
    expected = (2.68 + 0.2 - 0.5 + 0.32 + 0.2 * 1.6 / 4.16) / 4
    value = ope.DRos(shrinkage=4.0).estimate_policy_value(
        REWARD, ACTION, PSCORE, TARGET, estimated_rewards=QHAT
    )
    assert value == pytest.approx(expected, abs=1e-12)
    huge = ope.DRos(shrinkage=1e12).estimate_policy_value(
        REWARD, ACTION, PSCORE, TARGET, estimated_rewards=QHAT
    )
    assert huge == pytest.approx(HAND["DR"], abs=1e-9)


def test_replay_on_uniform_logs() -> None:
    uniform = np.full(4, 0.5)
    # Σ π(a|x) r / Σ π(a|x) = (1 + 0 + 1 + 0.1) / (1 + 0.5 + 1 + 0.2)
    value = ope.Replay().estimate_policy_value(REWARD, ACTION, uniform, TARGET)
    assert value == pytest.approx(2.1 / 2.7, abs=1e-12)
    # A deterministic target keeps exactly the matching rounds (Li et al.): rounds 0 and 2 → mean(1, 1).
    det = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert ope.Replay().estimate_policy_value(REWARD, ACTION, uniform, det) == pytest.approx(1.0)


def test_replay_refuses_non_uniform_logs() -> None:
    with pytest.raises(SchemaError, match="Replay needs a uniformly random logger"):
        ope.Replay().estimate_policy_value(REWARD, ACTION, PSCORE, TARGET)


def test_replay_never_matching_is_nan_with_warning() -> None:
    never = np.tile([0.0, 1.0], (4, 1))
    with pytest.warns(OPEWarning, match="never chooses a logged action"):
        value = ope.Replay().estimate_policy_value(np.ones(2), np.array([0, 0]), np.full(2, 0.5), never[:2])
    assert math.isnan(value)


def test_weight_clipping_and_pscore_floor() -> None:
    # max_weight = 3 clips w = 4 → 3: (2 + 0 + 3 + 0.2) / 4.
    assert ope.IPS(max_weight=3.0).estimate_policy_value(REWARD, ACTION, PSCORE, TARGET) == pytest.approx(1.3)
    # min_pscore = 0.5 floors 0.25 → 0.5: w = [2, 1, 2, 0.4] → (2 + 0 + 2 + 0.2) / 4.
    assert ope.IPS(min_pscore=0.5).estimate_policy_value(REWARD, ACTION, PSCORE, TARGET) == pytest.approx(
        1.05
    )


def test_zero_pscore_is_refused_unless_floored() -> None:
    p = PSCORE.copy()
    p[1] = 0.0
    with pytest.raises(SchemaError, match=r"pscore is 0 on 1 rounds .*min_pscore"):
        ope.IPS().estimate_policy_value(REWARD, ACTION, p, TARGET)
    # Floored explicitly: w of round 1 = 0.5 / 1e-3 = 500, reward 0 → (2 + 0 + 4 + 0.2) / 4.
    assert ope.IPS(min_pscore=1e-3).estimate_policy_value(REWARD, ACTION, p, TARGET) == pytest.approx(1.55)


def test_normal_interval_of_ips_by_hand() -> None:
    # w·r = [2, 0, 4, 0.2]: sample variance 10.43 / 3, standard error sqrt(10.43 / 3) / 2.
    iv = ope.IPS().estimate_interval(REWARD, ACTION, PSCORE, TARGET, method="normal", alpha=0.05)
    se = math.sqrt(10.43 / 3) / 2
    assert iv.estimate == pytest.approx(1.55)
    assert iv.std_error == pytest.approx(se)
    assert iv.low == pytest.approx(1.55 - 1.959963984540054 * se)
    assert iv.high == pytest.approx(1.55 + 1.959963984540054 * se)


def test_normal_interval_of_snips_is_the_delta_method() -> None:
    w = np.array([2.0, 2.0, 4.0, 0.4])
    theta = 6.2 / 8.4
    psi = (w * REWARD - theta * w) / w.mean()
    iv = ope.SNIPS().estimate_interval(REWARD, ACTION, PSCORE, TARGET, method="normal")
    assert iv.std_error == pytest.approx(psi.std(ddof=1) / 2)


def test_bootstrap_interval_is_seeded() -> None:
    a = ope.IPS().estimate_interval(REWARD, ACTION, PSCORE, TARGET, n_bootstrap=200, seed=3)
    b = ope.IPS().estimate_interval(REWARD, ACTION, PSCORE, TARGET, n_bootstrap=200, seed=3)
    c = ope.IPS().estimate_interval(REWARD, ACTION, PSCORE, TARGET, n_bootstrap=200, seed=4)
    assert a == b and a != c
    assert a.low <= a.estimate <= a.high


def test_positions_pick_the_logged_slot() -> None:
    # Two slots; the target differs per slot. With position = [0, 1, 1, 0], slot 1 rows use the second matrix.
    per_slot = np.stack([TARGET, TARGET[:, ::-1]], axis=2)  # (n, K, P)
    pos = np.array([0, 1, 1, 0])
    value = ope.IPS().estimate_policy_value(REWARD, ACTION, PSCORE, per_slot, position=pos)
    pi = np.array([1.0, 0.5, 0.0, 0.2])  # rows 1 and 2 read the reversed distribution
    assert value == pytest.approx(np.mean(pi / PSCORE * REWARD))
    with pytest.raises(ConfigurationError, match="pass position"):
        ope.IPS().estimate_policy_value(REWARD, ACTION, PSCORE, per_slot)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"action_dist": np.array([[0.5, 0.6]] * 4)}, "rows must be probabilities summing to 1; row 0"),
        ({"action_dist": np.array([[1.5, -0.5]] * 4)}, "rows must be probabilities summing to 1"),
        ({"action_dist": np.ones((3, 2)) / 2}, r"action_dist must have shape \(n, K\)"),
        ({"pscore": np.array([0.5, 1.2, 0.5, 0.5])}, r"pscore must be probabilities in \[0, 1\]"),
        ({"pscore": np.array([0.5, np.nan, 0.5, 0.5])}, r"pscore must be probabilities in \[0, 1\]"),
        ({"action_dist": np.array([[np.nan, 1.0]] * 4)}, "rows must be probabilities summing to 1; row 0"),
        ({"action": np.array([0, 1, 2, 0])}, r"action must lie in \[0, 2\)"),
        ({"action": np.array([0.0, 1.0, 1.0, 0.0])}, "action must hold integer"),
        ({"reward": np.array([1.0, np.nan, 0.0, 0.0])}, "reward must be finite"),
        ({"reward": np.ones(5)}, r"action must have shape \(n,\) = \(5,\)"),
    ],
)
def test_bad_inputs_raise(kwargs: dict[str, np.ndarray], match: str) -> None:
    args = {"reward": REWARD, "action": ACTION, "pscore": PSCORE, "action_dist": TARGET}
    args.update(kwargs)
    with pytest.raises((SchemaError, ShapeError, ConfigurationError), match=match):
        ope.IPS().estimate_policy_value(**args)


def test_model_based_estimators_need_estimated_rewards() -> None:
    for cls in (ope.DM, ope.DR, ope.SNDR, ope.SwitchDR, ope.DRos):
        with pytest.raises(ConfigurationError, match="needs estimated_rewards"):
            cls().estimate_policy_value(REWARD, ACTION, PSCORE, TARGET)
    with pytest.raises(ShapeError, match="estimated_rewards must have shape"):
        ope.DR().estimate_policy_value(REWARD, ACTION, PSCORE, TARGET, estimated_rewards=QHAT[:, :1])


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: ope.IPS(max_weight=0.0), "max_weight must be > 0"),
        (lambda: ope.SNIPS(min_pscore=2.0), r"min_pscore must be in \[0, 1\]"),
        (lambda: ope.SwitchDR(tau=-1.0), "tau must be ≥ 0"),
        (lambda: ope.DRos(shrinkage=0.0), "shrinkage must be > 0"),
        (lambda: ope.Replay(rtol=-1.0), "rtol must be ≥ 0"),
        (lambda: ope.make_estimator("magic"), "unknown estimator 'magic'"),
    ],
)
def test_bad_hyperparameters_raise(factory: object, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        factory()  # type: ignore[operator]


def test_estimators_are_frozen_and_named() -> None:
    est = ope.IPS(max_weight=10.0, name="IPS-clip10")
    assert est.label == "IPS-clip10"
    with pytest.raises(AttributeError):
        est.max_weight = 3.0  # type: ignore[misc]
    assert {ope.make_estimator(k).label for k in ope.ESTIMATORS} == set(ope.ESTIMATORS)
    assert ope.make_estimator("snips").label == "SNIPS"
