"""The gateway: an OpenAI-compatible proxy that routes each request with a learned policy, calls the model, fails
over, runs cascades and logs every call's cost (``routing-env gateway``; the ``serve`` extra).

- :mod:`~agents.online.gateway.config`: :class:`GatewayConfig`, read by :func:`load_config` from YAML or JSON;
- :mod:`~agents.online.gateway.chat`: the chat-completions request and answer formats;
- :mod:`~agents.online.gateway.upstream`: the upstream HTTP clients, retries and the cool-down of failed models;
- :mod:`~agents.online.gateway.service`: :class:`Gateway`, the request flow (route, call, fail over, cascade, log);
- :mod:`~agents.online.gateway.auth`: client keys; :mod:`~agents.online.gateway.app`: :func:`create_gateway_app`.

The names below are imported on first use, so that reading a config (pydantic only) does not load the server.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "create_gateway_app": "agents.online.gateway.app",
    "GatewayConfig": "agents.online.gateway.config",
    "UpstreamModel": "agents.online.gateway.config",
    "load_config": "agents.online.gateway.config",
    "Evaluator": "agents.online.gateway.service",
    "Exchange": "agents.online.gateway.service",
    "Gateway": "agents.online.gateway.service",
    "Verifier": "agents.online.gateway.service",
}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'agents.online.gateway' has no attribute {name!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ImportError(
            f"agents.online.gateway.{name} needs FastAPI, uvicorn, pydantic and PyYAML: "
            f"pip install 'routing-env[serve]' ({exc})"
        ) from exc
