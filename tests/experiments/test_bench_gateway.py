"""Smoke test of ``experiments/bench_gateway.py`` with tiny sizes (the real run is a script, not a timed test)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("yaml")

from tests.experiments.test_smoke import run_script


@pytest.mark.slow
def test_bench_gateway_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.csv"
    # LiteLLM's Router in process when litellm is installed (its proxy takes long to start); else without it.
    litellm = "router" if importlib.util.find_spec("litellm") is not None else "off"
    stdout = run_script(
        "bench_gateway", "--requests", "30", "--warmup", "5", "--concurrency", "1,4", "--rounds", "1",
        "--litellm", litellm, "--out", str(out),
    )  # fmt: skip
    assert "the gateway's store holds all 70 requests it answered" in stdout
    rows = list(csv.DictReader(out.open()))
    targets = {"direct", "gateway"} | ({"litellm"} if litellm != "off" else set())
    assert {(r["target"], r["concurrency"]) for r in rows} == {(t, c) for t in targets for c in ("1", "4")}
    for r in rows:
        assert float(r["req_per_s"]) > 0 and float(r["p50_ms"]) <= float(r["p99_ms"])
        assert r["target"] != "direct" or float(r["added_p50_ms"]) == 0.0
