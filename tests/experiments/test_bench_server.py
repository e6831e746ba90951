"""Smoke test of ``experiments/bench_server.py`` with tiny sizes (the real run is a script, not a timed test)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_server_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.csv"
    cmd = [
        sys.executable, str(REPO / "experiments" / "bench_server.py"),
        "--requests", "40", "--warmup", "5", "--concurrency", "1,4", "--rounds", "1", "--out", str(out),
    ]  # fmt: skip
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "decisions persisted per second over HTTP" in run.stdout
    assert "hot path against plain FastAPI endpoints" in run.stdout
    rows = list(csv.DictReader(out.open()))
    cells = {(r["path"], r["endpoint"], r["concurrency"]) for r in rows}
    assert {
        ("hot", "noop", "1"),
        ("hot", "floor", "1"),
        ("hot", "route", "1"),
        ("hot", "feedback", "1"),
        ("hot", "route", "4"),
        ("fastapi", "route", "1"),
        ("fastapi", "feedback", "4"),
        ("", "sqlite_insert", "1"),
    } <= cells
    for r in rows:
        assert float(r["req_per_s"]) > 0
        if r["endpoint"] in ("floor", "route", "feedback"):
            assert float(r["ratio_to_noop"]) > 0 and float(r["p50_ms"]) <= float(r["p99_ms"])
