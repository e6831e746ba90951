"""``POST /v1/route``, ``POST /v1/feedback`` and ``POST /v1/decisions/{id}/observe``: the routing loop over HTTP.

Plain FastAPI endpoints: the body is validated by its pydantic model, the router call runs on the event loop
inside the group commit, and the answer is sent only after the call's writes are committed. In the service built
by :func:`agents.online.http.app.create_app`, route and feedback are answered in front of FastAPI by the lean hot
path (:mod:`agents.online.http.hotpath`) with the same bodies and statuses; these endpoints serve them wherever the
routers are mounted without it, and document them in OpenAPI.
"""

from __future__ import annotations

from fastapi import APIRouter

from agents.online.http.responses import CompactJSONResponse
from agents.online.http.schemas import (
    ERRORS,
    FeedbackRequest,
    FeedbackResponse,
    ObserveRequest,
    ObserveResponse,
    RouteRequest,
    RouteResponse,
    view,
)
from agents.online.http.service import Service
from agents.online.router import OnlineRouter
from agents.online.stores.base import Decision, Feedback


def route_response(d: Decision) -> RouteResponse:
    """The answer to a route request."""
    return view(RouteResponse, d, probabilities=dict(zip(d.models, d.probabilities.tolist())))


def call_route(router: OnlineRouter, body: RouteRequest) -> Decision:
    """The router call of a route request."""
    return router.route(
        body.features,
        prompt=body.prompt,
        request_id=body.request_id,
        allowed_models=body.allowed_models,
        cost_weight=body.cost_weight,
    )


def call_feedback(router: OnlineRouter, body: FeedbackRequest) -> Feedback:
    """The router call of a feedback request."""
    return router.feedback(body.decision_id, body.quality, cost=body.cost, latency_s=body.latency_s)


def routing_routes(service: Service) -> APIRouter:
    """The routing endpoints of ``service``."""
    api = APIRouter(tags=["routing"])
    router = service.router
    committer = service.committer

    @api.post("/v1/route", response_model=RouteResponse, responses=ERRORS, response_class=CompactJSONResponse)
    async def route(body: RouteRequest) -> RouteResponse:
        return route_response(await committer.run(lambda: call_route(router, body)))

    @api.post(
        "/v1/feedback",
        response_model=FeedbackResponse,
        responses=ERRORS,
        response_class=CompactJSONResponse,
    )
    async def feedback(body: FeedbackRequest) -> FeedbackResponse:
        return view(FeedbackResponse, await committer.run(lambda: call_feedback(router, body)))

    @api.post("/v1/decisions/{decision_id}/observe", response_model=ObserveResponse, responses=ERRORS)
    async def observe(decision_id: str, body: ObserveRequest) -> ObserveResponse:
        return view(ObserveResponse, router.observe(decision_id, body.signal, cost=body.cost))

    return api
