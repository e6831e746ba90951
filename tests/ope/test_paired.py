"""The paired difference estimator and the anytime-valid confidence sequences of ``routing_env.ope.paired``.

Properties (hypothesis): antisymmetry, zero for identical policies, equality with the difference of the unpaired
point estimates, unbiasedness of the IPS/DR difference over every possible log of a tiny problem. Coverage on
simulated logs: the fixed-sample interval at one look, the confidence sequence over every look (where repeated
looks at the fixed-sample interval fail).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing_env.errors import ConfigurationError, ShapeError
from routing_env.ope import DR, IPS, SNDR, SNIPS, DRos, SwitchDR
from routing_env.ope.feedback import sample_actions
from routing_env.ope.paired import (
    PairedDifference,
    PairedEstimate,
    RunningSequence,
    SequenceConfig,
    confidence_sequence,
    mixture_scale,
    normal_mixture_boundary,
    z_quantile,
)

ESTIMATOR_CLASSES = {"IPS": IPS, "SNIPS": SNIPS, "DR": DR, "SNDR": SNDR, "SwitchDR": SwitchDR, "DRos": DRos}


#: The cases of the properties over random logs: a seed, ``n`` rounds, ``k`` actions and an estimator's name.
over_random_logs = given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 60),
    k=st.integers(2, 6),
    name=st.sampled_from(list(ESTIMATOR_CLASSES)),
)


def _dist(rng: np.random.Generator, n: int, k: int, floor: float = 0.0) -> np.ndarray:
    d = rng.dirichlet(np.ones(k), size=n)
    return (1 - floor) * d + floor / k


def _interval(paired: PairedDifference, *arrays: np.ndarray | None, **options: Any) -> PairedEstimate:
    return paired.interval(paired.terms(*arrays), **options)  # type: ignore[arg-type]


def _log(seed: int, n: int, k: int) -> tuple[np.ndarray, ...]:
    """A random log: (reward, action, pscore, logger, candidate, live, qhat)."""
    rng = np.random.default_rng(seed)
    logger = _dist(rng, n, k, floor=0.2)
    cand, live = _dist(rng, n, k), _dist(rng, n, k)
    action = np.array([rng.choice(k, p=row) for row in logger])
    reward = rng.normal(size=n)
    qhat = rng.normal(size=(n, k))
    return reward, action, logger[np.arange(n), action], logger, cand, live, qhat


@settings(max_examples=30, deadline=None)
@over_random_logs
def test_difference_is_antisymmetric_and_equals_the_unpaired_difference(
    seed: int, n: int, k: int, name: str
) -> None:
    reward, action, pscore, _, cand, live, qhat = _log(seed, n, k)
    paired = PairedDifference(name)
    forward = paired.terms(reward, action, pscore, cand, live, qhat).estimate()
    backward = paired.terms(reward, action, pscore, live, cand, qhat).estimate()
    assert forward == pytest.approx(-backward, rel=1e-10, abs=1e-12)
    est = ESTIMATOR_CLASSES[name]()
    unpaired = est.estimate_policy_value(reward, action, pscore, cand, estimated_rewards=qhat) - (
        est.estimate_policy_value(reward, action, pscore, live, estimated_rewards=qhat)
    )
    assert forward == pytest.approx(unpaired, rel=1e-10, abs=1e-12)
    interval = _interval(paired, reward, action, pscore, cand, live, qhat)
    assert interval.estimate == pytest.approx(forward, rel=1e-12, abs=1e-15)
    assert interval.candidate_value - interval.live_value == pytest.approx(forward, rel=1e-10, abs=1e-12)


@settings(max_examples=30, deadline=None)
@over_random_logs
def test_identical_policies_differ_by_zero(seed: int, n: int, k: int, name: str) -> None:
    reward, action, pscore, _, cand, _, qhat = _log(seed, n, k)
    result = _interval(PairedDifference(name), reward, action, pscore, cand, cand.copy(), qhat)
    assert result.estimate == pytest.approx(0.0, abs=1e-12)
    # Every per-round difference is 0, so the interval is the point: the pairing removes all the noise.
    assert (result.std_error, result.low, result.high) == pytest.approx((0.0, 0.0, 0.0), abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 3), k=st.integers(2, 3))
def test_ips_and_dr_differences_are_unbiased_over_every_possible_log(seed: int, n: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    logger, cand, live = _dist(rng, n, k, floor=0.1), _dist(rng, n, k), _dist(rng, n, k)
    rewards = rng.random((n, k))
    qhat = rng.random((n, k))  # a wrong reward model: DR stays unbiased
    truth = float(((cand - live) * rewards).sum(axis=1).mean())
    rows = np.arange(n)
    expected = {"IPS": 0.0, "DR": 0.0}
    for actions in itertools.product(range(k), repeat=n):
        a = np.array(actions)
        prob = float(np.prod(logger[rows, a]))
        for name in expected:
            value = (
                PairedDifference(name)
                .terms(rewards[rows, a], a, logger[rows, a], cand, live, qhat)
                .estimate()
            )
            expected[name] += prob * value
    for value in expected.values():
        assert value == pytest.approx(truth, rel=1e-9, abs=1e-12)


def test_live_none_scores_the_logger_on_its_own_log() -> None:
    reward, action, pscore, logger, cand, _, qhat = _log(3, 200, 4)
    for name in ("IPS", "SNIPS"):
        paired = PairedDifference(name)
        on_policy = _interval(paired, reward, action, pscore, cand, None)
        # The logger's own IPS/SNIPS weights are all 1: its value is the logged mean either way.
        explicit = _interval(paired, reward, action, pscore, cand, logger)
        assert on_policy.live_value == pytest.approx(reward.mean())
        assert on_policy.estimate == pytest.approx(explicit.estimate, rel=1e-10)
        assert on_policy.ess_live == 200
    dr = PairedDifference("DR").terms(reward, action, pscore, cand, None, qhat).estimate()
    expected = (
        DR().estimate_policy_value(reward, action, pscore, cand, estimated_rewards=qhat) - reward.mean()
    )
    assert dr == pytest.approx(expected, rel=1e-10)


def _simulate(rng: np.random.Generator, pop: dict[str, np.ndarray], n: int) -> tuple[np.ndarray, ...]:
    idx = rng.integers(0, pop["rewards"].shape[0], n)
    action = sample_actions(pop["logger"][idx], rng)
    noise = rng.normal(scale=0.3, size=n)
    reward = pop["rewards"][idx, action] + noise
    return reward, action, pop["logger"][idx, action], pop["cand"][idx], pop["live"][idx], pop["qhat"][idx]


@pytest.fixture(scope="module")
def population() -> dict[str, np.ndarray]:
    """A query population with known rewards: the logger explores, the candidate is slightly better than live."""
    rng = np.random.default_rng(11)
    n, k = 500, 4
    rewards = rng.random((n, k))
    live = 0.7 * np.eye(k)[rng.integers(0, k, n)] + 0.3 / k
    cand = 0.7 * np.eye(k)[rewards.argmax(axis=1)] + 0.3 / k
    cand = 0.3 * cand + 0.7 * live
    qhat = rewards + rng.normal(scale=0.2, size=(n, k))
    truth = float(((cand - live) * rewards).sum(axis=1).mean())
    return {
        "rewards": rewards,
        "logger": live,
        "live": live,
        "cand": cand,
        "qhat": qhat,
        "truth": np.array(truth),
    }


@pytest.mark.parametrize("name", ["IPS", "DR", "SNIPS"])
def test_paired_interval_covers_the_true_difference_on_simulated_logs(
    population: dict[str, np.ndarray], name: str
) -> None:
    truth = float(population["truth"])
    rng = np.random.default_rng(5)
    covered, paired_width, unpaired_width = [], [], []
    est = ESTIMATOR_CLASSES[name]()
    for _ in range(300):
        reward, action, pscore, cand, live, qhat = _simulate(rng, population, 400)
        r = _interval(PairedDifference(name), reward, action, pscore, cand, live, qhat, alpha=0.05)
        covered.append(r.low <= truth <= r.high)
        paired_width.append(r.high - r.low)
        se = [
            est.estimate_interval(
                reward, action, pscore, d, estimated_rewards=qhat, method="normal"
            ).std_error
            for d in (cand, live)
        ]
        unpaired_width.append(2 * 1.96 * math.hypot(*se))
    assert 0.92 <= np.mean(covered) <= 0.98
    # The rows are shared, so the difference's interval is far narrower than two independent ones would give.
    assert np.mean(paired_width) < 0.8 * np.mean(unpaired_width)


def test_one_sided_bounds_spend_alpha_on_each_end(population: dict[str, np.ndarray]) -> None:
    reward, action, pscore, cand, live, qhat = _simulate(np.random.default_rng(1), population, 2000)
    paired = PairedDifference("DR")
    two = _interval(paired, reward, action, pscore, cand, live, qhat, alpha=0.10)
    one = _interval(paired, reward, action, pscore, cand, live, qhat, alpha=0.05, sides="one-sided")
    # A 90% two-sided interval is the pair of 95% one-sided bounds.
    assert (one.low, one.high) == pytest.approx((two.low, two.high), rel=1e-12)
    assert one.high - one.estimate == pytest.approx(z_quantile(0.95) * one.std_error)
    boot = _interval(
        paired, reward, action, pscore, cand, live, qhat, method="bootstrap", n_bootstrap=400, seed=2
    )
    assert boot.low < boot.estimate < boot.high
    assert boot.std_error == pytest.approx(two.std_error, rel=0.15)


# ---------------------------------------------------------------------------------------------- sequences
def test_two_sided_boundary_matches_the_closed_form_and_one_sided_solves_its_mixture() -> None:
    from scipy.special import log_ndtr

    v = np.array([1.0, 10.0, 1000.0, 1e6])
    rho, alpha = 50.0, 0.05
    two = normal_mixture_boundary(v, alpha=alpha, rho=rho)
    assert two == pytest.approx(np.sqrt((v + rho) * (np.log(1 + v / rho) + 2 * np.log(1 / alpha))))
    one = normal_mixture_boundary(v, alpha=alpha, rho=rho, sides="one-sided")
    log_m = 0.5 * np.log(4 * rho / (v + rho)) + one**2 / (2 * (v + rho)) + log_ndtr(one / np.sqrt(v + rho))
    assert log_m == pytest.approx(np.full(v.shape, np.log(1 / alpha)), abs=1e-9)
    assert (one < two).all()


def test_mixture_scale_is_tightest_at_the_planned_size() -> None:
    # At n_opt the boundary with the rule's ρ is (nearly) the smallest over ρ.
    for sides in ("two-sided", "one-sided"):
        rho = mixture_scale(2000, 0.05, sides)  # type: ignore[arg-type]
        best = normal_mixture_boundary(2000.0, alpha=0.05, rho=rho, sides=sides)  # type: ignore[arg-type]
        others = [normal_mixture_boundary(2000.0, alpha=0.05, rho=rho * f, sides=sides) for f in (0.3, 3.0)]  # type: ignore[arg-type]
        assert all(best < o for o in others)


def test_running_sequence_in_batches_equals_one_pass_and_the_array_version() -> None:
    rng = np.random.default_rng(0)
    x = rng.exponential(size=1000) + 1e6  # a large mean next to the spread: the moments must not cancel
    cfg = SequenceConfig(alpha=0.05, sides="one-sided", n_opt=500)
    whole = RunningSequence(cfg).extend(x)
    parts = RunningSequence(cfg)
    for chunk in np.array_split(x, 7):
        parts = parts.extend(chunk)
    assert parts.n == whole.n == 1000
    assert parts.mean == pytest.approx(x.mean(), rel=1e-15)
    assert parts.std == pytest.approx(x.std(ddof=1), rel=1e-9)
    assert parts.bounds() == pytest.approx(whole.bounds(), rel=1e-12)
    seq = confidence_sequence(x, cfg, looks=np.array([10, 1000]))
    assert (seq.low[-1], seq.high[-1]) == pytest.approx(whole.bounds(), rel=1e-12)
    at10 = RunningSequence(cfg).extend(x[:10]).bounds()
    assert (seq.low[0], seq.high[0]) == pytest.approx(at10, rel=1e-9)


def test_confidence_sequence_covers_at_every_look_where_repeated_fixed_intervals_do_not() -> None:
    rng = np.random.default_rng(4)
    runs, n, alpha = 400, 4000, 0.05
    # Skewed terms like importance-weighted rewards: mean 1.
    x = rng.exponential(size=(runs, n)) * rng.choice([0.5, 3.0], p=[0.8, 0.2], size=(runs, n))
    mean = 0.8 * 0.5 + 0.2 * 3.0
    looks = np.arange(100, n + 1, 100)
    seq = confidence_sequence(x, SequenceConfig(alpha=alpha, n_opt=1000), looks=looks)
    ever_missed = ((seq.low > mean) | (seq.high < mean)).any(axis=1).mean()
    # The sequence is asymptotically valid: at most alpha up to the Monte-Carlo error of 400 runs (sd 0.011).
    assert ever_missed <= alpha + 0.02
    # The fixed-sample 95% interval, looked at after every batch of 100: the first miss comes far more often.
    z = z_quantile(1 - alpha / 2)
    csum, csq = np.cumsum(x, axis=1)[:, looks - 1], np.cumsum(x * x, axis=1)[:, looks - 1]
    m = csum / looks
    se = np.sqrt((csq / looks - m * m) / looks)
    fixed_missed = ((m - z * se > mean) | (m + z * se < mean)).any(axis=1).mean()
    assert fixed_missed > 4 * alpha
    # ... while one look at a time still covers about 95%.
    assert 0.92 <= ((m[:, -1] - z * se[:, -1] <= mean) & (mean <= m[:, -1] + z * se[:, -1])).mean() <= 0.98


def test_sequence_method_of_the_paired_estimator(population: dict[str, np.ndarray]) -> None:
    reward, action, pscore, cand, live, qhat = _simulate(np.random.default_rng(2), population, 3000)
    paired = PairedDifference("DR")
    seq = _interval(paired, reward, action, pscore, cand, live, qhat, method="sequence", n_opt=3000)
    fixed = _interval(paired, reward, action, pscore, cand, live, qhat)
    # The anytime-valid interval is wider than the one-look interval, around the same estimate.
    assert seq.estimate == fixed.estimate
    assert seq.low < fixed.low < fixed.high < seq.high
    d = paired.terms(reward, action, pscore, cand, live, qhat).round_values()
    expected = RunningSequence(SequenceConfig(n_opt=3000)).extend(d).bounds()
    assert (seq.low, seq.high) == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_arguments_are_refused_with_what_was_expected() -> None:
    reward, action, pscore, _, cand, live, _ = _log(0, 20, 3)
    with pytest.raises(ConfigurationError, match="importance-weighted estimator"):
        PairedDifference("DM")
    with pytest.raises(ConfigurationError, match="unknown estimator 'nope'"):
        PairedDifference("nope")
    with pytest.raises(ConfigurationError, match="needs estimated_rewards"):
        PairedDifference("DR").terms(reward, action, pscore, cand, live).estimate()
    with pytest.raises(ShapeError, match="live_dist must have the shape of candidate_dist"):
        PairedDifference("IPS").terms(reward, action, pscore, cand, live[:, :2]).estimate()
    with pytest.raises(ConfigurationError, match="linear estimator"):
        _interval(PairedDifference("SNIPS"), reward, action, pscore, cand, live, method="sequence", n_opt=5)
    with pytest.raises(ConfigurationError, match="needs n_opt"):
        _interval(PairedDifference("IPS"), reward, action, pscore, cand, live, method="sequence")
    with pytest.raises(ConfigurationError, match="sides must be one of"):
        _interval(PairedDifference("IPS"), reward, action, pscore, cand, live, sides="left")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="method must be one of"):
        _interval(PairedDifference("IPS"), reward, action, pscore, cand, live, method="exact")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="n_opt must be an integer"):
        SequenceConfig(n_opt=0)
    with pytest.raises(ConfigurationError, match=r"looks must be increasing sample sizes in \[2, 20\]"):
        confidence_sequence(reward, looks=np.array([5, 3]))
    with pytest.raises(ShapeError, match="n ≥ 2"):
        confidence_sequence(reward[:1])
    with pytest.raises(ConfigurationError, match="must be finite"):
        RunningSequence().extend(np.array([1.0, np.nan]))
