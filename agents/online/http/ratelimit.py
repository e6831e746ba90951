"""Per-client rate limits: a token bucket per client address, in front of every endpoint but health and metrics.

Each client may send ``burst`` requests at once and ``rate`` per second after that; beyond it the answer is 429
with ``Retry-After``. Clients are told apart by their address (bearer tokens are not used as keys: anyone can
invent new ones to get fresh buckets). Behind a proxy every client shares the proxy's address, so limit there
instead. The table of buckets is bounded (the least recently seen clients are forgotten, i.e. start full).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from agents.online.http.middleware import ASGIApp, Receive, Scope, Send, send_json_error

#: Paths never limited: load balancers and monitoring poll them.
EXEMPT = frozenset({"/healthz", "/metrics"})


class RateLimit:
    """ASGI middleware: ``rate`` requests per second per client, bursts of ``burst``, 429 beyond."""

    def __init__(
        self,
        app: ASGIApp,
        rate: float,
        burst: int,
        max_clients: int = 65_536,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_clients = int(max_clients)
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    def allow(self, key: str) -> float:
        """Take a token from ``key``'s bucket: 0 when allowed, else the seconds until one is available."""
        now = self.clock()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in EXEMPT:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        wait = self.allow(str(client[0]) if client else "unknown")
        if wait > 0:
            detail = (
                f"rate limit of {self.rate:g} requests/s (bursts of {self.burst:g}) exceeded; retry later"
            )
            await send_json_error(send, detail, 429, [(b"retry-after", b"%d" % math.ceil(wait))])
            return
        await self.app(scope, receive, send)
