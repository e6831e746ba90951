"""The canary's life in the service: start, resume, share with other replicas, evaluate and end (and the
shadows' registry, which replicas share the same way).

- :func:`start_canary` attaches a :class:`~agents.online.rollout.live.LiveCanary` to the router and logs its
  ``canary_start`` event with what resumes it (:meth:`~agents.online.rollout.live.LiveCanary.detail`);
- :func:`resume_canary` joins the canary that the store's serving events say is running: at start-up (a restart
  resumes it, same version and split) and, through :func:`canary_loop`, when another replica on the store started
  one; a canary another replica ended is left the same way (a promotion reaches every replica as a swap in the log);
- :func:`canary_loop` (the service's lifespan) runs the sequential test every ``interval_s`` and ends the canary
  when it decides: promoted (hot swap, a log entry), rolled back or expired, each a serving event; on a store other
  replicas write, every :data:`SYNC_S` it follows the serving mix and the shadow registry
  (:meth:`~agents.online.rollout.shadows.Shadows.sync`).

A replica acts on its test's decision only while the serving events still say the canary runs, so one replica ends
it; two deciding within the same second may both end it (two end events; on a promotion two swap entries of the
same candidate, which every replica applies in log order, so they still agree).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from agents.online.follow import multi_writer
from agents.online.http.service import Service
from agents.online.rollout import CanaryConfig, CanaryDecision
from agents.online.rollout.live import LiveCanary, active_canary, resumed_canary
from routing_env.errors import ConfigurationError

log = logging.getLogger("routing_env.serve")

#: How often (s) the service reads the store's serving events to follow a mix other replicas changed.
SYNC_S = 1.0


def start_canary(
    service: Service,
    candidate: str,
    config: CanaryConfig,
    interval_s: float = 1.0,
    *,
    at_startup: bool = False,
) -> LiveCanary:
    """Start a canary of ``candidate`` on ``service``'s router and log the event (from a worker thread or before
    the server starts).

    ``at_startup`` (the canary of ``serve --canary`` or a gateway config): a canary resumed from the store with
    the same candidate and settings is kept; another one is stopped (a ``canary_stop`` event) and replaced.

    Raises:
        ConfigurationError: the store keeps no distributions, a canary already serves (not at start-up), or the
            candidate cannot be a canary of this router.
    """
    if service.shadows is None:
        raise ConfigurationError("a canary needs a decision store that keeps its distributions (a SQL store)")
    router = service.router
    running: LiveCanary | None = router.canary
    if at_startup and running is not None:
        if Path(running.candidate).resolve() == Path(candidate).resolve() and running.config == config:
            return running  # the same canary, resumed from the store
        leave_canary(service)
        running.event("canary_stop", f"replaced at start-up by {candidate}", router.version, 0.0)
    canary = LiveCanary(router, candidate, config, service.shadows, interval_s=interval_s)
    _attach(service, canary)
    canary.event(
        "canary_start",
        f"{canary.candidate} serves {canary.split:.1%} of traffic",
        router.version,
        canary.split,
        canary.detail(),
    )
    return canary


def resume_canary(service: Service, tried: set[int] | None = None) -> LiveCanary | None:
    """Join the canary the store's serving events say is running, if this router serves none (store reads: off
    the event loop). A canary that cannot be resumed here is logged once (its event id goes into ``tried``) and
    left to the replicas that can; no event is written for it."""
    router = service.router
    if service.shadows is None or router.canary is not None:
        return None
    start = active_canary(service.shadows.store.serving_events())
    if start is None or (tried is not None and start.id in tried):
        return None
    if tried is not None:
        if start.live_version != router.version:
            return (
                None  # compared with a version this replica has not reached (or left): look again next time
            )
        tried.add(start.id)
    try:
        canary = resumed_canary(router, service.shadows, start)
    except ConfigurationError as exc:
        log.warning("not resuming canary %s (serving event %d): %s", start.candidate_version, start.id, exc)
        return None
    with router._lock:  # off the event loop: not between a route's look at the canary and its use of it
        if router.canary is not None:  # started meanwhile
            return None
        _attach(service, canary)
    log.info(
        "resumed canary %s: %s serves %.1f%% of traffic", canary.version, canary.candidate, 100 * canary.split
    )
    return canary


def leave_canary(service: Service) -> LiveCanary | None:
    """Take the canary out of serving without acting on it (serving returns to the live policy); the canary."""
    router = service.router
    canary: LiveCanary | None = router.canary
    if canary is None:
        return None
    router.canary = None
    if canary.on_decision in router.decision_hooks:
        router.decision_hooks.remove(canary.on_decision)
    return canary


def end_canary(service: Service, decision: CanaryDecision) -> LiveCanary | None:
    """Take the canary out of serving (on the event loop): promoted, its policy is swapped in; otherwise serving
    returns to the live policy. The event is logged by :func:`log_end` (store work, off the loop)."""
    canary = leave_canary(service)
    if canary is not None and decision is CanaryDecision.PROMOTE:
        service.router.swap_policy(canary.policy)
    return canary


def log_end(service: Service, canary: LiveCanary, decision: CanaryDecision, message: str) -> None:
    kind = {CanaryDecision.CONTINUE: "canary_stop"}.get(decision, f"canary_{decision.value}")
    canary.event(kind, message, service.router.version, 0.0)


def _attach(service: Service, canary: LiveCanary) -> None:
    service.router.decision_hooks.append(canary.on_decision)
    service.router.canary = canary


def _still_active(service: Service, canary: LiveCanary) -> bool:
    """Whether the store's serving events still say ``canary`` serves (no replica ended it)."""
    assert service.shadows is not None
    start = active_canary(service.shadows.store.serving_events())
    return start is not None and start.candidate_version == canary.version


