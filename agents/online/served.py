"""The policy an :class:`~agents.online.OnlineRouter` serves: what it derives from it once at load, the request
contract it implies, and the probes that tell whether it can route (health) and whether it explores (OPE).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from agents.online.config import RouterConfig
from agents.online.learning import LearnerMode, OutcomeBounds, learner_mode, outcome_bounds
from routing_env.errors import ConfigurationError, ModelMismatchError, ShapeError
from routing_env.policy import CascadePolicy, check_features

Kind = Literal["route", "cascade"]


@dataclass(frozen=True)
class Contract:
    """What a request to the policy must carry: ``features`` of width ``n_features`` (``None``: any) or, when
    ``prompts``, a prompt the router featurizes; the decision's ``kind`` and its ``models``."""

    kind: Kind
    models: tuple[str, ...]
    n_features: int | None
    prompts: bool

    def changes(self, new: Contract) -> list[str]:
        """How ``new`` differs from this contract, one phrase per difference (empty: the same)."""
        out = []
        if new.kind != self.kind:
            out.append(f"kind {self.kind} → {new.kind}")
        if new.models != self.models:
            out.append(f"models {list(self.models)} → {list(new.models)}")
        if new.n_features != self.n_features:
            out.append(f"feature width {self.n_features} → {new.n_features}")
        if new.prompts != self.prompts:
            out.append(f"routes prompts: {'yes → no' if self.prompts else 'no → yes'}")
        return out


@dataclass
class Served:
    """The policy being served and what the router derived from it once, at load time."""

    policy: Any
    version: str
    kind: Kind
    models: tuple[str, ...]
    n_features: int | None
    featurizer: Any
    mode: LearnerMode
    cost_weight_kwarg: bool
    cost_scale: float
    bounds: OutcomeBounds

    @property
    def cost_aware(self) -> bool:
        return self.mode == "outcomes"

    @property
    def learns(self) -> bool:
        return self.mode != "none"

    @property
    def contract(self) -> Contract:
        return Contract(self.kind, self.models, self.n_features, self.featurizer is not None)


def inspect_policy(
    policy: Any, version: str, config: RouterConfig, featurizer: Any, *, strict: bool = True
) -> Served:
    """:class:`Served` for ``policy``, routing prompts with ``featurizer`` (the router's own) when it makes features
    of the policy's width, else with the policy's own ``featurizer``, if any.

    Raises:
        ConfigurationError: the policy cannot be saved or served; a featurizer's width is not the policy's (for the
            router's featurizer only when ``strict``: else the policy just does not route prompts with it).
        ModelMismatchError: ``config.model_costs`` names models the policy does not route to.
    """
    if not callable(getattr(policy, "save", None)):
        raise ConfigurationError(
            f"policy must have save(dir) so the router can checkpoint it, got {type(policy).__name__}"
        )
    kind: Kind
    if isinstance(policy, CascadePolicy):
        kind, models = "cascade", tuple(str(m) for m in policy.chain)
    elif callable(getattr(policy, "action_probabilities", None)) and hasattr(policy, "models"):
        kind, models = "route", tuple(str(m) for m in policy.models)
    else:
        raise ConfigurationError(
            f"policy must implement routing_env.policy.Policy or CascadePolicy, got {type(policy).__name__}"
        )
    if not models or len(set(models)) != len(models):
        raise ConfigurationError(f"policy models must be unique and non-empty, got {list(models)}")
    unknown = sorted(set(config.model_costs) - set(models))
    if unknown:
        raise ModelMismatchError(f"model_costs names models {unknown} that the policy does not route to")
    width = getattr(policy, "n_features", None)
    n_features = None if width is None else int(width)
    own = getattr(policy, "featurizer", None)
    if own is not None and not _fits(own, n_features):
        raise ConfigurationError(
            f"the policy's featurizer {type(own).__name__} does not make features of the policy's width {n_features}"
        )
    if featurizer is not None and not _fits(featurizer, n_features):
        if strict:
            raise ConfigurationError(
                f"the featurizer {type(featurizer).__name__} makes features of shape "
                f"{np.asarray(featurizer.transform(['width probe'])).shape}, but the policy takes width {n_features}"
            )
        featurizer = None  # the router's featurizer does not fit this policy: it routes features only
    featurizer = featurizer if featurizer is not None else own
    try:
        params = inspect.signature(policy.action_probabilities).parameters if kind == "route" else {}
    except (TypeError, ValueError):
        params = {}
    scale = config.cost_scale
    if scale is None:
        fitted = getattr(policy, "cost_scale_", None)
        scale = (
            float(fitted)
            if isinstance(fitted, (int, float)) and math.isfinite(fitted) and fitted > 0
            else 1.0
        )
    bounds = outcome_bounds(config, policy, scale)
    takes_lambda = "cost_weight" in params
    return Served(
        policy,
        version,
        kind,
        models,
        n_features,
        featurizer,
        learner_mode(policy),
        takes_lambda,
        scale,
        bounds,
    )


