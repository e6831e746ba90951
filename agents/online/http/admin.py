"""Admin endpoints: ``POST /v1/policy`` (hot swap to a saved policy directory: an entry of the store's log, so every
replica on a PostgreSQL store switches at its position) and ``POST /v1/checkpoint``.

Admin endpoints need ``Authorization: Bearer <token>`` (:func:`admin_auth`, a FastAPI dependency also used by
``GET /v1/export``). Without a token they are closed (403), unless the service was started with
``insecure_admin``, which opens them to loopback clients only.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from agents.online.http.policy_files import policy_dir
from agents.online.http.schemas import (
    ADMIN_ERRORS,
    CheckpointResponse,
    PolicySwapRequest,
    PolicySwapResponse,
)
from agents.online.http.service import TOKEN_ENV, Service, ServiceSettings
from routing_env.policy import load_policy

CLOSED = (
    f"the admin endpoints are closed: start the server with ${TOKEN_ENV} set to a secret token and send "
    "'Authorization: Bearer <token>' (or start it with --insecure-admin to open them to loopback clients only)"
)


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a client or bind address) is a loopback address (``localhost`` included)."""
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def admin_auth(settings: ServiceSettings) -> Callable[..., None]:
    """A dependency that refuses requests without ``Authorization: Bearer <token>`` (401), and every request
    when the service has no token (403) — except loopback clients with ``insecure_admin``."""
    token = settings.api_token

    def require_admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
        if token is None:
            client = request.client.host if request.client is not None else None
            if settings.insecure_admin and is_loopback(client):
                return
            raise HTTPException(status_code=403, detail=CLOSED)
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise HTTPException(
                status_code=401,
                detail=f"this endpoint needs 'Authorization: Bearer <token>' matching ${TOKEN_ENV}",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_admin


def admin_routes(service: Service) -> APIRouter:
    """The policy swap and checkpoint endpoints of ``service``."""
    api = APIRouter(
        tags=["admin"], responses=ADMIN_ERRORS, dependencies=[Depends(admin_auth(service.settings))]
    )
    router = service.router
    settings = service.settings

    @api.post("/v1/policy", response_model=PolicySwapResponse)
    async def swap(body: PolicySwapRequest) -> PolicySwapResponse:
        # Checking and reading the files may take a while: off the loop. The swap itself runs on the loop, like
        # every router call of the service.
        path = await run_in_threadpool(policy_dir, body.path, settings.policy_root, settings.max_policy_bytes)
        policy = await run_in_threadpool(load_policy, path)
        previous = router.version
        version = router.swap_policy(policy, body.version, force=body.force)
        return PolicySwapResponse(
            version=version, previous_version=previous, kind=router.kind, models=list(router.models)
        )

    @api.post("/v1/checkpoint", response_model=CheckpointResponse)
    async def checkpoint() -> CheckpointResponse:
        ckpt = router.checkpoint()
        return CheckpointResponse(
            path=ckpt.path, policy_version=ckpt.policy_version, last_feedback_seq=ckpt.last_feedback_seq
        )

    return api
