"""Operations endpoints: ``GET /healthz`` and ``GET /metrics`` (Prometheus text exposition format 0.0.4)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from agents.online.http.schemas import Health
from agents.online.http.service import Service


def metrics_routes(service: Service) -> APIRouter:
    """The health and metrics endpoints of ``service``."""
    api = APIRouter(tags=["operations"])
    router = service.router

    @api.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        st = router.stats()
        return Health(
            status="ok",
            policy_version=st["policy_version"],
            kind=st["policy_kind"],
            decisions=st["decisions"],
            pending=st["pending"],
        )

    @api.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(router.prometheus(), media_type="text/plain; version=0.0.4")

    return api
