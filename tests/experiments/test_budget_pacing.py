"""Smoke test: the budget-pacing study runs end to end at a tiny size and writes its tables, report and plot."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tests.experiments.test_smoke import load_script


def test_budget_pacing_script_runs_and_writes_its_results(tmp_path: Path) -> None:
    out = load_script("budget_pacing").main(
        ["--datasets", "sample", "--grid", "6", "--target-fractions", "0.3", "--initial-cost-weights", "1",
         "--max-queries", "300", "--out-dir", str(tmp_path)]
    )  # fmt: skip
    runs: pd.DataFrame = out["runs"]
    assert len(runs) == 1 and runs["dataset"].tolist() == ["sample"]
    assert set(pd.read_csv(tmp_path / "budget_pacing_frontier.csv")["cost_weight"]) == set(
        out["frontier"]["cost_weight"]
    )
    assert len(out["frontier"]) == 6
    assert (tmp_path / "budget_pacing.md").read_text().startswith("# Budget pacing")
    assert (tmp_path / "budget_pacing_sample.png").stat().st_size > 1000
    assert pd.read_csv(tmp_path / "budget_pacing.csv")["spend"].iloc[0] == runs["spend"].iloc[0]
