"""Calling the models: one keep-alive HTTP client per upstream, bounded retries, and the cool-down of failed models.

An upstream attempt ends one of four ways (the ``status`` of the :class:`~agents.online.stores.base.Call` it
becomes): ``ok`` (HTTP 200), ``rejected`` (another 4xx: the upstream refused the request itself, so neither a retry
nor another model would help), ``error`` (no connection, a 5xx or a 429) or ``timeout``. The last two are retried
``max_retries`` times with a short exponential back-off, then the model counts as down: :class:`CoolDown` keeps it
out of the models the gateway routes to for ``cooldown_s`` seconds, and the gateway fails over.

The upstream's API key is read from the environment variable the config names, once at start-up; it is sent as
``Authorization: Bearer`` to that upstream only, and appears in no message or log.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import httpx

from agents.online.gateway.config import UpstreamModel
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

    For a streamed call that succeeded, ``response`` is the open upstream response to read the events from (and to
    close); otherwise ``body`` is the whole answer (an error body when ``status`` is not ``ok``).
    """

    attempts: list[Attempt]
    body: bytes = b""
    response: httpx.Response | None = None
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
        """The streamed answer's bytes as they arrive; the response is closed at the end."""
        assert self.response is not None
        try:
            async for chunk in self.response.aiter_raw():
                yield chunk
        finally:
            await self.response.aclose()


class Upstream:
    """One configured model behind an OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(self, model: UpstreamModel, api_key: str | None, client: httpx.AsyncClient) -> None:
        self.model = model
        self.url = f"{model.base_url}/chat/completions"
        self.headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        if api_key is not None:
            self.headers["authorization"] = f"Bearer {api_key}"
        self.client = client

    async def call(self, payload: bytes, *, stream: bool) -> Reply:
        """POST ``payload`` (the JSON body), retrying timeouts, connection errors, 5xx and 429 answers."""
        m = self.model
        attempts: list[Attempt] = []
        for k in range(m.max_retries + 1):
            if k:
                await asyncio.sleep(min(_BACKOFF_S * 2 ** (k - 1), _BACKOFF_CAP_S))
            started, t0 = time.time(), time.perf_counter()
            attempt = Attempt(m.name, started, "error", None, 0.0)
            attempts.append(attempt)
            try:
                response = await self._send(payload, stream)
            except (httpx.TimeoutException, asyncio.TimeoutError):
                attempt.status, attempt.latency_s = "timeout", time.perf_counter() - t0
                continue
            except (httpx.HTTPError, OSError):
                attempt.latency_s = time.perf_counter() - t0
                continue
            attempt.http_status = response.status_code
            if response.status_code == 200:
                attempt.status = "ok"
                if stream:
                    return Reply(attempts, response=response, t0=t0)
                attempt.latency_s = time.perf_counter() - t0
                return Reply(attempts, body=response.content, t0=t0)
            body = await _read_and_close(response) if stream else response.content
            attempt.latency_s = time.perf_counter() - t0
            if response.status_code != 429 and response.status_code < 500:
                attempt.status = "rejected"
                return Reply(attempts, body=body, t0=t0)
        return Reply(attempts)

    async def _send(self, payload: bytes, stream: bool) -> httpx.Response:
        request = self.client.build_request("POST", self.url, content=payload, headers=self.headers)
        if stream:
            return await self.client.send(request, stream=True)
        # One deadline for the whole answer (httpx's own timeouts bound each read, not the total).
        return await asyncio.wait_for(self.client.send(request), self.model.timeout_s)


async def _read_and_close(response: httpx.Response) -> bytes:
    try:
        return await response.aread()
    except httpx.HTTPError:
        return b""
    finally:
        await response.aclose()


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
        timeout = httpx.Timeout(m.timeout_s)
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        out[m.name] = Upstream(m, key, httpx.AsyncClient(timeout=timeout, limits=limits))
    return out


async def close_upstreams(upstreams: Iterable[Upstream]) -> None:
    """Close the upstreams' connections."""
    for u in upstreams:
        await u.client.aclose()


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
