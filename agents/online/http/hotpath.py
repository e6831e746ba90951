"""The lean hot path: ``POST /v1/route`` and ``POST /v1/feedback`` answered in front of FastAPI.

FastAPI's generic request and response handling (routing, dependency resolution, body parsing, response model
serialisation) costs more than routing itself. :class:`HotPaths` serves these two paths straight from the raw
request: the body is read with the same size limit as :class:`~agents.online.http.middleware.BodyLimit`, parsed by
the same pydantic model (errors are the same 422), the router call joins the same group commit, and the answer is
the same bytes the FastAPI endpoints of :mod:`agents.online.http.routing` send. Everything else goes to the wrapped
app.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from agents.online.http.middleware import (
    Receive,
    Scope,
    Send,
    refuse_declared_length,
    send_json_error,
    too_large,
)
from agents.online.http.responses import dumps, error_response
from agents.online.http.routing import call_feedback, call_route
from agents.online.http.schemas import FeedbackRequest, FeedbackResponse, RouteRequest, fields_of
from agents.online.http.service import Service

Handler = Callable[[bytes], Awaitable[tuple[int, bytes]]]
_B = TypeVar("_B", bound=BaseModel)
_T = TypeVar("_T")


def parse_body(model: type[_B], raw: bytes) -> _B:
    """``raw`` JSON validated as ``model``; errors become the same 422 as FastAPI's own body validation."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        for err in errors:
            err["loc"] = ("body", *err["loc"])
        raise RequestValidationError(errors) from None


class HotHandlers:
    """Route and feedback on raw request bytes → ``(status, JSON body)``; errors as the app maps them."""

    def __init__(self, service: Service) -> None:
        self.router = service.router
        self.committer = service.committer
        self._json_strings: dict[str, str] = {}
        self._names: dict[tuple[str, ...], list[str]] = {}  # '"model":' prefixes per model list

    def _quoted(self, text: str) -> str:
        """``text`` as a JSON string, memoised for the few that repeat (model names, versions)."""
        cached = self._json_strings.get(text)
        if cached is None:
            cached = json.dumps(text)
            if len(self._json_strings) < 4096:
                self._json_strings[text] = cached
        return cached

    async def _call(
        self, model: type[_B], raw: bytes, call: Callable[[Any, _B], _T]
    ) -> _T | tuple[int, bytes]:
        """``call(router, body)`` in the group commit, or the error answer ``(status, body)`` when it failed."""
        try:
            body = parse_body(model, raw)
            router = self.router
            return await self.committer.run(lambda: call(router, body))
        except Exception as exc:
            return error_response(exc)

    async def route(self, raw: bytes) -> tuple[int, bytes]:
        d = await self._call(RouteRequest, raw, call_route)
        if isinstance(d, tuple):
            return d
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
        fb = await self._call(FeedbackRequest, raw, call_feedback)
        if isinstance(fb, tuple):
            return fb
        return 200, dumps(fields_of(FeedbackResponse, fb))


async def read_body(scope: Scope, receive: Receive, send: Send, max_bytes: int) -> bytes | None:
    """The request's body, or ``None`` when it was answered already (413 above ``max_bytes``, 400 for an
    unreadable Content-Length) or the client went away."""
    if await refuse_declared_length(scope, send, max_bytes):
        return None
    chunks = []
    seen = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > max_bytes:
            await send_json_error(send, too_large(max_bytes))
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class HotPaths:
    """ASGI layer that serves ``POST`` on a few paths straight from the raw request, in front of ``app``.

    ``handlers`` maps a path to a :data:`Handler`. Other paths, and other methods on these paths, go to the wrapped
    app (whose attributes this layer forwards, so ``app.state`` and ``app.openapi()`` keep working).
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
        raw = await read_body(scope, receive, send, self.max_bytes)
        if raw is None:
            return
        status, body = await handler(raw)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})


def with_hot_paths(app: Any, service: Service) -> HotPaths:
    """``app`` with route and feedback of ``service`` served by the hot path."""
    hot = HotHandlers(service)
    paths: dict[str, Handler] = {"/v1/route": hot.route, "/v1/feedback": hot.feedback}
    return HotPaths(app, paths, service.settings.max_body_bytes)
