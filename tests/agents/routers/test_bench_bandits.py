"""Smoke test: the bandit benchmark script runs with tiny sizes and writes its CSV."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_bench_bandits_runs(tmp_path: Path) -> None:
    out = tmp_path / "bench.csv"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "experiments" / "bench_bandits.py"),
            "--rounds",
            "200",
            "--repeats",
            "1",
            "--batch",
            "32",
            "--stability-rounds",
            "500",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert "reference_numpy_linucb" in proc.stdout
    assert "Thompson time per round / LinUCB" in proc.stdout
    rows = list(csv.DictReader(out.open()))
    loops = {r["loop"] for r in rows}
    assert {"reference_numpy_linucb", "linucb_choose_update", "thompson_choose_update"} <= loops
    stability = [r for r in rows if r["loop"].startswith("stability_")]
    assert stability and float(stability[0]["vs_reference"]) < 1e-8
