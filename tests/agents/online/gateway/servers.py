"""Real servers for the gateway tests: uvicorn on loopback ports, in threads of the test process or in child
processes (to kill -9), running the fake upstream of ``experiments/fake_upstream.py`` and the gateway."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from routing_env import LoggedDataset
from tests.agents.online.test_online_server import Server

REPO = Path(__file__).resolve().parents[4]
FAKE = REPO / "experiments" / "fake_upstream.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThreadServer:
    """An ASGI app served by uvicorn on a loopback port, in a thread of this process."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class ProcessServer(Server):
    """A command serving HTTP on ``port``, as a child process (``kill()`` sends SIGKILL, as for ``serve``)."""

    def __init__(
        self, args: Sequence[str], port: int, log: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.args = list(args)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_path: str = "/healthz", timeout: float = 90.0) -> ProcessServer:  # type: ignore[override]
        return self.launch().wait(ready_path, timeout)

    def launch(self) -> ProcessServer:
        """Start the process without waiting (start several at once, then :meth:`wait` for each)."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.args, cwd=REPO, env=self.env, stdout=log, stderr=log)
        return self

    def wait(self, ready_path: str = "/healthz", timeout: float = 90.0) -> ProcessServer:
        """Wait until ``GET ready_path`` answers."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.args[:4]} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                httpx.get(self.url + ready_path, timeout=1.0)
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.args[:4]} did not start in {timeout} s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def fake_process(models: Sequence[str], log: Path) -> ProcessServer:
    """The fake upstream serving ``models`` of the bundled sample, as a child process."""
    port = free_port()
    args = [sys.executable, str(FAKE), "--port", str(port), "--models", ",".join(models)]
    return ProcessServer(args, port, log)


def gateway_process(
    config: Path, log: Path, env: Mapping[str, str] | None = None, *flags: str
) -> ProcessServer:
    """``routing-env gateway --config FILE`` as a child process on a free port."""
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "agents.cli",
        "gateway",
        "--config",
        str(config),
        "--port",
        str(port),
        *flags,
    ]
    return ProcessServer(args, port, log, env)


def model_entries(data: LoggedDataset, urls: Mapping[str, str], **overrides: Any) -> list[dict[str, Any]]:
    """The config's ``models:`` for ``urls`` (model → fake base URL), priced as the dataset's price cards."""
    out = []
    for name, url in urls.items():
        card = data.model_cards[name]
        entry = {
            "name": name,
            "base_url": url + "/v1",
            "input_price": card.input_price,
            "output_price": card.output_price,
            "timeout_s": 5.0,
            "max_retries": 1,
        }
        entry.update(overrides.get(name, {}))
        out.append(entry)
    return out


def logged_cost(data: LoggedDataset, prompt: str, model: str) -> float:
    """The dataset's cost of ``model`` on the query whose prompt is ``prompt``."""
    assert data.prompts is not None
    i = list(data.prompts).index(prompt)
    return float(data.cost[i, data.models.index(model)])
