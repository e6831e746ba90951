"""The rollout study at reduced size: the gate and the canary meet the validation targets on replays."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import SHARED_DATASETS

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "rollout_gate.py"


@pytest.mark.slow
def test_gate_and_canary_meet_the_targets_at_reduced_size(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("experiments_rollout_gate", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    datasets = "sample,llmrouter" if (SHARED_DATASETS / "llmrouter").is_dir() else "sample"
    out = module.main(
        [
            "--datasets", datasets, "--root", str(SHARED_DATASETS), "--n-runs", "60", "--canary-max", "8000",
            "--effect-sizes", "0.05", "--power-runs", "40", "--out-dir", str(tmp_path),
        ]
    )  # fmt: skip
    summary: pd.DataFrame = out["summary"]
    assert set(summary["dataset"]) == set(datasets.split(","))
    for row in summary.itertuples(index=False):
        if row.candidate == "better":
            assert row.truth > 0 and row.gate_promote >= 0.8, row
            assert row.canary_rollback == 0.0, row
        elif row.candidate == "worse":
            assert row.truth < 0 and row.gate_promote <= 0.05, row
            assert row.canary_rollback >= 0.95 and row.canary_promote == 0.0, row
        else:  # exactly at the margin: the error rate is about 1 − confidence
            assert abs(row.truth) < 1e-12 and row.gate_promote <= 0.12 and row.canary_promote <= 0.12, row
    power: pd.DataFrame = out["power"]
    assert (power["gate_decisions_80"] > 0).all() and power["gate_power_simulated"].between(0.6, 1.0).all()
    assert (tmp_path / "rollout_gate.md").read_text().startswith("# Promotion gate and canary")
