"""Calling the models: one keep-alive HTTP client per upstream, bounded retries, and the cool-down of failed models.

An upstream attempt ends one of four ways (the ``status`` of the :class:`~agents.online.stores.base.Call` it
becomes): ``ok`` (HTTP 200), ``rejected`` (another 4xx: the upstream refused the request itself, so neither a retry
nor another model would help), ``error`` (no connection, a 5xx or a 429) or ``timeout``. The last two are retried
``max_retries`` times with a short exponential back-off, then the model counts as down: :class:`CoolDown` keeps it
out of the models the gateway routes to for ``cooldown_s`` seconds, and the gateway fails over.

The upstream's API key is read from the environment variable the config names, once at start-up; it is sent as
``Authorization: Bearer`` to that upstream only, and appears in no message or log. The HTTP client is
:mod:`agents.online.gateway.http1` (keep-alive HTTP/1.1, a tenth of a general-purpose client's cost per call).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from agents.online.gateway.config import UpstreamModel
from agents.online.gateway.http1 import CONNECTION_ERRORS, Client, Exchange
from routing_env.errors import ConfigurationError

Status = Literal["ok", "timeout", "error", "rejected"]
# Seconds before retry k (0-based), doubling up to the cap: long enough for a restarting server to come back.
_BACKOFF_S, _BACKOFF_CAP_S = 0.05, 1.0


@dataclass
class Attempt:
    """One HTTP attempt at an upstream: when it was sent (UNIX s), how it ended and how long it took (s)."""

    model: str
    started: float
    status: Status
    http_status: int | None
    latency_s: float


@dataclass
class Reply:
    """The outcome of calling one model (all its attempts): the last attempt's status and answer.

    For a streamed call that succeeded, ``exchange`` is the open upstream answer to read the events from;
    otherwise ``body`` is the whole answer (an error body when ``status`` is not ``ok``).
    """

    attempts: list[Attempt]
    body: bytes = b""
    exchange: Exchange | None = None
    read_timeout_s: float | None = None
    t0: float = field(default=0.0, repr=False)  # perf_counter at the last attempt's start

    @property
    def status(self) -> Status:
        return self.attempts[-1].status

    @property
    def http_status(self) -> int | None:
        return self.attempts[-1].http_status

    def finish(self, status: Status | None = None) -> None:
        """Set the last attempt's latency to now (a streamed answer ends when its last byte arrived)."""
        last = self.attempts[-1]
        last.latency_s = time.perf_counter() - self.t0
        if status is not None:
            last.status = status

    async def events(self) -> AsyncIterator[bytes]:
        """The streamed answer's bytes as they arrive (each read bounded by the model's timeout)."""
        assert self.exchange is not None
        async for chunk in self.exchange.chunks(self.read_timeout_s):
            yield chunk


class Upstream:
    """One configured model behind an OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(self, model: UpstreamModel, api_key: str | None) -> None:
        self.model = model
        self.client = Client(model.base_url)
        self.headers = [
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ]
        if api_key is not None:
            self.headers.append(("authorization", f"Bearer {api_key}"))

    async def call(self, payload: bytes, *, stream: bool) -> Reply:
        """POST ``payload`` (the JSON body), retrying timeouts, connection errors, 5xx and 429 answers.

        ``timeout_s`` bounds a whole answer, or for a stream its head and then each read.
        """
        attempts: list[Attempt] = []
        for k in range(self.model.max_retries + 1):
            if k:
                await asyncio.sleep(min(_BACKOFF_S * 2 ** (k - 1), _BACKOFF_CAP_S))
            started, t0 = time.time(), time.perf_counter()
            attempt = Attempt(self.model.name, started, "error", None, 0.0)
            attempts.append(attempt)
            try:
                reply = await self._attempt(attempts, payload, stream, t0)
            except asyncio.TimeoutError:
                attempt.status = "timeout"
            except CONNECTION_ERRORS:
                pass  # "error"
            else:
                if reply is not None:
                    return reply
            attempt.latency_s = time.perf_counter() - t0
        return Reply(attempts)

    async def _attempt(
        self, attempts: list[Attempt], payload: bytes, stream: bool, t0: float
    ) -> Reply | None:
        """The last of ``attempts``: the reply to return (an answer, or a 4xx refusal), or ``None`` to retry."""
        timeout = self.model.timeout_s
        attempt = attempts[-1]
        exchange = await asyncio.wait_for(
            self.client.open("/chat/completions", self.headers, payload), timeout
        )
        attempt.http_status = status = exchange.head.status
        if status == 200 and stream:
            attempt.status = "ok"
            return Reply(attempts, exchange=exchange, read_timeout_s=timeout, t0=t0)
        try:
            body = await asyncio.wait_for(exchange.read(), max(timeout - (time.perf_counter() - t0), 1e-3))
        finally:
            exchange.close()
        attempt.latency_s = time.perf_counter() - t0
        if status == 200:
            attempt.status = "ok"
        elif status != 429 and status < 500:
            attempt.status = "rejected"
        else:
            return None
        return Reply(attempts, body=body, t0=t0)


def open_upstreams(models: Sequence[UpstreamModel]) -> dict[str, Upstream]:
    """An :class:`Upstream` per configured model, each with its key from its ``api_key_env`` variable.

    Raises:
        ConfigurationError: a model's ``api_key_env`` variable is unset or empty (named, never its value).
    """
    out = {}
    for i, m in enumerate(models):
        key = None
        if m.api_key_env is not None:
            key = os.environ.get(m.api_key_env) or None
            if key is None:
                raise ConfigurationError(
                    f"models[{i}] ({m.name}): api_key_env names the variable {m.api_key_env}, which is unset or "
                    "empty; export the upstream's API key in it"
                )
        out[m.name] = Upstream(m, key)
    return out


async def close_upstreams(upstreams: Iterable[Upstream]) -> None:
    """Close the upstreams' idle connections."""
    for u in upstreams:
        await u.client.close()


class CoolDown:
    """Models that failed recently, skipped by routing for ``seconds`` after their last failure."""

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self._until: dict[str, float] = {}

    def mark_down(self, model: str, now: float | None = None) -> None:
        self._until[model] = (time.monotonic() if now is None else now) + self.seconds

    def down(self, now: float | None = None) -> set[str]:
        """The models in cool-down now."""
        if not self._until:
            return set()
        t = time.monotonic() if now is None else now
        for m in [m for m, until in self._until.items() if until <= t]:
            del self._until[m]
        return set(self._until)

    def allowed(self, models: Sequence[str], now: float | None = None) -> list[str] | None:
        """The models to route among: those not in cool-down, or ``None`` (all of them) when every model is up —
        or every model is down, when trying beats refusing."""
        down = self.down(now)
        if not down:
            return None
        up = [m for m in models if m not in down]
        return up if up else None
