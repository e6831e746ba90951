"""ASGI middleware of the online router's service: the request body limit (413 before a large body is read)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: 413 for request bodies above ``max_bytes`` (declared or streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if await refuse_declared_length(scope, send, self.max_bytes):
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
                await send_json_error(send, too_large(self.max_bytes))


class _BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive``: FastAPI passes HTTP exceptions from body reading on to the 413 handler."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(status_code=413, detail=too_large(max_bytes))


def too_large(max_bytes: int) -> str:
    """The 413 message of a body that went past ``max_bytes`` while streaming."""
    return f"request body exceeds the {max_bytes}-byte limit"


async def refuse_declared_length(scope: Scope, send: Send, max_bytes: int) -> bool:
    """Answer 400 when the request's Content-Length is unreadable, 413 when it is above ``max_bytes``; whether it
    did (the request must then not be served)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                await send_json_error(send, "invalid Content-Length header", 400)
                return True
            if declared > max_bytes:
                detail = f"request body of {declared} bytes exceeds the {max_bytes}-byte limit"
                await send_json_error(send, detail, 413)
                return True
    return False


async def send_json_error(
    send: Send, detail: str, status: int = 413, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer ``{"detail": detail}`` with ``status`` (and extra ``headers``) straight on the ASGI connection."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
