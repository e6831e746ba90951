"""Properties of the estimators on small random problems (hypothesis).

- IPS and DR are unbiased: on a tiny problem the expectation over every possible log is enumerated exactly;
- SNIPS returns the logged mean reward when the target is the logger;
- DR equals DM when the reward model is exact on the logged rounds;
- every estimator is invariant to the order of the rounds;
- without support (every importance weight 0) the self-normalised estimators answer NaN and say why.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing_env.errors import OPEWarning
from routing_env.ope import DM, DR, ESTIMATORS, IPS, SNDR, SNIPS, make_estimator


def _dist(rng: np.random.Generator, n: int, k: int, zeros: bool = False) -> np.ndarray:
    d = rng.dirichlet(np.ones(k), size=n)
    if zeros:
        d[rng.random((n, k)) < 0.3] = 0.0
        d[np.arange(n), rng.integers(0, k, n)] += 0.1
        d /= d.sum(axis=1, keepdims=True)
    return d


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 3), k=st.integers(2, 3))
def test_ips_and_dr_are_unbiased_over_every_possible_log(seed: int, n: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    logger = _dist(rng, n, k)
    target = _dist(rng, n, k, zeros=True)
    rewards = rng.random((n, k))  # deterministic reward per (round, action)
    qhat = rng.random((n, k))  # an arbitrary (wrong) reward model
    truth = float((target * rewards).sum(axis=1).mean())
    expected_ips = expected_dr = 0.0
    rows = np.arange(n)
    for actions in itertools.product(range(k), repeat=n):
        a = np.array(actions)
        prob = float(np.prod(logger[rows, a]))
        args = (rewards[rows, a], a, logger[rows, a], target)
        expected_ips += prob * IPS().estimate_policy_value(*args)
        expected_dr += prob * DR().estimate_policy_value(*args, estimated_rewards=qhat)
    assert expected_ips == pytest.approx(truth, rel=1e-9, abs=1e-12)
    assert expected_dr == pytest.approx(truth, rel=1e-9, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 50), k=st.integers(1, 6))
def test_snips_on_policy_is_the_logged_mean(seed: int, n: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    logger = _dist(rng, n, k)
    a = np.array([rng.choice(k, p=row) for row in logger])
    r = rng.normal(size=n)
    value = SNIPS().estimate_policy_value(r, a, logger[np.arange(n), a], logger)
    assert value == pytest.approx(r.mean(), rel=1e-9, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 50), k=st.integers(2, 6))
def test_dr_equals_dm_when_the_reward_model_is_exact(seed: int, n: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    logger, target = _dist(rng, n, k), _dist(rng, n, k)
    a = rng.integers(0, k, n)
    qhat = rng.random((n, k))
    r = qhat[np.arange(n), a]  # the model predicts the logged rewards exactly
    args = (r, a, logger[np.arange(n), a], target)
    dm = DM().estimate_policy_value(*args, estimated_rewards=qhat)
    assert DR().estimate_policy_value(*args, estimated_rewards=qhat) == pytest.approx(dm, abs=1e-12)
    assert SNDR().estimate_policy_value(*args, estimated_rewards=qhat) == pytest.approx(dm, abs=1e-12)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 40), k=st.integers(2, 5))
def test_estimators_are_invariant_to_row_order(seed: int, n: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    logger, target = _dist(rng, n, k), _dist(rng, n, k, zeros=True)
    a = rng.integers(0, k, n)
    r = rng.random(n)
    qhat = rng.random((n, k))
    uniform = np.full(n, 1.0 / k)
    perm = rng.permutation(n)
    for name in ESTIMATORS:
        est = make_estimator(name)
        p = uniform if name == "Replay" else logger[np.arange(n), a]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OPEWarning)  # no support: tested below
            v1 = est.estimate_policy_value(r, a, p, target, estimated_rewards=qhat)
            v2 = est.estimate_policy_value(
                r[perm], a[perm], p[perm], target[perm], estimated_rewards=qhat[perm]
            )
        assert v1 == pytest.approx(v2, rel=1e-10, abs=1e-12, nan_ok=math.isnan(v1)), name


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 30), k=st.integers(2, 5))
def test_without_support_self_normalised_estimates_are_nan_and_say_why(seed: int, n: int, k: int) -> None:
    # The target never chooses a logged action: every importance weight is 0. A number would be made up (there is
    # nothing to normalise by), so SNIPS, SNDR and Replay answer NaN with a warning that names the missing support;
    # IPS estimates 0 and DR the reward model's value, as their formulas say.
    rng = np.random.default_rng(seed)
    a = rng.integers(0, k, n)
    target = _dist(rng, n, k)
    target[np.arange(n), a] = 0.0
    target[np.arange(n), (a + 1) % k] += 1e-3
    target /= target.sum(axis=1, keepdims=True)
    r, qhat, p = rng.random(n), rng.random((n, k)), np.full(n, 1.0 / k)
    for name in ("SNIPS", "SNDR", "Replay"):
        with pytest.warns(OPEWarning, match=rf"{name}: no support: the target never chooses a logged action"):
            value = make_estimator(name).estimate_policy_value(r, a, p, target, estimated_rewards=qhat)
        assert math.isnan(value), name
    with warnings.catch_warnings():
        warnings.simplefilter("error", OPEWarning)
        assert IPS().estimate_policy_value(r, a, p, target) == 0.0
        dm = DM().estimate_policy_value(r, a, p, target, estimated_rewards=qhat)
        assert DR().estimate_policy_value(r, a, p, target, estimated_rewards=qhat) == pytest.approx(dm)
