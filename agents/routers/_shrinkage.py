"""Empirical-Bayes tables shared by the shrinkage routers (:mod:`agents.routers.tables`): shrunk group offsets, the
chain of levels they form, and the onboarding of a new model into a fitted chain.

All per-model arrays have a last axis of ``M = 2K`` columns: the quality of the K models, then their cost (USD).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

__all__ = [
    "Chain",
    "chain_arrays",
    "chain_from",
    "correction_helps",
    "eb_offsets",
    "fit_chain",
    "insert_columns",
    "insert_model",
    "median_tau",
    "placement",
]


def eb_offsets(
    groups: np.ndarray, n_groups: int, resid: np.ndarray, weight: np.ndarray, tau: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Shrunk group means of ``resid (n, M)`` and the shrinkage strength of each column.

    Args:
        groups: ``(n,)`` group of each row in ``[0, n_groups)``; ``-1`` = the row belongs to no group.
        n_groups: number of groups G.
        resid: ``(n, M)`` what the coarser levels left unexplained.
        weight: ``(n, M)`` row weights (0 = the cell is not observed).
        tau: ``(M,)`` shrinkage strengths to use instead of estimating them (``inf`` = no offsets).

    Returns:
        ``(offsets (G, M), tau (M,))``: ``offsets[g] = n_g/(n_g + τ) · mean_g`` with ``n_g`` the group's weight;
        ``τ = σ²_w/σ²_b`` from the moment estimator of the one-way random-effects model (``inf`` when the
        between-group variance is not positive or fewer than two groups have data).
    """
    m = resid.shape[1]
    valid = groups >= 0
    g = groups[valid]
    if g.size == 0 or n_groups == 0:
        return np.zeros((n_groups, m)), np.full(m, math.inf) if tau is None else tau
    onehot = sparse.csr_matrix((np.ones(g.size), (g, np.arange(g.size))), shape=(n_groups, g.size))
    w = weight[valid]
    r = np.where(w > 0, resid[valid], 0.0)
    n_g = np.asarray(onehot @ w)
    s_g = np.asarray(onehot @ (w * r))
    mean_g = s_g / np.maximum(n_g, 1e-300)
    if tau is None:
        ss_g = np.asarray(onehot @ (w * r * r))
        total = n_g.sum(axis=0)
        present = (n_g > 0).sum(axis=0)
        sigma_w = (ss_g - n_g * mean_g**2).sum(axis=0) / np.maximum(total - present, 1.0)
        grand = s_g.sum(axis=0) / np.maximum(total, 1e-300)
        dof = np.maximum(present - 1, 1)
        msb = (n_g * (mean_g - grand) ** 2).sum(axis=0) / dof
        n0 = (total - (n_g**2).sum(axis=0) / np.maximum(total, 1e-300)) / dof
        sigma_b = (msb - sigma_w) / np.maximum(n0, 1e-300)
        with np.errstate(divide="ignore", invalid="ignore"):
            tau = np.where((sigma_b > 0) & (present >= 2), np.maximum(sigma_w, 0.0) / sigma_b, math.inf)
    with np.errstate(invalid="ignore"):
        shrink = np.where(np.isinf(tau)[None, :], 0.0, n_g / (n_g + tau[None, :]))
    return np.nan_to_num(shrink * mean_g), np.asarray(tau, dtype=np.float64)


@dataclass
class Chain:
    """The fitted levels: global means ``(M,)`` and, per level, offsets ``(G, M)`` and strengths ``τ (M,)``.

    ``M = 2K``: quality of the K models, then their cost (USD).
    """

    global_: np.ndarray
    offsets: list[np.ndarray] = field(default_factory=list)
    taus: list[np.ndarray] = field(default_factory=list)

    def predict(self, levels: Sequence[np.ndarray], n: int) -> np.ndarray:
        """``(n, M)`` estimates for ``n`` rows whose group at each level is ``levels[j] (n,)`` (``-1`` = none).

        ``n`` is explicit because a chain may have no level at all (one cluster and no task column): every row
        then gets the global estimate."""
        for groups in levels:
            if groups.shape != (n,):
                raise ValueError(f"a level has groups of shape {groups.shape} for {n} rows")
        out = np.repeat(self.global_[None, :], n, axis=0)
        for groups, table in zip(levels, self.offsets):
            ok = groups >= 0
            out[ok] += table[groups[ok]]
        return out


def chain_arrays(prefix: str, chain: Chain) -> dict[str, np.ndarray]:
    """The arrays that save ``chain`` under names starting with ``prefix``."""
    out = {f"{prefix}global": chain.global_}
    for i, (table, tau) in enumerate(zip(chain.offsets, chain.taus)):
        out[f"{prefix}offsets_{i}"] = table
        out[f"{prefix}tau_{i}"] = tau
    return out


def chain_from(prefix: str, arrays: dict[str, np.ndarray]) -> Chain:
    """Inverse of :func:`chain_arrays`."""
    n = sum(1 for key in arrays if key.startswith(f"{prefix}offsets_"))
    return Chain(
        arrays[f"{prefix}global"],
        [arrays[f"{prefix}offsets_{i}"] for i in range(n)],
        [arrays[f"{prefix}tau_{i}"] for i in range(n)],
    )


