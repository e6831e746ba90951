"""The promotion gate as a product step: run it on a store's log, swap when it passes, and keep the decision.

:func:`promote` runs :func:`~agents.online.rollout.gate.gate_from_store` on the store's logged traffic, swaps the
serving policy when the gate passes (through the callable it is given: a running router's hot swap, or
:func:`swap_in_store` when no server holds the store) and appends the decision, its evidence, the command and the
version promoted to to the store's gate history (:class:`~agents.online.stores.rollout.GateRecord`), whether it
promoted or refused. ``routing-env promote`` and ``POST /v1/promote`` are thin layers over it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from agents.online.rollout.gate import GateConfig, GateResult, gate_from_store
from agents.online.stores.rollout import GateRecord, RolloutStore
from routing_env.errors import ConfigurationError
from routing_env.policy import Policy, load_policy


@dataclass(frozen=True)
class Promotion:
    """What :func:`promote` decided: the gate's result and the history record it wrote (``record.version`` is
    the version now serving the candidate, ``None`` when refused)."""

    result: GateResult
    record: GateRecord


def promote(
    store: RolloutStore,
    candidate: str | Path,
    swap: Callable[[Policy], str],
    *,
    command: str,
    min_decisions: int,
    margin: float,
    confidence: float,
    cost_weight: float,
    cost_scale: float | Literal["max_mean"] = "max_mean",
    config: GateConfig | None = None,
) -> Promotion:
    """Gate ``candidate`` (a saved policy directory) on ``store``'s log; when it passes, ``swap(policy)`` makes it
    serve and returns its version. The decision is recorded either way.

    Args:
        store: the decision store (SQL: it keeps the gate history).
        candidate: the candidate's saved directory (never unpickled).
        swap: serves the candidate and returns the new version id (called only when the gate passes).
        command: the command line (or endpoint) recorded with the decision.
        min_decisions, margin, confidence: the gate's settings (:class:`GateConfig`).
        cost_weight: λ of the reward the gate scores (the live router's).
        cost_scale: USD per unit of λ (the live router's), or ``"max_mean"``.
        config: the gate's other settings.

    Raises:
        ConfigurationError: the candidate cannot be loaded or evaluated on this log. A swap that fails is recorded
            as refused (with its error) and re-raised.
    """
    policy = load_policy(candidate)
    cfg = replace(config or GateConfig(), cost_weight=float(cost_weight))
    result = gate_from_store(
        store,
        policy,
        min_decisions=min_decisions,
        margin=margin,
        confidence=confidence,
        config=cfg,
        cost_scale=cost_scale,
    )
    record = GateRecord(
        id=0,
        created_at=time.time(),
        candidate=str(candidate),
        command=command,
        promote=result.promote,
        reason=result.reason.value,
        message=result.message,
        evidence=json.dumps(result.to_dict(), allow_nan=False),
    )
    if result.promote:
        try:
            record = replace(record, version=swap(policy))
        except Exception as exc:
            store.record_gate(
                replace(record, promote=False, message=f"{result.message}; the swap failed: {exc}")
            )
            raise
    return Promotion(result, store.record_gate(record))


def swap_in_store(store: RolloutStore, policy: Policy) -> str:
    """Make ``policy`` the store's serving policy with no server running on it: restore the live router from the
    store (its checkpoint plus the feedback after it), hot swap (the request contract is checked as by
    ``POST /v1/policy``), and checkpoint, so the next ``routing-env serve`` on the store serves it."""
    from agents.online.router import OnlineRouter

    if store.latest_checkpoint() is None:
        raise ConfigurationError(f"the store {store.location} has no live policy to replace (no checkpoint)")
    router = OnlineRouter.restore(store)
    return router.swap_policy(policy)


def history_lines(records: list[GateRecord]) -> list[str]:
    """One line per gate decision, oldest first: id, UTC time, verdict, version, candidate, then the message
    and the command indented below."""
    lines = []
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.created_at))
        verdict = f"promoted to {r.version}" if r.promote else f"refused ({r.reason})"
        lines += [
            f"#{r.id} {when} UTC  {verdict}  candidate {r.candidate}",
            f"    {r.message}",
            f"    $ {r.command}",
        ]
    return lines
