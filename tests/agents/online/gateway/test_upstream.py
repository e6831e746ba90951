"""Upstream calls: the HTTP/1.1 client on raw servers (Content-Length, chunked, keep-alive, a server that closes
its connections), bounded retries against the fake upstream, and the cool-down of failed models."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest

from agents.online.gateway.config import UpstreamModel
from agents.online.gateway.http1 import CONNECTION_ERRORS, Client
from agents.online.gateway.upstream import CoolDown, Upstream
from tests.agents.online.gateway.conftest import set_faults
from tests.agents.online.gateway.servers import ThreadServer

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(ln.split(b":")[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")
    )
    return await reader.readexactly(length)


async def _serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1"


def test_content_length_chunked_and_keep_alive() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                body = await _read_request(reader)
            except asyncio.IncompleteReadError:
                return
            if body == b"chunked":
                writer.write(
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                )
            else:
                writer.write(b"HTTP/1.1 201 Created\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()

    async def main() -> None:
        server, url = await _serve(handler)
        client = Client(url)
        for body in (b"hello", b"chunked", b"x" * 100_000):
            exchange = await client.open("/chat/completions", [], body)
            got = await exchange.read()
            assert (exchange.head.status, got) == ((201, body) if body != b"chunked" else (200, b"abcde"))
        chunks = [c async for c in (await client.open("/p", [], b"chunked")).chunks()]
        assert b"".join(chunks) == b"abcde"
        assert connections == 1  # every exchange reused the one connection
        await client.close()
        server.close()

    asyncio.run(main())


def test_a_connection_the_server_closed_is_not_reused_and_a_refused_one_raises() -> None:
    async def close_after_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.close()

    async def main() -> None:
        server, url = await _serve(close_after_one)
        client = Client(url)
        for _ in range(3):
            assert await (await client.open("/c", [], b"{}")).read() == b"ok"
            await asyncio.sleep(0.05)  # the close reaches the client before the next request
        server.close()
        await server.wait_closed()
        with pytest.raises(CONNECTION_ERRORS):
            await client.open("/c", [], b"{}")
        rude, rude_url = await _serve(hang_up)
        with pytest.raises(EOFError, match="closed the connection before answering"):
            await Client(rude_url).open("/c", [], b"{}")
        rude.close()

    asyncio.run(main())


def _upstream(server: ThreadServer, **changes: object) -> Upstream:
    model = UpstreamModel.model_validate(
        {"name": "small-3b", "base_url": server.url + "/v1", "input_price": 1, "output_price": 1, **changes}
    )
    return Upstream(model, None)


BODY = json.dumps({"model": "small-3b", "messages": [{"role": "user", "content": "hi"}]}).encode()


def test_retries_are_bounded_and_each_attempt_is_recorded(healthy: dict[str, ThreadServer]) -> None:
    fake = healthy["small-3b"]

    async def call(**changes: object) -> tuple[str, list[tuple[str, int | None]]]:
        reply = await _upstream(fake, **changes).call(BODY, stream=False)
        return reply.status, [(a.status, a.http_status) for a in reply.attempts]

    set_faults(fake, fail_next=1, status=503)
    assert asyncio.run(call(max_retries=1)) == ("ok", [("error", 503), ("ok", 200)])
    set_faults(fake, fail_next=5, status=429)
    assert asyncio.run(call(max_retries=2)) == ("error", [("error", 429)] * 3)
    set_faults(fake, fail_next=5, status=400)
    assert asyncio.run(call(max_retries=3)) == ("rejected", [("rejected", 400)])  # a refusal is not retried
    set_faults(fake, delay_s=0.5)
    assert asyncio.run(call(max_retries=1, timeout_s=0.1)) == ("timeout", [("timeout", None)] * 2)


def test_cool_down_excludes_failed_models_for_its_period() -> None:
    cool = CoolDown(10.0)
    models = ("a", "b", "c")
    assert cool.allowed(models, now=0.0) is None
    cool.mark_down("b", now=0.0)
    assert cool.allowed(models, now=5.0) == ["a", "c"] and cool.down(now=5.0) == {"b"}
    cool.mark_down("a", now=6.0)
    cool.mark_down("c", now=6.0)
    assert cool.allowed(models, now=7.0) is None  # every model down: try them all rather than refuse
    assert cool.allowed(models, now=12.0) == ["b"]  # b came back first
    assert cool.down(now=16.1) == set()
