"""The HTTP service of an :class:`~agents.online.OnlineRouter` (FastAPI; ``pip install 'routing-env[serve]'``).

Endpoints (JSON unless noted), one FastAPI ``APIRouter`` per concern:

- routing (:mod:`~agents.online.http.routing`): ``POST /v1/route`` → a decision id, the model to call, its
  propensity and the full distribution; ``POST /v1/feedback`` → applies the outcome (404 unknown id, 409 second
  feedback or expired decision); ``POST /v1/decisions/{id}/observe`` → for cascades: ``accept`` or the next model;
- decisions (:mod:`~agents.online.http.decisions`): ``GET /v1/decisions/{id}`` → the logged decision, its cascade
  steps and feedback; ``GET /v1/export`` (admin) → the store in the canonical logged format;
- operations (:mod:`~agents.online.http.metrics`): ``GET /healthz`` (503 with the reason when the policy cannot
  route or the store cannot commit); ``GET /metrics`` (Prometheus text);
- admin (:mod:`~agents.online.http.admin`), behind ``Authorization: Bearer $ROUTING_ENV_API_TOKEN`` (closed,
  403, when the service has no token): ``POST /v1/policy`` (hot swap to a saved policy directory, checked and
  never unpickled; a swap that changes the request contract needs ``force``) and ``POST /v1/checkpoint``;
- rollout (:mod:`~agents.online.http.rollout`, admin): ``POST/GET /v1/shadows``, ``DELETE /v1/shadows/{name}``,
  ``GET /v1/shadows/{name}/report`` (shadow evaluation on live traffic), ``POST /v1/promote`` (the gate, then the
  swap) and ``GET /v1/promotions`` (the gate's history).

Bad input is a 4xx with a message naming the field, never a 500: pydantic validates shapes, ranges and finiteness
(NaN and ±inf are refused), the router checks the feature width and model names, and bodies above
``max_body_bytes`` get 413 before they are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from agents.online.follow import LogFollower, multi_writer
from agents.online.http.admin import admin_routes
from agents.online.http.canary import canary_loop, resume_canary
from agents.online.http.decisions import decision_routes
from agents.online.http.hotpath import with_hot_paths
from agents.online.http.metrics import metrics_routes
from agents.online.http.middleware import BodyLimit
from agents.online.http.ratelimit import RateLimit
from agents.online.http.responses import install_error_handlers
from agents.online.http.rollout import rollout_routes
from agents.online.http.routing import routing_routes
from agents.online.http.service import DEFAULT_MAX_BODY_BYTES, TOKEN_ENV, Service, ServiceSettings
from agents.online.router import OnlineRouter

__all__ = ["DEFAULT_MAX_BODY_BYTES", "TOKEN_ENV", "ServiceSettings", "build_app", "create_app"]

log = logging.getLogger("routing_env.serve")

# Decisions expired per event-loop turn, so that a backlog never stalls routing for long.
_EXPIRE_BATCH = 256


def create_app(router: OnlineRouter, **settings: Any) -> Any:
    """Build the ASGI app serving ``router`` (run it with one uvicorn worker: the router lives in-process).

    Route and feedback are answered by the lean hot path in front of the FastAPI app (same bodies, statuses and
    OpenAPI document as the FastAPI endpoints it stands for); with ``rate_limit_rps``, a per-client token bucket
    sits in front of both.

    Args:
        router: the :class:`OnlineRouter` to serve.
        settings: the fields of :class:`~agents.online.http.service.ServiceSettings`: ``api_token`` (default
            ``$ROUTING_ENV_API_TOKEN``; without one the admin endpoints answer 403), ``insecure_admin``,
            ``max_body_bytes``, ``expire_interval_s``, ``policy_root``, ``max_policy_bytes``, ``rate_limit_rps``,
            ``rate_limit_burst``.
    """
    resolved = ServiceSettings.resolve(**settings)
    app = build_app(router, resolved)
    served: Any = with_hot_paths(app, app.state.service)
    if resolved.rate_limit_rps is not None:
        served = RateLimit(served, resolved.rate_limit_rps, resolved.rate_limit_burst)
    return served


def build_app(router: OnlineRouter, settings: ServiceSettings) -> FastAPI:
    """The FastAPI app serving ``router`` with every endpoint as a FastAPI endpoint (no hot path).

    ``app.state.service`` is the :class:`~agents.online.http.service.Service` its routers share.
    """
    service = Service.create(router, settings)
    resume_canary(service)  # a canary no serving event ended serves on after a restart
    app = FastAPI(
        title="routing-env online router",
        version="1",
        description="Route LLM queries with a learned policy, log decisions with propensities, learn from feedback.",
        lifespan=_lifespan(service),
    )
    app.state.router = router
    app.state.service = service
    install_error_handlers(app)
    for routes in (routing_routes, decision_routes, metrics_routes, admin_routes, rollout_routes):
        app.include_router(routes(service))
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app


def _lifespan(service: Service) -> Any:
    """Start the expiry loop (when the router's decisions expire) and commit what is open at shutdown."""
    router = service.router
    interval = service.settings.expire_interval(router)

    async def expire_loop(every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                while len(router.expire(limit=_EXPIRE_BATCH)) == _EXPIRE_BATCH:
                    await asyncio.sleep(0)
            except Exception:  # keep serving; the next round retries
                log.exception("expiring decisions failed")

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Expiry runs on the event loop, like every other use of the router in the service: the group commit
        # holds the store's write lock between loop iterations, so a thread writing while it holds the router's
        # lock could deadlock with the loop.
        task = None if interval is None else asyncio.create_task(expire_loop(interval))
        canary = asyncio.create_task(canary_loop(service))
        if multi_writer(router):  # other replicas append to the log: apply their entries as they commit
            service.follower = LogFollower(router).start()
        try:
            yield
        finally:
            canary.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await canary
            if service.follower is not None:
                service.follower.stop()
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            service.committer.close()
            if service.shadows is not None:
                service.shadows.close()

    return lifespan
