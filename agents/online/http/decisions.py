"""Reading the log: ``GET /v1/decisions/{id}`` (one decision, its cascade steps, upstream calls and feedback)
and, for admins, ``GET /v1/export`` (the store in the canonical logged format: JSON lines, CSV or parquet)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from agents.online.http.admin import admin_auth
from agents.online.http.schemas import (
    ADMIN_ERRORS,
    ERRORS,
    CallView,
    DecisionView,
    FeedbackView,
    StepView,
    view,
)
from agents.online.http.service import Service
from agents.online.stores.base import Call, Decision, Feedback, Step

_MEDIA = {"jsonl": "application/x-ndjson", "csv": "text/csv", "parquet": "application/vnd.apache.parquet"}


def decision_view(
    d: Decision, steps: list[Step], fb: Feedback | None, calls: Sequence[Call] = ()
) -> DecisionView:
    """The logged decision ``d`` with its cascade ``steps``, its feedback and its upstream ``calls``, as the API
    shows it."""
    return view(
        DecisionView,
        d,
        probabilities={m: float(p) for m, p in zip(d.models, d.probabilities)},
        allowed_models=None if d.allowed_models is None else list(d.allowed_models),
        features=[float(v) for v in d.features],
        steps=[view(StepView, s) for s in steps],
        calls=[view(CallView, c) for c in calls],
        feedback=None if fb is None else view(FeedbackView, fb),
    )


def decision_routes(service: Service) -> APIRouter:
    """The decision lookup (tagged routing) and export (admin) endpoints of ``service``."""
    api = APIRouter()
    store = service.router.store

    @api.get("/v1/decisions/{decision_id}", response_model=DecisionView, responses=ERRORS, tags=["routing"])
    async def get_decision(decision_id: str) -> DecisionView:
        d = store.get_decision(decision_id)
        steps = store.steps(decision_id) if d.kind == "cascade" else []
        return decision_view(d, steps, store.get_feedback(decision_id), store.calls(decision_id))

    @api.get(
        "/v1/export",
        responses={**ADMIN_ERRORS, 200: {"content": {"application/x-ndjson": {}, "text/csv": {}}}},
        dependencies=[Depends(admin_auth(service.settings))],
        response_class=Response,
        tags=["admin"],
    )
    def export(
        format: Annotated[Literal["jsonl", "csv", "parquet"], Query()] = "jsonl",
        include_default: Annotated[bool, Query()] = False,
    ) -> Response:
        ds = store.export(include_default=include_default)
        with tempfile.TemporaryDirectory() as tmp:
            path = ds.save(Path(tmp) / f"decisions.{format}")
            content = path.read_bytes()
        return Response(
            content,
            media_type=_MEDIA[format],
            headers={"Content-Disposition": f'attachment; filename="decisions.{format}"'},
        )

    return api
