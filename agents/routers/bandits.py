"""The contextual bandits: :class:`LinUCB`, :class:`LinearThompsonSampling`, :class:`EpsilonGreedy` and
:class:`SoftmaxBandit`, each a rule over the disjoint ridge arms of :class:`agents.routers._linear._LinearBandit`
(its docstring has the learning rule, the two learning modes and the shapes)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from scipy.special import ndtr

from agents.routers._common import _finite, greedy_probabilities, sample_rows
from agents.routers._kernels import (
    GH_W,
    GH_Z,
    gaussian_win_probability,
    linucb_probabilities,
    thompson_choose,
)
from agents.routers._linear import _LinearBandit
from routing_env.errors import (
    ShapeError,
)
from routing_env.policy import (
    register_policy,
)

__all__ = ["EpsilonGreedy", "LinUCB", "LinearThompsonSampling", "SoftmaxBandit"]

#: LinUCB bonus widths cross-validation tries on bandit logs (most exploration first, so ties keep exploring).
LINUCB_ALPHAS = (1.0, 0.3, 0.1, 0.0)


# ---------------------------------------------------------------------------------------------- algorithms
@register_policy
@dataclass(eq=False, kw_only=True)
class LinUCB(_LinearBandit):
    """LinUCB with disjoint arms (Li et al., 2010), cost-aware.

    Picks ``argmax_k  μ_k(x) + alpha·sqrt(xᵀA_k⁻¹x)`` where ``μ_k`` is the ridge estimate of the score
    (``q̂ − λ·ĉ/cost_scale`` or the reward). Exact ties are broken by the seeded generator. With ``epsilon > 0``
    a uniformly random model is taken with probability ``epsilon``.

    Propensities: the argmax gets ``1/(number of tied arms)`` (``1`` without ties), mixed with ``epsilon/K`` when
    ``epsilon > 0``; :meth:`action_probabilities` reports exactly the distribution :meth:`act` samples from.

    Args:
        alpha: width of the confidence bonus (≥ 0). ``None`` (default): 1.0, except that :meth:`fit` on bandit
            logs — where the arms' confidence widths differ, so the bonus changes the greedy choice — picks it
            from (1, 0.3, 0.1, 0) by grouped cross-validation. The value in use is ``alpha_``.
        epsilon: share of uniformly random choices, in [0, 1].
        (and the shared hyperparameters of the base class: ``ridge``, ``cost_weight``, ``cost_scale``,
        ``fit_intercept``, ``refresh_every``, ``models``, ``seed``, ``featurizer``)

    Example::

        policy = LinUCB(alpha=1.0, seed=0).fit(train, cost_weight=0.3)
        actions, propensities = policy.act(test.features)
        policy.update_outcomes(x, actions, quality, cost)   # keeps learning online
        policy.cost_weight = 0.6                             # a new budget, no retraining
    """

    chosen_names: ClassVar[tuple[str, ...]] = ("ridge_", "alpha_")

    alpha: float | None = None
    epsilon: float = 0.0
    alpha_: float = field(default=1.0, init=False)

    def _validate(self) -> None:
        if self.alpha is not None:
            self.alpha = _finite("alpha", self.alpha, 0.0)
        self.alpha_ = 1.0 if self.alpha is None else self.alpha
        self.epsilon = _finite("epsilon", self.epsilon, 0.0, 1.0)

    def _tuned_names(self) -> tuple[str, ...]:
        return (*super()._tuned_names(), *(("alpha",) if self.alpha is None else ()))

    def _cv_bonus(self, width: np.ndarray) -> list[tuple[Any, np.ndarray | None]]:
        if self.alpha is not None:
            return [(self.alpha, self.alpha * width)]
        if np.allclose(width, width[:, :1]):
            # Equal widths (every arm saw the same rows): the bonus cannot change the greedy choice.
            return [(None, None)]
        return [(a, a * width) for a in LINUCB_ALPHAS]

    def _apply_cv_extra(self, value: Any) -> None:
        self.alpha_ = 1.0 if value is None else float(value)

    def _chosen(self) -> dict[str, Any]:
        return {"alpha_": self.alpha_}

    def _restore_chosen(self, chosen: dict[str, Any]) -> None:
        self.alpha_ = float(chosen.get("alpha_", self.alpha_))

    def _hyperparameters(self) -> dict[str, Any]:
        return {**super()._hyperparameters(), "alpha": self.alpha, "epsilon": self.epsilon}

    def _choose_one(self, x1: np.ndarray) -> tuple[int, float]:
        if self.mode == "outcomes":
            self._weights()  # refresh the stacked weights if λ changed
        explore = self.epsilon > 0.0 and self._rng.random() < self.epsilon
        scores = self._ucb_scores(self._stack @ x1, x1)
        top = max(scores)
        if not math.isfinite(top + sum(scores)):
            return self._choose_one_checked(x1)
        a = scores.index(top)
        n_ties = scores.count(top)
        if n_ties > 1:
            a = int(self._rng.choice([j for j, s in enumerate(scores) if s == top]))
        if not explore:
            return a, self.epsilon / self._k + (1.0 - self.epsilon) / n_ties
        b = int(self._rng.integers(self._k))
        return b, self.epsilon / self._k + (1.0 - self.epsilon) * (1.0 / n_ties if scores[b] == top else 0.0)

    def _ucb_scores(self, v: np.ndarray, x1: np.ndarray) -> list[float]:
        """Every arm's ``μ + alpha·sqrt(xᵀA⁻¹x)`` for one design row ``x1 (p,)``, from ``v = stack @ x1`` (the
        arms' ``A⁻¹x`` then their mean scores), as a Python list (K is small)."""
        kp = self._kp
        width = v[:kp].reshape(self._k, self._p) @ x1
        np.maximum(width, 0.0, out=width)  # round-off can leave xᵀA⁻¹x a hair below 0
        np.sqrt(width, out=width)
        if self.alpha_ != 1.0:
            width *= self.alpha_
        width += v[kp:]
        scores: list[float] = width.tolist()
        return scores

    def _probabilities_one(self, x1: np.ndarray) -> np.ndarray | None:
        # What a server calls per request: one compiled call when numba is there, else the single-round
        # choice's arithmetic on a Python list (K is small).
        if self.mode == "outcomes":
            self._weights()  # refresh the stacked weights if λ changed
        v = self._stack @ x1
        fast = linucb_probabilities(v, x1, self._k, self._p, self.alpha_, self.epsilon)
        if fast is not None:
            return fast[None]
        scores = self._ucb_scores(v, x1)
        top = max(scores)
        if not math.isfinite(top + sum(scores)):
            return None
        base = self.epsilon / self._k
        share = base + (1.0 - self.epsilon) * (1.0 / scores.count(top))
        return np.array([[share if s == top else base for s in scores]])

    def _choose_batch(self, X1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, k = X1.shape[0], len(self.models)
        mean, var = self._mean_var(X1, self._weights())
        score = mean + self.alpha_ * np.sqrt(var)
        if not np.isfinite(score).all():
            raise ShapeError("features must be finite, got NaN or inf")
        greedy = greedy_probabilities(score)
        # Random tie-breaking: a uniform key per tied arm, take the largest.
        keys = np.where(greedy > 0, self._rng.random((n, k)), -1.0)
        actions = keys.argmax(axis=1)
        if self.epsilon > 0:
            explore = self._rng.random(n) < self.epsilon
            actions = np.where(explore, self._rng.integers(k, size=n), actions)
        probs = self.epsilon / k + (1.0 - self.epsilon) * greedy
        actions = actions.astype(np.int64)
        return actions, probs[np.arange(n), actions]

    def _probabilities(self, X1: np.ndarray, weights: np.ndarray) -> np.ndarray:
        mean, var = self._mean_var(X1, weights)
        greedy = greedy_probabilities(mean + self.alpha_ * np.sqrt(var))
        k = len(self.models)
        return self.epsilon / k + (1.0 - self.epsilon) * greedy


@register_policy
@dataclass(eq=False, kw_only=True)
class LinearThompsonSampling(_LinearBandit):
    """Linear Thompson sampling with disjoint arms (Agrawal & Goyal, 2013), cost-aware.

    Each round draws ``θ̃_k ~ N(θ_k, posterior_scale²·A_k⁻¹)`` per arm and picks ``argmax_k θ̃_kᵀx``. Only
    ``θ̃_kᵀx`` matters for one context, and it is ``N(μ_k, posterior_scale²·xᵀA_k⁻¹x)``, so that scalar is drawn
    directly — the same distribution as sampling the weight vector, at the cost of one normal per arm.

    Propensities: ``P(k) = E_z[Π_{j≠k} Φ((μ_k + σ_k z − μ_j)/σ_j)]``, the probability that arm ``k``'s draw is the
    largest, computed by the 32-node Gauss–Hermite rule (its 24 nodes of weight ≥ 1e-14): absolute error below
    1e-8 when the arms' posterior widths are equal, about 3e-4 when they differ by 3×, up to about 7e-3 at 10×
    (checked against adaptive quadrature). :meth:`action_probabilities` normalises each row to sum to 1. The
    per-round draw, argmax and quadrature run as one compiled call when numba is installed (a dependency), and
    as numpy otherwise.

    Args:
        posterior_scale: ``v``, multiplies the posterior standard deviation (> 0).
    """

    posterior_scale: float = 0.5

    def _validate(self) -> None:
        self.posterior_scale = _finite("posterior_scale", self.posterior_scale, 0.0, strict=True)

    def _hyperparameters(self) -> dict[str, Any]:
        return {**super()._hyperparameters(), "posterior_scale": self.posterior_scale}

    def _choose_one(self, x1: np.ndarray) -> tuple[int, float]:
        if self.mode == "outcomes":
            self._weights()  # refresh the stacked weights if λ changed
        # One BLAS product gives A⁻¹x of every arm and the means; the draws, the argmax and the quadrature of
        # the winner's probability run as one compiled call (agents.routers._kernels).
        z = self._rng.standard_normal(self._k)
        a, prob, status = thompson_choose(self._stack @ x1, x1, self._k, self._p, self.posterior_scale, z)
        if status == 0:
            return a, prob
        if status == 1:
            return self._choose_one_checked(x1)
        # A zero-width posterior (e.g. an all-zero context without intercept): draws equal the means, so ties
        # are broken at random and share the probability.
        mean, var = self._mean_var(x1[None], self._weights())
        sd = self.posterior_scale * np.sqrt(var[0])
        a, _ = self._argmax_tie(mean[0] + sd * z)
        return a, float(_ts_probabilities(mean, sd[None])[0, a])

    def _choose_batch(self, X1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, var = self._mean_var(X1, self._weights())
        sd = self.posterior_scale * np.sqrt(var)
        draw = mean + sd * self._rng.standard_normal(mean.shape)
        if not np.isfinite(draw).all():
            raise ShapeError("features must be finite, got NaN or inf")
        actions = draw.argmax(axis=1).astype(np.int64)
        wide = (sd > 0.0).all(axis=1)
        props = np.empty(len(actions))
        props[wide] = gaussian_win_probability(mean[wide], sd[wide], actions[wide])
        for i in np.flatnonzero(~wide):
            # Degenerate (zero-width) arms: draws equal the means and tied arms share the mass, so the action is
            # drawn from those exact probabilities.
            row = _ts_probabilities(mean[i : i + 1], sd[i : i + 1])[0]
            actions[i] = sample_rows(row[None], self._rng)[0]
            props[i] = row[actions[i]]
        return actions, props

    def _probabilities(self, X1: np.ndarray, weights: np.ndarray) -> np.ndarray:
        mean, var = self._mean_var(X1, weights)
        sd = self.posterior_scale * np.sqrt(var)
        return _ts_probabilities(mean, sd)


def _ts_probabilities(mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """``(n, K)`` win probabilities of independent Gaussian draws ``N(mu, sd²)``, rows normalised to sum to 1."""
    n, k = mu.shape
    out = np.empty((n, k))
    tiny = 1e-300
    for s in range(0, n, 256):
        m = mu[s : s + 256]
        d = np.maximum(sd[s : s + 256], tiny)
        # arg[i, g, k, j] = (μ_k + σ_k z_g − μ_j) / σ_j; the j = k factor is set to 1.
        arg = (
            m[:, None, :, None] + d[:, None, :, None] * GH_Z[None, :, None, None] - m[:, None, None, :]
        ) / d[:, None, None, :]
        idx = np.arange(k)
        arg[:, :, idx, idx] = np.inf
        out[s : s + 256] = np.einsum("g,igk->ik", GH_W, ndtr(arg).prod(axis=3))
    out /= out.sum(axis=1, keepdims=True)
    return out


@register_policy
@dataclass(eq=False, kw_only=True)
class EpsilonGreedy(_LinearBandit):
    """ε-greedy over the ridge estimates: the best estimated model, or with probability ``epsilon`` a uniform one.

    Propensity of the greedy model: ``1 − ε + ε/K`` (ties share the greedy mass); of any other: ``ε/K``.

    Args:
        epsilon: exploration rate in [0, 1].
    """

    epsilon: float = 0.1

    def _validate(self) -> None:
        self.epsilon = _finite("epsilon", self.epsilon, 0.0, 1.0)

    def _hyperparameters(self) -> dict[str, Any]:
        return {**super()._hyperparameters(), "epsilon": self.epsilon}

    def _choose_one(self, x1: np.ndarray) -> tuple[int, float]:
        k = len(self.models)
        explore = self.epsilon > 0.0 and self._rng.random() < self.epsilon
        mean = self._weights() @ x1
        a, n_ties = self._argmax_tie(mean)
        greedy = mean == mean[a]
        if explore:
            a = int(self._rng.integers(k))
        return a, self.epsilon / k + (1.0 - self.epsilon) * (1.0 / n_ties if greedy[a] else 0.0)

    def _probabilities(self, X1: np.ndarray, weights: np.ndarray) -> np.ndarray:
        mean, _ = self._mean_var(X1, weights, need_var=False)
        if not np.isfinite(mean).all():
            raise ShapeError("features must be finite, got NaN or inf")
        k = len(self.models)
        return self.epsilon / k + (1.0 - self.epsilon) * greedy_probabilities(mean)


@register_policy
@dataclass(eq=False, kw_only=True)
class SoftmaxBandit(_LinearBandit):
    """Boltzmann exploration over the ridge estimates: ``P(k) ∝ exp(μ_k(x) / temperature)``.

    Args:
        temperature: in score units (quality points); > 0. Small = nearly greedy.
    """

    temperature: float = 0.05

    def _validate(self) -> None:
        self.temperature = _finite("temperature", self.temperature, 0.0, strict=True)

    def _hyperparameters(self) -> dict[str, Any]:
        return {**super()._hyperparameters(), "temperature": self.temperature}

    def _choose_one(self, x1: np.ndarray) -> tuple[int, float]:
        logits = self._weights() @ x1
        logits /= self.temperature
        top = float(logits.max())
        if not math.isfinite(top):
            raise ShapeError("features must be finite, got NaN or inf")
        p = np.exp(logits - top)
        cdf = np.cumsum(p)
        a = int(np.searchsorted(cdf, self._rng.random() * cdf[-1], side="right"))
        a = min(a, len(p) - 1)
        return a, float(p[a] / cdf[-1])

    def _probabilities(self, X1: np.ndarray, weights: np.ndarray) -> np.ndarray:
        mean, _ = self._mean_var(X1, weights, need_var=False)
        if not np.isfinite(mean).all():
            raise ShapeError("features must be finite, got NaN or inf")
        z = mean / self.temperature
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)
