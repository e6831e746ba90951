"""Compiled bandit kernels agree with their numpy twins, and Thompson sampling behaves the same on either path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy.stats import norm

from agents.routers import LinearThompsonSampling, _kernels

T = TypeVar("T")
needs_numba = pytest.mark.skipif(not _kernels.have_numba(), reason="numba is not installed")


@pytest.fixture
def numpy_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force the numpy twins, as on a machine without numba."""
    monkeypatch.setattr(_kernels, "_numba_state", [False])


def _on_path(compiled: bool, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` with the compiled kernels (when numba is there) or with their numpy twins."""
    state = list(_kernels._numba_state)
    _kernels._numba_state[:] = [_kernels.have_numba() and compiled]
    try:
        return fn(*args)
    finally:
        _kernels._numba_state[:] = state


PATHS = pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "numpy"])


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
    a_c, p_c, s_c = _on_path(True, _kernels.thompson_choose, v, x1, k, p, scale, z)
    a_n, p_n, s_n = _on_path(False, _kernels.thompson_choose, v, x1, k, p, scale, z)
    assert (a_c, s_c) == (a_n, s_n) == (int(np.argmax(mu + scale * sd * z)), 0)
    assert p_c == pytest.approx(p_n, abs=1e-12)


@PATHS
def test_thompson_choose_flags_non_finite_and_zero_width(compiled: bool) -> None:
    k, p = 3, 2
    x1 = np.array([1.0, 0.0])
    v = np.concatenate([np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]).ravel(), [0.1, 0.2, 0.3]])
    z = np.zeros(k)
    bad = v.copy()
    bad[-1] = np.nan
    assert _on_path(compiled, _kernels.thompson_choose, v, x1, k, p, 1.0, z)[2] == 2  # xᵀA₂⁻¹x = 0
    assert _on_path(compiled, _kernels.thompson_choose, bad, x1, k, p, 1.0, z)[2] == 1


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


@pytest.mark.parametrize("outcomes", [False, True])
@pytest.mark.parametrize("w", [0.3, float("nan")])
def test_rank_one_update_matches_numpy_twin_and_sherman_morrison(outcomes: bool, w: float) -> None:
    rng = np.random.default_rng(5)
    p = 7
    m = rng.normal(size=(p, p))
    a = np.eye(p) + m @ m.T
    x = rng.normal(size=p)
    states = []
    for compiled in (True, False):
        ainv = np.linalg.inv(a)
        tq, tc, teff = rng.normal(size=p), rng.normal(size=p), np.zeros(p)
        tq0, tc0 = tq.copy(), tc.copy()
        status = _on_path(compiled, _kernels.rank_one_update, ainv, x, tq, tc, teff, 0.8, 0.01, w, outcomes)
        assert status == 0
        states.append((ainv, tq, tc, teff))
        np.testing.assert_allclose(ainv, np.linalg.inv(a + np.outer(x, x)), atol=1e-12)
        g = np.linalg.inv(a) @ x / (1 + x @ np.linalg.inv(a) @ x)
        np.testing.assert_allclose(tq, tq0 + (0.8 - tq0 @ x) * g, atol=1e-12)
        np.testing.assert_allclose(tc, tc0 + (0.01 - tc0 @ x) * g if outcomes else tc0, atol=1e-12)
        expect_teff = tq - w * tc if outcomes and w == w else np.zeros(p)
        np.testing.assert_allclose(teff, expect_teff, atol=1e-12)
        rng = np.random.default_rng(5)  # the same draws for the second implementation
        rng.normal(size=(p, p))
        rng.normal(size=p)
    for got, want in zip(states[0], states[1]):
        np.testing.assert_allclose(got, want, atol=1e-12)


@PATHS
def test_rank_one_update_refuses_non_finite_rows(compiled: bool) -> None:
    p = 3
    ainv = np.eye(p)
    tq = np.zeros(p)
    x = np.array([1.0, np.nan, 0.0])
    zeros = np.zeros(p)
    status = _on_path(
        compiled, _kernels.rank_one_update, ainv, x, tq, zeros, zeros.copy(), 0.5, 0.0, 0.0, False
    )
    assert status == 1
    np.testing.assert_array_equal(ainv, np.eye(p))
    np.testing.assert_array_equal(tq, np.zeros(p))


def _linucb_probabilities(seed: int) -> np.ndarray:
    from agents.routers import LinUCB

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, 5))
    policy = LinUCB(models=["a", "b", "c", "d"], alpha=0.7, epsilon=0.1, seed=0)
    policy.update_outcomes(x[:150], rng.integers(4, size=150), rng.random(150), rng.random(150) * 1e-3)
    # One row at a time: the single-row path a server takes (compiled when numba is there).
    return np.concatenate([policy.action_probabilities(x[i : i + 1]) for i in range(150, 200)])


@needs_numba
def test_linucb_single_row_probabilities_same_with_or_without_numba(numpy_only: None) -> None:
    from agents.routers import LinUCB

    without = _linucb_probabilities(2)
    _kernels._numba_state[:] = [True]
    with_numba = _linucb_probabilities(2)
    np.testing.assert_allclose(with_numba, without, atol=1e-15)
    # And both equal the batched computation.
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 5))
    policy = LinUCB(models=["a", "b", "c", "d"], alpha=0.7, epsilon=0.1, seed=0)
    policy.update_outcomes(x[:150], rng.integers(4, size=150), rng.random(150), rng.random(150) * 1e-3)
    np.testing.assert_allclose(policy.action_probabilities(x[150:]), with_numba, atol=1e-15)


def test_a_failed_compilation_falls_back_to_numpy_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(cache: bool) -> dict[str, object]:
        raise RuntimeError(f"no compiler here (cache={cache})")

    monkeypatch.setattr(_kernels, "_numba_state", [True])
    monkeypatch.setattr(_kernels, "_compiled", {})
    monkeypatch.setattr(_kernels, "_build", broken)
    k, p = 3, 2
    v = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.1, 0.2, 0.3])
    x1 = np.array([1.0, 0.5])
    with pytest.warns(RuntimeWarning, match="numba could not compile the bandit kernels"):
        got = _kernels.thompson_choose(v, x1, k, p, 0.5, np.zeros(k))
    # The numpy twin answered: every arm has width sqrt(0.5)·1 and z = 0, so the highest mean wins.
    sd = np.full(k, 0.5)
    assert got[0] == 2 and got[2] == 0
    assert got[1] == pytest.approx(
        _kernels.gaussian_win_probability(v[None, -k:], sd[None], np.array([2]))[0]
    )
    assert not _kernels.have_numba()
    assert _kernels.linucb_probabilities(v, x1, k, p, 1.0, 0.0) is None  # the caller's numpy path serves
