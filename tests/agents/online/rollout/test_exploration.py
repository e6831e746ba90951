"""The exploration helper: expected effective sample size and the smallest ε that reaches a required one."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.online.rollout import expected_ess, required_ess, smallest_epsilon
from routing_env.errors import ConfigurationError, ShapeError
from routing_env.ope import effective_sample_size
from routing_env.ope.feedback import sample_actions


def _policies(seed: int, n: int = 200, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    live = np.eye(k)[rng.integers(0, k, n)]  # deterministic
    cand = 0.7 * np.eye(k)[rng.integers(0, k, n)] + 0.3 * rng.dirichlet(np.ones(k), size=n)
    return live, cand


def test_expected_ess_matches_the_kish_ess_of_simulated_logs() -> None:
    live, cand = _policies(0)
    eps, n = 0.3, 20_000
    k = live.shape[1]
    mu = (1 - eps) * live + eps / k
    rng = np.random.default_rng(1)
    idx = rng.integers(0, live.shape[0], n)
    a = sample_actions(mu[idx], rng)
    w = cand[idx, a] / mu[idx, a]
    simulated = effective_sample_size(w, n)
    assert float(expected_ess(live, cand, eps, n)) == pytest.approx(simulated, rel=0.05)
    # A deterministic live policy leaves a disagreeing candidate no support at all.
    assert float(expected_ess(live, cand, 0.0, n)) == 0.0


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), share=st.floats(0.05, 0.9))
def test_smallest_epsilon_is_the_smallest_that_reaches_the_target(seed: int, share: float) -> None:
    live, cand = _policies(seed)
    n = 5000
    grid = np.linspace(0, 1, 2001)
    curve = expected_ess(live, cand, grid, n)
    required = share * float(curve.max())
    plan = smallest_epsilon(live, cand, n_decisions=n, required=required, tolerance=1e-4)
    assert plan.reachable and plan.epsilon is not None
    assert float(expected_ess(live, cand, plan.epsilon, n)) >= required
    # No ε on a fine grid below it reaches the target.
    below = grid[grid < plan.epsilon - 1e-4]
    assert (expected_ess(live, cand, below, n) < required).all()


def test_no_exploration_needed_or_none_enough() -> None:
    live, cand = _policies(2)
    same = smallest_epsilon(cand, cand, n_decisions=1000, required=10)
    assert same.epsilon == 0.0 and same.expected_ess == pytest.approx(1000 / np.mean((cand**2 / cand).sum(1)))
    never = smallest_epsilon(live, cand, n_decisions=100, required=1e6)
    assert not never.reachable and never.epsilon is None and never.expected_ess < 100
    # The best ε is where the expected ESS peaks.
    grid = np.linspace(0, 1, 1001)
    peak = grid[np.argmax(expected_ess(live, cand, grid, 100))]
    assert never.best_epsilon == pytest.approx(peak, abs=2e-3)
    assert float(expected_ess(live, cand, never.best_epsilon, 100)) == pytest.approx(never.expected_ess)


def test_required_ess_is_the_normal_power_formula() -> None:
    need = required_ess(0.05, reward_std=0.4, confidence=0.95, power=0.8)
    assert need == pytest.approx(((1.6448536 + 0.8416212) * 0.4 / 0.05) ** 2, rel=1e-6)
    assert required_ess(0.06, reward_std=0.4, margin=0.01) == pytest.approx(need, rel=1e-9)


def test_bad_arguments_are_refused() -> None:
    live, cand = _policies(3)
    with pytest.raises(
        ConfigurationError, match=r"difference must be a finite improvement above margin=0.05"
    ):
        required_ess(0.02, reward_std=1.0, margin=0.05)
    with pytest.raises(ConfigurationError, match="reward_std must be a positive standard deviation"):
        required_ess(0.02, reward_std=0.0)
    with pytest.raises(ConfigurationError, match=r"power must be in \(0, 1\)"):
        required_ess(0.02, reward_std=1.0, power=1.0)
    with pytest.raises(ShapeError, match="must both have shape"):
        smallest_epsilon(live, cand[:, :2], n_decisions=10, required=5)
    with pytest.raises(ConfigurationError, match="candidate_dist rows must be probabilities"):
        smallest_epsilon(live, cand * 2, n_decisions=10, required=5)
    with pytest.raises(ConfigurationError, match="n_decisions must be an integer ≥ 1"):
        smallest_epsilon(live, cand, n_decisions=0, required=5)
    with pytest.raises(ConfigurationError, match=r"epsilon must lie in \[0, 1\]"):
        expected_ess(live, cand, 1.5, 10)
