"""Fixtures of the gateway tests: the bundled sample, a LinUCB saved with its text featurizer, one fake upstream
per model (uvicorn on loopback, in threads), and gateways built from configs over them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

from agents.online.gateway import GatewayConfig, create_gateway_app
from experiments.fake_upstream import Faults, create_fake_app, text_policy
from routing_env import LoggedDataset
from tests.agents.online.gateway.servers import ThreadServer, model_entries

GatewayFactory = Callable[..., ThreadServer]


@pytest.fixture(scope="session")
def policy_dir(sample: LoggedDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return text_policy(sample, tmp_path_factory.mktemp("policy") / "linucb")


@pytest.fixture(scope="session")
def fakes(sample: LoggedDataset) -> Iterator[dict[str, ThreadServer]]:
    """One fake upstream per model of the sample (so faults hit one model)."""
    servers = {m: ThreadServer(create_fake_app(sample, [m])).start() for m in sample.models}
    yield servers
    for s in servers.values():
        s.stop()


@pytest.fixture
def healthy(fakes: dict[str, ThreadServer]) -> dict[str, ThreadServer]:
    """The fakes with their faults cleared."""
    for s in fakes.values():
        s.app.state.fake.faults = Faults()
    return fakes


def set_faults(server: ThreadServer, **faults: Any) -> None:
    server.app.state.fake.faults = Faults(**faults)


@pytest.fixture
def make_gateway(
    sample: LoggedDataset, healthy: dict[str, ThreadServer], policy_dir: Path, tmp_path: Path
) -> Iterator[GatewayFactory]:
    """``make_gateway(models_overrides={...}, evaluator=..., **config)`` → a running gateway (stopped after)."""
    started: list[ThreadServer] = []

    def make(
        *, model_overrides: dict[str, dict[str, Any]] | None = None, app_options: dict[str, Any] | None = None,
        **config: Any,
    ) -> ThreadServer:  # fmt: skip
        urls = {m: s.url for m, s in healthy.items()}
        if "models" in config:
            urls = {m: urls[m] for m in config.pop("models")}
        values: dict[str, Any] = {
            "models": model_entries(sample, urls, **(model_overrides or {})),
            "store": str(tmp_path / f"gateway-{len(started)}.db"),
            "cooldown_s": 60.0,
        }
        if "cascade_policy" not in config:
            values["policy"] = str(policy_dir)
        values.update(config)
        app = create_gateway_app(GatewayConfig.model_validate(values), **(app_options or {}))
        server = ThreadServer(app).start()
        started.append(server)
        return server

    yield make
    for s in started:
        s.stop()
