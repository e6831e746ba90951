"""Smoke test: the data-layer benchmark runs end to end at tiny sizes and writes its figures."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATASETS
from tests.experiments.test_smoke import run_script


def test_bench_data_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "bench_data.csv"
    has_routellm = (SHARED_DATASETS / "routellm").is_dir()
    stdout = run_script(
        "bench_data", "--root", str(SHARED_DATASETS), "--n-queries", "2000", "--repeats", "1", "--out", str(out),
        timeout=300,
    )  # fmt: skip
    figures = {row["figure"]: float(row["value"]) for row in csv.DictReader(out.open())}
    assert figures["large_dataset_array_mib"] > 0 and figures["large_dataset_peak_rss_mib"] > 0
    if has_routellm:
        assert "load_routellm" in stdout
        assert figures["routellm_mmlu_load_s"] > 0 and figures["routellm_mmlu_pandas_reference_s"] > 0
        ratio = figures["routellm_mmlu_load_s"] / figures["routellm_mmlu_pandas_reference_s"]
        assert figures["routellm_mmlu_ratio"] == pytest.approx(ratio, rel=1e-4)  # the CSV keeps 6 digits
    else:
        assert "RouteLLM MMLU: skipped" in stdout
