"""Warm start of a PPO router's networks from full-information training logs, before PPO fine-tunes them.

A one-step routing episode is a contextual bandit, and full-information logs show every model's reward on every
training query. PPO alone learns from one sampled model per step, so it needs many more steps than a bandit
warm-started on the same logs to reach the same policy. Here the policy network is first fitted to the logs:

0. **Exact start** (the default network, :mod:`agents.training.sb3_networks`): when the actor has the linear skip
   path (and, λ-conditioned, the λ interactions), its logits are *set* to the ridge teacher's rewards in units of
   their spread — no fitting, the teacher's policy itself. The ridge (one per model) is fitted on every training
   query, the validation split's included, its penalty the one of the bandits' grid whose out-of-fold greedy
   routing earns the most reward in a grouped K-fold (``teacher_data``, :class:`TeacherData`; per-model
   leave-one-out penalties without folds). With the ``"ridge"`` teacher that is the whole actor fit; with
   ``"oracle"`` behaviour cloning starts from it.
1. **Behaviour cloning of the oracle's soft labels** ``softmax(R(x)/τ)`` in their high-temperature limit, logit
   matching: the actor's logits are regressed (mean squared error, centred per query, in units of the rewards'
   spread at that λ) onto the centred rewards ``R(x, a)`` of every model, so that ``logits/τ`` is a reward model and
   ``softmax(logits/τ)`` is a Boltzmann policy whose greedy choice is the model of highest predicted reward.
   Training stops early on the validation split's expected reward (patience in epochs) and keeps the best epoch.
2. **Temperature** ``τ`` (in units of the rewards' spread) is chosen on the validation split: the largest of
   :attr:`WarmStartConfig.temperatures` whose expected reward is within ``temperature_tolerance`` of the best, so
   that PPO starts from a policy that still explores a little.
3. **Critic**: the value network is regressed onto the warm policy's expected reward per query, so that PPO's first
   advantages are not dominated by an untrained baseline.

With λ-conditioned training every epoch draws one λ per query from the conditioned range (as the environment
does), and the rewards follow ``R(λ) = base − λ·per_lambda``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.policies import ActorCriticPolicy

from agents.training.sb3_networks import CostWeightInteractions, has_skip, set_linear_actor
from routing_env.errors import ConfigurationError

__all__ = ["TEACHERS", "TeacherData", "WarmStartConfig", "WarmStartRecord", "warm_start"]

#: What the warm start can regress the policy's logits onto (see :attr:`WarmStartConfig.teacher`).
TEACHERS = ("ridge", "oracle")


@dataclass(frozen=True)
class WarmStartConfig:
    """Settings of the supervised warm start (see the module docstring).

    Attributes:
        teacher: what the actor's logits are set or regressed onto: ``"ridge"``, the rewards predicted by a ridge
            regression per model on the features (penalty by cross-validation: denoised targets, so the network
            starts from a linear reward model's policy, as a warm-started bandit does), or
            ``"oracle"``, the logged rewards themselves (the oracle's soft labels).
        max_epochs: passes over the training queries at most.
        patience: stop after this many epochs without a better validation reward.
        learning_rate: Adam step size.
        batch_size: queries per gradient step.
        weight_decay: Adam's L2 penalty on the actor's weights.
        temperatures: candidate τ, in units of the standard deviation of the centred rewards.
        temperature_tolerance: the largest τ whose validation reward is within this much (reward units) of the
            best τ's is kept.
        value_epochs: passes of the critic's regression.
        fine_tune_learning_rate: PPO's Adam step size after the warm start (in place of
            ``PPOConfig.learning_rate``, which suits a random start: PPO's own steps at that rate move the fitted
            policy away from the better one it starts at).
    """

    teacher: str = "ridge"
    max_epochs: int = 200
    patience: int = 15
    learning_rate: float = 1e-3
    batch_size: int = 256
    weight_decay: float = 0.0
    temperatures: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
    temperature_tolerance: float = 0.002
    value_epochs: int = 20
    fine_tune_learning_rate: float = 1e-4

    def __post_init__(self) -> None:
        if self.teacher not in TEACHERS:
            raise ConfigurationError(
                f"WarmStartConfig.teacher must be one of {list(TEACHERS)}, got {self.teacher!r}"
            )
        for name in ("max_epochs", "patience", "batch_size", "value_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigurationError(f"WarmStartConfig.{name} must be a positive integer, got {value!r}")
        if not (np.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigurationError(
                f"WarmStartConfig.learning_rate must be a positive number, got {self.learning_rate!r}"
            )
        if not (np.isfinite(self.fine_tune_learning_rate) and self.fine_tune_learning_rate > 0):
            raise ConfigurationError(
                "WarmStartConfig.fine_tune_learning_rate must be a positive number, "
                f"got {self.fine_tune_learning_rate!r}"
            )
        for name in ("weight_decay", "temperature_tolerance"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ConfigurationError(f"WarmStartConfig.{name} must be a number ≥ 0, got {value!r}")
        temps = tuple(float(t) for t in self.temperatures)
        if not temps or any(not (np.isfinite(t) and t > 0) for t in temps):
            raise ConfigurationError(
                f"WarmStartConfig.temperatures must be positive numbers, got {self.temperatures!r}"
            )
        object.__setattr__(self, "temperatures", tuple(sorted(temps)))


@dataclass(frozen=True)
class WarmStartRecord:
    """What the warm start did.

    Attributes:
        epochs: behaviour-cloning epochs run (the best one is kept; 0: the exact start alone).
        best_epoch: the epoch whose parameters were kept (0: the exact start).
        temperature: the chosen τ (units of the rewards' spread).
        reward_scale: the rewards' spread (standard deviation of the centred rewards), the unit of τ (at λ = 0
            when conditioned, where the unit varies with λ).
        validation_reward: the warm policy's expected reward on the validation split.
        seconds: wall time.
        teacher_penalty: the ridge teacher's penalty chosen by cross-validation (``None``: per-model
            leave-one-out penalties).
    """

    epochs: int
    best_epoch: int
    temperature: float
    reward_scale: float
    validation_reward: float
    seconds: float
    teacher_penalty: float | None = None


#: ``rewards(lams)``: ``(n, K)`` rewards of the training queries at ``lams`` (``(n, 1)``, one λ per query) or at
#: the fixed λ (``None``).
RewardFn = Callable[[np.ndarray | None], np.ndarray]


def warm_start(
    policy: ActorCriticPolicy,
    features: np.ndarray,
    rewards: RewardFn,
    score: Callable[[], float],
    config: WarmStartConfig,
    *,
    draw_lambdas: Callable[[np.random.Generator, int], np.ndarray] | None = None,
    lambda_input: Callable[[np.ndarray], np.ndarray] | None = None,
    seed: int = 0,
    teacher_data: TeacherData | None = None,
) -> WarmStartRecord:
    """Fit ``policy``'s actor and critic to full-information rewards in place (see the module docstring).

    Args:
        policy: the SB3 actor-critic network PPO will fine-tune.
        features: ``(n, d) float32`` observations of the training queries as the network sees them (standardised;
            without λ).
        rewards: the training queries' rewards (see :data:`RewardFn`).
        score: the current policy's expected reward on the validation split (higher is better).
        config: :class:`WarmStartConfig`.
        draw_lambdas: for a λ-conditioned network, ``(rng, m) -> (m,)`` cost weights drawn as the environment
            draws them; the network then observes ``[features, lambda_input(λ)]`` (the raw λ without
            ``lambda_input``).
        seed: seeds the minibatch order and the λ draws.
        teacher_data: what the ridge teacher is fitted on (:class:`TeacherData`), when not the training queries
            with leave-one-out penalties (e.g. these with the validation queries, and grouped folds that choose
            the penalty: it needs no held-out data then, and the more queries it sees the better it is).
    """
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    n = features.shape[0]
    if n == 0:
        raise ConfigurationError("the warm start needs at least one training query")
    conditioned = draw_lambdas is not None
    # The ridge is the targets, or the exact start (an oracle teacher on a network without the skip path needs
    # neither).
    ridge = None
    if config.teacher == "ridge" or has_skip(policy):
        ridge = _RidgeTeacher(
            teacher_data or TeacherData(features, rewards), conditioned, predict_on=features
        )
    targets = ridge if config.teacher == "ridge" and ridge is not None else rewards
    spread = _reward_spread(targets, n, conditioned=conditioned)
    unit = float(spread(np.zeros((1, 1)) if conditioned else None)[0, 0])
    head = policy.action_net
    assert isinstance(head, torch.nn.Linear)  # SB3's categorical head
    coldest = config.temperatures[0]
    best_reward, best_epoch, best_state, epoch = -np.inf, 0, None, 0
    exact = ridge is not None and _set_exactly(policy, ridge, unit)
    if exact:
        # The actor is the ridge teacher's policy itself: the starting candidate, and the end of it for that
        # teacher (behaviour cloning could only approximate what it already is).
        with _temperature(head, coldest):
            best_reward, best_state = score(), copy.deepcopy(policy.state_dict())
    actor = [*policy.mlp_extractor.policy_net.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(actor, lr=config.learning_rate, weight_decay=config.weight_decay)
    epochs = 0 if exact and config.teacher == "ridge" else config.max_epochs
    for epoch in range(1, epochs + 1):
        obs, r, lams = _batch(features, targets, draw_lambdas, lambda_input, rng)
        target = (r - r.mean(dim=1, keepdim=True)) / torch.as_tensor(spread(lams), dtype=torch.float32)
        policy.set_training_mode(True)
        for chunk in torch.split(torch.as_tensor(rng.permutation(n)), config.batch_size):
            logits = head(policy.mlp_extractor.forward_actor(_features(policy, obs[chunk])))
            loss = torch.mean((logits - logits.mean(dim=1, keepdim=True) - target[chunk]) ** 2)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        policy.set_training_mode(False)
        with _temperature(head, coldest):
            reward = score()
        if reward > best_reward:
            best_reward, best_epoch, best_state = reward, epoch, copy.deepcopy(policy.state_dict())
        elif epoch - best_epoch >= config.patience:
            break
    assert best_state is not None
    policy.load_state_dict(best_state)
    temperature, validation_reward = _choose_temperature(head, score, config)
    _scale_head(head, 1.0 / temperature)
    _fit_critic(policy, features, rewards, draw_lambdas, lambda_input, rng, config)
    return WarmStartRecord(
        epochs=epoch,
        best_epoch=best_epoch,
        temperature=temperature,
        reward_scale=unit,
        validation_reward=validation_reward,
        seconds=time.perf_counter() - start,
        teacher_penalty=None if ridge is None else ridge.alpha,
    )


@dataclass(frozen=True)
class TeacherData:
    """What the ridge teacher is fitted on, when not the training queries the network is fitted on.

    Attributes:
        features: ``(m, d) float32`` observations as the network sees them (without λ).
        rewards: their rewards (a :data:`RewardFn` over these ``m`` queries).
        folds: ``(m,)`` fold ids of a grouped K-fold (:func:`agents.routers._cv.make_folds`): the ridge penalty is
            then the one whose out-of-fold greedy routing earns the most mean reward over ``cost_weights``, as the
            bandits choose theirs; ``None``: per-model penalties by leave-one-out squared error.
        cost_weights: the λ values that score (the fixed λ alone when unconditioned).
    """

    features: np.ndarray
    rewards: RewardFn
    folds: np.ndarray | None = None
    cost_weights: tuple[float, ...] = (0.0,)


class _RidgeTeacher:
    """The rewards predicted by a ridge regression of each model's reward on the features: a denoised teacher
    whose greedy policy is a linear reward model's, as the bandits' warm start is. Conditioned: one ridge for
    ``base`` and one for ``per_lambda`` (``R(λ) = base − λ·per_lambda``). Called as a :data:`RewardFn` on the
    queries of ``predict_on`` (the network's training queries).

    Attributes:
        base, base_intercept: ``(K, d)``, ``(K,)``: the fitted reward (at λ = 0 when conditioned).
        per, per_intercept: ``(K, d)``, ``(K,)``: the fitted reward lost per unit of λ (zeros unconditioned).
        alpha: the penalty chosen by cross-validation (``None``: per-model leave-one-out penalties).
    """

    def __init__(self, data: TeacherData, conditioned: bool, predict_on: np.ndarray) -> None:
        x = np.asarray(data.features, dtype=np.float64)
        n = x.shape[0]
        if conditioned:
            base = data.rewards(np.zeros((n, 1)))
            per = base - data.rewards(np.ones((n, 1)))
        else:
            base, per = data.rewards(None), None
        k = base.shape[1]
        y = base if per is None else np.hstack([base, per])
        self.conditioned = conditioned
        self.alpha: float | None = None
        if data.folds is not None and len(np.unique(data.folds)) > 1:
            self.alpha = _cv_penalty(x, data, base, per)
            coef, intercept = _ridge(x, y, self.alpha)
        else:
            from sklearn.linear_model import RidgeCV

            fit = RidgeCV(alphas=np.logspace(-2, 4, 13), alpha_per_target=True).fit(x, y)
            coef, intercept = np.atleast_2d(fit.coef_), np.atleast_1d(fit.intercept_)
        self.base, self.base_intercept = coef[:k], intercept[:k]
        self.per = coef[k:] if conditioned else np.zeros_like(coef)
        self.per_intercept = intercept[k:] if conditioned else np.zeros(k)
        z = np.asarray(predict_on, dtype=np.float64)
        self._base_hat = z @ self.base.T + self.base_intercept
        self._per_hat = z @ self.per.T + self.per_intercept

    def __call__(self, lams: np.ndarray | None) -> np.ndarray:
        return self._base_hat - (0.0 if lams is None else lams) * self._per_hat


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """``(coef (T, d), intercept (T,))`` of ``θ = (α·I + XᵀX)⁻¹ Xᵀ(y − ȳ)``, intercept ``ȳ``: the penalty shrinks
    each target toward its mean, as :func:`agents.routers._cv.ridge_oof` (which scores the penalties) fits."""
    mean = y.mean(axis=0)
    gram = x.T @ x + alpha * np.eye(x.shape[1])
    coef = np.linalg.solve(gram, x.T @ (y - mean)).T
    return coef, mean


def _cv_penalty(x: np.ndarray, data: TeacherData, base: np.ndarray, per: np.ndarray | None) -> float:
    """The penalty of the bandits' grid (``n × RIDGE_GRID``) whose out-of-fold greedy routing has the highest
    mean reward averaged over ``data.cost_weights`` (ties to the larger penalty)."""
    from agents.routers._cv import ridge_oof
    from agents.routers._linear import RIDGE_GRID

    assert data.folds is not None
    alphas = [max(x.shape[0], 1) * r for r in sorted(RIDGE_GRID, reverse=True)]
    targets = [base] if per is None else [base, per]
    oof, _ = ridge_oof(x, targets, data.folds, alphas)
    rows = np.arange(x.shape[0])
    lams: tuple[float | None, ...] = data.cost_weights if per is not None else (None,)
    tables = [data.rewards(None if lam is None else np.full((x.shape[0], 1), lam)) for lam in lams]
    scores = []
    for i in range(len(alphas)):
        values = []
        for lam, table in zip(lams, tables):
            guess = oof[0][i] if lam is None else oof[0][i] - lam * oof[1][i]
            values.append(float(table[rows, np.argmax(guess, axis=1)].mean()))
        scores.append(float(np.mean(values)))
    best = max(scores)
    return float(alphas[next(i for i, v in enumerate(scores) if v >= best - 1e-9)])


def _set_exactly(policy: ActorCriticPolicy, ridge: _RidgeTeacher, unit: float) -> bool:
    """Set ``policy``'s actor to the ridge teacher's logits (in units of ``unit``, the rewards' spread) when its
    architecture represents them exactly: a linear skip path, and λ interactions when conditioned. Returns whether
    it did."""
    if not has_skip(policy):
        return False
    if not ridge.conditioned:
        set_linear_actor(policy, ridge.base / unit, ridge.base_intercept / unit)
        return True
    extractor = policy.features_extractor
    if not isinstance(extractor, CostWeightInteractions):
        return False
    weight, bias = extractor.linear_weights(ridge.base, ridge.base_intercept, ridge.per, ridge.per_intercept)
    set_linear_actor(policy, weight / unit, bias / unit)
    return True


def _reward_spread(rewards: RewardFn, n: int, conditioned: bool) -> Callable[[np.ndarray | None], np.ndarray]:
    """``spread(lams) -> (m, 1)``: the standard deviation over the training queries and models of the per-query
    centred rewards at each λ of ``lams (m, 1)`` (at the fixed λ for ``None``), the unit of the regression
    targets and of τ. Per λ, so that the small λ, where quality differences decide, weigh as much in the loss as
    the large λ, where cost differences are larger."""

    def centred(r: np.ndarray) -> np.ndarray:
        return r - r.mean(axis=1, keepdims=True)

    if not conditioned:
        fixed = max(float(np.std(centred(rewards(None)))), 1e-12)
        return lambda lams: np.full((1 if lams is None else lams.shape[0], 1), fixed)
    # R(λ) = base − λ·per_lambda, so the spread's square is a quadratic in λ.
    base = centred(rewards(np.zeros((n, 1))))
    per = base - centred(rewards(np.ones((n, 1))))
    bb, bp, pp = float(np.mean(base * base)), float(np.mean(base * per)), float(np.mean(per * per))

    def spread(lams: np.ndarray | None) -> np.ndarray:
        lam = np.zeros((1, 1)) if lams is None else lams
        return np.sqrt(np.maximum(bb - 2.0 * lam * bp + lam * lam * pp, 1e-24))

    return spread


def _batch(
    features: np.ndarray,
    rewards: RewardFn,
    draw_lambdas: Callable[..., np.ndarray] | None,
    lambda_input: Callable[[np.ndarray], np.ndarray] | None,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray | None]:
    """``(observations (n, d[+1]), rewards (n, K), λ (n, 1) or None)`` of every training query; with λ
    conditioning one fresh λ per query, observed as the network's last input."""
    if draw_lambdas is None:
        plain = torch.as_tensor(features, dtype=torch.float32)
        return plain, torch.as_tensor(rewards(None), dtype=torch.float32), None
    # The rewards at the λ the environment would show (float32), so that targets and inputs agree exactly.
    lams = draw_lambdas(rng, features.shape[0]).astype(np.float32).astype(np.float64)[:, None]
    seen = lams[:, 0] if lambda_input is None else lambda_input(lams[:, 0])
    obs = np.concatenate([features, np.asarray(seen, dtype=np.float32)[:, None]], axis=1)
    return (
        torch.as_tensor(obs, dtype=torch.float32),
        torch.as_tensor(rewards(lams), dtype=torch.float32),
        lams,
    )


def _features(policy: ActorCriticPolicy, obs: torch.Tensor, which: int = 0) -> torch.Tensor:
    """The features extractor's output (the actor's, ``which=0``, or the critic's, ``1``) for ``obs``: what the
    MLP extractor reads (a conditioned network's λ interactions included)."""
    features = policy.extract_features(obs)
    return features[which] if isinstance(features, tuple) else features


class _temperature:
    """Context manager: the action head's logits divided by ``τ`` inside the block."""

    def __init__(self, head: torch.nn.Linear, temperature: float) -> None:
        self.head, self.factor = head, 1.0 / temperature

    def __enter__(self) -> None:
        _scale_head(self.head, self.factor)

    def __exit__(self, *exc: Any) -> None:
        _scale_head(self.head, 1.0 / self.factor)


def _scale_head(head: torch.nn.Linear, factor: float) -> None:
    with torch.no_grad():
        head.weight.mul_(factor)
        head.bias.mul_(factor)


def _choose_temperature(
    head: torch.nn.Linear, score: Callable[[], float], config: WarmStartConfig
) -> tuple[float, float]:
    """``(τ, its validation reward)``: the largest τ within the tolerance of the best τ's reward."""
    scores: list[tuple[float, float]] = []
    for t in config.temperatures:
        with _temperature(head, t):
            scores.append((t, score()))
    best = max(r for _, r in scores)
    return max((t, r) for t, r in scores if r >= best - config.temperature_tolerance)


def _fit_critic(
    policy: ActorCriticPolicy,
    features: np.ndarray,
    rewards: RewardFn,
    draw_lambdas: Callable[..., np.ndarray] | None,
    lambda_input: Callable[[np.ndarray], np.ndarray] | None,
    rng: np.random.Generator,
    config: WarmStartConfig,
) -> None:
    """Regress the value network onto the (warm) policy's expected reward per query."""
    n = features.shape[0]
    critic: Sequence[torch.nn.Parameter] = [
        *policy.mlp_extractor.value_net.parameters(),
        *policy.value_net.parameters(),
    ]
    optimizer = torch.optim.Adam(critic, lr=config.learning_rate)
    for _ in range(config.value_epochs):
        obs, r, _ = _batch(features, rewards, draw_lambdas, lambda_input, rng)
        with torch.no_grad():
            probs = policy.get_distribution(obs).distribution.probs  # type: ignore[union-attr]
            target = (probs * r).sum(dim=1, keepdim=True)
        for chunk in torch.split(torch.as_tensor(rng.permutation(n)), config.batch_size):
            value = policy.value_net(policy.mlp_extractor.forward_critic(_features(policy, obs[chunk], 1)))
            loss = torch.mean((value - target[chunk]) ** 2)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
