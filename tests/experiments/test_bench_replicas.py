"""Smoke test of the replica benchmark (``experiments/bench_server.py --store postgresql://…``) at tiny sizes."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_server_on_postgresql_reports_every_configuration(tmp_path: Path, postgres_server: str) -> None:
    out = tmp_path / "bench.csv"
    cmd = [sys.executable, str(REPO / "experiments" / "bench_server.py"), "--store", postgres_server]
    cmd += ["--requests", "30", "--concurrency", "1,4", "--out", str(out)]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = list(csv.DictReader(out.open()))
    cells = {(r["config"], r["endpoint"], r["concurrency"]) for r in rows}
    for config in ("sqlite-1", "postgres-1", "postgres-2"):
        for endpoint in ("route", "feedback"):
            assert {(config, endpoint, "1"), (config, endpoint, "4")} <= cells
    assert {("postgres-2", "replication_lag", "1"), ("postgres-2", "replication_lag", "4")} <= cells
    assert all(float(r["p99_ms"]) >= float(r["p50_ms"]) >= 0 for r in rows)
    assert all(float(r["req_per_s"]) > 0 for r in rows if r["endpoint"] != "replication_lag")