def query_features(s: Served, features: Any, prompt: str | None) -> np.ndarray:
    """``(1, d) float32`` features of one request: ``features`` checked against the width, or the featurized
    ``prompt`` (``ConfigurationError``/``ShapeError`` naming what is wrong)."""
    if features is None:
        if prompt is None:
            raise ConfigurationError("route needs features=... or prompt=..., got neither")
        if s.featurizer is None:
            raise ConfigurationError(
                "route(prompt=...) needs a featurizer: the policy carries none and the router was given none"
            )
        raw = s.featurizer.transform([prompt])
    else:
        raw = features
        if type(raw) is list and len(raw) == s.n_features:
            # A plain list of numbers (what the HTTP service passes): one conversion, one check.
            try:
                x32 = np.array(raw, dtype=np.float64).astype(np.float32)[None]
            except (TypeError, ValueError):
                pass  # the general path below names the problem
            else:
                if x32.ndim == 2 and np.isfinite(x32).all():
                    return x32
    x = check_features(raw, s.n_features)
    if x.shape[0] != 1:
        raise ShapeError(f"features must be one query's vector (d,), got shape {np.shape(raw)}")
    x32 = x.astype(np.float32)
    if not np.isfinite(x32).all():
        raise ShapeError("features overflow float32 (|x| > 3.4e38)")
    return x32


def allowed_mask(s: Served, allowed_models: Sequence[str] | None) -> np.ndarray | None:
    """``(K,) bool`` mask of ``allowed_models`` over the policy's models (``None``: all allowed)."""
    if allowed_models is None:
        return None
    if isinstance(allowed_models, str):
        raise ConfigurationError(
            f"allowed_models must be a list of model names, got the string {allowed_models!r}"
        )
    names = [str(m) for m in allowed_models]
    models = s.models
    unknown = [m for m in names if m not in models]
    if unknown or not names:
        raise ModelMismatchError(
            f"allowed_models must name at least one of the policy's models {list(models)}, got {names}"
        )
    return np.array([m in names for m in models])


def _fits(featurizer: Any, n_features: int | None) -> bool:
    """Whether ``featurizer`` makes one row of ``n_features`` features (any width fits a width-free policy)."""
    return n_features is None or np.asarray(featurizer.transform(["width probe"])).shape == (1, n_features)


def probabilities(s: Served, x: np.ndarray, cost_weight: float | None = None) -> np.ndarray:
    """``(K,) float64`` distribution of ``s.policy`` for one query ``x (1, d)``; refused unless it is one.

    ``cost_weight`` (a cost-aware policy's λ for this call) is passed as a keyword when the policy takes it, else
    set on the policy for the call.
    """
    policy = s.policy
    if cost_weight is None:
        p = policy.action_probabilities(x)
    elif s.cost_weight_kwarg:
        p = policy.action_probabilities(x, cost_weight=cost_weight)
    else:
        saved = policy.cost_weight
        policy.cost_weight = cost_weight
        try:
            p = policy.action_probabilities(x)
        finally:
            policy.cost_weight = saved
    p = np.asarray(p, dtype=np.float64)
    k = len(s.models)
    # Checked on a Python list: K is small, and numpy's per-call overhead would dominate a request.
    values = p.ravel().tolist() if p.shape == (1, k) else []
    total = sum(values)  # NaN or ±inf make it non-finite (math.fsum would raise on inf − inf)
    if not values or not math.isfinite(total) or min(values) < 0 or abs(total - 1.0) > 1e-6:
        raise ConfigurationError(
            f"{type(policy).__name__}.action_probabilities returned {p!r}; expected (1, {k}) non-negative "
            "rows summing to 1"
        )
    return p[0] / total


