"""Client keys: ``Authorization: Bearer <key>`` from the config on every client path; without keys, loopback only."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

pytest.importorskip("openai")

import openai

from agents.online.gateway.auth import ClientAuth
from routing_env import LoggedDataset
from tests.agents.online.gateway.conftest import GatewayFactory
from tests.agents.online.gateway.test_service import client, messages

KEY = "client-key-abcdef"


def test_client_paths_need_a_configured_key_and_operations_stay_open(
    make_gateway: GatewayFactory, sample: LoggedDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GW_TEST_MORE_KEYS", "second-key-123456")
    gw = make_gateway(
        api_keys=[KEY], api_keys_env="GW_TEST_MORE_KEYS", app_options={"api_token": "admin-token-xyz"}
    )
    for key in (KEY, "second-key-123456"):
        assert (
            client(gw, key).chat.completions.create(model="router", messages=messages(sample, 3000)).choices
        )
    for wrong in ("none", "client-key-abcdeX", KEY[:-1]):
        with pytest.raises(openai.AuthenticationError, match="needs 'Authorization: Bearer <key>'"):
            client(gw, wrong).chat.completions.create(model="router", messages=messages(sample, 3000))
    with httpx.Client(base_url=gw.url) as c:
        for path in ("/v1/models", "/v1/decisions/x"):
            r = c.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert c.post("/v1/feedback", json={"decision_id": "x", "quality": 1}).status_code == 401
        assert c.post("/v1/route", json={"prompt": "hi"}).status_code == 401
        assert c.get("/v1/models", headers={"Authorization": f"Basic {KEY}"}).status_code == 401
        assert c.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/metrics").status_code == 200
        # A client key opens no admin endpoint: those keep their own token.
        admin = c.post("/v1/checkpoint", headers={"Authorization": f"Bearer {KEY}"})
        assert admin.status_code == 401 and "ROUTING_ENV_API_TOKEN" in admin.text
        assert (
            c.post("/v1/checkpoint", headers={"Authorization": "Bearer admin-token-xyz"}).status_code == 200
        )


def _call(
    app: Any, host: str, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "path": "/v1/chat/completions", "client": (host, 5555), "headers": headers or []}
    asyncio.run(ClientAuth(inner, app)(scope, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"])


def test_without_keys_only_loopback_peers_are_served() -> None:
    assert _call([], "127.0.0.1")[0] == 200 and _call([], "::1")[0] == 200
    status, body = _call([], "192.168.1.7")
    assert status == 403 and "serves this machine only" in body["error"]["message"]
    assert _call([KEY], "192.168.1.7", [(b"authorization", f"Bearer {KEY}".encode())])[0] == 200
