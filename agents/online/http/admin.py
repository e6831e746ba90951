"""Admin endpoints: ``POST /v1/policy`` (hot swap to a saved policy directory) and ``POST /v1/checkpoint``.

Admin endpoints need ``Authorization: Bearer <token>`` when the service has a token (:func:`admin_auth`, a
FastAPI dependency also used by ``GET /v1/export``).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException
from starlette.concurrency import run_in_threadpool

from agents.online.http.schemas import (
    ADMIN_ERRORS,
    CheckpointResponse,
    PolicySwapRequest,
    PolicySwapResponse,
)
from agents.online.http.service import TOKEN_ENV, Service
from routing_env.errors import ConfigurationError
from routing_env.policy import load_policy


def admin_auth(token: str | None) -> Callable[..., None]:
    """A dependency that refuses requests without ``Authorization: Bearer <token>`` (401); a no-op without a token."""

    def require_admin(authorization: Annotated[str | None, Header()] = None) -> None:
        if token is None:
            return
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
        tags=["admin"], responses=ADMIN_ERRORS, dependencies=[Depends(admin_auth(service.settings.api_token))]
    )
    router = service.router
    root = service.settings.policy_root

    @api.post("/v1/policy", response_model=PolicySwapResponse)
    async def swap(body: PolicySwapRequest) -> PolicySwapResponse:
        path = Path(body.path).resolve()
        if root is not None and not path.is_relative_to(root):
            raise ConfigurationError(f"path {body.path!r} is outside the policy root {str(root)!r}")
        if not path.is_dir():
            raise ConfigurationError(f"path {body.path!r} is not a saved policy directory on the server")
        # Reading the files may take a while: off the loop. The swap itself runs on the loop, like every router
        # call of the service.
        policy = await run_in_threadpool(load_policy, path)
        previous = router.version
        version = router.swap_policy(policy, body.version)
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
