"""Cascade policies: call the chain's models cheap first and stop or escalate after each answer's signal.

- :class:`ThresholdCascade`: FrugalGPT-style thresholds per stage, tuned offline for a λ.
- :class:`CascadeBandit`: per-stage contextual bandits that learn to stop or escalate online.


A cascade calls the models of ``chain`` in order (cheap first). After ``s`` calls (``1 ≤ s < len(chain)``) the
stage-``s`` bandit sees the query features and the ``s`` signals returned so far (never their quality) and picks
arm 0 (**accept** the last answer) or arm 1 (**escalate** to ``chain[s]``). Each stage is a disjoint linear bandit
from :mod:`agents.routers.bandits` over the context ``[features, signals[:s]]`` that learns the **return** of each arm:
the quality of the answer finally accepted minus ``cost_weight · (USD of the calls made after the decision) /
cost_scale`` — the quantity the :class:`~routing_env.policy.CascadePolicy` protocol's ``update`` receives. It
learns online on ``routing_env/Cascade-v0``'s chain mode (see :func:`agents.training.loop.run_cascade_online`) and behind
the online router's observe step, with the same propensity and save/load rules as the routing bandits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from agents.routers._common import (
    _check_models_arg,
    _finite,
    reading_saved,
    restore_basics,
    rng_state,
    save_featurizer_dir,
    write_router_dir,
)
from agents.routers._linear import _LinearBandit
from agents.routers.bandits import EpsilonGreedy, LinearThompsonSampling, LinUCB
from routing_env.data.dataset import LoggedDataset
from routing_env.errors import (
    ConfigurationError,
    ModelMismatchError,
    PartialInformationError,
    ShapeError,
)
from routing_env.policy import (
    check_features,
    register_policy,
    write_policy_dir,
)

__all__ = ["ACCEPT", "ESCALATE", "CascadeBandit", "ThresholdCascade", "cascade_outcomes"]


# ---------------------------------------------------------------------------------------------- cascades
def cascade_outcomes(
    dataset: LoggedDataset,
    chain: Sequence[int],
    accept_stage: np.ndarray,
    cost_weight: float,
    cost_scale: float,
) -> dict[str, np.ndarray]:
    """Outcome of stopping query ``i`` after ``accept_stage[i] + 1`` calls of ``chain`` (model indices).

    Returns ``quality (n,)`` of the accepted answer, ``cost (n,)`` USD of all calls made, ``reward (n,)`` =
    ``quality − cost_weight·cost/cost_scale`` and ``final (n,)`` the accepted model index.
    """
    idx = np.asarray(chain, dtype=np.int64)
    n = dataset.n_queries
    stage = np.asarray(accept_stage, dtype=np.int64)
    cum_cost = np.cumsum(dataset.cost[:, idx], axis=1)
    rows = np.arange(n)
    quality = dataset.quality[rows, idx[stage]]
    cost = cum_cost[rows, stage]
    return {
        "quality": quality,
        "cost": cost,
        "reward": quality - (cost_weight / cost_scale) * cost,
        "final": idx[stage],
    }


def _check_chain_inputs(
    features: Any, signals: Any, n_stages: int, n_features: int | None
) -> tuple[np.ndarray, np.ndarray]:
    x = check_features(features, n_features)
    s = np.asarray(signals, dtype=np.float64)
    if s.ndim == 1:
        s = s[:, None] if x.shape[0] == s.shape[0] and x.shape[0] != 1 else s[None, :]
    if s.ndim != 2 or s.shape[0] != x.shape[0]:
        raise ShapeError(f"signals must have shape (n, s) with n = {x.shape[0]}, got {s.shape}")
    if not 1 <= s.shape[1] <= n_stages:
        raise ShapeError(
            f"signals must hold 1 … {n_stages} columns (the models called so far, the last one of the chain "
            f"excluded), got {s.shape[1]}"
        )
    if not np.isfinite(s).all():
        raise ShapeError("signals must be finite, got NaN or inf")
    return x, s


def _resolve_chain(dataset: LoggedDataset, chain: Sequence[str]) -> tuple[str, ...]:
    if chain:
        names = _check_models_arg(chain)
        missing = [m for m in names if m not in dataset.models]
        if missing:
            raise ModelMismatchError(f"chain names models {missing} that are not in {list(dataset.models)}")
    else:
        order = np.argsort(np.nan_to_num(dataset.mean_cost(), nan=np.inf), kind="stable")
        names = tuple(dataset.models[int(j)] for j in order)
    if len(names) < 2:
        raise ConfigurationError(f"a cascade needs at least two models, got chain {list(names)}")
    return names


def _start_cascade_fit(
    cascade: ThresholdCascade | CascadeBandit,
    dataset: LoggedDataset,
    cost_weight: float | None,
    featurizer: Any,
    doing: str,
    what: str,
) -> list[int]:
    """Check ``dataset`` suits a cascade fit and set the cascade's λ, featurizer, chain and cost scale.

    ``doing`` and ``what`` word the errors ("tuning", "a threshold cascade"). Returns the chain's model
    indices into ``dataset.models``, cheapest stage first.
    """
    if not dataset.is_full_information:
        raise PartialInformationError(f"{doing} a cascade needs every model's outcome on every query")
    if dataset.signal is None:
        raise ConfigurationError(f"{what} needs per-call signals, and the dataset has no signal")
    if cost_weight is not None:
        cascade.cost_weight = _finite("cost_weight", cost_weight, 0.0)
    if featurizer is not None:
        cascade.featurizer = featurizer
    cascade.chain = _resolve_chain(dataset, cascade.chain)
    cascade.cost_scale_ = (
        float(cascade.cost_scale)
        if cascade.cost_scale is not None
        else dataset.resolve_cost_scale("max_mean")
    )
    return [dataset.models.index(m) for m in cascade.chain]


@register_policy
@dataclass(eq=False, kw_only=True)
class ThresholdCascade:
    """FrugalGPT-style cascade: call the chain's models in order and accept the first answer whose signal is at
    least that stage's threshold τ_s (the last model's answer is always accepted).

    :meth:`fit` tunes the thresholds on full-information training logs with signals, for a given λ: coordinate
    ascent, last stage first, over candidate thresholds (quantiles of each stage's signal, plus "always accept" and "always
    escalate") maximising the mean reward ``quality of the accepted answer − λ·(USD of all calls)/cost_scale``.
    It does not learn online (``learns_online`` is ``False``; :meth:`update` raises).

    Implements :class:`routing_env.policy.CascadePolicy`.

    Args:
        chain: model names in call order; default: the dataset's models from cheapest to most expensive.
        thresholds: τ per stage (``len(chain) − 1`` values) to use without tuning; ``fit`` replaces them.
        cost_weight: λ (≥ 0).
        cost_scale: USD per unit of λ; ``None`` = the dataset's ``resolve_cost_scale("max_mean")``.
        n_candidates: quantiles of each stage's signal tried as thresholds.
        n_sweeps: coordinate-ascent passes over the stages.
    """

    chain: tuple[str, ...] = ()
    thresholds: tuple[float, ...] | None = None
    cost_weight: float = 0.0
    cost_scale: float | None = None
    n_candidates: int = 41
    n_sweeps: int = 3
    seed: int | None = 0
    featurizer: Any = field(default=None, repr=False)

    n_features: int | None = field(default=None, init=False)
    cost_scale_: float = field(default=1.0, init=False)
    learns_online: ClassVar[bool] = False
    # A stage that always escalates has threshold +inf (routing_env.policy.read_policy_dir allows it here only).
    nonfinite_arrays: ClassVar[tuple[str, ...]] = ("thresholds",)

    def __post_init__(self) -> None:
        self.chain = _check_models_arg(self.chain)
        self.cost_weight = _finite("cost_weight", self.cost_weight, 0.0)
        if self.cost_scale is not None:
            self.cost_scale = _finite("cost_scale", self.cost_scale, 0.0, strict=True)
            self.cost_scale_ = self.cost_scale
        if int(self.n_candidates) < 1 or int(self.n_sweeps) < 1:
            raise ConfigurationError(
                f"n_candidates and n_sweeps must be ≥ 1, got {self.n_candidates!r} and {self.n_sweeps!r}"
            )
        if self.thresholds is not None:
            taus = tuple(float(t) for t in self.thresholds)
            if any(math.isnan(t) for t in taus):
                raise ConfigurationError(f"thresholds must not be NaN, got {list(taus)}")
            if self.chain and len(taus) != len(self.chain) - 1:
                raise ConfigurationError(
                    f"thresholds needs len(chain) − 1 = {len(self.chain) - 1} values, got {len(taus)}"
                )
            self.thresholds = taus
        self._rng = np.random.default_rng(self.seed)

    @property
    def models(self) -> tuple[str, ...]:
        """Same as :attr:`chain` (the models this policy calls)."""
        return self.chain

    def fit(
        self, dataset: LoggedDataset, cost_weight: float | None = None, *, featurizer: Any = None
    ) -> ThresholdCascade:
        """Tune the thresholds on ``dataset`` (full information, with ``signal``) for λ = ``cost_weight``."""
        idx = _start_cascade_fit(self, dataset, cost_weight, featurizer, "tuning", "a threshold cascade")
        signals = np.asarray(dataset.signal, dtype=np.float64)[:, idx]
        n_stages = len(idx) - 1
        candidates = []
        for s in range(n_stages):
            qs = np.quantile(signals[:, s], np.linspace(0.0, 1.0, int(self.n_candidates)))
            candidates.append(np.unique(np.concatenate([[-np.inf, np.inf], qs])))
        taus = np.full(n_stages, np.inf)  # start from "always escalate" (the last model)

        def value(t: np.ndarray) -> float:
            stage = _accept_stage(signals, t)
            return float(
                cascade_outcomes(dataset, idx, stage, self.cost_weight, self.cost_scale_)["reward"].mean()
            )

        best = value(taus)
        for _ in range(int(self.n_sweeps)):
            improved = False
            # Last stage first, like backward induction: earlier thresholds are tuned knowing what follows.
            for s in reversed(range(n_stages)):
                for cand in candidates[s]:
                    trial = taus.copy()
                    trial[s] = cand
                    v = value(trial)
                    if v > best + 1e-12:
                        best, taus, improved = v, trial, True
            if not improved:
                break
        self.thresholds = tuple(float(t) for t in taus)
        self.train_reward_ = best
        return self

    def _taus(self) -> np.ndarray:
        if self.thresholds is None or not self.chain:
            raise ConfigurationError(
                "ThresholdCascade has no thresholds: call fit(dataset) or pass chain= and thresholds="
            )
        return np.asarray(self.thresholds, dtype=np.float64)

    def stop_probabilities(self, features: np.ndarray, signals: np.ndarray) -> np.ndarray:
        """``(n,)`` 1.0 where the last signal ``signals[:, s−1]`` reaches τ_{s−1}, else 0.0."""
        taus = self._taus()
        _, s = _check_chain_inputs(features, signals, len(taus), self.n_features)
        return (s[:, -1] >= taus[s.shape[1] - 1]).astype(np.float64)

    def decide(self, features: np.ndarray, signals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(stop (n,) bool, propensity (n,) float64)``; the rule is deterministic, so propensities are 1."""
        p = self.stop_probabilities(features, signals)
        return p > 0.5, np.ones_like(p)

    def update(
        self, features: np.ndarray, signals: np.ndarray, stop: np.ndarray, returns: np.ndarray
    ) -> None:
        """Refused: the thresholds are tuned offline with :meth:`fit`."""
        raise ConfigurationError("ThresholdCascade does not learn online; re-tune it with fit(dataset)")

    def accept_stages(self, signals: np.ndarray) -> np.ndarray:
        """``(n,)`` index into ``chain`` of the accepted answer for full ``signals (n, len(chain))``."""
        s = np.asarray(signals, dtype=np.float64)
        if s.ndim != 2 or s.shape[1] != len(self.chain):
            raise ShapeError(f"signals must have shape (n, {len(self.chain)}), got {s.shape}")
        return _accept_stage(s, self._taus())

    def save(self, path: str | Path) -> Path:
        root = Path(path)
        # ±inf thresholds ("always accept"/"always escalate") are not JSON: they are saved in the npz.
        config: dict[str, Any] = {
            "hyperparameters": {
                "chain": list(self.chain),
                "thresholds": None,
                "cost_weight": self.cost_weight,
                "cost_scale": self.cost_scale,
                "n_candidates": int(self.n_candidates),
                "n_sweeps": int(self.n_sweeps),
                "seed": self.seed,
            },
            "cost_scale_": self.cost_scale_,
            "rng_state": rng_state(self._rng),
            "has_featurizer": self.featurizer is not None,
        }
        arrays = (
            {} if self.thresholds is None else {"thresholds": np.asarray(self.thresholds, dtype=np.float64)}
        )
        return write_router_dir(root, self, config, arrays)

    @classmethod
    def load(cls, path: str | Path) -> ThresholdCascade:
        with reading_saved(path, cls) as (root, config, arrays):
            hyper = dict(config["hyperparameters"])
            if "thresholds" in arrays:
                hyper["thresholds"] = tuple(float(t) for t in arrays["thresholds"])
            obj = cls(**hyper)
            restore_basics(obj, root, config)
        return obj


def _accept_stage(signals: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """First stage whose signal reaches its threshold (the last stage when none does)."""
    n_stages = taus.shape[0]
    ok = signals[:, :n_stages] >= taus[None, :]
    return np.where(ok.any(axis=1), ok.argmax(axis=1), n_stages).astype(np.int64)


#: Arm 0 of every stage: accept the current answer.
ACCEPT = 0
#: Arm 1 of every stage: call the next model of the chain.
ESCALATE = 1
_ARMS = ("accept", "escalate")
Algorithm = Literal["linucb", "thompson", "egreedy"]


@register_policy
@dataclass(eq=False, kw_only=True)
class CascadeBandit:
    """Per-stage contextual bandits that stop or escalate a cascade (implements ``CascadePolicy``).

    Args:
        chain: model names in call order; default (on :meth:`fit`): cheapest to most expensive.
        algorithm: ``"linucb"``, ``"thompson"`` or ``"egreedy"`` — the stage bandits' rule.
        alpha: LinUCB bonus width (≥ 0). ``epsilon``: ε of ε-greedy, or LinUCB's ε-mixing, in [0, 1].
        posterior_scale: Thompson sampling's ``v`` (> 0).
        ridge: prior precision of each stage arm's weights (> 0).
        use_features: include the query features in the stage contexts (else only the signals).
        cost_weight: λ used by :meth:`fit` to compute returns from logs (≥ 0). Online, the returns passed to
            :meth:`update` carry λ: the stage bandits learn rewards, so a new λ needs new returns.
        cost_scale: USD per unit of λ for :meth:`fit`; ``None`` = the dataset's ``resolve_cost_scale("max_mean")``.
        seed: seeds the stage bandits (each gets its own stream).
        featurizer: optional featurizer saved with the policy.

    Shapes: ``features (n, d)``, ``signals (n, s)`` with ``s`` the number of models called so far; ``stop (n,)``
    bool; ``returns (n,)``; ``stop_probabilities`` → ``(n,)``.
    """

    chain: tuple[str, ...] = ()
    algorithm: Algorithm = "linucb"
    alpha: float = 0.5
    epsilon: float = 0.0
    posterior_scale: float = 0.3
    ridge: float = 1.0
    use_features: bool = True
    cost_weight: float = 0.0
    cost_scale: float | None = None
    seed: int | None = 0
    featurizer: Any = field(default=None, repr=False)

    n_features: int | None = field(default=None, init=False)
    cost_scale_: float = field(default=1.0, init=False)
    learns_online: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self.chain = _check_models_arg(self.chain)
        if self.chain and len(self.chain) < 2:
            raise ConfigurationError(f"a cascade needs at least two models, got chain {list(self.chain)}")
        if self.algorithm not in ("linucb", "thompson", "egreedy"):
            raise ConfigurationError(
                f"algorithm must be 'linucb', 'thompson' or 'egreedy', got {self.algorithm!r}"
            )
        self.alpha = _finite("alpha", self.alpha, 0.0)
        self.epsilon = _finite("epsilon", self.epsilon, 0.0, 1.0)
        self.posterior_scale = _finite("posterior_scale", self.posterior_scale, 0.0, strict=True)
        self.ridge = _finite("ridge", self.ridge, 0.0, strict=True)
        self.cost_weight = _finite("cost_weight", self.cost_weight, 0.0)
        if self.cost_scale is not None:
            self.cost_scale = _finite("cost_scale", self.cost_scale, 0.0, strict=True)
            self.cost_scale_ = self.cost_scale
        if self.seed is not None and not isinstance(self.seed, (int, np.integer)):
            raise ConfigurationError(f"seed must be an int or None, got {self.seed!r}")
        self.stages: list[_LinearBandit] = []

    # ------------------------------------------------------------------ structure
    @property
    def models(self) -> tuple[str, ...]:
        """Same as :attr:`chain`."""
        return self.chain

    @property
    def n_stages(self) -> int:
        """Decision points: ``len(chain) − 1``."""
        return max(len(self.chain) - 1, 0)

    def _hyperparameters(self) -> dict[str, Any]:
        return {
            "chain": list(self.chain),
            "algorithm": self.algorithm,
            "alpha": self.alpha,
            "epsilon": self.epsilon,
            "posterior_scale": self.posterior_scale,
            "ridge": self.ridge,
            "use_features": self.use_features,
            "cost_weight": self.cost_weight,
            "cost_scale": self.cost_scale,
            "seed": self.seed,
        }

    def _stage_seeds(self) -> list[int | None]:
        if self.seed is None:
            return [None] * self.n_stages
        state = np.random.SeedSequence(int(self.seed)).generate_state(max(self.n_stages, 1), dtype=np.uint32)
        return [int(s) for s in state[: self.n_stages]]

    def _make_stages(self, n_features: int) -> None:
        if not self.chain:
            raise ConfigurationError("CascadeBandit has no chain: pass chain=[...] or call fit(dataset)")
        self.n_features = int(n_features)
        self.stages = []
        for seed in self._stage_seeds():
            common: dict[str, Any] = {
                "ridge": self.ridge,
                "standardize": False,
                "models": _ARMS,
                "seed": seed,
            }
            stage: _LinearBandit
            if self.algorithm == "linucb":
                stage = LinUCB(alpha=self.alpha, epsilon=self.epsilon, **common)
            elif self.algorithm == "thompson":
                stage = LinearThompsonSampling(posterior_scale=self.posterior_scale, **common)
            else:
                stage = EpsilonGreedy(epsilon=self.epsilon, **common)
            self.stages.append(stage)

    def _context(self, features: Any, signals: Any) -> tuple[int, np.ndarray]:
        if not self.chain:
            raise ConfigurationError("CascadeBandit has no chain: pass chain=[...] or call fit(dataset)")
        x, s = _check_chain_inputs(features, signals, self.n_stages, self.n_features)
        if not self.stages:
            self._make_stages(x.shape[1])
        ctx = np.concatenate([x, s], axis=1) if self.use_features else s
        return s.shape[1], ctx

    # ------------------------------------------------------------------ CascadePolicy
    def stop_probabilities(self, features: np.ndarray, signals: np.ndarray) -> np.ndarray:
        """``(n,)`` probability of accepting after ``signals.shape[1]`` calls."""
        stage, ctx = self._context(features, signals)
        return self.stages[stage - 1].action_probabilities(ctx)[:, ACCEPT]

    def decide(self, features: np.ndarray, signals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(stop (n,) bool, propensity (n,) float64)`` of the decision taken, drawn with the stage's generator."""
        stage, ctx = self._context(features, signals)
        actions, props = self.stages[stage - 1].act(ctx)
        return actions == ACCEPT, props

    def update(
        self, features: np.ndarray, signals: np.ndarray, stop: np.ndarray, returns: np.ndarray
    ) -> None:
        """Learn from decisions taken after ``signals.shape[1]`` calls and the ``returns (n,)`` that followed."""
        stage, ctx = self._context(features, signals)
        stop_arr = np.asarray(stop)
        if stop_arr.ndim == 0:
            stop_arr = stop_arr[None]
        if stop_arr.shape != (ctx.shape[0],) or stop_arr.dtype != bool:
            raise ShapeError(
                f"stop must be a bool array of shape ({ctx.shape[0]},), got {stop_arr.dtype} {stop_arr.shape}"
            )
        actions = np.where(stop_arr, ACCEPT, ESCALATE).astype(np.int64)
        self.stages[stage - 1].update(ctx, actions, returns)

    # ------------------------------------------------------------------ warm start
    def fit(
        self, dataset: LoggedDataset, cost_weight: float | None = None, *, featurizer: Any = None
    ) -> CascadeBandit:
        """Warm-start every stage from full-information logs with signals (resets learned state).

        Backward induction: the last stage learns accept = quality of ``chain[-2]`` against escalate = quality of
        ``chain[-1]`` minus its cost; each earlier stage learns escalate = the return of following the already
        fitted later stages greedily. Both arms' returns are known on every query, so every stage sees both.
        """
        idx = _start_cascade_fit(self, dataset, cost_weight, featurizer, "warm-starting", "a cascade bandit")
        x = np.asarray(dataset.features, dtype=np.float64)
        sig = np.asarray(dataset.signal, dtype=np.float64)[:, idx]
        q = dataset.quality[:, idx]
        c = dataset.cost[:, idx] * (self.cost_weight / self.cost_scale_)
        self._make_stages(dataset.n_features)
        last = len(idx) - 1
        value_next = q[:, last]  # return of the policy from "all models called"
        for stage in range(last, 0, -1):
            accept = q[:, stage - 1]
            escalate = value_next - c[:, stage]
            ctx = np.concatenate([x, sig[:, :stage]], axis=1) if self.use_features else sig[:, :stage]
            bandit = self.stages[stage - 1]
            bandit.fit_rewards(ctx, np.column_stack([accept, escalate]))
            greedy_stop = bandit.action_probabilities(ctx)[:, ACCEPT] >= 0.5
            value_next = np.where(greedy_stop, accept, escalate)
        return self

    def evaluate(self, dataset: LoggedDataset, cost_weight: float | None = None) -> dict[str, float]:
        """Mean ``reward``, ``quality``, ``cost`` (USD) and mean ``calls`` of the greedy cascade on full logs."""
        if not self.stages:
            raise ConfigurationError("CascadeBandit is not fitted")
        lam = self.cost_weight if cost_weight is None else _finite("cost_weight", cost_weight, 0.0)
        idx = [dataset.models.index(m) for m in self.chain]
        x = check_features(dataset.features, self.n_features)
        sig = np.asarray(dataset.signal, dtype=np.float64)[:, idx] if dataset.signal is not None else None
        if sig is None:
            raise ConfigurationError(
                "evaluating a cascade needs per-call signals, and the dataset has no signal"
            )
        n = dataset.n_queries
        accept_stage = np.full(n, self.n_stages, dtype=np.int64)
        open_ = np.ones(n, dtype=bool)
        for stage in range(1, self.n_stages + 1):
            rows = np.flatnonzero(open_)
            if rows.size == 0:
                break
            p = self.stop_probabilities(x[rows], sig[rows, :stage])
            stop = p >= 0.5
            accept_stage[rows[stop]] = stage - 1
            open_[rows[stop]] = False
        out = cascade_outcomes(dataset, idx, accept_stage, lam, self.cost_scale_)
        return {
            "reward": float(out["reward"].mean()),
            "quality": float(out["quality"].mean()),
            "cost": float(out["cost"].mean()),
            "calls": float((accept_stage + 1).mean()),
        }

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the policy to ``path`` (JSON + npz; each stage bandit in ``stage_<s>/``), no pickle."""
        root = Path(path)
        config = {
            "hyperparameters": self._hyperparameters(),
            "n_features": self.n_features,
            "cost_scale_": self.cost_scale_,
            "n_stage_dirs": len(self.stages),
            "has_featurizer": self.featurizer is not None,
        }
        write_policy_dir(root, type(self), config, {})
        for s, stage in enumerate(self.stages, start=1):
            stage.save(root / f"stage_{s}")
        save_featurizer_dir(self.featurizer, root)
        return root

    @classmethod
    def load(cls, path: str | Path) -> CascadeBandit:
        """Restore a policy written by :meth:`save`."""
        with reading_saved(path, cls) as (root, config, _):
            obj = cls(**config["hyperparameters"])
            restore_basics(obj, root, config)
            n_stage_dirs = int(config["n_stage_dirs"])
            if n_stage_dirs:
                obj.n_features = int(config["n_features"])
                stage_cls: type[_LinearBandit] = {
                    "linucb": LinUCB,
                    "thompson": LinearThompsonSampling,
                    "egreedy": EpsilonGreedy,
                }[obj.algorithm]
                obj.stages = [stage_cls.load(root / f"stage_{s}") for s in range(1, n_stage_dirs + 1)]
        return obj
