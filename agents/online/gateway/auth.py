"""Client authentication of the gateway: ``Authorization: Bearer <key>`` with one of the configured client keys.

Without client keys the gateway serves loopback clients only (the config refuses a non-loopback ``host`` then,
and this layer refuses any request whose peer is not a loopback address). The operations paths (``/healthz``,
``/metrics``, the OpenAPI document) are open, and the admin paths keep their own token
(``ROUTING_ENV_API_TOKEN``, :func:`agents.online.http.admin.admin_auth`), so a client key opens no admin endpoint.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any

from agents.online.gateway.chat import error_body
from agents.online.gateway.config import is_loopback
from agents.online.http.middleware import ASGIApp, Receive, Scope, Send

OPEN_PATHS = frozenset({"/healthz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
ADMIN_PATHS = frozenset({"/v1/policy", "/v1/checkpoint", "/v1/export"})


class ClientAuth:
    """ASGI layer: refuse requests without a valid client key (401), or from off this machine without keys (403)."""

    def __init__(self, app: ASGIApp, keys: Sequence[str]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in OPEN_PATHS or scope.get("path") in ADMIN_PATHS:
            await self.app(scope, receive, send)
            return
        if not self.keys:
            client = scope.get("client")
            if client is None or not is_loopback(str(client[0])):
                await _refuse(send, 403, "this gateway has no client keys and serves this machine only")
                return
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                if scheme.lower() != b"bearer":
                    given = b""
                break
        given = given.strip()
        # Compare with every key (constant time each), so the time taken says nothing about which one matched.
        ok = False
        for key in self.keys:
            ok |= hmac.compare_digest(given, key)
        if not ok:
            await _refuse(send, 401, "this gateway needs 'Authorization: Bearer <key>' with a client key")
            return
        await self.app(scope, receive, send)


async def _refuse(send: Send, status: int, message: str) -> None:
    body = error_body(message, "authentication_error" if status == 401 else "permission_error")
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
