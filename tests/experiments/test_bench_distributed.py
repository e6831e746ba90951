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
