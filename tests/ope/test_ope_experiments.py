"""Smoke runs of the OPE experiment and benchmark scripts with tiny sizes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from tests.experiments.test_smoke import run_script


@pytest.mark.slow
def test_ope_accuracy_smoke(tmp_path: Path) -> None:
    out = run_script(
        "ope_accuracy", "--datasets", "sample", "--no-obd", "--n-seeds", "2", "--n-rounds", "300",
        "--n-bootstrap", "20", "--out-dir", str(tmp_path),
    )  # fmt: skip
    assert "coverage at n = 300" in out
    table = pd.read_csv(tmp_path / "ope_accuracy.csv")
    assert set(table["logger"]) == {"uniform", "eps-greedy", "softmax"}
    assert {"IPS", "SNIPS", "DR", "Replay"} <= set(table["estimator"])
    assert table["runs"].min() == 2 and table["coverage_normal"].between(0, 1).all()
    assert (tmp_path / "ope_accuracy.md").read_text().startswith("# Off-policy estimation accuracy")


@pytest.mark.slow
def test_bench_ope_smoke(tmp_path: Path) -> None:
    out_csv = tmp_path / "bench.csv"
    out = run_script("bench_ope", "--n", "20000", "--repeats", "1", "--out", str(out_csv))
    assert "DM+IPS+SNIPS+DR" in out
    frame = pd.read_csv(out_csv)
    # Four rows of ours, plus one against Open Bandit Pipeline where obp is installed.
    has_obp = importlib.util.find_spec("obp") is not None
    assert (frame["ours_s"] > 0).all() and len(frame) == 4 + has_obp
    assert frame["what"].str.contains("Open Bandit Pipeline").sum() == has_obp
