"""The typed configuration of an :class:`~agents.online.OnlineRouter`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from routing_env.errors import ConfigurationError


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
    """

    cost_weight: float | None = None
    cost_scale: float | None = None
    checkpoint_every: int = 100
    feedback_timeout_s: float | None = None
    default_quality: float | None = None
    model_costs: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.cost_weight is not None and not (math.isfinite(self.cost_weight) and self.cost_weight >= 0):
            raise ConfigurationError(f"cost_weight must be a finite number ≥ 0, got {self.cost_weight!r}")
        if self.cost_scale is not None and not (math.isfinite(self.cost_scale) and self.cost_scale > 0):
            raise ConfigurationError(f"cost_scale must be a positive USD amount, got {self.cost_scale!r}")
        if int(self.checkpoint_every) < 1:
            raise ConfigurationError(f"checkpoint_every must be ≥ 1, got {self.checkpoint_every!r}")
        if self.feedback_timeout_s is not None and not (
            math.isfinite(self.feedback_timeout_s) and self.feedback_timeout_s > 0
        ):
            raise ConfigurationError(
                f"feedback_timeout_s must be a positive number of seconds or None, got {self.feedback_timeout_s!r}"
            )
        if self.default_quality is not None and not (0.0 <= self.default_quality <= 1.0):
            raise ConfigurationError(
                f"default_quality must lie in [0, 1] or be None, got {self.default_quality!r}"
            )
        for model, c in self.model_costs.items():
            if not (math.isfinite(c) and c >= 0):
                raise ConfigurationError(f"model_costs[{model!r}] must be a USD amount ≥ 0, got {c!r}")
        if int(self.seed) < 0:
            raise ConfigurationError(f"seed must be ≥ 0, got {self.seed!r}")
