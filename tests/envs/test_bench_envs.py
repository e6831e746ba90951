"""Smoke test: the environment benchmark runs end to end at tiny sizes and writes its CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.experiments.test_smoke import run_script


@pytest.mark.slow
def test_bench_envs_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.csv"
    stdout = run_script(
        "bench_envs", "--seconds", "0.01", "--repeats", "1", "--num-envs", "8", "--memory-instances", "3",
        "--out", str(out), timeout=300,
    )  # fmt: skip
    assert "×" in stdout and "shares the dataset arrays: True" in stdout
    rows = list(csv.DictReader(out.open()))
    names = [r["environment"] for r in rows]
    assert names[0] == "CartPole-v1 step+reset (gym.make)" and float(rows[0]["ratio_wall"]) == 1.0
    assert any(n.startswith("Routing vector N=8") for n in names)
    assert any(n.startswith("Cascade-v0") for n in names)
    assert {
        "Routing-v0 step floor (inlined, no env)",
        "Routing-v0 step+reset floor (inlined, no env)",
    } <= set(names)
    assert "step floor (the least a legal step can do, inlined)" in stdout
    assert all(float(r["steps_per_s_cpu"]) > 0 for r in rows if r["ratio_cpu"])
