"""The HTTP service of an :class:`~agents.online.OnlineRouter` (FastAPI; ``pip install 'routing-env[serve]'``).

Endpoints (JSON unless noted):

- ``POST /v1/route`` → a decision id, the model to call, its propensity and the full distribution;
- ``POST /v1/feedback`` → applies the outcome (404 unknown id, 409 second feedback or expired decision);
- ``POST /v1/decisions/{id}/observe`` → for cascades: ``accept`` or the next model to call;
- ``GET /v1/decisions/{id}`` → the logged decision, its cascade steps and feedback;
- ``GET /healthz``; ``GET /metrics`` (Prometheus text);
- admin, behind ``Authorization: Bearer $ROUTING_ENV_API_TOKEN`` when that variable (or ``api_token``) is set:
  ``POST /v1/policy`` (hot swap to a saved policy directory, never unpickled), ``POST /v1/checkpoint`` (save the
  policy now) and ``GET /v1/export`` (the store in the canonical logged format).

Bad input is a 4xx with a message naming the field, never a 500: pydantic validates shapes, ranges and finiteness
(NaN and ±inf are refused), the router checks the feature width and model names, and bodies above
``max_body_bytes`` get 413 before they are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import numpy as np

try:
    from fastapi import Depends, FastAPI, Header, Query, Request
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse, Response
    from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "agents.online.create_app needs FastAPI, uvicorn and pydantic: pip install 'routing-env[serve]'"
    ) from exc

from agents.online.errors import DecisionConflictError, DecisionNotFoundError
from agents.online.router import OnlineRouter, _draw, _uniform
from routing_env.errors import ConfigurationError, RoutingEnvError
from routing_env.policy import load_policy

log = logging.getLogger("routing_env.serve")

TOKEN_ENV = "ROUTING_ENV_API_TOKEN"
DEFAULT_MAX_BODY_BYTES = 1 << 20

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_B = TypeVar("_B", bound="BaseModel")
_T = TypeVar("_T")
ModelName = Annotated[str, Field(min_length=1, max_length=256)]
DecisionId = Annotated[str, Field(min_length=1, max_length=256)]
NonNegative = Annotated[FiniteFloat, Field(ge=0)]


# ---------------------------------------------------------------------------------------------------- schemas
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RouteRequest(_Body):
    """Route one query: give its ``features`` (width of the policy) or its ``prompt`` (featurized server-side)."""

    features: list[FiniteFloat] | None = Field(None, max_length=100_000, description="(d,) query features")
    prompt: str | None = Field(None, max_length=200_000, description="query text")
    request_id: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        None, description="idempotency key: the same id returns the same decision"
    )
    allowed_models: list[ModelName] | None = Field(
        None, min_length=1, max_length=1024, description="route only among these models"
    )
    cost_weight: NonNegative | None = Field(None, description="λ for this request (cost-aware policies)")


class RouteResponse(BaseModel):
    decision_id: str
    request_id: str | None
    kind: Literal["route", "cascade"]
    model: str = Field(description="the model to call")
    action: int
    propensity: float = Field(description="probability of `model` under the distribution sampled from")
    probabilities: dict[str, float]
    policy_version: str
    created_at: float = Field(description="UNIX time, seconds")
    max_calls: int


class FeedbackRequest(_Body):
    decision_id: DecisionId
    quality: Annotated[FiniteFloat, Field(ge=0, le=1)] = Field(description="in [0, 1]")
    cost: NonNegative | None = Field(None, description="USD")
    latency_s: NonNegative | None = Field(None, description="seconds")


class FeedbackResponse(BaseModel):
    decision_id: str
    seq: int = Field(description="apply order of this feedback")
    reward: float
    applied: bool = Field(description="the policy learned from it")
    policy_version: str
    received_at: float


class ObserveRequest(_Body):
    signal: FiniteFloat = Field(
        description="confidence / self-verification / log-prob of the answer just received"
    )
    cost: NonNegative | None = Field(None, description="USD cost of that call")


class ObserveResponse(BaseModel):
    decision_id: str
    step: int
    action: Literal["accept", "call"]
    model: str = Field(description="the model accepted, or the model to call next")
    propensity: float
    stop_probability: float
    n_calls: int


class StepView(BaseModel):
    step: int
    signal: float
    cost: float | None
    stop: bool
    propensity: float
    forced: bool


class FeedbackView(BaseModel):
    seq: int
    source: Literal["client", "default"]
    quality: float
    cost: float
    latency_s: float | None
    reward: float
    applied: bool
    received_at: float


class DecisionView(RouteResponse):
    status: Literal["open", "closed", "expired"]
    cost_weight: float
    allowed_models: list[str] | None
    prompt: str | None
    features: list[float]
    n_calls: int
    steps: list[StepView]
    feedback: FeedbackView | None


class PolicySwapRequest(_Body):
    path: str = Field(min_length=1, max_length=4096, description="a saved policy directory on the server")
    version: Annotated[str, Field(min_length=1, max_length=128)] | None = None


class PolicySwapResponse(BaseModel):
    version: str
    previous_version: str
    kind: Literal["route", "cascade"]
    models: list[str]


class CheckpointResponse(BaseModel):
    path: str = Field(description="the saved policy directory on the server")
    policy_version: str
    last_feedback_seq: int


class Health(BaseModel):
    status: Literal["ok"]
    policy_version: str
    kind: Literal["route", "cascade"]
    decisions: int
    pending: int


class ErrorBody(BaseModel):
    detail: Any


# ---------------------------------------------------------------------------------------------------- middleware
class BodyLimit:
    """ASGI middleware: 413 for request bodies above ``max_bytes`` (declared or streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = _declared_length_error(scope, self.max_bytes)
        if refused is not None:
            await _too_large(send, refused[1], refused[0])
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _too_large(send, f"request body exceeds the {self.max_bytes}-byte limit")


class _BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive``: FastAPI passes HTTP exceptions from body reading on to the 413 handler."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(status_code=413, detail=f"request body exceeds the {max_bytes}-byte limit")


def _declared_length_error(scope: Scope, max_bytes: int) -> tuple[int, str] | None:
    """``(status, detail)`` when the request's Content-Length is unreadable (400) or above ``max_bytes`` (413)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                return 400, "invalid Content-Length header"
            if declared > max_bytes:
                return 413, f"request body of {declared} bytes exceeds the {max_bytes}-byte limit"
    return None


async def _too_large(send: Send, detail: str, status: int = 413) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------------------------------- the app
def create_app(
    router: OnlineRouter,
    *,
    api_token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    expire_interval_s: float | None = None,
    policy_root: str | Path | None = None,
    bench_endpoints: bool = False,
) -> Any:
    """Build the ASGI app serving ``router`` (run it with one uvicorn worker: the router lives in-process).

    Args:
        router: the :class:`OnlineRouter` to serve.
        api_token: bearer token of the admin endpoints; default ``$ROUTING_ENV_API_TOKEN``; unset = open.
        max_body_bytes: larger request bodies get 413.
        expire_interval_s: how often to expire decisions past the router's ``feedback_timeout_s`` (default a
            quarter of it, at most 5 s); ignored without a timeout.
        policy_root: when set, ``POST /v1/policy`` only loads directories inside it.
        bench_endpoints: add ``POST /v1/noop`` (does nothing on the hot endpoints' path: the reference of
            ``experiments/bench_server.py``), ``POST /v1/noop-fastapi`` (does nothing as a plain FastAPI
            endpoint: what the framework's own request handling costs) and ``POST /v1/floor`` (the least a route
            can do, logged to a ``bench_floor`` table: the bound the benchmark holds ``/v1/route`` against).
    """
    if int(max_body_bytes) < 1024:
        raise ConfigurationError(f"max_body_bytes must be ≥ 1024, got {max_body_bytes!r}")
    token = api_token if api_token is not None else os.environ.get(TOKEN_ENV) or None
    root = None if policy_root is None else Path(policy_root).resolve()
    timeout = router.config.feedback_timeout_s
    interval = None
    if timeout is not None:
        interval = float(expire_interval_s) if expire_interval_s is not None else min(timeout / 4, 5.0)
        if interval <= 0:
            raise ConfigurationError(f"expire_interval_s must be > 0, got {expire_interval_s!r}")

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Expiry runs on the event loop, like every other use of the router in the service: the group commit
        # of the hot endpoints holds the store's write lock between loop iterations, so a thread writing while
        # it holds the router's lock could deadlock with the loop.
        task = None
        if interval is not None:

            async def expire_loop() -> None:
                while True:
                    await asyncio.sleep(interval)
                    try:
                        # A bounded batch per loop turn, so a backlog never stalls routing for long.
                        while len(router.expire(limit=_EXPIRE_BATCH)) == _EXPIRE_BATCH:
                            await asyncio.sleep(0)
                    except Exception:  # keep serving; the next round retries
                        log.exception("expiring decisions failed")

            task = asyncio.create_task(expire_loop())
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            committer.close()

    app = FastAPI(
        title="routing-env online router",
        version="1",
        description="Route LLM queries with a learned policy, log decisions with propensities, learn from feedback.",
        lifespan=lifespan,
    )
    app.state.router = router
    errors: dict[int | str, dict[str, Any]] = {
        404: {"model": ErrorBody, "description": "unknown decision id"},
        409: {"model": ErrorBody, "description": "decision already closed"},
        422: {"model": ErrorBody, "description": "invalid request"},
    }
    admin_errors: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorBody, "description": "missing or wrong bearer token"},
        422: {"model": ErrorBody, "description": "invalid request"},
    }

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # The default handler echoes the input, which fails to serialise when it holds NaN or ±inf (a 500).
        return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)

    @app.exception_handler(DecisionNotFoundError)
    async def not_found(_: Request, exc: DecisionNotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(DecisionConflictError)
    async def conflict(_: Request, exc: DecisionConflictError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(RoutingEnvError)
    async def invalid(_: Request, exc: RoutingEnvError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    def require_admin(authorization: Annotated[str | None, Header()] = None) -> None:
        if token is None:
            return
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            from fastapi import HTTPException

            raise HTTPException(
                status_code=401,
                detail=f"this endpoint needs 'Authorization: Bearer <token>' matching ${TOKEN_ENV}",
                headers={"WWW-Authenticate": "Bearer"},
            )

    # The hot endpoints (route, feedback and the benchmark's no-op) are served by _HotPaths in front of FastAPI;
    # these declarations document them in OpenAPI (tested) and serve them if the app is mounted without it.
    committer = _GroupCommit(router)
    hot = _HotHandlers(router, committer)

    @app.post(
        "/v1/route",
        response_model=None,
        responses={200: {"model": RouteResponse}, **errors},
        openapi_extra=_json_body(RouteRequest),
        tags=["routing"],
    )
    async def route(request: Request) -> Response:
        return _json_response(*await hot.route(await request.body()))

    @app.post(
        "/v1/feedback",
        response_model=None,
        responses={200: {"model": FeedbackResponse}, **errors},
        openapi_extra=_json_body(FeedbackRequest),
        tags=["routing"],
    )
    async def feedback(request: Request) -> Response:
        return _json_response(*await hot.feedback(await request.body()))

    @app.post(
        "/v1/decisions/{decision_id}/observe",
        response_model=ObserveResponse,
        responses=errors,
        tags=["routing"],
    )
    async def observe(decision_id: str, body: ObserveRequest) -> ObserveResponse:
        ob = router.observe(decision_id, body.signal, cost=body.cost)
        return ObserveResponse(
            decision_id=ob.decision_id,
            step=ob.step,
            action=ob.action,
            model=ob.model,
            propensity=ob.propensity,
            stop_probability=ob.stop_probability,
            n_calls=ob.n_calls,
        )

    @app.get("/v1/decisions/{decision_id}", response_model=DecisionView, responses=errors, tags=["routing"])
    async def get_decision(decision_id: str) -> DecisionView:
        d = router.store.get_decision(decision_id)
        fb = router.store.get_feedback(decision_id)
        steps = router.store.steps(decision_id) if d.kind == "cascade" else []
        return DecisionView(
            decision_id=d.decision_id,
            request_id=d.request_id,
            kind=d.kind,
            model=d.model,
            action=d.action,
            propensity=d.propensity,
            probabilities={m: float(p) for m, p in zip(d.models, d.probabilities)},
            policy_version=d.policy_version,
            created_at=d.created_at,
            max_calls=d.max_calls,
            status=d.status,
            cost_weight=d.cost_weight,
            allowed_models=None if d.allowed_models is None else list(d.allowed_models),
            prompt=d.prompt,
            features=[float(v) for v in d.features],
            n_calls=d.n_calls,
            steps=[
                StepView(
                    step=s.step,
                    signal=s.signal,
                    cost=s.cost,
                    stop=s.stop,
                    propensity=s.propensity,
                    forced=s.forced,
                )
                for s in steps
            ],
            feedback=None
            if fb is None
            else FeedbackView(
                seq=fb.seq,
                source=fb.source,
                quality=fb.quality,
                cost=fb.cost,
                latency_s=fb.latency_s,
                reward=fb.reward,
                applied=fb.applied,
                received_at=fb.received_at,
            ),
        )

    @app.get("/healthz", response_model=Health, tags=["operations"])
    async def healthz() -> Health:
        st = router.stats()
        return Health(
            status="ok",
            policy_version=st["policy_version"],
            kind=st["policy_kind"],
            decisions=st["decisions"],
            pending=st["pending"],
        )

    @app.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(router.prometheus(), media_type="text/plain; version=0.0.4")

    @app.post(
        "/v1/policy",
        response_model=PolicySwapResponse,
        responses=admin_errors,
        dependencies=[Depends(require_admin)],
        tags=["admin"],
    )
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

    @app.post(
        "/v1/checkpoint",
        response_model=CheckpointResponse,
        responses=admin_errors,
        dependencies=[Depends(require_admin)],
        tags=["admin"],
    )
    async def checkpoint() -> CheckpointResponse:
        ckpt = router.checkpoint()
        return CheckpointResponse(
            path=ckpt.path, policy_version=ckpt.policy_version, last_feedback_seq=ckpt.last_feedback_seq
        )

    @app.get(
        "/v1/export",
        responses={**admin_errors, 200: {"content": {"application/x-ndjson": {}, "text/csv": {}}}},
        dependencies=[Depends(require_admin)],
        response_class=Response,
        tags=["admin"],
    )
    def export(
        format: Annotated[Literal["jsonl", "csv", "parquet"], Query()] = "jsonl",
        include_default: Annotated[bool, Query()] = False,
    ) -> Response:
        ds = router.store.export(include_default=include_default)
        media = {
            "jsonl": "application/x-ndjson",
            "csv": "text/csv",
            "parquet": "application/vnd.apache.parquet",
        }
        with tempfile.TemporaryDirectory() as tmp:
            path = ds.save(Path(tmp) / f"decisions.{format}")
            content = path.read_bytes()
        return Response(
            content,
            media_type=media[format],
            headers={"Content-Disposition": f'attachment; filename="decisions.{format}"'},
        )

    if bench_endpoints:

        @app.post("/v1/noop", tags=["operations"])
        async def noop(request: Request) -> Response:
            return _json_response(*await hot.noop(await request.body()))

        @app.post(
            "/v1/floor", response_model=None, openapi_extra=_json_body(RouteRequest), tags=["operations"]
        )
        async def floor(request: Request) -> Response:
            return _json_response(*await hot.floor(await request.body()))

        @app.post("/v1/noop-fastapi", tags=["operations"])
        async def noop_fastapi(body: dict[str, Any]) -> dict[str, bool]:
            """A plain FastAPI endpoint (validated JSON body in, serialised dict out) that does nothing."""
            return {"ok": True}

    app.add_middleware(BodyLimit, max_bytes=int(max_body_bytes))
    paths: dict[str, Handler] = {"/v1/route": hot.route, "/v1/feedback": hot.feedback}
    if bench_endpoints:
        paths["/v1/noop"] = hot.noop
        paths["/v1/floor"] = hot.floor
    return _HotPaths(app, paths, int(max_body_bytes))


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` of an endpoint that parses ``model`` itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def _parse(model: type[_B], raw: bytes) -> _B:
    """``raw`` JSON validated as ``model``; errors become the same 422 as FastAPI's own body validation."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        for err in errors:
            err["loc"] = ("body", *err["loc"])
        raise RequestValidationError(errors) from None


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def _json_response(status: int, body: bytes) -> Response:
    return Response(body, status_code=status, media_type="application/json")


