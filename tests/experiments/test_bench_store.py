"""Smoke test of ``experiments/bench_store.py`` with tiny sizes (the real run is a script, not a timed test)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, *extra: str) -> list[dict[str, str]]:
    out = tmp_path / "bench.csv"
    cmd = [
        sys.executable,
        str(REPO / "experiments" / "bench_store.py"),
        "--n",
        "48",
        "--out",
        str(out),
        *extra,
    ]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = list(csv.DictReader(out.open()))
    assert all(float(r["per_second"]) > 0 and float(r["p99_ms"]) >= float(r["p50_ms"]) > 0 for r in rows)
    return rows


def test_bench_store_smoke_sqlite(tmp_path: Path) -> None:
    rows = _run(tmp_path)
    assert [(r["store"], r["measure"], r["writes"]) for r in rows] == [
        ("sqlite (NORMAL)", "decision", "48"),
        ("sqlite (NORMAL)", "feedback", "48"),
        ("sqlite (NORMAL)", "group16", "96"),
    ]


@pytest.mark.slow
def test_bench_store_smoke_postgresql(tmp_path: Path, postgres_url: str) -> None:
    rows = _run(tmp_path, "--postgres", postgres_url, "--writers", "1,2")
    cells = {(r["store"], r["measure"], r["writers"]) for r in rows}
    assert {("postgresql", m, "1") for m in ("decision", "feedback", "group16", "appenders")} <= cells
    assert ("postgresql", "appenders", "2") in cells
    import psycopg

    with psycopg.connect(postgres_url) as conn:  # the benchmark's schema is gone
        assert conn.execute(
            "SELECT COUNT(*) FROM pg_namespace WHERE nspname LIKE 'routing_env_bench_%'"
        ).fetchone() == (0,)
