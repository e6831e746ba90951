"""Smoke test of ``experiments/bench_shadows.py`` at tiny sizes (two real ``serve`` processes on loopback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")

from tests.experiments.test_smoke import load_script


@pytest.mark.slow
def test_bench_shadows_smoke(tmp_path: Path) -> None:
    out = tmp_path / "shadows.json"
    result = load_script("bench_shadows").main(
        ["--requests", "20", "--concurrency", "1", "--rounds", "1", "--out", str(out)]
    )
    written = json.loads(out.read_text())
    assert written["added_by_two_shadows"] == result["added_by_two_shadows"]
    assert {(r["server"], r["path"]) for r in written["latency"]} == {
        (s, p) for s in ("no shadow", "two shadows") for p in ("route", "feedback")
    }
    assert all(r["n"] == 20 and r["p99_ms"] >= r["p50_ms"] > 0 for r in written["latency"])
    # A report drains the scoring queue first: both shadows scored every decision with feedback.
    assert written["scored"] == {n: {"n_decisions": 20, "status": "active"} for n in ("cheap", "greedy")}
