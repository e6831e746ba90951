"""Applying the store's log to a router's policy in log order: the mechanism every replica shares.

A router's policy state is a deterministic function of the log prefix it has applied: the checkpoint it started
from plus every feedback entry after it, applied in position order, own and other replicas' alike. Its position
(:attr:`~agents.online.OnlineRouter.log_position`) is the last entry applied.

- :func:`apply_stored` applies one stored feedback row the way a restore replays it (validated as live feedback
  is; a row that fails is skipped — the same way on every copy, since validation and the update depend only on
  the row and the policy's state, which every copy shares at that position).
- :func:`apply_log` applies the committed entries after the router's position (a replica catching up); a swap
  entry switches the policy there (:func:`~agents.online.swap.switch_at`), so every copy switches at the same
  position. :func:`replay` does the same for a router restored from a checkpoint.
- :class:`LogFollower` keeps a router caught up in the background: woken by the store's ``wait_for_log`` (``LISTEN``
  / ``NOTIFY`` on PostgreSQL), with the wait's timeout as a poll fallback. Route requests never wait for it beyond
  the router's lock for one page of entries.

A single-writer store (SQLite) never holds an entry its router did not write: the router applies its own feedback
right away at its position, and catching up finds nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from agents.online.errors import StoreError
from agents.online.stores.base import Decision, Feedback, LogEntry
from agents.online.swap import switch_at
from routing_env.errors import ConfigurationError

if TYPE_CHECKING:
    from agents.online.router import OnlineRouter

log = logging.getLogger("routing_env.serve")

#: Entries applied under one hold of the router's lock (requests wait at most for one page).
PAGE = 256


def multi_writer(router: OnlineRouter) -> bool:
    """Whether other processes may append to the router's store (its log must then be followed)."""
    return bool(getattr(router.store, "multi_writer", False))


def next_decision_seq(router: OnlineRouter) -> int:
    """The sequence number of the router's next decision: the store's, when several processes write to it."""
    if multi_writer(router):
        return int(router.store.next_decision_seq())  # type: ignore[attr-defined]
    return router._decision_seq + 1


def apply_stored(router: OnlineRouter, fb: Feedback, d: Decision) -> bool:
    """Apply the stored feedback ``fb`` of ``d`` to the router's policy (caller holds the router's lock).

    Returns whether the policy learned from it; a row the router's bounds or the policy refuse is skipped with a
    warning (live serving would have refused it) and ``False`` is returned.
    """
    if router.pacer is not None:
        router.pacer.observe(fb.cost, d.created_at)
    if not fb.applied:
        return False
    try:
        u = router._stored_update(fb, d)
        router._learn(u, d)
    except ConfigurationError as exc:
        log.warning("skipping stored feedback seq %d for %s: %s", fb.seq, d.decision_id, exc)
        return False
    router._since.append(u)
    return True


def apply_log(router: OnlineRouter, limit: int = PAGE) -> int:
    """Apply at most ``limit`` committed log entries after the router's position, in order; return how many.

    Raises:
        ConfigurationError: an entry of a kind this router does not know, or a gap in the log.
        StoreError: the store cannot be read (nothing of the page is applied), or the log swaps to a policy this
            router cannot serve (nothing from that entry on is applied).
    """
    with router._lock:
        entries = router.store.log_entries(router._feedback_seq, limit)
        for e in entries:
            if e.position != router._feedback_seq + 1:
                raise ConfigurationError(
                    f"the log of {router.store.location} jumps from position {router._feedback_seq} to {e.position}"
                )
            applied = _apply_entry(router, e)
            if applied is not None:
                _count(router, applied[0], applied[1])
        return len(entries)


def replay(router: OnlineRouter) -> list[int]:
    """Apply every committed entry after the position of a router freshly loaded there (a restore or a resync: no
    counters move); the positions of the feedback skipped because live serving would refuse it."""
    skipped: list[int] = []
    while True:
        entries = router.store.log_entries(router._feedback_seq, 1000)
        for e in entries:
            applied = _apply_entry(router, e)
            if applied is not None and not applied[2] and applied[0].applied:
                skipped.append(applied[0].seq)
        if len(entries) < 1000:
            return skipped


def _apply_entry(router: OnlineRouter, e: LogEntry) -> tuple[Feedback, Decision, bool] | None:
    """Apply entry ``e`` at the router's next position (caller holds the router's lock): a swap switches the policy
    (``None``); feedback is applied as a restore replays it (its row, its decision, whether the policy learned)."""
    if e.kind == "swap" and e.checkpoint is not None:
        switch_at(router, e.checkpoint)
        return None
    fb, d = e.feedback, e.decision
    if e.kind != "feedback" or fb is None or d is None:
        raise ConfigurationError(
            f"log position {e.position} holds a {e.kind!r} entry this router cannot apply"
        )
    learned = apply_stored(router, fb, d)
    if learned:
        router.n_replayed += 1
    router._feedback_seq = e.position
    return fb, d, learned


def catch_up(router: OnlineRouter) -> None:
    """Before the router appends its own feedback: hold the log's head where the store can (PostgreSQL, inside
    the request's group) and apply every committed entry up to it, so the append takes the next position."""
    hold = getattr(router.store, "hold_log_head", None)
    if hold is not None:
        hold()
    while apply_log(router) == PAGE:
        pass


def _count(router: OnlineRouter, fb: Feedback, d: Decision) -> None:
    """Update the monitoring counters for another replica's feedback."""
    routed_here = router._open.pop(d.decision_id) is not None  # routed here, closed there
    router._closed_recently[d.decision_id] = None
    router._counts.count_feedback(fb.source, d.model, fb.reward, closed_open=routed_here)


class LogFollower:
    """A daemon thread keeping ``router`` caught up with its store's log.

    Args:
        router: the router to keep caught up.
        poll_s: the longest wait for a wake-up before the head is read again (the fallback when a notification
            is missed), seconds > 0.
    """

    def __init__(self, router: OnlineRouter, poll_s: float = 1.0) -> None:
        if not (float(poll_s) > 0):
            raise ConfigurationError(f"poll_s must be > 0 seconds, got {poll_s!r}")
        self.router = router
        self.poll_s = float(poll_s)
        #: The log's head as last read, and why the last attempt failed (``None``: it did not).
        self.head = router._feedback_seq
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="routing-env-log", daemon=True)

    def start(self) -> LogFollower:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.head = max(
                    self.head, self.router.store.wait_for_log(self.router._feedback_seq, self.poll_s)
                )
                while not self._stop.is_set() and apply_log(self.router) == PAGE:
                    pass
                self.error = None
            except StoreError as exc:  # the database is down: retry once it answers again
                self.error = str(exc)
                self._stop.wait(min(self.poll_s, 0.5))
            except Exception as exc:  # a bug or an unknown entry: say so in health, keep trying
                self.error = f"applying the log failed: {exc}"
                log.exception("applying the log failed")
                self._stop.wait(self.poll_s)
            if self._stop.is_set():
                return
            time.sleep(0)  # let request threads take the router's lock between pages