def stop_probability(s: Served, x: np.ndarray, signals: np.ndarray) -> float:
    """A cascade policy's probability of accepting after the calls that returned ``signals (1, t)``; refused
    unless it lies in [0, 1]."""
    p = float(np.asarray(s.policy.stop_probabilities(x, signals)).reshape(-1)[0])
    if not 0.0 <= p <= 1.0:
        raise ConfigurationError(
            f"{type(s.policy).__name__}.stop_probabilities returned {p!r}, expected [0, 1]"
        )
    return p


def check_routes(s: Served, x: np.ndarray, steps: int = 1) -> None:
    """Refuse (``ConfigurationError``) unless the policy still gives a valid distribution for ``x (1, d)``: its
    action probabilities, or a cascade's stop probabilities after each of its first ``steps`` calls."""
    if s.kind == "route":
        probabilities(s, x)
        return
    for t in range(1, max(min(steps, len(s.models) - 1), 1) + 1):
        stop_probability(s, x, np.zeros((1, t)))


def probe_rows(s: Served, recent: list[np.ndarray], n_random: int = 32, seed: int = 0) -> np.ndarray:
    """``(m, d) float32`` queries to probe the policy with: zeros, ``recent`` features and seeded normal rows."""
    d = s.n_features
    if d is None:
        return np.zeros((0, 0), dtype=np.float32)
    rows = [np.zeros(d, dtype=np.float32), *[r for r in recent if r.shape == (d,)]]
    rng = np.random.default_rng(seed)
    rows.extend(rng.standard_normal((n_random, d)).astype(np.float32))
    return np.stack(rows)


def health_problem(s: Served, recent: list[np.ndarray]) -> str | None:
    """Why the policy cannot route (``None``: it gives a valid distribution for zeros and recent queries)."""
    for x in probe_rows(s, recent[-4:], n_random=0):
        try:
            check_routes(s, x[None, :], steps=len(s.models) - 1)
        except Exception as exc:
            return f"the policy {s.version!r} cannot route: {exc}"
    return None


def exploration_warning(s: Served, recent: list[np.ndarray]) -> str | None:
    """A warning when the policy is deterministic on every probe query (its logs then hold propensity 1 only,
    so no other policy can be evaluated on them), with the exploration to choose; ``None`` when it explores."""
    rows = probe_rows(s, recent)
    if rows.shape[0] == 0:
        return None
    try:
        if s.kind == "route":
            top = [float(probabilities(s, x[None, :]).max()) for x in rows]
            deterministic = all(p >= 1.0 - 1e-12 for p in top)
        else:
            stops = [stop_probability(s, x[None, :], np.zeros((1, 1))) for x in rows]
            deterministic = all(p in (0.0, 1.0) for p in stops)
    except Exception:
        return None  # a policy that cannot route is the health check's to report
    if not deterministic:
        return None
    k = len(s.models)
    return (
        f"the live policy {type(s.policy).__name__} (version {s.version!r}) is deterministic: it put probability 1 "
        f"on one {'model' if s.kind == 'route' else 'stop/continue choice'} for every one of {rows.shape[0]} probe "
        "queries, so the decisions it logs carry propensity 1 and cannot evaluate any other policy off-policy. "
        f"Serve it with exploration, e.g. epsilon=0.05 for LinUCB or EpsilonGreedy (each of the {k} models then "
        f"keeps probability ≥ ε/K = {0.05 / k:.3g}); take the smallest ε whose effective sample size detects the "
        "difference you need (ESS ≈ n·ε/K for a candidate that picks other models)"
    )
