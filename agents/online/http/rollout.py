"""Rollout endpoints (admin): shadows scored on live traffic, their reports, and the promotion gate.

- ``POST /v1/shadows`` ``{"name", "path"}`` → 201, the shadow registered (409 when the name is taken);
  ``GET /v1/shadows`` → every shadow with its status (``active`` or ``failed`` with the error);
  ``DELETE /v1/shadows/{name}`` → unregistered (404 unknown);
- ``GET /v1/shadows/{name}/report?confidence=0.95&min_decisions=1000&margin=0`` → the shadow's off-policy table
  against the live policy (:func:`~agents.online.rollout.shadows.shadow_report`);
- ``POST /v1/promote`` ``{"candidate", "min_decisions", "margin", "confidence", "version", "force"}`` → the gate on
  the store's log; when it passes the candidate is hot-swapped in at once; the decision is recorded either way
  (``GET /v1/promotions`` lists them). A refusal is a 200 with ``"promoted": false``: the request was served;
- ``POST /v1/canary`` ``{"candidate", "split", "margin", "confidence", "min_decisions", "plan_decisions",
  "max_decisions", "interval_s"}`` → 201, a canary serving ``split`` of the traffic
  (:mod:`agents.online.rollout.live`), promoted or rolled back by itself; ``GET /v1/canary`` → its state and
  evidence; ``DELETE /v1/canary`` → stopped (serving returns to the live policy); ``GET /v1/serving-events`` →
  every change of the serving mix, numbered.

Store work (exports, reward-model fits, writes) runs in a worker thread so the event loop keeps committing the
request path's group transactions meanwhile; the swap itself runs on the loop like every router call.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

import anyio.from_thread
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from agents.online.http.admin import admin_auth
from agents.online.http.canary import end_canary, log_end, start_canary
from agents.online.http.policy_files import policy_dir
from agents.online.http.schemas import ADMIN_ERRORS
from agents.online.http.service import Service
from agents.online.rollout import CanaryConfig, CanaryDecision, GateConfig
from agents.online.rollout.live import LiveCanary, status_view
from agents.online.rollout.promotion import promote
from agents.online.rollout.shadows import Shadows, shadow_report
from agents.online.stores.rollout import GateRecord, ShadowRecord
from routing_env.policy import Policy

log = logging.getLogger("routing_env.serve")

_PATH = Field(min_length=1, max_length=4096, pattern=r"^[^\x00]*$", description="a saved policy directory")


class ShadowRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[^/\x00]+$")
    path: str = _PATH


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    candidate: str = _PATH
    min_decisions: int = Field(1000, ge=2)
    margin: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    confidence: float = Field(0.95, ge=0.5, lt=1.0)
    version: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    force: bool = False


class CanaryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    candidate: str = _PATH
    split: float = Field(0.1, gt=0.0, lt=1.0)
    margin: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    confidence: float = Field(0.95, ge=0.5, lt=1.0)
    min_decisions: int = Field(1000, ge=2)
    plan_decisions: int = Field(10_000, ge=1)
    max_decisions: int | None = Field(None, ge=2)
    min_rollback_decisions: int = Field(100, ge=2)
    interval_s: float = Field(1.0, gt=0.0, le=3600.0)

    def config(self) -> CanaryConfig:
        gate = GateConfig(
            method="sequence", estimator="IPS", min_decisions=self.min_decisions, margin=self.margin,
            confidence=self.confidence, plan_decisions=self.plan_decisions,
        )  # fmt: skip
        return CanaryConfig(
            split=self.split, gate=gate, max_decisions=self.max_decisions,
            min_rollback_decisions=self.min_rollback_decisions,
        )  # fmt: skip


def shadow_view(r: ShadowRecord) -> dict[str, Any]:
    return {
        "name": r.name,
        "path": r.path,
        "models": list(r.models),
        "registered_at": r.registered_at,
        "status": r.status,
        "error": r.error,
    }


def gate_view(r: GateRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "created_at": r.created_at,
        "candidate": r.candidate,
        "command": r.command,
        "promoted": r.promote,
        "reason": r.reason,
        "message": r.message,
        "version": r.version,
        "evidence": json.loads(r.evidence),
    }


def rollout_routes(service: Service) -> APIRouter:
    """The shadow and promotion endpoints of ``service``."""
    api = APIRouter(
        tags=["rollout"], responses=ADMIN_ERRORS, dependencies=[Depends(admin_auth(service.settings))]
    )
    router = service.router
    settings = service.settings

    def shadows() -> Shadows:
        if service.shadows is None:
            raise HTTPException(
                status_code=409, detail="this service's decision store keeps no shadows (use a SQL store)"
            )
        return service.shadows

    def checked(path: str) -> str:
        return str(policy_dir(path, settings.policy_root, settings.max_policy_bytes))

    @api.post("/v1/shadows", status_code=201)
    async def add_shadow(body: ShadowRequest) -> dict[str, Any]:
        registry = shadows()
        path = await run_in_threadpool(checked, body.path)
        return shadow_view(await run_in_threadpool(registry.register, body.name, path))

    @api.get("/v1/shadows")
    async def list_shadows() -> dict[str, Any]:
        records = await run_in_threadpool(shadows().records)
        return {"shadows": [shadow_view(r) for r in records]}

    @api.delete("/v1/shadows/{name}")
    async def remove_shadow(name: str) -> dict[str, Any]:
        await run_in_threadpool(shadows().remove, name)
        return {"removed": name}

    @api.get("/v1/shadows/{name}/report")
    async def report(
        name: str,
        confidence: Annotated[float, Query(ge=0.5, lt=1.0)] = 0.95,
        min_decisions: Annotated[int, Query(ge=2)] = 1000,
        margin: Annotated[float, Query(ge=0.0, allow_inf_nan=False)] = 0.0,
    ) -> JSONResponse:
        result = await run_in_threadpool(
            shadow_report, shadows(), name, confidence=confidence, min_decisions=min_decisions, margin=margin
        )
        return JSONResponse(result.to_dict())

    @api.post("/v1/promote")
    async def promote_candidate(body: PromoteRequest) -> dict[str, Any]:
        store = shadows().store
        path = await run_in_threadpool(checked, body.candidate)

        def swap(policy: Policy) -> str:
            # From the worker thread: the swap runs on the event loop, like every router call of the service.
            return anyio.from_thread.run_sync(
                lambda: router.swap_policy(policy, body.version, force=body.force)
            )

        previous = router.version
        done = await run_in_threadpool(
            lambda: promote(
                store,
                path,
                swap,
                command="POST /v1/promote " + body.model_dump_json(),
                min_decisions=body.min_decisions,
                margin=body.margin,
                confidence=body.confidence,
                cost_weight=router.cost_weight,
                cost_scale=router.served.cost_scale,
            )
        )
        return {
            "promoted": done.result.promote,
            "version": done.record.version,
            "previous_version": previous,
            "message": done.result.message,
            "decision": gate_view(done.record),
        }

    @api.post("/v1/canary", status_code=201)
    async def canary_start(body: CanaryRequest) -> dict[str, Any]:
        path = await run_in_threadpool(checked, body.candidate)
        canary = await run_in_threadpool(start_canary, service, path, body.config(), body.interval_s)
        return status_view(canary.status())

    @api.get("/v1/canary")
    async def canary_state() -> dict[str, Any]:
        canary: LiveCanary | None = router.canary
        if canary is None:
            raise HTTPException(
                status_code=404, detail="no canary is serving (start one with POST /v1/canary)"
            )
        return status_view(canary.status())

    @api.delete("/v1/canary")
    async def canary_stop() -> dict[str, Any]:
        canary = end_canary(service, CanaryDecision.CONTINUE)
        if canary is None:
            raise HTTPException(status_code=404, detail="no canary is serving")
        await run_in_threadpool(
            log_end, service, canary, CanaryDecision.CONTINUE, "stopped (DELETE /v1/canary)"
        )
        return {"stopped": canary.version, "live_version": router.version}

    @api.get("/v1/serving-events")
    async def serving_events() -> dict[str, Any]:
        events = await run_in_threadpool(shadows().store.serving_events)
        return {"events": [e.__dict__ for e in events]}

    @api.get("/v1/promotions")
    async def promotions() -> dict[str, Any]:
        records = await run_in_threadpool(shadows().store.gate_history)
        return {"promotions": [gate_view(r) for r in records]}

    return api
