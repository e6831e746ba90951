"""Helpers for the tests that run the real service: ``routing-env serve`` as a uvicorn child process on loopback."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[3]
TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``routing-env serve`` as a child process; ``kill()`` sends SIGKILL, ``start()`` restarts on the same store.

    Args:
        store: the ``--store`` argument (relative paths are relative to ``cwd``).
        policy: the ``--policy`` argument, or ``None``.
        extra: more arguments.
        token: the admin token in the environment (``None``: unset).
        cwd: the working directory of the process (default the repository).
        log: where stdout and stderr go (default ``<store>.log``).
    """

    def __init__(
        self,
        store: Path,
        policy: Path | None,
        *extra: str,
        token: str | None = TOKEN,
        cwd: Path = REPO,
        log: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.cwd = cwd
        self.store = store if store.is_absolute() else cwd / store
        policy_args = [] if policy is None else ["--policy", str(policy)]
        self.args = [
            sys.executable, "-m", "agents.cli", "serve", "--store", str(store), *policy_args,
            "--port", str(self.port), *extra,
        ]  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = log if log is not None else self.store.with_suffix(".log")
        self.env = {k: v for k, v in os.environ.items() if k != "ROUTING_ENV_API_TOKEN"}
        self.env["PYTHONPATH"] = os.pathsep.join([str(REPO), self.env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
        if token is not None:
            self.env["ROUTING_ENV_API_TOKEN"] = token

    def start(self, timeout: float = 90.0, prefix: list[str] | None = None) -> None:
        """Start and wait until ``/healthz`` answers (any status: an unhealthy server is still up)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*(prefix or []), *self.args], cwd=self.cwd, env=self.env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            try:
                httpx.get(self.url + "/healthz", timeout=1.0)
                return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start in {timeout} s:\n{self.output()[-3000:]}")

    def run_to_exit(self, timeout: float = 90.0, prefix: list[str] | None = None) -> tuple[int, str]:
        """Run the command expecting it to refuse to start: ``(exit code, its output)``."""
        done = subprocess.run(
            [*(prefix or []), *self.args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        return done.returncode, (done.stdout + done.stderr).decode(errors="replace")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def rss_bytes(self) -> int:
        """Resident memory of the server process (Linux ``/proc``)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc status")


class Client:
    """A keep-alive HTTP/1.1 connection with TCP_NODELAY (stdlib; lighter than httpx for thousands of calls)."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        self.conn.connect()
        assert self.conn.sock is not None
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def post(self, path: str, body: dict[str, object] | bytes) -> tuple[int, dict[str, object]]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.conn.request("POST", path, raw, {"Content-Type": "application/json"})
        r = self.conn.getresponse()
        return r.status, json.loads(r.read())

    def close(self) -> None:
        self.conn.close()


def in_threads(n: int, target: Callable[[int], None], timeout: float = 600.0) -> None:
    """Run ``target(worker)`` for workers ``0 … n−1``, one thread each, and wait for all (at most ``timeout`` s)."""
    threads = [threading.Thread(target=target, args=(w,), daemon=True) for w in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(timeout=max(deadline - time.monotonic(), 0.0))
