"""``routing-env datasets summary`` and ``make-sample``."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.cli import main
from routing_env.data import LoggedDataset, load_sample
from tests.conftest import shared_dataset
from tests.data.datahelpers import assert_datasets_equal
from tests.data.test_data_loaders import make_obd, make_routellm, make_routerbench


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["datasets", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_summary_of_the_sample(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "summary", "--plain", "--cost-weight", "0.5")
    assert code == 0
    assert "LoggedDataset(n_queries=4000" in out and "summary at cost_weight=0.5" in out
    assert "frontier-reasoning" in out and "oracle" in out and "best_single" in out


def test_summary_of_a_canonical_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], small: LoggedDataset
) -> None:
    path = small.save(tmp_path / "logs.csv")
    code, out, _ = run(capsys, "summary", str(path))
    assert code == 0 and "n_queries=300" in out and "open-8b" in out


def test_summary_with_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_routellm(tmp_path / "routellm")
    code, out, _ = run(
        capsys, "summary", str(tmp_path / "routellm"), "--format", "routellm", "--task", "gsm8k", "--plain"
    )
    assert code == 0 and "n_queries=2" in out and "contaminated_dropped: 0 of 2 prompts" in out
    make_obd(tmp_path / "obd", policy="bts", campaign="men")
    code, out, _ = run(
        capsys,
        "summary",
        str(tmp_path / "obd"),
        "--format",
        "open-bandit",
        "--policy",
        "bts",
        "--campaign",
        "men",
    )
    assert code == 0 and "bandit logs" in out
    make_routerbench(tmp_path / "rb.csv")
    code, out, err = run(capsys, "summary", str(tmp_path / "rb.csv"), "--format", "routerbench", "--plain")
    assert code == 0 and "mistralai/mixtral-8x7b-chat" in out
    # The loader's warnings are shown as the command's own lines, not as Python warnings with a source line.
    assert "routing-env datasets: warning: load_routerbench: duplicated sample_id: 1 rows repeating" in err
    assert "DataWarning" not in err and "warnings.warn" not in err


def test_summary_by_name_under_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_routellm(tmp_path / "routellm")
    code, out, _ = run(capsys, "summary", "routellm-mt_bench", "--root", str(tmp_path), "--plain")
    assert code == 0 and "quality_normalization: minmax from [1.0, 10.0]" in out


def test_errors_exit_2_with_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ROUTING_ENV_DATASETS", raising=False)
    code, _, err = run(capsys, "summary", "mystery")
    assert code == 2 and "'mystery' is not a dataset name" in err and "--format" in err
    code, _, err = run(capsys, "summary", "llmrouter")
    assert code == 2 and "needs --root (the folder holding 'llmrouter')" in err
    code, _, err = run(capsys, "summary", str(tmp_path / "absent.parquet"))
    assert code == 2 and "no logged data at" in err


def test_make_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "make-sample", str(tmp_path))
    assert code == 0 and "sample.parquet" in out
    assert_datasets_equal(LoggedDataset.read(tmp_path / "sample.parquet"), load_sample())


@pytest.mark.datasets
def test_summary_of_real_mmlu(capsys: pytest.CaptureFixture[str]) -> None:
    root = shared_dataset("routellm").parent
    code, out, _ = run(capsys, "summary", "routellm-mmlu", "--root", str(root), "--plain")
    assert code == 0 and "0.680915" in out and "0.805870" in out and "0.858730" in out
