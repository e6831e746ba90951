"""Smoke test of experiments/bench_distributed.py at tiny sizes (local Ray of 2 CPUs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.experiments.test_smoke import load_script


@pytest.mark.slow
def test_bench_distributed_rllib_part(
    ray_local: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--part",
        "rllib",
        "--timesteps",
        "2048",
        "--env-runners",
        "0",
        "--n-envs",
        "2",
        "--out-dir",
        str(tmp_path),
    ]
    load_script("bench_distributed").main(argv)
    assert "vs SB3" in capsys.readouterr().out
    frame = pd.read_csv(tmp_path / "bench_distributed_rllib.csv")
    assert frame[["seed", "trainer", "env_runners"]].values.tolist() == [[0, "sb3", 0], [0, "rllib", 0]]
    assert (frame["steps_per_s"] > 0).all() and (frame["timesteps"] >= 2048).all()
    assert frame["reward_vs_sb3"].iloc[0] == 0.0


def test_a_run_between_two_memory_samples_is_measured_by_its_own_reading() -> None:
    samples_during = load_script("bench_distributed").samples_during
    samples = [(1.0, (90.0, 1, 90.0)), (1.1, (120.0, 1, 120.0)), (1.2, (95.0, 1, 95.0))]
    at_end = (100.0, 1, 100.0)
    assert samples_during(samples, 1.05, 1.15, at_end) == [(120.0, 1, 120.0), at_end]
    # A 30 ms evaluation between the samples at 1.0 and 1.1 s still has the child's reading at its end.
    assert samples_during(samples, 1.02, 1.05, at_end) == [at_end]
