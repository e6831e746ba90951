"""The benchmark's own server: the production app of the online router plus reference endpoints, on uvicorn.

``experiments/bench_server.py`` starts this script as a process on a loopback port. The app is the production one
(:func:`agents.online.create_app`, or with ``--path fastapi`` the same app without the lean hot path, route and
feedback served by their plain FastAPI endpoints), with the benchmark's references mounted in front of it on the
lean path:

- ``POST /v1/noop``: reads the body and answers ``{"ok": true}`` (what the server and network cost);
- ``POST /v1/floor``: the least a route can do (validate the body, one policy call on the features, one sampled
  model, one insert of the decision's core fields joining the group commit, the JSON answer), logged to a
  ``bench_floor`` table of the store, never to ``decisions``: nothing learns from it or exports it;
- ``POST /v1/noop-fastapi``: a plain FastAPI endpoint that does nothing (what FastAPI's request handling costs).

    python experiments/_bench_app.py --store S.db --policy DIR --port 8000 [--path hot|fastapi]
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI

from agents.online import OnlineRouter, open_store
from agents.online.http.app import build_app
from agents.online.http.hotpath import Handler, HotHandlers, HotPaths, parse_body
from agents.online.http.responses import dumps, error_response
from agents.online.http.schemas import RouteRequest
from agents.online.http.service import Service, ServiceSettings
from agents.online.sampling import draw, uniform
from routing_env.errors import ConfigurationError
from routing_env.policy import load_policy

PATHS = ("hot", "fastapi")

_FLOOR_TABLE = """CREATE TABLE IF NOT EXISTS bench_floor (
    seq INTEGER PRIMARY KEY, decision_id TEXT NOT NULL UNIQUE, created_at REAL NOT NULL, features BLOB NOT NULL,
    probabilities BLOB NOT NULL, model TEXT NOT NULL, propensity REAL NOT NULL
)"""
_FLOOR_INSERT = (
    "INSERT INTO bench_floor (decision_id, created_at, features, probabilities, model, propensity) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


class Floor:
    """``POST /v1/floor`` on raw bytes → ``(status, JSON body)``: the bound ``/v1/route`` is held against.

    No idempotency, allowed models, per-request λ, output checks, open-decision cache or counters.
    """

    def __init__(self, service: Service) -> None:
        self.service = service
        self._draws = 0
        self._table = False

    async def __call__(self, raw: bytes) -> tuple[int, bytes]:
        try:
            body = parse_body(RouteRequest, raw)
            router = self.service.router
            if router.kind != "route":
                raise ConfigurationError("/v1/floor times routing policies; this router serves a cascade")
            if body.features is None:
                raise ConfigurationError("/v1/floor needs features")
            x = np.array(body.features, dtype=np.float32)[None]
            width = router.n_features
            if (width is not None and x.shape[1] != width) or not np.isfinite(x).all():
                raise ConfigurationError(f"features must be {width} finite numbers, got {x.shape[1]}")
            probs = np.asarray(router.policy.action_probabilities(x), dtype=np.float64)[0]
            self._draws += 1
            action = draw(probs, uniform(router.config.seed, self._draws))
            model = router.models[action]
            propensity = float(probs[action])
            decision_id = f"{self._draws:012x}{os.urandom(10).hex()}"
            now = time.time()
            row = (decision_id, now, x.tobytes(), probs.tobytes(), model, propensity)
            store: Any = router.store  # the SQLite store: the floor writes its own table
            if not self._table:
                store._write([(_FLOOR_TABLE, ())], flush=True)
                self._table = True
            await self.service.committer.run(lambda: store._write([(_FLOOR_INSERT, row)]))
        except Exception as exc:
            return error_response(exc)
        return 200, dumps(
            {
                "decision_id": decision_id,
                "model": model,
                "propensity": propensity,
                "probabilities": dict(zip(router.models, probs.tolist())),
                "created_at": now,
            }
        )


async def noop(raw: bytes) -> tuple[int, bytes]:
    """Reads the body and answers ``{"ok": true}``: the framework-and-network reference of the benchmark."""
    return 200, dumps({"ok": True})


def bench_app(router: OnlineRouter, path: str = "hot", **settings: Any) -> HotPaths:
    """The production app serving ``router`` with the benchmark's reference endpoints.

    Args:
        router: the router to serve.
        path: ``"hot"`` (route and feedback on the lean hot path, as :func:`agents.online.create_app` serves
            them) or ``"fastapi"`` (route and feedback through their plain FastAPI endpoints).
        settings: options of :meth:`agents.online.http.service.ServiceSettings.resolve`.
    """
    if path not in PATHS:
        raise ConfigurationError(f"path must be one of {list(PATHS)}, got {path!r}")
    app: FastAPI = build_app(router, ServiceSettings.resolve(**settings))
    service: Service = app.state.service

    @app.post("/v1/noop-fastapi", tags=["operations"])
    async def noop_fastapi(body: dict[str, Any]) -> dict[str, bool]:
        """A plain FastAPI endpoint (validated JSON body in, serialised dict out) that does nothing."""
        return {"ok": True}

    handlers: dict[str, Handler] = {"/v1/noop": noop, "/v1/floor": Floor(service)}
    if path == "hot":
        hot = HotHandlers(service)
        handlers.update({"/v1/route": hot.route, "/v1/feedback": hot.feedback})
    return HotPaths(app, handlers, service.settings.max_body_bytes)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", required=True, help="SQLite file (created if absent)")
    p.add_argument("--policy", required=True, help="saved policy directory to serve")
    p.add_argument("--port", type=int, required=True, help="loopback port")
    p.add_argument("--path", default="hot", choices=PATHS, help="how route and feedback are served")
    p.add_argument("--synchronous", default="NORMAL", choices=["NORMAL", "FULL"], help="SQLite durability")
    p.add_argument("--checkpoint-every", type=int, default=1000, help="save the policy every N updates")
    args = p.parse_args(argv)
    store = open_store(args.store, synchronous=args.synchronous)
    router = OnlineRouter(load_policy(Path(args.policy)), store, checkpoint_every=args.checkpoint_every)
    app = bench_app(router, args.path)
    # As routing-env serve does: keep what lives as long as the process out of the cyclic collector's reach.
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host="127.0.0.1", port=args.port, workers=1, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
