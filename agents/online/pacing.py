"""Budget pacing: set a spend (USD per query, or per hour), and the cost weight λ follows it online.

The router maximises ``quality − λ·cost/cost_scale`` per decision. Spending on average at most ``B`` USD per query
is the constraint of the problem ``max E[quality]  s.t.  E[cost] ≤ B``, and λ is its Lagrange multiplier: for the
right λ the per-decision rule is exactly the best budgeted policy. :class:`BudgetPacer` finds that λ online by
**dual ascent** on the constraint: after each outcome of cost ``c`` it moves λ against the constraint's residual —
up when ``c`` runs above the target, down when below.

The update (dual mirror descent with the entropic map; Balseiro, Lu & Mirrokni, 2020)::

    g  = min((c − B_eff) / B, 100)                        relative overspend of this query (dimensionless)
    S ← ρ·S + g²                                          ρ = 1 − 1/step_memory  (1 without a memory)
    λ ← clip(λ · exp(step · g / sqrt(1 + S/warmup)),  min_cost_weight,  max_cost_weight)

Why that scale:

- **Multiplicative** (a step in ``log λ``): the useful λ of different logs spans orders of magnitude (0.05 on one
  price list, 3 on another), so a step relative to λ works for all without knowing λ's scale; λ stays > 0.
- **Relative residual** ``g``: dividing by the target makes the step independent of the currency and of how
  cheap the target is, so the same ``step`` paces $0.00003 and $0.02 per query.
- **Adaptive, decaying step** (AdaGrad on the residuals): the first ``≈ warmup/σ²`` outcomes move λ by up to
  ``step·g`` each, so a poor initial λ is corrected within tens of queries; afterwards the step decays as
  ``1/sqrt(Σ g²)`` — the 1/√t rate of the dual descent's guarantees, scaled down by how noisy per-query costs are
  (σ² = the mean of g²). With ``step_memory`` the sum forgets old residuals, so the step settles at a floor and λ
  keeps tracking traffic or prices that drift.

Payback: a decaying step alone lets an early transient (a poor initial λ) stay in the run's average. The pacer
also tracks the budget error ``E`` (USD spent above the target so far) and aims each query at
``B_eff = B − E/H`` (clipped to ``[B/2, 2B]``) with ``H = max(payback, n)`` queries: an overspend is paid back
over about as many queries as it took to build up. The error is not integrated while λ sits at a bound and the
residual pushes further out (an unreachable or non-binding budget), so unused budget is never banked for a later
spree.

Defaults (``step=0.5``, ``warmup=10``, ``payback=100``, ``step_memory=10_000``) come from replays of the bundled
synthetic sample; they are not sharp. In ``experiments/budget_pacing.py`` (sample and LLMRouter, 9 paced runs each)
the defaults keep the spend within 0.9% of the target; ``--warmup 1`` and ``--step 1 --warmup 1`` within 2.0% and
1.3%, with the mean quality against the fixed-λ frontier moving by at most 0.0013 — below the 0.002–0.003 paired
standard error of one run.

Per hour: with ``target_per_hour = R`` the per-query target is ``B = R / r̂``, where ``r̂`` is the request rate
observed over the last ``rate_window_s`` (an exponentially weighted count of outcomes by decision time,
corrected for the window not being full yet), so the spend tracks ``R`` USD per hour of traffic.

Use it through :class:`~agents.online.OnlineRouter` (``OnlineRouter(policy, store, pacer=BudgetPacer(...))``):
every decision routes with the pacer's current λ and logs it (``Decision.cost_weight``, so off-policy evaluation
of the logs stays correct), every feedback's cost moves λ, and the pacer's state is checkpointed with the policy
(``pacer.json`` in the checkpoint directory) and replayed with the feedback logged after the checkpoint, so a
restored router paces exactly as one that never stopped. It needs a cost-aware policy (λ set at decision time).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from routing_env.errors import ConfigurationError, PolicyFormatError

__all__ = ["PACER_FILE", "BudgetConfig", "BudgetPacer", "PacerState"]

#: The pacer's file in a router checkpoint directory (beside the policy's ``policy.json``).
PACER_FILE = "pacer.json"
_FORMAT = 1
# B_eff stays within these multiples of the target: payback never more than halves or doubles it.
_PAYBACK_LOW, _PAYBACK_HIGH = 0.5, 2.0
# One outcome moves λ (and the step's scale) as if it cost at most this many times the target; all of its cost
# still counts in the budget error that payback repays. Keeps one absurd cost from freezing the step.
_MAX_RESIDUAL = 100.0


@dataclass(frozen=True)
class BudgetConfig:
    """Hyperparameters of a :class:`BudgetPacer` (validated on construction).

    Attributes:
        target_per_query: USD per query to spend on average (> 0); or give ``target_per_hour``.
        target_per_hour: USD per hour of traffic (> 0), turned into a per-query target at the observed request
            rate; exactly one of the two targets is set.
        initial_cost_weight: λ before any outcome (default 1: the most expensive model must be worth a full
            quality point, the middle of the useful range when ``cost_scale`` is that model's mean cost).
        min_cost_weight, max_cost_weight: bounds of λ (0 < min < max). Updates are multiplicative, so λ never
            reaches 0; at ``1e-3`` cost barely counts.
        step: the largest relative change of λ per unit of relative overspend, before the step decays (> 0).
        warmup: how many unit-size residuals the step stays near ``step`` for (> 0); see the module docstring.
        step_memory: outcomes over which the step's sum of squared residuals forgets (``None``: never, the
            step decays forever); ≥ 1.
        payback: the shortest horizon, in queries, over which a budget error is paid back (≥ 1).
        rate_window_s: seconds over which the request rate is measured for ``target_per_hour`` (> 0).
    """

    target_per_query: float | None = None
    target_per_hour: float | None = None
    initial_cost_weight: float = 1.0
    min_cost_weight: float = 1e-3
    max_cost_weight: float = 1e3
    step: float = 0.5
    warmup: float = 10.0
    step_memory: int | None = 10_000
    payback: int = 100
    rate_window_s: float = 3600.0

    def __post_init__(self) -> None:
        if (self.target_per_query is None) == (self.target_per_hour is None):
            raise ConfigurationError(
                "budget: give exactly one of target_per_query (USD per query) and target_per_hour (USD per hour), "
                f"got target_per_query={self.target_per_query!r}, target_per_hour={self.target_per_hour!r}"
            )
        for name in ("target_per_query", "target_per_hour"):
            value = getattr(self, name)
            if value is not None:
                _positive(name, value, "a USD amount > 0")
        lo = _positive("min_cost_weight", self.min_cost_weight, "a number > 0 (updates are multiplicative)")
        hi = _positive("max_cost_weight", self.max_cost_weight, "a number > min_cost_weight")
        if not lo < hi:
            raise ConfigurationError(
                f"budget: min_cost_weight must be below max_cost_weight, got {self.min_cost_weight!r} ≥ "
                f"{self.max_cost_weight!r}"
            )
        start = _positive("initial_cost_weight", self.initial_cost_weight, "a number > 0")
        if not lo <= start <= hi:
            raise ConfigurationError(
                f"budget: initial_cost_weight must lie in [min_cost_weight, max_cost_weight] = [{lo!r}, {hi!r}], "
                f"got {self.initial_cost_weight!r}"
            )
        _positive("step", self.step, "a number > 0")
        _positive("warmup", self.warmup, "a number > 0")
        _positive("rate_window_s", self.rate_window_s, "a number of seconds > 0")
        if self.step_memory is not None:
            _count("step_memory", self.step_memory)
        _count("payback", self.payback)

    @property
    def per_hour(self) -> bool:
        """Whether the target is a spend per hour (else per query)."""
        return self.target_per_hour is not None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str = "budget") -> BudgetConfig:
        """The config a YAML/JSON mapping describes (keys as the field names); unknown keys are refused by name.

        Raises:
            ConfigurationError: a key that is not a field (the message lists the fields), or a bad value.
        """
        if not isinstance(values, Mapping):
            raise ConfigurationError(f"{where}: expected a mapping of settings, got {type(values).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in values if k not in known)
        if unknown:
            raise ConfigurationError(f"{where}: unknown key(s) {unknown}; expected some of {known}")
        for key, value in values.items():
            if isinstance(value, bool) or not (value is None or isinstance(value, (int, float))):
                raise ConfigurationError(f"{where}.{key} must be a number, got {value!r}")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-able mapping (what :meth:`from_mapping` reads back)."""
        return asdict(self)