# ---------------------------------------------------------------------------------------------------- hot path
_EXPIRE_BATCH = 256
Handler = Callable[[bytes], Awaitable[tuple[int, bytes]]]


class StoreCommitError(RuntimeError):
    """The decision store could not commit a group of writes; they were rolled back (HTTP 503)."""


class _GroupCommit:
    """Group commit of the writes that concurrent requests make on the event loop.

    A request runs its router call inside :meth:`run`: its writes join one open SQLite transaction, and it waits
    for the commit, which runs once per loop iteration for every request that wrote meanwhile. Each request is
    still acknowledged only after its writes are committed; concurrent requests share the commit's cost. If a
    commit fails, its requests get :class:`StoreCommitError` and the router is resynchronised with the store
    (the rolled-back decisions and updates are undone in memory too).
    """

    def __init__(self, router: OnlineRouter) -> None:
        self.router = router
        self.store = router.store
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._scheduled = False

    async def run(self, work: Callable[[], _T]) -> _T:
        store = self.store
        store.begin_deferred()
        try:
            result = work()
        finally:
            group = store.end_deferred()
        if group is not None:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.append((group, future))
            if not self._scheduled:
                self._scheduled = True
                loop.call_soon(self._commit)
            await future
        return result

    def _commit(self) -> None:
        self._scheduled = False
        waiters, self._waiters = self._waiters, []
        self.store.commit_group()
        failed = False
        for group, future in waiters:
            error = self.store.group_error(group)
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                failed = True
                future.set_exception(StoreCommitError(f"the decision store could not commit: {error}"))
        if failed:
            log.error("a group commit failed; resynchronising the router with the store")
            try:
                self.router.resync()
            except Exception:
                log.exception("resynchronising the router failed")

    def close(self) -> None:
        """Commit what is still open (at shutdown)."""
        if self._waiters:
            self._commit()
        else:
            self.store.commit_group()


