"""Operations endpoints: ``GET /healthz`` (503 with the reason when the service cannot serve) and ``GET /metrics``
(Prometheus text exposition format 0.0.4)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from agents.online.http.responses import CompactJSONResponse
from agents.online.http.schemas import Health
from agents.online.http.service import Service
from agents.online.monitoring import log_lines


def metrics_routes(service: Service) -> APIRouter:
    """The health and metrics endpoints of ``service``."""
    api = APIRouter(tags=["operations"])
    router = service.router

    @api.get(
        "/healthz", response_model=Health, responses={503: {"model": Health, "description": "unhealthy"}}
    )
    async def healthz() -> CompactJSONResponse:
        st = router.stats()
        reason = service.health()
        applied, head = service.log_state()
        health = Health(
            status="ok" if reason is None else "unhealthy",
            reason=reason,
            policy_version=st["policy_version"],
            kind=st["policy_kind"],
            decisions=st["decisions"],
            pending=st["pending"],
            log_position=applied,
            log_lag=head - applied,
        )
        return CompactJSONResponse(health.model_dump(), status_code=200 if reason is None else 503)

    @api.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        text = router.prometheus() + log_lines(*service.log_state())
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    return api
