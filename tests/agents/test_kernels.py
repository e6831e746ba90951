"""Compiled bandit kernels agree with their numpy twins, and Thompson sampling behaves the same on either path."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy.stats import norm

from agents import _kernels
from agents.bandits import LinearThompsonSampling

needs_numba = pytest.mark.skipif(not _kernels.have_numba(), reason="numba is not installed")


@pytest.fixture
def numpy_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force the numpy twins, as on a machine without numba."""
    monkeypatch.setattr(_kernels, "_numba_state", [False])


def _adaptive_win_probability(mu: np.ndarray, sd: np.ndarray, a: int) -> float:
    def integrand(x: float) -> float:
        others = np.arange(len(mu)) != a
        return float(norm.pdf(x, mu[a], sd[a]) * norm.cdf((x - mu[others]) / sd[others]).prod())

    lo, hi = mu[a] - 12 * sd[a], mu[a] + 12 * sd[a]
    return float(integrate.quad(integrand, lo, hi, limit=200, epsabs=1e-12)[0])


arms = st.integers(2, 12)


@st.composite
def gaussians(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int]:
    k = draw(arms)
    mu = np.array(draw(st.lists(st.floats(-1.0, 1.0), min_size=k, max_size=k)))
    # Posterior widths within a factor 3 of each other: the quadrature's stated accuracy is about 3e-4 there.
    base = draw(st.floats(0.01, 0.5))
    sd = base * np.array(draw(st.lists(st.floats(1.0, 3.0), min_size=k, max_size=k)))
    a = draw(st.integers(0, k - 1))
    return mu, sd, a


@needs_numba
@settings(max_examples=60)
@given(gaussians())
def test_compiled_win_probability_matches_numpy_twin(case: tuple[np.ndarray, np.ndarray, int]) -> None:
    mu, sd, a = case
    compiled = _kernels.gaussian_win_probability(mu[None], sd[None], np.array([a]))[0]
    twin = _kernels._win_probability_py(mu, sd, a)
    assert compiled == pytest.approx(twin, abs=1e-12)


@settings(max_examples=25)
@given(gaussians())
def test_win_probability_matches_adaptive_quadrature(case: tuple[np.ndarray, np.ndarray, int]) -> None:
    mu, sd, a = case
    got = _kernels.gaussian_win_probability(mu[None], sd[None], np.array([a]))[0]
    assert got == pytest.approx(_adaptive_win_probability(mu, sd, a), abs=5e-4)


@needs_numba
@settings(max_examples=60)
@given(gaussians(), st.integers(0, 2**32 - 1), st.floats(0.1, 2.0))
def test_compiled_thompson_choice_matches_numpy_twin(
    case: tuple[np.ndarray, np.ndarray, int], seed: int, scale: float
) -> None:
    mu, sd, _ = case
    k, p = len(mu), 5
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=p)
    # A⁻¹x rows chosen so that xᵀA⁻¹x = sd²: the kernel recovers the widths from v and x1.
    ainv_x = np.outer(sd**2, x1) / (x1 @ x1)
    v = np.concatenate([ainv_x.ravel(), mu])
    z = rng.standard_normal(k)
    a_c, p_c, s_c = _kernels.thompson_choose(v, x1, k, p, scale, z)
    a_n, p_n, s_n = _kernels._ts_choose_py(v, x1, k, p, scale, z)
    assert (a_c, s_c) == (a_n, s_n) == (int(np.argmax(mu + scale * sd * z)), 0)
    assert p_c == pytest.approx(p_n, abs=1e-12)


def test_thompson_choose_flags_non_finite_and_zero_width() -> None:
    k, p = 3, 2
    x1 = np.array([1.0, 0.0])
    v = np.concatenate([np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]).ravel(), [0.1, 0.2, 0.3]])
    z = np.zeros(k)
    for fn in (_kernels.thompson_choose, _kernels._ts_choose_py):
        assert fn(v, x1, k, p, 1.0, z)[2] == 2  # arm 2 has xᵀA⁻¹x = 0
        bad = v.copy()
        bad[-1] = np.nan
        assert fn(bad, x1, k, p, 1.0, z)[2] == 1


def _run(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 6))
    rewards = rng.random((300, 4))
    policy = LinearThompsonSampling(models=["a", "b", "c", "d"], seed=seed, posterior_scale=0.7)
    actions, props = [], []
    for i in range(300):
        a, prop = policy.act(x[i])
        policy.update(x[i], a, rewards[i, a])
        actions.append(int(a[0]))
        props.append(float(prop[0]))
    return np.array(actions), np.array(props)


@needs_numba
def test_thompson_sampling_same_trajectory_with_or_without_numba(numpy_only: None) -> None:
    actions_np, props_np = _run(7)
    _kernels._numba_state[:] = [True]
    actions_nb, props_nb = _run(7)
    np.testing.assert_array_equal(actions_np, actions_nb)
    np.testing.assert_allclose(props_np, props_nb, atol=1e-12)


def test_thompson_sampling_runs_without_numba(numpy_only: None) -> None:
    actions, props = _run(3)
    assert not _kernels.have_numba()
    assert ((props > 0) & (props <= 1)).all()
    assert len(set(actions.tolist())) > 1
