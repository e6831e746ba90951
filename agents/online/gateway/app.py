"""The gateway's ASGI app: the OpenAI-compatible endpoints in front of the online router's own service.

- ``POST /v1/chat/completions`` (:class:`~agents.online.gateway.service.Gateway`), answered in front of FastAPI
  like the router's hot paths (the same endpoint is also a FastAPI route, documented in OpenAPI);
- ``GET /v1/models``: ``router`` and the configured models;
- the online router's API on the same port, from its own ``APIRouter``\\ s (:func:`agents.online.http.app.build_app`):
  ``/v1/feedback``, ``/v1/route``, ``/v1/decisions/{id}`` (with the upstream calls), ``/healthz``, ``/metrics``
  (plus the gateway's call and fail-over counters) and the admin endpoints;
- client keys checked in front of everything (:class:`~agents.online.gateway.auth.ClientAuth`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from agents.online.gateway.auth import ClientAuth
from agents.online.gateway.chat import error_body
from agents.online.gateway.config import ROUTER_NAME, GatewayConfig, load_config
from agents.online.gateway.service import Answer, Evaluator, Gateway, Verifier
from agents.online.gateway.upstream import close_upstreams, open_upstreams
from agents.online.http.app import build_app
from agents.online.http.hotpath import read_body, with_hot_paths
from agents.online.http.middleware import ASGIApp, Message, Receive, Scope, Send
from agents.online.http.service import ServiceSettings
from agents.online.router import OnlineRouter
from agents.online.stores import open_store
from routing_env.errors import ConfigurationError, ModelMismatchError
from routing_env.policy import CascadePolicy, load_policy

log = logging.getLogger("routing_env.gateway")
CHAT_PATH = "/v1/chat/completions"


def build_router(config: GatewayConfig) -> OnlineRouter:
    """The :class:`OnlineRouter` of ``config``: resumed from the store's last checkpoint when it has one, else
    serving ``policy`` (or ``cascade_policy``), checked against the configured models and the featurizer."""
    featurizer = None
    if config.featurizer is not None:
        from routing_env.data import load_featurizer

        featurizer = load_featurizer(config.featurizer)
    store = open_store(config.store, synchronous=config.synchronous)
    options: dict[str, Any] = {
        "cost_weight": config.cost_weight,
        "cost_scale": config.cost_scale,
        "checkpoint_every": config.checkpoint_every,
        "feedback_timeout_s": config.feedback_timeout_s,
        "default_quality": config.default_quality,
        "seed": config.seed,
        "featurizer": featurizer,
    }
    if config.budget is not None:
        from agents.online.pacing import BudgetConfig, BudgetPacer

        options["pacer"] = BudgetPacer(BudgetConfig.from_mapping(config.budget))
    if store.latest_checkpoint() is not None:
        router = OnlineRouter.restore(store, **options)
        log.warning("the store %s serves version %r: resuming it (hot swap with POST /v1/policy)", config.store,
                    router.version)  # fmt: skip
    else:
        path = config.policy if config.policy is not None else config.cascade_policy
        assert path is not None  # the config holds exactly one of them
        policy = load_policy(path)
        if isinstance(policy, CascadePolicy) != (config.cascade_policy is not None):
            key, other = (
                ("policy", "cascade_policy") if config.policy is not None else ("cascade_policy", "policy")
            )
            raise ConfigurationError(
                f"{key}: {path} holds a {'cascade' if isinstance(policy, CascadePolicy) else 'routing'} policy; "
                f"give it as {other}"
            )
        router = OnlineRouter(policy, store, version=config.version, **options)
    check_router(config, router, featurizer)
    return router


def check_router(config: GatewayConfig, router: OnlineRouter, featurizer: Any = None) -> None:
    """Refuse a router whose models are not the configured ones, or whose featurizer does not fit its policy.

    Raises:
        ModelMismatchError: a policy model has no upstream, or a configured model is neither routed to nor the
            verifier.
        ConfigurationError: no featurizer, or one whose width is not the policy's.
    """
    configured = [m.name for m in config.models]
    missing = [m for m in router.models if m not in configured]
    if missing:
        raise ModelMismatchError(
            f"the policy (version {router.version!r}) routes to {missing}, which the gateway config's models "
            f"{configured} do not define; add them under models:"
        )
    extra = [m for m in configured if m not in router.models and m != config.cascade.verifier_model]
    if extra:
        raise ModelMismatchError(
            f"models: {extra} are not models of the policy {list(router.models)}; a configured model must be "
            "one the policy routes to (or the cascade's verifier_model)"
        )
    featurizer = featurizer if featurizer is not None else getattr(router.policy, "featurizer", None)
    if featurizer is None:
        raise ConfigurationError(
            "the policy carries no featurizer, and the gateway routes on the request's text: save the policy with "
            "its featurizer (fit(..., featurizer=...)) or give featurizer: DIR"
        )
    # The router already refused a featurizer whose width does not fit the policy.


def answer_response(answer: Answer) -> Response:
    """A Starlette response sending ``answer``."""
    headers = {k.decode(): v.decode() for k, v in answer.headers if k != b"content-type"}
    media = next((v.decode() for k, v in answer.headers if k == b"content-type"), "application/json")
    if answer.stream is not None:
        return StreamingResponse(answer.stream, status_code=answer.status, headers=headers, media_type=media)
    return Response(answer.body, status_code=answer.status, headers=headers, media_type=media)


def gateway_routes(gateway: Gateway) -> APIRouter:
    """``GET /v1/models`` and ``POST /v1/chat/completions`` of ``gateway``."""
    api = APIRouter(tags=["gateway"])
    listing = {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": owner}
            for name, owner in [(ROUTER_NAME, "routing-env"), *((m, "upstream") for m in gateway.models)]
        ],
    }

    @api.get("/v1/models")
    async def models() -> dict[str, Any]:
        return listing

    @api.post(CHAT_PATH, response_class=Response, summary="OpenAI chat completions, routed")
    async def chat(request: Request) -> Response:
        return answer_response(await gateway.chat(await request.body()))

    return api


class GatewayFront:
    """ASGI layer in front of the service: ``POST /v1/chat/completions`` straight from the raw request,
    ``/metrics`` with the gateway's counters appended, and the upstreams closed at shutdown."""

    def __init__(self, app: ASGIApp, gateway: Gateway, max_bytes: int) -> None:
        self.app = app
        self.gateway = gateway
        self.max_bytes = max_bytes

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._on_shutdown(receive), send)
            return
        path = scope.get("path") if scope["type"] == "http" else None
        if path == CHAT_PATH and scope.get("method") == "POST":
            await self._chat(scope, receive, send)
        elif path == "/metrics" and scope.get("method") == "GET":
            await self._metrics(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _on_shutdown(self, receive: Receive) -> Receive:
        gateway = self.gateway

        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await gateway.drain()
                await close_upstreams(gateway.upstreams.values())
            return message

        return wrapped

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = await read_body(scope, receive, send, self.max_bytes)
        if raw is None:
            return
        try:
            answer = await self.gateway.chat(raw)
        except Exception:
            log.exception("unexpected error in a chat completion")
            answer = Answer(500, [(b"content-type", b"application/json")],
                            error_body("internal error of the gateway", "server_error"))  # fmt: skip
        headers = list(answer.headers)
        if answer.stream is None:
            headers.append((b"content-length", b"%d" % len(answer.body)))
            await send({"type": "http.response.start", "status": answer.status, "headers": headers})
            await send({"type": "http.response.body", "body": answer.body})
            return
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        stream = answer.stream
        try:
            async for chunk in stream:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            await stream.aclose()
        await send({"type": "http.response.body", "body": b""})

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        start: Message | None = None
        parts: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            else:
                parts.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        assert start is not None
        body = b"".join(parts) + (self.gateway.prometheus().encode() if start["status"] == 200 else b"")
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", b"%d" % len(body)))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def create_gateway_app(
    config: GatewayConfig | str | Path,
    *,
    evaluator: Evaluator | None = None,
    verifier: Verifier | None = None,
    api_token: str | None = None,
) -> Any:
    """The gateway's ASGI app (run it with one uvicorn worker: the router lives in the process).

    Args:
        config: a :class:`GatewayConfig`, or the path of a YAML or JSON file of one.
        evaluator: gives each answer its quality (:data:`~agents.online.gateway.service.Evaluator`), posted as
            feedback after the answer is sent; without one, quality comes by ``POST /v1/feedback``.
        verifier: a cascade's signal when ``cascade.signal`` is ``verifier``
            (:data:`~agents.online.gateway.service.Verifier`); without one, ``cascade.verifier_model`` grades.
        api_token: bearer token of the admin endpoints (default ``$ROUTING_ENV_API_TOKEN``).

    The app's ``gateway`` attribute is the :class:`Gateway` (its ``router`` the :class:`OnlineRouter`); other
    attributes are the FastAPI app's (``state``, ``openapi()``).
    """
    cfg = config if isinstance(config, GatewayConfig) else load_config(config)
    if cfg.cascade.signal == "verifier" and verifier is None and cfg.cascade.verifier_model is None:
        raise ConfigurationError(
            "cascade.signal is 'verifier': give cascade.verifier_model (a configured model that grades answers) "
            "or a verifier callable"
        )
    keys = cfg.client_keys()
    upstreams = open_upstreams(cfg.models)
    router = build_router(cfg)
    settings = ServiceSettings.resolve(
        api_token=api_token, max_body_bytes=cfg.max_body_bytes, policy_root=cfg.policy_root
    )
    app: FastAPI = build_app(router, settings)
    app.title = "routing-env gateway"
    service = app.state.service
    _register_shadows(service, cfg.shadows)
    if cfg.canary is not None and cfg.canary_policy is not None:
        from agents.online.http.canary import start_canary
        from agents.online.rollout import CanaryConfig

        start_canary(service, cfg.canary_policy, CanaryConfig(split=cfg.canary), at_startup=True)
    gateway = Gateway(cfg, router, service.committer, upstreams, evaluator=evaluator, verifier=verifier)
    app.include_router(gateway_routes(gateway))
    app.state.gateway = gateway
    front = GatewayFront(with_hot_paths(app, service), gateway, cfg.max_body_bytes)
    return ClientAuth(front, keys)


def _register_shadows(service: Any, shadows: dict[str, str]) -> None:
    """Register the config's shadows that the store does not hold yet (a restart keeps the registered ones)."""
    if not shadows:
        return
    if service.shadows is None:
        raise ConfigurationError("shadows need a decision store that keeps them (a SQL store)")
    known = {r.name: r for r in service.shadows.records()}
    for name, path in shadows.items():
        if name not in known:
            service.shadows.register(name, path)
        elif known[name].path != path:
            raise ConfigurationError(
                f"shadows: {name!r} is registered in the store with {known[name].path}, not {path}; remove it "
                "(DELETE /v1/shadows/{name}) or pick another name"
            )
