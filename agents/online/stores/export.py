"""The decision log in the canonical logged format, whatever store it was read from.

A store selects the routed decisions that have feedback (with SQL of its own) and hands them here with their
outcomes; :func:`traffic_dataset` checks them and builds the partial-information, bandit-logged
:class:`~routing_env.data.LoggedDataset` that ``export()`` returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from agents.online.stores.base import Decision, PolicyVersion
from routing_env.data import LoggedDataset
from routing_env.errors import ConfigurationError


def check_versions(versions: Sequence[str] | None, known: Mapping[str, PolicyVersion]) -> None:
    """Refuse ``versions`` that the store never served (``ConfigurationError`` naming them and the known ones)."""
    if versions is None:
        return
    unknown = [v for v in versions if v not in known]
    if unknown:
        raise ConfigurationError(f"versions {unknown} were never served; the store has {list(known)}")


def traffic_dataset(
    decisions: Sequence[Decision],
    outcomes: Sequence[tuple[float, float, float | None]],
    known: Mapping[str, PolicyVersion],
    *,
    models: Sequence[str] | None,
    include_default: bool,
    source: str,
) -> LoggedDataset:
    """The exported dataset: one query per decision, only the chosen model's cell observed.

    Args:
        decisions: the routed decisions with feedback, in decision order (non-empty).
        outcomes: per decision ``(quality, cost USD, latency_s or None)`` from its feedback.
        known: the store's policy versions (their model lists give the default column order).
        models: column order of the models; default the served versions' models in order of first use.
        include_default: whether default-reward feedback was included (recorded in ``meta``).
        source: the store's name for ``meta["source"]``.

    Raises:
        ConfigurationError: ``models`` lacks a logged model, or the decisions have different feature widths.
    """
    if models is None:
        order: list[str] = []
        for v in dict.fromkeys(d.policy_version for d in decisions):
            order.extend(m for m in known[v].models if m not in order)
        models = order
    names = tuple(str(m) for m in models)
    col = {m: j for j, m in enumerate(names)}
    missing = sorted({d.model for d in decisions} - set(col))
    if missing:
        raise ConfigurationError(f"models={list(names)} lacks the logged models {missing}")
    widths: dict[int, set[str]] = {}
    for d in decisions:
        widths.setdefault(d.features.shape[0], set()).add(d.policy_version)
    if len(widths) > 1:
        detail = ", ".join(f"width {w}: versions {sorted(v)}" for w, v in sorted(widths.items()))
        raise ConfigurationError(
            f"the decisions have different feature widths ({detail}); pass versions=[...] to export one"
        )
    n, k = len(decisions), len(names)
    quality = np.full((n, k), np.nan)
    cost = np.full((n, k), np.nan)
    latency = np.full((n, k), np.nan, dtype=np.float32)
    action = np.array([col[d.model] for d in decisions], dtype=np.int64)
    idx = np.arange(n)
    quality[idx, action] = [o[0] for o in outcomes]
    cost[idx, action] = [o[1] for o in outcomes]
    lat = np.array([np.nan if o[2] is None else o[2] for o in outcomes], dtype=np.float32)
    latency[idx, action] = lat
    prompts = [d.prompt for d in decisions]
    return LoggedDataset(
        models=names,
        query_ids=np.array([d.decision_id for d in decisions], dtype=object),
        quality=quality,
        cost=cost,
        features=np.stack([d.features for d in decisions]).astype(np.float32),
        latency=latency if np.isfinite(lat).any() else None,
        prompts=np.array(prompts, dtype=object) if any(p is not None for p in prompts) else None,
        logged_action=action,
        propensity=np.array([d.propensity for d in decisions], dtype=np.float64),
        meta={
            "source": source,
            "policy_versions": ",".join(dict.fromkeys(d.policy_version for d in decisions)),
            "default_rewards": "included" if include_default else "excluded",
        },
    )


def bandit_feedback(
    dataset: LoggedDataset, cost_weight: float, cost_scale: float | Literal["max_mean"]
) -> Any:
    """``dataset`` as a :class:`routing_env.ope.BanditFeedback` scoring ``quality − λ·cost/cost_scale``."""
    from routing_env.ope import BanditFeedback

    return BanditFeedback.from_dataset(dataset, cost_weight=cost_weight, cost_scale=cost_scale)
