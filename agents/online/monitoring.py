"""Monitoring of the online router: its counters in Prometheus' text exposition format (version 0.0.4)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _escape(value: str) -> str:
    """A label value escaped as the exposition format requires (backslash, double quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(name: str, help_text: str, kind: str, label: str, values: Mapping[str, int | float]) -> list[str]:
    """One metric family with one sample per label value, sorted by label value (floats written by repr)."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f'{name}{{{label}="{_escape(k)}"}} {v!r}' for k, v in sorted(values.items())]
    return lines


def prometheus_text(stats: Mapping[str, Any]) -> str:
    """The counters of :meth:`agents.online.OnlineRouter.stats` as Prometheus text (one line per sample)."""
    feedback = {source: stats["feedback"].get(source, 0) for source in ("client", "default")}
    lines = _family(
        "routing_env_decisions_total",
        "Routing decisions logged.",
        "counter",
        "model",
        stats["decisions_by_model"],
    )
    lines += _family(
        "routing_env_feedback_total",
        "Feedback received (source=client) or defaulted (source=default).",
        "counter",
        "source",
        feedback,
    )
    lines += [
        "# HELP routing_env_pending_decisions Decisions waiting for feedback.",
        "# TYPE routing_env_pending_decisions gauge",
        f"routing_env_pending_decisions {stats['pending']}",
        "# HELP routing_env_policy_updates_total Feedback this process received and applied to the policy.",
        "# TYPE routing_env_policy_updates_total counter",
        f"routing_env_policy_updates_total {stats['applied_updates']}",
        "# HELP routing_env_policy_replays_total Stored feedback re-applied on restore or resync.",
        "# TYPE routing_env_policy_replays_total counter",
        f"routing_env_policy_replays_total {stats['replayed_updates']}",
        "# HELP routing_env_open_cache_bytes Estimated memory of the open decisions kept for their feedback.",
        "# TYPE routing_env_open_cache_bytes gauge",
        f"routing_env_open_cache_bytes {stats['open_cache_bytes']}",
    ]
    # A gauge: rewards are negative when cost outweighs quality, and counters must only go up.
    lines += _family(
        "routing_env_reward_sum",
        "Sum of rewards by model (negative when cost outweighs quality).",
        "gauge",
        "model",
        stats["reward_sum_by_model"],
    )
    lines += _family(
        "routing_env_reward_count",
        "Rewards received by model.",
        "counter",
        "model",
        stats["feedback_by_model"],
    )
    budget = stats.get("budget")
    if budget is not None:  # a router with a BudgetPacer
        lines += [
            "# HELP routing_env_budget_cost_weight The cost weight the budget pacer routes with now.",
            "# TYPE routing_env_budget_cost_weight gauge",
            f"routing_env_budget_cost_weight {budget['cost_weight']!r}",
            "# HELP routing_env_budget_spend_usd USD spent over the paced outcomes.",
            "# TYPE routing_env_budget_spend_usd counter",
            f"routing_env_budget_spend_usd {budget['spend']!r}",
            "# HELP routing_env_budget_allowed_usd USD the budget allowed for those outcomes.",
            "# TYPE routing_env_budget_allowed_usd counter",
            f"routing_env_budget_allowed_usd {budget['allowed']!r}",
        ]
    version, kind = _escape(stats["policy_version"]), stats["policy_kind"]
    lines += [
        "# HELP routing_env_policy_info The policy version being served.",
        "# TYPE routing_env_policy_info gauge",
        f'routing_env_policy_info{{version="{version}",kind="{kind}"}} 1',
    ]
    return "\n".join(lines) + "\n"


def log_lines(applied: int, head: int) -> str:
    """The replica's applied log position, the log's head and the lag between them, as Prometheus gauges."""
    lines = []
    for name, help_text, value in (
        ("log_position", "The last log position this replica applied to its policy.", applied),
        ("log_head", "The last log position committed to the store.", head),
        ("log_lag", "Log entries committed but not yet applied by this replica.", head - applied),
    ):
        lines += [f"# HELP routing_env_{name} {help_text}", f"# TYPE routing_env_{name} gauge"]
        lines.append(f"routing_env_{name} {value}")
    return "\n".join(lines) + "\n"