def fit_chain(
    levels: Sequence[tuple[np.ndarray, int]],
    y: np.ndarray,
    weight: np.ndarray,
    taus: Sequence[np.ndarray] | None = None,
) -> Chain:
    """Fit the global means and each level of ``levels`` (``(groups (n,), n_groups)``) in turn on ``y (n, M)``
    with ``weight (n, M)``; ``taus`` fixes the shrinkage strengths instead of estimating them."""
    total = np.maximum(weight.sum(axis=0), 1e-300)
    glob = (weight * np.where(weight > 0, y, 0.0)).sum(axis=0) / total
    chain = Chain(glob)
    resid = y - glob[None, :]
    for j, (groups, n_groups) in enumerate(levels):
        table, tau = eb_offsets(groups, n_groups, resid, weight, None if taus is None else taus[j])
        ok = groups >= 0
        resid[ok] -= table[groups[ok]]
        chain.offsets.append(table)
        chain.taus.append(tau)
    return chain


# ---------------------------------------------------------------------------------------------- onboarding
def median_tau(taus: np.ndarray) -> float:
    finite = taus[np.isfinite(taus)]
    # Most existing models found no structure at this level: the new one gets none either.
    if finite.size * 2 < taus.size:
        return math.inf
    return float(np.median(finite))


#: Ridge penalties (times the number of labelled queries) the onboarding placement chooses from by leave-one-out.
PLACEMENT_GRID = (10.0, 1.0, 0.1, 0.01, 1e-3)


def placement(est: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """``(b (K,), a)`` of the ridge ``y ≈ a + est @ b`` — a new model's outcome ``y (n,)`` in terms of the existing
    models' estimates ``est (n, K)`` on the same queries — with the penalty chosen by leave-one-out error."""
    mean_x, mean_y = est.mean(axis=0), float(y.mean())
    xc, yc = est - mean_x, y - mean_y
    n, k = xc.shape
    best: tuple[float, np.ndarray] | None = None
    for factor in PLACEMENT_GRID:
        inv = np.linalg.inv(xc.T @ xc + factor * n * np.eye(k))
        b = inv @ (xc.T @ yc)
        leverage = np.einsum("ij,jk,ik->i", xc, inv, xc) + 1.0 / n
        loo = float(np.mean(((yc - xc @ b) / np.maximum(1.0 - leverage, 1e-9)) ** 2))
        if best is None or loo < best[0] - 1e-15:
            best = (loo, b)
    assert best is not None
    b = best[1]
    return b, mean_y - float(mean_x @ b)


def correction_helps(
    est: np.ndarray,
    y: np.ndarray,
    levels: list[tuple[np.ndarray, int]],
    taus: list[np.ndarray],
    k: int,
    seed: int | None,
) -> np.ndarray:
    """``(2,) bool``: whether a new model's own per-group evidence, shrunk with the borrowed ``taus``, improves on
    its placement alone, for its quality and its cost — by the squared error of 5-fold cross-validation on its
    labelled queries (``est (n, 2K)`` the existing models' estimates there, ``y (n, 2)`` its outcomes)."""
    n = y.shape[0]
    folds = np.random.default_rng(seed).permutation(n) % 5
    err = np.zeros((2, 2))
    for f in range(5):
        tr, va = folds != f, folds == f
        (bq, aq), (bc, ac) = placement(est[tr, :k], y[tr, 0]), placement(est[tr, k:], y[tr, 1])

        def place(
            rows: np.ndarray, bq: np.ndarray = bq, bc: np.ndarray = bc, aq: float = aq, ac: float = ac
        ) -> np.ndarray:
            return np.stack([aq + est[rows, :k] @ bq, ac + est[rows, k:] @ bc], axis=1)

        own = fit_chain([(g[tr], m) for g, m in levels], y[tr] - place(tr), np.ones((int(tr.sum()), 2)), taus)
        base = y[va] - place(va)
        err[0] += (base**2).sum(axis=0)
        err[1] += ((base - own.predict([g[va] for g, _ in levels], int(va.sum()))) ** 2).sum(axis=0)
    return err[1] < err[0]


def insert_columns(arr: np.ndarray, new: np.ndarray, k: int) -> np.ndarray:
    """``arr (..., 2K)`` with the new model's ``(..., 2)`` quality and cost columns inserted after each half."""
    return np.concatenate([arr[..., :k], new[..., :1], arr[..., k:], new[..., 1:]], axis=-1)


def insert_model(chain: Chain, new: Chain, k: int) -> Chain:
    """``chain`` over K models with the one-model ``new`` appended (quality after column K−1, cost at the end)."""

    return Chain(
        insert_columns(chain.global_, new.global_, k),
        [insert_columns(a, b, k) for a, b in zip(chain.offsets, new.offsets)],
        [insert_columns(a, b, k) for a, b in zip(chain.taus, new.taus)],
    )
