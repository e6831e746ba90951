"""How the service answers: compact JSON bodies, and one mapping from exceptions to status codes.

Every error a client can cause maps to a 4xx with a message (never a 500): unknown decision 404, a second feedback,
an expired decision or a swap that changes the request contract 409, invalid input 422; a store that could not
commit, read or write 503, as is feedback that lost the race for the log's next position to other replicas too
often (nothing was written; a retry is safe). The FastAPI exception handlers
and the lean hot path (:mod:`agents.online.http.hotpath`) both answer through :func:`error_response`.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from agents.online.errors import (
    ContractChangeError,
    DecisionConflictError,
    DecisionNotFoundError,
    LogConflictError,
    StoreError,
)
from agents.online.http.commit import StoreCommitError
from routing_env.errors import RoutingEnvError

log = logging.getLogger("routing_env.serve")

# Most specific first: DecisionNotFoundError and DecisionConflictError are RoutingEnvErrors too.
_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (DecisionNotFoundError, 404),
    (DecisionConflictError, 409),
    (ContractChangeError, 409),
    (StoreError, 503),
    # Other replicas kept taking the log's next position: nothing was written, the client may retry.
    (LogConflictError, 503),
    (RoutingEnvError, 422),
    (StoreCommitError, 503),
)


def dumps(payload: Any) -> bytes:
    """``payload`` as compact JSON (ASCII, floats by repr; NaN and ±inf refused)."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


class CompactJSONResponse(JSONResponse):
    """JSON written by :func:`dumps`: byte for byte what ``json.dumps(body, separators=(",", ":"))`` gives."""

    def render(self, content: Any) -> bytes:
        return dumps(content)


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats replaced by their names (``"nan"``, ``"inf"``) and bytes decoded (invalid
    UTF-8 replaced), so JSON can carry it."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def error_response(exc: Exception) -> tuple[int, bytes]:
    """The status and JSON body of ``exc`` (500 with a generic message for anything unexpected, logged)."""
    if isinstance(exc, RequestValidationError):
        # The default handler echoes the input, which fails to serialise when it holds NaN or ±inf (a 500).
        return 422, dumps({"detail": json_safe(jsonable_encoder(json_safe(exc.errors())))})
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status, dumps({"detail": str(exc)})
    log.error("unexpected error in a request", exc_info=exc)
    return 500, dumps({"detail": "Internal Server Error"})


def json_response(status: int, body: bytes) -> Response:
    """A response carrying the JSON ``body`` as it is."""
    return Response(body, status_code=status, media_type="application/json")


def install_error_handlers(app: FastAPI) -> None:
    """Answer the exceptions of :func:`error_response` with its status and body."""

    async def handle(_: Request, exc: Exception) -> Response:
        return json_response(*error_response(exc))

    app.add_exception_handler(RequestValidationError, handle)
    for kind, _ in _STATUS:
        app.add_exception_handler(kind, handle)