_FLOOR_TABLE = """CREATE TABLE IF NOT EXISTS bench_floor (
    seq INTEGER PRIMARY KEY, decision_id TEXT NOT NULL UNIQUE, created_at REAL NOT NULL, features BLOB NOT NULL,
    probabilities BLOB NOT NULL, model TEXT NOT NULL, propensity REAL NOT NULL
)"""
_FLOOR_INSERT = (
    "INSERT INTO bench_floor (decision_id, created_at, features, probabilities, model, propensity) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


class _HotHandlers:
    """Route, feedback and no-op on raw request bytes → ``(status, JSON body)``; errors as the app maps them."""

    def __init__(self, router: OnlineRouter, committer: _GroupCommit) -> None:
        self.router = router
        self.committer = committer
        self._json_strings: dict[str, str] = {}
        self._names: dict[tuple[str, ...], list[str]] = {}  # '"model":' prefixes per model list
        self._floor_draws = 0
        self._floor_table = False

    def _quoted(self, text: str) -> str:
        """``text`` as a JSON string, memoised for the few that repeat (model names, versions)."""
        cached = self._json_strings.get(text)
        if cached is None:
            cached = json.dumps(text)
            if len(self._json_strings) < 4096:
                self._json_strings[text] = cached
        return cached

    async def route(self, raw: bytes) -> tuple[int, bytes]:
        try:
            body = _parse(RouteRequest, raw)
            router = self.router
            d = await self.committer.run(
                lambda: router.route(
                    body.features,
                    prompt=body.prompt,
                    request_id=body.request_id,
                    allowed_models=body.allowed_models,
                    cost_weight=body.cost_weight,
                )
            )
        except Exception as exc:
            return _error(exc)
        # The same bytes as json.dumps of the RouteResponse fields (floats by repr, as json writes them), with
        # the JSON of the model names and version built once: the generic encoder costs more than routing.
        q = self._quoted
        names = self._names.get(d.models)
        if names is None:
            names = self._names[d.models] = [q(m) + ":" for m in d.models]
        probs = ",".join([f"{n}{p!r}" for n, p in zip(names, d.probabilities.tolist())])
        request_id = "null" if d.request_id is None else json.dumps(d.request_id)
        return 200, (
            f'{{"decision_id":{json.dumps(d.decision_id)},"request_id":{request_id},"kind":"{d.kind}",'
            f'"model":{q(d.model)},"action":{d.action},"propensity":{d.propensity!r},'
            f'"probabilities":{{{probs}}},"policy_version":{q(d.policy_version)},'
            f'"created_at":{d.created_at!r},"max_calls":{d.max_calls}}}'
        ).encode()

    async def feedback(self, raw: bytes) -> tuple[int, bytes]:
        try:
            body = _parse(FeedbackRequest, raw)
            router = self.router
            fb = await self.committer.run(
                lambda: router.feedback(
                    body.decision_id, body.quality, cost=body.cost, latency_s=body.latency_s
                )
            )
        except Exception as exc:
            return _error(exc)
        return 200, _dumps(
            {
                "decision_id": fb.decision_id,
                "seq": fb.seq,
                "reward": fb.reward,
                "applied": fb.applied,
                "policy_version": fb.policy_version,
                "received_at": fb.received_at,
            }
        )

    async def floor(self, raw: bytes) -> tuple[int, bytes]:
        """The least a route can do, as a bound for the benchmark: validate the body, one policy call on the
        features, one sampled model, one insert of the decision's core fields joining the group commit (into
        ``bench_floor``, never ``decisions``), the JSON answer. No idempotency, allowed models, per-request λ,
        output checks, open-decision cache or counters; nothing learns from it and nothing exports it."""
        try:
            body = _parse(RouteRequest, raw)
            router = self.router
            if router.kind != "route":
                raise ConfigurationError("/v1/floor times routing policies; this router serves a cascade")
            if body.features is None:
                raise ConfigurationError("/v1/floor needs features")
            x = np.array(body.features, dtype=np.float32)[None]
            width = router.n_features
            if (width is not None and x.shape[1] != width) or not np.isfinite(x).all():
                raise ConfigurationError(f"features must be {width} finite numbers, got {x.shape[1]}")
            probs = np.asarray(router.policy.action_probabilities(x), dtype=np.float64)[0]
            self._floor_draws += 1
            action = _draw(probs, _uniform(router.config.seed, self._floor_draws))
            model = router.models[action]
            propensity = float(probs[action])
            decision_id = f"{self._floor_draws:012x}{os.urandom(10).hex()}"
            now = time.time()
            row = (decision_id, now, x.tobytes(), probs.tobytes(), model, propensity)
            store = router.store
            if not self._floor_table:
                store._write([(_FLOOR_TABLE, ())], flush=True)
                self._floor_table = True
            await self.committer.run(lambda: store._write([(_FLOOR_INSERT, row)]))
        except Exception as exc:
            return _error(exc)
        return 200, _dumps(
            {
                "decision_id": decision_id,
                "model": model,
                "propensity": propensity,
                "probabilities": dict(zip(router.models, probs.tolist())),
                "created_at": now,
            }
        )

    async def noop(self, raw: bytes) -> tuple[int, bytes]:
        """Reads the body and answers ``{"ok": true}``: the framework-and-network reference of the benchmark."""
        return 200, _dumps({"ok": True})


def _error(exc: Exception) -> tuple[int, bytes]:
    """The status and body the app's exception handlers give ``exc`` (500 for anything unexpected)."""
    if isinstance(exc, RequestValidationError):
        return 422, _dumps({"detail": _json_safe(jsonable_encoder(exc.errors()))})
    if isinstance(exc, DecisionNotFoundError):
        return 404, _dumps({"detail": str(exc)})
    if isinstance(exc, DecisionConflictError):
        return 409, _dumps({"detail": str(exc)})
    if isinstance(exc, RoutingEnvError):
        return 422, _dumps({"detail": str(exc)})
    if isinstance(exc, StoreCommitError):
        return 503, _dumps({"detail": str(exc)})
    log.error("unexpected error in a request", exc_info=exc)
    return 500, _dumps({"detail": "Internal Server Error"})


class _HotPaths:
    """ASGI layer that serves ``POST`` on a few hot paths straight from the raw request, in front of the app.

    FastAPI's generic request and response handling costs more than routing itself; these paths read the body
    (with the same size limit as :class:`BodyLimit`), call their handler and send the bytes. Everything else,
    including other methods on these paths, goes to the wrapped app (whose attributes this layer forwards).
    """

    def __init__(self, app: Any, handlers: dict[str, Handler], max_bytes: int) -> None:
        self.app = app
        self.handlers = handlers
        self.max_bytes = max_bytes

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.handlers.get(scope.get("path", "")) if scope["type"] == "http" else None
        if handler is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        refused = _declared_length_error(scope, self.max_bytes)
        if refused is not None:
            await _too_large(send, refused[1], refused[0])
            return
        chunks = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                await _too_large(send, f"request body exceeds the {self.max_bytes}-byte limit")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        status, body = await handler(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _json_safe(value: Any) -> Any:
    """``value`` with non-finite floats replaced by their names (``"nan"``, ``"inf"``), so JSON can carry it."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
