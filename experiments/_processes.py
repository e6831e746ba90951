"""What the server benchmarks share: waiting for a started server to answer, and their load options.

Imported by the scripts as a sibling module (``from _processes import …``); stdlib only, so a benchmark's client
process stays light.
"""

from __future__ import annotations

import argparse
import subprocess
import time
import urllib.request


def wait_until_ready(
    proc: subprocess.Popen[bytes], port: int, what: str, path: str = "/healthz", timeout_s: float = 120.0
) -> subprocess.Popen[bytes]:
    """Return ``proc`` once ``GET http://127.0.0.1:{port}{path}`` answers 2xx; kill it and raise ``RuntimeError``
    naming ``what`` if it exits first or does not answer within ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
                if 200 <= r.status < 300:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{what} did not start within {timeout_s:.0f} s")


def add_load_arguments(
    p: argparse.ArgumentParser,
    *,
    requests: int,
    concurrency: str,
    per: str = "endpoint and concurrency level",
) -> None:
    """``--requests`` (timed requests per ``per``) and ``--concurrency`` (comma-separated connection counts)."""
    p.add_argument("--requests", type=int, default=requests, help=f"timed requests per {per}")
    p.add_argument(
        "--concurrency", default=concurrency, help="comma-separated numbers of concurrent connections"
    )
