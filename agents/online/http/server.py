"""Running the service under uvicorn with a read timeout on every request (the ``serve`` extra).

uvicorn closes idle keep-alive connections, but not a connection that sends half a request line, half its
headers or half its body and then waits: hundreds of those hold sockets and tasks for as long as the client
likes. :func:`read_timeout_protocol` gives uvicorn's httptools protocol one timer per request, armed when the
connection opens and when a request's first byte arrives, cleared when the whole request (headers and body) has
been read. When it fires, the client gets ``408 Request Timeout`` (if no answer has started) and the connection is
closed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

#: Default seconds a client has to send a whole request (headers and body) once it started it.
DEFAULT_READ_TIMEOUT_S = 10.0


def read_timeout_protocol(read_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools HTTP/1.1 protocol with a ``read_timeout_s`` timer per request.

    Raises:
        ImportError: httptools is missing (``pip install 'routing-env[serve]'``).
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    body = json.dumps({"detail": f"the request was not received within {read_timeout_s:g} s"}).encode()
    timed_out = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )

    class ReadTimeoutProtocol(HttpToolsProtocol):
        """:class:`HttpToolsProtocol` that closes connections whose request does not arrive in time."""

        _read_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._read_timer = self.loop.call_later(read_timeout_s, self._timed_out)

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _timed_out(self) -> None:
            self._read_timer = None
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if cycle is None or cycle.response_complete or not cycle.response_started:
                self.transport.write(timed_out)
            self.transport.close()

    return ReadTimeoutProtocol


def run(app: Any, *, host: str, port: int, read_timeout_s: float, **options: Any) -> None:
    """Serve ``app`` on one uvicorn worker with the per-request read timeout (``options`` go to uvicorn)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, workers=1, http=read_timeout_protocol(read_timeout_s), **options)
