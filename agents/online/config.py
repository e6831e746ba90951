"""The typed configuration of an :class:`~agents.online.OnlineRouter`."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from routing_env.errors import ConfigurationError

StorePrompts = Literal["featurized", "always", "never"]

#: The default cost bound is this many times the dearest model's mean cost per call.
COST_BOUND_FACTOR = 100.0


@dataclass(frozen=True)
class RouterConfig:
    """Hyperparameters of an :class:`OnlineRouter` (validated on construction).

    Attributes:
        cost_weight: λ of the reward ``quality − λ·cost/cost_scale``; ``None`` = the policy's own ``cost_weight``
            attribute when it has one, else 0.
        cost_scale: USD per unit of λ (e.g. the mean cost of the most expensive model per call); ``None`` = the
            policy's fitted ``cost_scale_`` when it has one, else 1.0.
        checkpoint_every: save the policy after this many applied updates (≥ 1).
        feedback_timeout_s: seconds after which an open decision expires (``None`` = wait forever).
        default_quality: quality in [0, 1] applied to expired decisions, or ``None`` to learn nothing from them.
        model_costs: USD per call of each model, used when feedback omits ``cost`` (else 0).
        seed: root seed of the per-decision sampling RNGs.
        max_cost: largest USD cost accepted per model call (feedback of a cascade may report up to this times its
            calls); ``None`` = :data:`COST_BOUND_FACTOR` × the dearest model's mean cost per call, taken from
            ``model_costs``, else the policy's ``mean_cost_``, else its cost scale (which ``fit`` sets to that
            mean; 1 USD for a policy that knows no prices, so 100 USD).
        max_latency_s: largest latency accepted in feedback (seconds).
        max_cost_weight: largest λ a request may ask for.
        store_prompts: which prompts the store keeps: ``"featurized"`` (default: those the router computed the
            features from, which export needs), ``"always"`` (also prompts sent beside features) or ``"never"``.
        max_stored_prompt_chars: a stored prompt keeps at most this many characters; the decision records the
            full length (``prompt_chars``), so a prefix is never mistaken for the whole prompt.
        open_cache_bytes: memory budget (bytes, estimated) of the open decisions kept for their feedback; the
            oldest beyond it are read back from the store when their feedback arrives.
    """

    cost_weight: float | None = None
    cost_scale: float | None = None
    checkpoint_every: int = 100
    feedback_timeout_s: float | None = None
    default_quality: float | None = None
    model_costs: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0
    max_cost: float | None = None
    max_latency_s: float = 3600.0
    max_cost_weight: float = 1000.0
    store_prompts: StorePrompts = "featurized"
    max_stored_prompt_chars: int = 4096
    open_cache_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        # Plain Python numbers and a private copy of the price table, whatever the caller passed.
        set_ = object.__setattr__
        for name in ("cost_weight", "cost_scale", "feedback_timeout_s", "default_quality", "max_cost"):
            value = getattr(self, name)
            if value is not None:
                set_(self, name, _number(name, value))
        for name in ("max_latency_s", "max_cost_weight"):
            set_(self, name, _number(name, getattr(self, name)))
        for name in ("checkpoint_every", "seed", "max_stored_prompt_chars", "open_cache_bytes"):
            set_(self, name, _integer(name, getattr(self, name)))
        set_(
            self,
            "model_costs",
            {str(k): _number(f"model_costs[{k!r}]", v) for k, v in self.model_costs.items()},
        )
        if self.cost_weight is not None and not (math.isfinite(self.cost_weight) and self.cost_weight >= 0):
            raise ConfigurationError(f"cost_weight must be a finite number ≥ 0, got {self.cost_weight!r}")
        for name in ("cost_scale", "feedback_timeout_s", "max_cost", "max_latency_s", "max_cost_weight"):
            check_positive(name, getattr(self, name))
        if int(self.checkpoint_every) < 1:
            raise ConfigurationError(f"checkpoint_every must be ≥ 1, got {self.checkpoint_every!r}")
        if self.default_quality is not None and not (0.0 <= self.default_quality <= 1.0):
            raise ConfigurationError(
                f"default_quality must lie in [0, 1] or be None, got {self.default_quality!r}"
            )
        for model, c in self.model_costs.items():
            if not (math.isfinite(c) and c >= 0):
                raise ConfigurationError(f"model_costs[{model!r}] must be a USD amount ≥ 0, got {c!r}")
        if int(self.seed) < 0:
            raise ConfigurationError(f"seed must be ≥ 0, got {self.seed!r}")
        if self.store_prompts not in ("featurized", "always", "never"):
            raise ConfigurationError(
                f"store_prompts must be 'featurized', 'always' or 'never', got {self.store_prompts!r}"
            )
        if int(self.max_stored_prompt_chars) < 0:
            raise ConfigurationError(
                f"max_stored_prompt_chars must be ≥ 0, got {self.max_stored_prompt_chars!r}"
            )
        if int(self.open_cache_bytes) < 0:
            raise ConfigurationError(f"open_cache_bytes must be ≥ 0, got {self.open_cache_bytes!r}")

    def stored_prompt(self, prompt: str | None, *, featurized: bool) -> str | None:
        """What the store keeps of ``prompt`` (``featurized``: the features were computed from it)."""
        keep = self.store_prompts
        if prompt is None or keep == "never" or (keep == "featurized" and not featurized):
            return None
        return prompt[: self.max_stored_prompt_chars]


def check_positive(name: str, value: float | None) -> None:
    """Refuse (``ConfigurationError``) a ``value`` that is neither ``None`` nor a finite number > 0."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ConfigurationError(
            f"{name} must be a finite number > 0 (or None where optional), got {value!r}"
        )


def _number(name: str, value: object) -> float:
    if isinstance(value, bool):
        raise ConfigurationError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be a number, got {value!r}") from None


def _integer(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or float(value) != int(float(value)):
        raise ConfigurationError(f"{name} must be an integer, got {value!r}")
    return int(float(value))
