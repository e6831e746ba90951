"""Compiled inner loops of the bandits, with pure-numpy twins.

At d ≈ 64 and K ≈ 11 a bandit round is a few dozen tiny numpy calls, and their per-call overhead — not the
arithmetic — sets the speed. Linear Thompson sampling's exact propensity (a Gauss–Hermite integral over K − 1
normal CDFs) alone takes about ten such calls. Here those loops run as one call compiled by numba when numba is
importable; otherwise the numpy twin runs. Both compute the same quantities (tested against each other).

The kernels are compiled together on first use, not at import, and cached on disk by numba where it finds a writable
place; if numba cannot compile them, the numpy twins serve (with a warning).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.linalg.blas import daxpy, dger
from scipy.special import ndtr

__all__ = [
    "gaussian_win_probability",
    "have_numba",
    "linucb_probabilities",
    "rank_one_update",
    "thompson_choose",
]

# Gauss–Hermite rule (probabilists') for the win probability of a Gaussian draw. Nodes whose weight is below
# 1e-14 change no probability by more than that and are dropped (8 of 32).
_GH_NODES = 32
_z, _w = np.polynomial.hermite_e.hermegauss(_GH_NODES)
_w = _w / _w.sum()
_keep = _w >= 1e-14
GH_Z = np.ascontiguousarray(_z[_keep])
GH_W = np.ascontiguousarray(_w[_keep])
del _z, _w, _keep

_SQRT1_2 = math.sqrt(0.5)


def _win_probability_py(mu: np.ndarray, sd: np.ndarray, a: int) -> float:
    others = np.arange(mu.shape[0]) != a
    if not others.any():
        return 1.0
    arg = (mu[a] - mu[others] + sd[a] * GH_Z[:, None]) / sd[others]
    return min(float(GH_W @ ndtr(arg).prod(axis=1)), 1.0)


_compiled: dict[str, Callable[..., Any]] = {}
_numba_state: list[bool] = []


def have_numba() -> bool:
    """Whether the compiled kernels are in use (numba importable)."""
    if not _numba_state:
        try:
            import numba  # noqa: F401
        except ImportError:
            _numba_state.append(False)
        else:
            _numba_state.append(True)
    return _numba_state[0]


def _kernel(name: str) -> Callable[..., Any] | None:
    """The compiled kernel ``name``, compiling them all on first use; ``None`` without numba."""
    if not have_numba():
        return None
    if not _compiled:
        _compile()
    return _compiled.get(name)


def _compile() -> None:
    """Compile every kernel and run each once on tiny inputs, so that no later call pays for compiling (with an
    on-disk cache where numba finds a writable place, else without). If numba cannot compile them at all, the
    numpy twins serve from then on."""
    error: Exception | None = None
    for cache in (True, False):
        try:
            kernels = _build(cache)
            _warm_up(kernels)
        except Exception as exc:  # numba's errors have no common base class
            error = exc
            continue
        _compiled.update(kernels)
        return
    warnings.warn(
        f"numba could not compile the bandit kernels ({error}); using their numpy versions",
        RuntimeWarning,
        stacklevel=3,
    )
    _numba_state[:] = [False]


def _warm_up(kernels: dict[str, Callable[..., Any]]) -> None:
    k, p = 2, 2
    v = np.array([1.0, 0.0, 0.0, 1.0, 0.1, 0.2])
    x1 = np.array([0.5, 0.5])
    kernels["ts_choose"](v, x1, k, p, 1.0, np.zeros(k), GH_Z, GH_W)
    kernels["linucb_probs"](v, x1, k, p, 1.0, 0.1)
    kernels["win_probability_rows"](
        np.zeros((1, k)), np.ones((1, k)), np.zeros(1, dtype=np.int64), GH_Z, GH_W
    )
    for outcomes in (False, True):
        kernels["rank_one"](np.eye(p), x1, np.zeros(p), np.zeros(p), np.zeros(p), 0.5, 0.0, 0.0, outcomes)


def _build(cache: bool) -> dict[str, Callable[..., Any]]:
    """Compile the kernels (lazily, on their first call) with the given on-disk cache setting."""
    import numba

    njit = numba.njit(cache=cache, nogil=True, fastmath=False)
    widths = _make_widths(njit)
    win_probability = _make_win_probability(njit)
    return {
        "linucb_probs": _make_linucb_probs(njit, widths),
        "rank_one": _make_rank_one(njit),
        "ts_choose": _make_ts_choose(njit, widths, win_probability),
        "win_probability_rows": _make_win_probability_rows(njit, win_probability),
    }


# The kernels' contracts are those of the public functions below; numba infers their types from the calls.
def _make_widths(njit: Any) -> Callable[..., Any]:
    @njit
    def widths(v, x1, k, p):
        # sqrt(xᵀA_j⁻¹x) per arm from the stacked products A_j⁻¹x (rows of v) and x; 0 where not positive.
        out = np.empty(k)
        for j in range(k):
            s = 0.0
            base = j * p
            for i in range(p):
                s += v[base + i] * x1[i]
            out[j] = math.sqrt(s) if s > 0.0 else 0.0
        return out

    return widths


def _make_win_probability(njit: Any) -> Callable[..., Any]:
    @njit
    def win_probability(mu, sd, a, gz, gw):
        k = mu.shape[0]
        # Arms that arm a's draw beats by more than 8.3 of their standard deviations even at the lowest node
        # contribute a factor Φ ≥ 1 − 5e-17 at every node: skip them.
        lowest = mu[a] + sd[a] * gz[0]
        rivals = np.empty(k, dtype=np.int64)
        n = 0
        for j in range(k):
            if j != a and (lowest - mu[j]) / sd[j] < 8.3:
                rivals[n] = j
                n += 1
        total = 0.0
        for g in range(gz.shape[0]):
            top = mu[a] + sd[a] * gz[g]
            prod = 1.0
            for r in range(n):
                j = rivals[r]
                prod *= 0.5 * math.erfc(-(top - mu[j]) / sd[j] * _SQRT1_2)
                if prod < 1e-300:
                    break
            total += gw[g] * prod
        return min(total, 1.0)

    return win_probability


def _make_ts_choose(njit: Any, widths: Any, win_probability: Any) -> Callable[..., Any]:
    @njit
    def ts_choose(v, x1, k, p, scale, z, gz, gw):
        mu = v[k * p : k * p + k]
        sd = widths(v, x1, k, p)
        best = -np.inf
        a = -1
        degenerate = False
        for j in range(k):
            sd[j] *= scale
            if sd[j] <= 0.0:
                degenerate = True
            d = mu[j] + sd[j] * z[j]
            if not math.isfinite(d):
                return -1, math.nan, 1
            if d > best:
                best = d
                a = j
        if degenerate:
            return a, math.nan, 2
        return a, win_probability(mu, sd, a, gz, gw), 0

    return ts_choose


def _make_win_probability_rows(njit: Any, win_probability: Any) -> Callable[..., Any]:
    @njit
    def win_probability_rows(mu, sd, actions, gz, gw):
        out = np.empty(mu.shape[0])
        for i in range(mu.shape[0]):
            out[i] = win_probability(mu[i], sd[i], actions[i], gz, gw)
        return out

    return win_probability_rows


def _make_rank_one(njit: Any) -> Callable[..., Any]:
    @njit
    def rank_one(ainv, x, tq, tc, teff, q, c, w, outcomes):
        p = x.shape[0]
        u = np.empty(p)
        for i in range(p):
            s = 0.0
            for j in range(p):
                s += ainv[i, j] * x[j]
            u[i] = s
        den = 1.0
        pred_q = 0.0
        pred_c = 0.0
        for i in range(p):
            den += x[i] * u[i]
            pred_q += tq[i] * x[i]
            if outcomes:
                pred_c += tc[i] * x[i]
        err_q = q - pred_q
        if not (math.isfinite(den) and math.isfinite(err_q)):
            return 1
        err_c = c - pred_c
        g = u * (1.0 / den)
        for i in range(p):
            ui = u[i]
            for j in range(p):
                ainv[i, j] -= ui * g[j]
            tq[i] += err_q * g[i]
            if outcomes:
                tc[i] += err_c * g[i]
        if outcomes and w == w:
            for i in range(p):
                teff[i] = tq[i] - w * tc[i]
        return 0

    return rank_one


def _make_linucb_probs(njit: Any, widths: Any) -> Callable[..., Any]:
    @njit
    def linucb_probs(v, x1, k, p, alpha, epsilon):
        scores = widths(v, x1, k, p)
        top = -np.inf
        for j in range(k):
            scores[j] = v[k * p + j] + alpha * scores[j]
            if not math.isfinite(scores[j]):
                return scores, 1
            if scores[j] > top:
                top = scores[j]
        ties = 0
        for j in range(k):
            if scores[j] == top:
                ties += 1
        floor = epsilon / k
        share = floor + (1.0 - epsilon) * (1.0 / ties)
        out = np.empty(k)
        for j in range(k):
            out[j] = share if scores[j] == top else floor
        return out, 0

    return linucb_probs


def thompson_choose(
    v: np.ndarray, x1: np.ndarray, k: int, p: int, scale: float, z: np.ndarray
) -> tuple[int, float, int]:
    """One Thompson-sampling choice from the stacked product ``v = [A⁻¹x of every arm; mean scores]``.

    Args:
        v: ``(K·p + K,)`` — rows ``j·p … j·p + p − 1`` hold ``A_j⁻¹x``, the last ``K`` the posterior means ``μ``.
        x1: ``(p,)`` the design row.
        k, p: number of arms and design width.
        scale: posterior scale ``v``; arm ``j``'s draw is ``μ_j + scale·sqrt(xᵀA_j⁻¹x)·z_j``.
        z: ``(K,)`` standard normal draws.

    Returns:
        ``(action, propensity, status)``: status 0 is a normal choice with its win probability; 1 means a draw
        was not finite (the caller validates the input); 2 means some arm has a zero-width posterior — the
        action is the first maximum and the caller breaks ties and computes the probability itself.
    """
    kernel = _kernel("ts_choose")
    if kernel is not None:
        return kernel(v, x1, k, p, float(scale), z, GH_Z, GH_W)
    kp = k * p
    sd = v[:kp].reshape(k, p) @ x1
    np.maximum(sd, 0.0, out=sd)
    np.sqrt(sd, out=sd)
    sd *= scale
    mu = v[kp:]
    draw = mu + sd * z
    if not np.isfinite(draw).all():
        return -1, math.nan, 1
    a = int(draw.argmax())
    if (sd <= 0.0).any():
        return a, math.nan, 2
    return a, _win_probability_py(mu, sd, a), 0


def gaussian_win_probability(mu: np.ndarray, sd: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """``(n,)`` probability that row ``i``'s arm ``actions[i]`` has the largest of independent draws
    ``N(mu[i, j], sd[i, j]²)``, for ``mu, sd (n, K)`` with every ``sd > 0`` (24-node Gauss–Hermite quadrature).
    """
    mu = np.ascontiguousarray(mu, dtype=np.float64)
    sd = np.ascontiguousarray(sd, dtype=np.float64)
    actions = np.ascontiguousarray(actions, dtype=np.int64)
    kernel = _kernel("win_probability_rows")
    if kernel is not None:
        return kernel(mu, sd, actions, GH_Z, GH_W)
    return np.array([_win_probability_py(mu[i], sd[i], int(actions[i])) for i in range(mu.shape[0])])


def rank_one_update(
    ainv: np.ndarray,
    x: np.ndarray,
    tq: np.ndarray,
    tc: np.ndarray,
    teff: np.ndarray,
    q: float,
    c: float,
    w: float,
    outcomes: bool,
) -> int:
    """Sherman–Morrison step of one arm, in place: ``A⁻¹ ← A⁻¹ − uuᵀ/(1 + xᵀu)`` with ``u = A⁻¹x``, and the
    ridge weights ``θ_q ← θ_q + (q − θ_qᵀx)·u/(1 + xᵀu)`` (and ``θ_c`` with ``c`` when ``outcomes``; then the
    score weights ``teff ← θ_q − w·θ_c`` unless ``w`` is NaN).

    Args:
        ainv: ``(p, p)`` C-contiguous A⁻¹ of the arm; x: ``(p,)`` design row; tq, tc, teff: ``(p,)`` rows.

    Returns:
        0, or 1 (nothing changed) when ``x`` or the prediction is not finite.
    """
    kernel = _kernel("rank_one")
    if kernel is not None:
        return kernel(ainv, x, tq, tc, teff, q, c, w, outcomes)
    u = ainv @ x
    den = 1.0 + float(x @ u)
    err_q = q - float(tq @ x)
    if not (math.isfinite(den) and math.isfinite(err_q)):
        return 1
    g = u * (1.0 / den)
    # In-place BLAS rank-one updates: A⁻¹ ← A⁻¹ − u gᵀ (the transpose view is Fortran-ordered and the update is
    # symmetric, so dger writes straight into the stored matrix) and θ ← θ + err·g.
    dger(-1.0, u, g, a=ainv.T, overwrite_a=1)
    daxpy(g, tq, a=err_q)
    if outcomes:
        daxpy(g, tc, a=c - float(tc @ x))
        if w == w:
            np.subtract(tq, w * tc, out=teff)
    return 0


def linucb_probabilities(
    v: np.ndarray, x1: np.ndarray, k: int, p: int, alpha: float, epsilon: float
) -> np.ndarray | None:
    """``(K,)`` LinUCB probabilities of one row from ``v = [A⁻¹x of every arm; mean scores]`` (see
    :func:`thompson_choose`): ``epsilon/K``, plus ``(1 − epsilon)/ties`` on the arms tied at the top score
    ``μ + alpha·sqrt(xᵀA⁻¹x)``. ``None`` when a score is not finite, or without numba (the caller's numpy path
    serves then)."""
    kernel = _kernel("linucb_probs")
    if kernel is None:
        return None
    probs, status = kernel(v, x1, k, p, float(alpha), float(epsilon))
    return None if status else probs