@dataclass(frozen=True)
class PacerState:
    """What a :class:`BudgetPacer` has learned, as saved in a checkpoint.

    Attributes:
        cost_weight: λ the next decision routes with.
        n: outcomes observed.
        spend: USD spent over those outcomes.
        allowed: USD the target allowed for them (``n · target_per_query``, or the per-hour target at the
            observed rates).
        error: budget error used for payback (USD above the target; not integrated while λ is pinned at a bound).
        residual_sq: the (discounted) sum of squared relative residuals that scales the step.
        first_at, clock: UNIX times (s) of the first and the latest decision observed (``nan`` before any).
        rate_mass: exponentially weighted count of the outcomes after the first (the request-rate estimate).
    """

    cost_weight: float
    n: int = 0
    spend: float = 0.0
    allowed: float = 0.0
    error: float = 0.0
    residual_sq: float = 0.0
    first_at: float = math.nan
    clock: float = math.nan
    rate_mass: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view (``nan`` times as ``None``)."""
        out = asdict(self)
        for key in ("first_at", "clock"):
            if not math.isfinite(out[key]):
                out[key] = None
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PacerState:
        """The state :meth:`to_dict` wrote (raises :class:`ValueError`/:class:`TypeError` on bad content)."""
        known = {f.name for f in fields(cls)}
        if set(values) != known:
            raise ValueError(f"expected the keys {sorted(known)}, got {sorted(values)}")
        times = {k: math.nan if values[k] is None else float(values[k]) for k in ("first_at", "clock")}
        n = values["n"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a count ≥ 0, got {n!r}")
        numbers = {k: float(values[k]) for k in ("spend", "allowed", "error", "residual_sq", "rate_mass")}
        state = cls(cost_weight=float(values["cost_weight"]), n=n, **numbers, **times)
        if not all(math.isfinite(v) for v in (state.cost_weight, *numbers.values())):
            raise ValueError("every number must be finite")
        if state.cost_weight <= 0 or state.spend < 0 or state.allowed < 0 or state.residual_sq < 0:
            raise ValueError("cost_weight must be > 0, and spend, allowed and residual_sq ≥ 0")
        return state


class BudgetPacer:
    """Adapt the cost weight λ online so that spend follows a target (see the module docstring for the rule).

    Args:
        config: the :class:`BudgetConfig`; or give its fields as keywords (``BudgetPacer(target_per_query=0.002)``).

    Not thread-safe on its own: :class:`~agents.online.OnlineRouter` calls it under its lock.

    Example::

        pacer = BudgetPacer(target_per_query=0.002)           # USD per query, on average
        router = OnlineRouter(policy, "runs/router.db", pacer=pacer)
        d = router.route(prompt="…")                           # routed with pacer.cost_weight, logged with it
        router.feedback(d.decision_id, quality=1.0, cost=0.0031)   # the cost moves λ
        pacer.state().spend / pacer.state().n                  # USD per query so far
    """

    def __init__(self, config: BudgetConfig | None = None, **settings: Any) -> None:
        if config is not None and settings:
            raise ConfigurationError(
                f"give a BudgetConfig or its fields as keywords, not both (got config and {sorted(settings)})"
            )
        if config is None:
            config = BudgetConfig.from_mapping(settings, where="BudgetPacer")
        elif not isinstance(config, BudgetConfig):
            raise ConfigurationError(f"config must be a BudgetConfig, got {type(config).__name__}")
        self.config = config
        self._state = PacerState(cost_weight=config.initial_cost_weight)

    # ------------------------------------------------------------------ reading
    @property
    def cost_weight(self) -> float:
        """λ for the next decision."""
        return self._state.cost_weight

    def state(self) -> PacerState:
        """A snapshot of the pacer's state."""
        return self._state

    def rate_per_hour(self) -> float | None:
        """The observed request rate (outcomes per hour), or ``None`` before two outcomes at different times."""
        s = self._state
        elapsed = s.clock - s.first_at
        if not elapsed > 0:
            return None
        window = self.config.rate_window_s
        exposure = window * -math.expm1(-elapsed / window)  # the weighted time the count covers
        return 3600.0 * s.rate_mass / exposure

    def target_per_query(self) -> float | None:
        """The per-query target now: the configured one, or the hourly target at the observed rate."""
        c = self.config
        if c.target_per_query is not None:
            return c.target_per_query
        rate = self.rate_per_hour()
        if rate is None or rate <= 0:
            return None
        assert c.target_per_hour is not None
        return c.target_per_hour / rate

    def stats(self) -> dict[str, Any]:
        """Counters for monitoring: λ, outcomes, spend and target spend (USD), per query, and the rate."""
        s = self._state
        return {
            **s.to_dict(),
            "spend_per_query": s.spend / s.n if s.n else None,
            "target_per_query": self.target_per_query(),
            "rate_per_hour": self.rate_per_hour(),
        }

    # ------------------------------------------------------------------ learning
    def observe(self, cost: float, at: float) -> float:
        """Account for one outcome and move λ; returns the new λ.

        Args:
            cost: USD the decision cost (≥ 0; every call of a cascade).
            at: UNIX time (s) of its decision (sets the request rate of a per-hour target).

        Raises:
            ConfigurationError: a negative or non-finite cost, or a non-finite time.
        """
        c = _number("cost", cost, "a USD amount ≥ 0", low=0.0, strict=False)
        t = _number("at", at, "a UNIX time in seconds")
        s = self._clocked(self._state, t)
        target = self.target_per_query()  # at the rate including this outcome
        s = replace(s, n=s.n + 1, spend=s.spend + c)
        if target is None:  # the first outcome of a per-hour target: no rate yet, nothing to pace against
            self._state = s
            return s.cost_weight
        cfg = self.config
        horizon = max(cfg.payback, s.n)
        aim = min(max(target - s.error / horizon, _PAYBACK_LOW * target), _PAYBACK_HIGH * target)
        g = min((c - aim) / target, _MAX_RESIDUAL)
        forget = 1.0 if cfg.step_memory is None else 1.0 - 1.0 / cfg.step_memory
        residual_sq = forget * s.residual_sq + g * g
        lam = s.cost_weight * math.exp(cfg.step * g / math.sqrt(1.0 + residual_sq / cfg.warmup))
        lam = min(max(lam, cfg.min_cost_weight), cfg.max_cost_weight)
        pinned = (lam <= cfg.min_cost_weight and c < target) or (lam >= cfg.max_cost_weight and c > target)
        self._state = replace(
            s,
            cost_weight=lam,
            allowed=s.allowed + target,
            error=s.error if pinned else s.error + (c - target),
            residual_sq=residual_sq,
        )
        return lam

    def _clocked(self, s: PacerState, t: float) -> PacerState:
        """``s`` with the request-rate count advanced to time ``t`` and this outcome counted."""
        if not math.isfinite(s.first_at):
            return replace(s, first_at=t, clock=t)
        window = self.config.rate_window_s
        clock, mass = s.clock, s.rate_mass
        if t > clock:
            mass *= math.exp(-(t - clock) / window)
            clock = t
        # An outcome whose decision is older than the newest seen (feedback out of order) counts less.
        mass += math.exp(-(clock - t) / window)
        return replace(s, clock=clock, rate_mass=mass)

    def reset(self) -> None:
        """Forget every outcome: λ back to ``initial_cost_weight``."""
        self._state = PacerState(cost_weight=self.config.initial_cost_weight)

    # ------------------------------------------------------------------ checkpoints
    def save(self, directory: str | Path) -> Path:
        """Write ``pacer.json`` (the config, for the record, and the state) into ``directory``; returns its path.

        Written to a temporary file and renamed, so a crash leaves the old file or the new one, never half.
        """
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        path = root / PACER_FILE
        doc = {"format": _FORMAT, "config": self.config.to_dict(), "state": self._state.to_dict()}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1, allow_nan=False))
        os.replace(tmp, path)
        return path

    def load(self, directory: str | Path) -> bool:
        """Resume from the state a checkpoint ``directory`` holds; without ``pacer.json`` there, :meth:`reset`.

        The configured target and bounds stay this pacer's (a new budget continues from the saved λ, clipped to
        the new bounds). Returns whether a saved state was found.

        Raises:
            PolicyFormatError: ``pacer.json`` is unreadable or not a pacer state.
        """
        path = Path(directory) / PACER_FILE
        if not path.is_file():
            self.reset()
            return False
        try:
            doc = json.loads(path.read_text())
            if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
                raise ValueError(f"expected format {_FORMAT}")
            state = PacerState.from_dict(doc["state"])
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise PolicyFormatError(f"{path} is not a budget pacer state: {exc}") from None
        lam = min(max(state.cost_weight, self.config.min_cost_weight), self.config.max_cost_weight)
        self._state = replace(state, cost_weight=lam)
        return True

    def __repr__(self) -> str:
        c = self.config
        target = (
            f"target_per_query={c.target_per_query!r}"
            if c.target_per_query is not None
            else f"target_per_hour={c.target_per_hour!r}"
        )
        return f"BudgetPacer({target}, cost_weight={self.cost_weight:.6g}, n={self._state.n})"


# ---------------------------------------------------------------------------------------------------- helpers
def _number(name: str, value: Any, expected: str, low: float | None = None, strict: bool = True) -> float:
    """``value`` as a finite float (above ``low``, or at least it when not ``strict``), else a
    :class:`ConfigurationError` saying it must be ``expected``."""
    try:
        out = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        out = math.nan
    if not math.isfinite(out) or (low is not None and (out <= low if strict else out < low)):
        raise ConfigurationError(f"{name} must be {expected}, got {value!r}")
    return out


def _positive(name: str, value: Any, expected: str) -> float:
    return _number(f"budget: {name}", value, expected, low=0.0)


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"budget: {name} must be an integer ≥ 1, got {value!r}")
    return value