async def canary_loop(service: Service, every: float = 0.25) -> None:
    """Run the canary's sequential test every ``interval_s``, acting on its decision, and, on a store other
    replicas write, follow its serving mix and shadow registry every :data:`SYNC_S` (the service's lifespan)."""
    last = last_sync = 0.0
    tried: set[int] = set()
    follows = multi_writer(service.router)
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(every)
        try:
            # Only other replicas change the mix behind this one's back (a restart resumes it at start-up).
            if service.shadows is not None and follows and loop.time() - last_sync >= SYNC_S:
                last_sync = loop.time()
                await _sync(service, tried)
            canary: LiveCanary | None = service.router.canary
            if canary is None or loop.time() - last < canary.interval_s:
                continue
            last = loop.time()
            await _evaluate(service, canary)
        except Exception:  # keep serving; the next round retries
            log.exception("evaluating the canary failed")


async def _sync(service: Service, tried: set[int]) -> None:
    """Score the shadows other replicas registered (and stop those they removed); leave a canary another replica
    ended; join one another replica started (or a restart left running)."""
    assert service.shadows is not None
    await run_in_threadpool(service.shadows.sync)
    canary: LiveCanary | None = service.router.canary
    if canary is not None:
        ended = not await run_in_threadpool(_still_active, service, canary)
        if ended and service.router.canary is canary:
            leave_canary(service)
            log.info("canary %s ended elsewhere: serving the live policy alone", canary.version)
        return
    await run_in_threadpool(resume_canary, service, tried)


async def _evaluate(service: Service, canary: LiveCanary) -> None:
    if canary.live_version != service.router.version:  # swapped meanwhile: the comparison is void
        still_active = await run_in_threadpool(_still_active, service, canary)
        if end_canary(service, CanaryDecision.CONTINUE) is not None and still_active:
            message = f"stopped: the live policy was swapped from {canary.live_version} to another version"
            await run_in_threadpool(log_end, service, canary, CanaryDecision.CONTINUE, message)
        return
    decision = await run_in_threadpool(canary.evaluate)
    if decision is CanaryDecision.CONTINUE:
        return
    if not await run_in_threadpool(_still_active, service, canary):  # another replica decided first
        leave_canary(service)
        return
    result = canary.state.result
    message = result.message if result is not None else decision.value
    if end_canary(service, decision) is not None:
        await run_in_threadpool(log_end, service, canary, decision, message)
