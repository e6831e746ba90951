"""Records for the store tests: decisions and feedback with known contents, and writers to run as processes
(``python -m tests.agents.online.stores.records ack LOCATION N`` or ``… append LOCATION WORKER N``)."""

from __future__ import annotations

import sys
from typing import Literal

import numpy as np

from agents.online.stores.base import Decision, DecisionStore, Feedback

MODELS = ("small", "medium", "large")
D = 4
VERSION = "v1"


def decision(
    seq: int,
    *,
    request_id: str | None = None,
    kind: Literal["route", "cascade"] = "route",
    created_at: float | None = None,
    prefix: str = "d",
) -> Decision:
    """Decision ``seq`` of :data:`VERSION`: features and probabilities depend on ``seq``, so rows differ."""
    rng = np.random.default_rng(seq)
    probs = rng.dirichlet(np.ones(len(MODELS)))
    action = int(seq % len(MODELS))
    return Decision(
        decision_id=f"{prefix}{seq:06d}",
        seq=seq,
        request_id=request_id,
        created_at=1_700_000_000.0 + seq if created_at is None else created_at,
        policy_version=VERSION,
        kind=kind,
        model=MODELS[action],
        action=action,
        propensity=float(probs[action]),
        models=MODELS,
        probabilities=probs,
        features=rng.normal(size=D).astype(np.float32),
        prompt=f"question {seq} — ünïcødé 😀" if seq % 2 else None,
        allowed_models=MODELS[:2] if seq % 3 == 0 else None,
        cost_weight=0.25,
        max_calls=len(MODELS) if kind == "cascade" else 1,
    )


def feedback(
    d: Decision, seq: int, *, source: Literal["client", "default"] = "client", quality: float = 0.75
) -> Feedback:
    """Feedback for ``d`` expected at log position ``seq``."""
    return Feedback(
        seq=seq,
        decision_id=d.decision_id,
        received_at=d.created_at + 1.5,
        source=source,
        quality=quality,
        cost=1e-4 * (1 + d.seq % 5),
        latency_s=None if d.seq % 4 == 0 else 0.5 + d.seq / 100,
        reward=quality - 0.25 * 1e-4 * (1 + d.seq % 5),
        applied=True,
        policy_version=d.policy_version,
    )


def register(store: DecisionStore) -> None:
    """Record :data:`VERSION` (decisions need it)."""
    store.record_policy(VERSION, "tests.FixedPolicy", MODELS, D, 1_600_000_000.0)


def write_and_acknowledge(location: str, n: int) -> None:
    """Log ``n`` decisions with feedback, printing ``ack <seq>`` after each pair returned (then sleeping, to be
    killed)."""
    import time

    from agents.online import open_store

    store = open_store(location)
    register(store)
    for seq in range(1, n + 1):
        d = decision(seq)
        store.insert_decision(d)
        store.insert_feedback(feedback(d, seq))
        print(f"ack {seq}", flush=True)
    time.sleep(600)


def append_concurrently(location: str, worker: int, n: int) -> None:
    """Writer ``worker`` of a concurrency test: log ``n`` decisions, print ``ready``, wait for a line on stdin, then
    append their feedback at whatever position the store assigns (``seq=0``), printing
    ``<position> <monotonic start> <monotonic end>`` per append."""
    import time

    from agents.online import open_store

    store = open_store(location)
    mine = [decision(worker * 1_000_000 + j, prefix=f"w{worker}-") for j in range(1, n + 1)]
    for d in mine:
        store.insert_decision(d)
    print("ready", flush=True)
    sys.stdin.readline()
    lines = []
    for d in mine:
        t0 = time.monotonic()
        position = store.insert_feedback(feedback(d, 0))
        lines.append(f"{position} {t0!r} {time.monotonic()!r}")
    print("\n".join(lines), flush=True)
    store.close()


if __name__ == "__main__":
    if sys.argv[1] == "ack":
        write_and_acknowledge(sys.argv[2], int(sys.argv[3]))
    else:
        append_concurrently(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
